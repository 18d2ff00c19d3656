"""TransformerLens names for the parts of a Hugging Face model, and activation capture by them.

TransformerLens' ``TransformerBridge`` knows which Hugging Face module is ``blocks.3.attn`` or
``ln_final`` for every architecture it supports. It restructures a model in place and slows the
training step (+28% measured on a 4M model), so we boot it once on a weightless copy of the
model (meta device), read off the name -> module-path map, and then train and record on the
untouched Hugging Face model with plain forward hooks. Capturing ``X.hook_in``/``X.hook_out`` of
a component by a forward hook gives the same tensor as the bridge (tested).

Importing TransformerLens and booting the bridge costs seconds at every start, so ``bridge_names``
boots it once per architecture: the names become a table with the block index as ``{i}``, kept
under ``<arprobe cache>/tl_names/`` (and shipped in ``tl_tables`` for the GPT-NeoX presets), and
a later run of the same architecture at any depth reads the table instead. A table is only
written when expanding it gives back exactly what the bridge gave.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import re
from dataclasses import dataclass, field

import torch

from arprobe.errors import UserError
from arprobe.models.hub import cache_root
from arprobe.models.text import n_blocks
from arprobe.models.tl_tables import BY_CLASS, MADE_WITH, SHIPPED

log = logging.getLogger(__name__)

# Hook names that are the input or output of a whole component.
_ALIASES = [
    (re.compile(r"^blocks\.(\d+)\.hook_resid_pre$"), r"blocks.\1", "in"),
    (re.compile(r"^blocks\.(\d+)\.hook_resid_post$"), r"blocks.\1", "out"),
    (re.compile(r"^ln_final\.hook_normalized$"), "ln_final", "out"),
    (re.compile(r"^hook_embed$"), "embed", "out"),
    (re.compile(r"^(.+)\.hook_(in|out)$"), r"\1", None),
]
# Components whose parameters form the groups of the per-layer gradient norm.
_GROUP_PATTERN = re.compile(r"^(embed|pos_embed|ln_final|unembed|blocks\.\d+(\.(ln1|ln2|attn|mlp))?)$")


@dataclass
class ModelNames:
    """The TransformerLens view of one model."""

    components: dict[
        str, str
    ]  # TL component ("blocks.0.attn") -> HF module path ("gpt_neox.layers.0.attention")
    hook_names: set[str] = field(default_factory=set)  # every hook name the bridge exposes
    n_blocks: int = 0
    # Why the names are Hugging Face module paths instead (no TransformerLens, or no bridge for this
    # architecture): said in every unknown-name error; empty for TransformerLens names.
    paths_because: str = ""

    def expand(self, name: str) -> str:
        """``blocks.mid.X`` -> the middle block (paper Fig. 8a uses a middle layer)."""
        return name.replace("blocks.mid.", f"blocks.{self.n_blocks // 2}.")

    def module_path(self, component: str) -> str:
        component = self.expand(component)
        if component in self.components:
            return self.components[component]
        raise UserError(
            f"Unknown layer '{component}'; known: {', '.join(sorted(self.components)[:12])}, ...{self._why()}"
        )

    def _why(self) -> str:
        if not self.paths_because:
            return ""
        return (
            f" (layers and hooks go by Hugging Face module paths here, e.g. {next(iter(self.components))}, "
            f"because {self.paths_because})"
        )

    def parameter_groups(self, model: torch.nn.Module) -> dict[str, list[str]]:
        """Layer group -> HF parameter names, each parameter in its most specific group once."""
        groups = sorted(
            (tl for tl in self.components if _GROUP_PATTERN.match(tl)),
            key=lambda tl: -len(self.components[tl]),
        )
        out: dict[str, list[str]] = {}
        seen: set[int] = set()
        for name, param in model.named_parameters():
            if id(param) in seen:  # tied weights (GPT-2's embedding) count once
                continue
            seen.add(id(param))
            owner = next((tl for tl in groups if name.startswith(self.components[tl] + ".")), "other")
            out.setdefault(owner, []).append(name)
        return out  # in the model's own parameter order: embed, blocks..., ln_final, unembed

    def hook_target(self, hook: str) -> tuple[str, str]:
        """(HF module path, "in" | "out") whose forward input/output is this TL hook."""
        hook = self.expand(hook)
        if self.hook_names and hook not in self.hook_names:
            close = [h for h in self.hook_names if h.split(".")[-1] == hook.split(".")[-1]][:3]
            raise UserError(
                f"Unknown activation hook '{hook}'; e.g. {', '.join(sorted(close)) or 'blocks.0.hook_out'}."
            )
        for pattern, component, side in _ALIASES:
            m = pattern.match(hook)
            if m:
                comp = m.expand(component)
                if comp in self.components:
                    return self.components[comp], side or m.group(2)
        if self.paths_because:
            raise UserError(f"Unknown activation hook '{hook}'{self._why()}.")
        raise UserError(
            f"Activation hook '{hook}' is inside a component; arprobe captures component inputs and outputs "
            f"(X.hook_in, X.hook_out, blocks.i.hook_resid_pre/post, ln_final.hook_normalized)."
        )


def bridge_names(model: torch.nn.Module, tokenizer, bridge_name: str) -> ModelNames:
    """The TransformerLens names of ``model`` as the bridge gives them: from the table of its
    architecture when one exists (shipped or cached), else by booting the bridge
    (``boot_bridge_names``), whose answer is then cached."""
    names = tabled_names(model)
    if names is not None:
        return names
    log.info("Booting the TransformerLens bridge once for this architecture (names cached).")
    names = boot_bridge_names(model, tokenizer, bridge_name)
    table = names_table(names)
    if table is not None and names.hook_names:  # the fallback's HF names are not the bridge's: not kept
        with contextlib.suppress(OSError):  # a read-only cache costs the next run a boot, nothing more
            _write_table(architecture_key(model), table)
    return names


def tabled_names(model: torch.nn.Module) -> ModelNames | None:
    """The names of ``model`` from the shipped or cached table of its architecture, without booting
    the bridge (a weightless model will do); None when no table is known yet."""
    key = architecture_key(model)
    table = SHIPPED.get(key) or _read_table(key)
    return expand_table(table, n_blocks(model)) if table is not None else None


def architecture_key(model: torch.nn.Module) -> str:
    """A hash of what decides a model's TransformerLens names: the model class, its config less
    the sizes and the depth (which do not change a block's names), and the TransformerLens and
    transformers versions."""
    config = model.config.to_dict()
    kept = {k: v for k, v in config.items() if k not in _SIZE_KEYS}
    fingerprint = {
        "class": type(model).__name__,
        "config": kept,
        "transformer_lens": _version("transformer-lens"),
        "transformers": _version("transformers"),
    }
    text = json.dumps(fingerprint, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


# Config keys that set sizes, values or bookkeeping, never which modules or hooks exist.
_SIZE_KEYS = {
    "vocab_size", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
    "num_hidden_layers", "n_layer", "num_layers", "n_embd", "n_head", "n_inner", "n_positions",
    "n_ctx", "max_position_embeddings", "initializer_range", "layer_norm_eps", "layer_norm_epsilon",
    "bos_token_id", "eos_token_id", "pad_token_id", "_name_or_path", "name_or_path",
    "transformers_version", "dtype", "torch_dtype", "id2label", "label2id",
}  # fmt: skip


def names_table(names: ModelNames) -> dict | None:
    """``names`` as a table with block 0's entries as ``blocks.{i}...``; None when the blocks are
    not all alike (expanding the table must give back exactly ``names``)."""
    before, block, after = [], [], []
    hooks, block_hooks = [], []
    for tl, hf in names.components.items():
        m = _BLOCK.match(tl)
        if m is None:
            (after if block else before).append([tl, hf])
        elif m.group(1) == "0":
            parts = hf.split(".")
            if parts.count("0") != 1:
                return None
            block.append([f"blocks.{_I}{tl[m.end() :]}", ".".join(_I if p == "0" else p for p in parts)])
    for hook in sorted(names.hook_names):
        m = _BLOCK.match(hook)
        if m is None:
            hooks.append(hook)
        elif m.group(1) == "0":
            block_hooks.append(f"blocks.{_I}{hook[m.end() :]}")
    table = {
        "format": 1,
        "before": before,
        "block": block,
        "after": after,
        "hooks": hooks,
        "block_hooks": block_hooks,
    }
    expanded = expand_table(table, names.n_blocks)
    same = list(expanded.components.items()) == list(names.components.items())
    return table if same and expanded.hook_names == names.hook_names else None


def expand_table(table: dict, blocks: int) -> ModelNames:
    """The names of a model with ``blocks`` blocks from its architecture's table."""
    components = dict(table["before"])
    for i in range(blocks):
        components.update((tl.replace(_I, str(i)), hf.replace(_I, str(i))) for tl, hf in table["block"])
    components.update(table["after"])
    hooks = set(table["hooks"])
    hooks.update(h.replace(_I, str(i)) for i in range(blocks) for h in table["block_hooks"])
    return ModelNames(components=components, hook_names=hooks, n_blocks=blocks)


_BLOCK = re.compile(r"^blocks\.(\d+)(?=\.|$)")
_I = "{i}"  # the block index in a table: "blocks.{i}.attn" -> "gpt_neox.layers.{i}.attention"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _table_path(key: str):
    return cache_root() / "tl_names" / f"{key}.json"


def _write_table(key: str, table: dict) -> None:
    """Whole or not at all (os.replace): two runs starting at once may both write it."""
    path = _table_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(table, indent=1))
    os.replace(tmp, path)


def _read_table(key: str) -> dict | None:
    try:
        table = json.loads(_table_path(key).read_text())
    except (OSError, ValueError):
        return None
    fields = {"format", "before", "block", "after", "hooks", "block_hooks"}
    return table if isinstance(table, dict) and set(table) == fields and table["format"] == 1 else None


def boot_bridge_names(model: torch.nn.Module, tokenizer, bridge_name: str) -> ModelNames:
    """Boot a TransformerBridge on a weightless copy of ``model`` and read off its names.

    Falls back to Hugging Face module paths (with a warning) for architectures the bridge does
    not support, so any AutoModelForCausalLM still trains.
    """
    try:  # lazy: importing TransformerLens takes seconds; bridge_names boots it once per architecture
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError as exc:  # missing or broken (an install without dependencies): still train
        return names_without_transformer_lens(model, exc)

    # lazy: transformers takes seconds to import; only this path needs it
    from transformers import AutoModelForCausalLM

    # Weightless first (instant even at 1B); some adapters (GPT-2's fused QKV split) need real
    # values at boot, so fall back to a randomly initialised CPU copy of the same structure.
    bridge, failure = None, None
    for device in ("meta", "cpu"):
        with torch.device(device):
            skeleton = AutoModelForCausalLM.from_config(model.config)
        # The bridge wraps modules in place; remember where each original module lived first.
        path_of = {id(mod): path for path, mod in skeleton.named_modules()}
        try:
            with _quiet():
                bridge = TransformerBridge.boot_transformers(
                    bridge_name, hf_model=skeleton, tokenizer=tokenizer
                )
            break
        except Exception as exc:  # an unsupported architecture must not stop training
            failure = exc
    if bridge is None:
        log.warning(
            "TransformerLens bridge unavailable for %s (%s); using Hugging Face module names.",
            bridge_name,
            failure,
        )
        return _fallback_names(model, f"the TransformerLens bridge does not support {type(model).__name__}")
    components: dict[str, str] = {}

    def walk(tl_name: str, component) -> None:
        original = getattr(component, "original_component", None)
        if original is not None and id(original) in path_of:  # split q/k/v are new modules: skipped
            components[tl_name] = path_of[id(original)]
        for key in getattr(component, "submodules", {}) or {}:
            child = getattr(component, key, None)
            if child is not None:
                walk(f"{tl_name}.{key}", child)

    for name, child in bridge.named_children():
        if isinstance(child, torch.nn.ModuleList):
            for i, block in enumerate(child):
                walk(f"{name}.{i}", block)
        else:
            walk(name, child)
    return ModelNames(components=components, hook_names=set(bridge.hook_dict), n_blocks=n_blocks(model))


def names_without_transformer_lens(model: torch.nn.Module, failure: ImportError) -> ModelNames:
    """Names when TransformerLens cannot be imported: the shipped table of the model's class (the
    names of the versions it was made with), else Hugging Face module paths; a warning either way."""
    table = BY_CLASS.get(type(model).__name__)
    if table is not None:
        log.warning(
            "TransformerLens cannot be imported (%s); using the names %s gives for %s (shipped table).",
            failure, MADE_WITH, type(model).__name__,
        )  # fmt: skip
        return expand_table(table, n_blocks(model))
    log.warning("TransformerLens cannot be imported (%s); using Hugging Face module names.", failure)
    return _fallback_names(
        model, f"TransformerLens cannot be imported ({failure}; pip install transformer-lens)"
    )


def _fallback_names(model: torch.nn.Module, because: str) -> ModelNames:
    components = {path: path for path, _ in model.named_modules() if path}
    return ModelNames(components=components, n_blocks=n_blocks(model), paths_because=because)


@contextlib.contextmanager
def _quiet():
    """The bridge logs at warning level about things that do not concern a training run."""
    loggers = [logging.getLogger(n) for n in ("transformer_lens", "transformers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def capture(model: torch.nn.Module, names: ModelNames, hooks: list[str]):
    """Record the given TL hooks during the forward passes inside the block.

    Yields a dict hook -> tensor [batch, pos, d] (detached), filled by the forward pass.
    Hooks are always removed in ``finally``.
    """
    cache: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for hook in hooks:
            path, side = names.hook_target(hook)
            module = model.get_submodule(path)
            if side == "out":

                def fn(_m, _inp, out, hook=hook):
                    cache[hook] = (out[0] if isinstance(out, tuple) else out).detach()

                handles.append(module.register_forward_hook(fn))
            else:

                def fn(_m, args, kwargs, hook=hook):
                    first = args[0] if args else next(iter(kwargs.values()))
                    cache[hook] = first.detach()

                handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
        yield cache
    finally:
        for h in handles:
            h.remove()
