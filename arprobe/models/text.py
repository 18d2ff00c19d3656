"""Model loading: pretrained weights from a hub id or path, or a random init of any size.

Three ways to get a causal LM (``ModelConfig.init``):

- ``"pretrained"``: ``AutoModelForCausalLM.from_pretrained(name, revision=...)`` — a hub id
  (``EleutherAI/pythia-1b``, ``--revision step96000`` for Pythia's intermediate checkpoints,
  ``gpt2``) or a local ``save_pretrained`` folder. Same code path for both. A local folder's
  revision is its ``<revision>/`` subfolder (a ladder size from ``arprobe pretrain``:
  ``<ladder>/<size>/step512/``), and a model written by ``arprobe pretrain`` brings its
  provenance (corpus, tokens, steps, seed, version) into the run's ``model`` info as ``pretrain``.
- ``"pythia"``: random init with the GPT-NeoX recipe Pythia was trained from (paper Sec. 3.1,
  "we follow the model initialization recipe of biderman2023pythia"); see ``init_pythia_``.
- ``"normal"``: random init with every weight matrix ~ N(0, 0.02) (paper App. B.4).

Random-init architectures come from a size preset (``PYTHIA_PRESETS``: the Pythia suite's
real shapes) or from any hub/local config (``AutoConfig``), with width/depth/head overrides.

Every model comes back in train() mode with all dropout off, so a run on CPU is
deterministic: the same seed gives the same weights and the same losses.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import types
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from arprobe.errors import UserError
from arprobe.models.hub import local_revision, looks_like_path

if TYPE_CHECKING:  # annotations only: the config lives with the trainer, which imports this module
    from arprobe.trainer.config import ModelConfig

# The Pythia suite's architectures (Biderman et al. 2023, Table 1 and the released
# config.json files). Keys are Hugging Face GPTNeoXConfig fields; "rotary_pct" and
# "rotary_emb_base" are the names Pythia's config.json uses (transformers folds them into
# rope_parameters). vocab_size is replaced by the tokenizer's at build time.
_PYTHIA_COMMON = dict(
    vocab_size=50304,
    hidden_act="gelu",
    rotary_pct=0.25,
    rotary_emb_base=10000,
    max_position_embeddings=2048,
    use_parallel_residual=True,
    tie_word_embeddings=False,
    layer_norm_eps=1e-5,
    initializer_range=0.02,
    attention_dropout=0.0,
    hidden_dropout=0.0,
    bos_token_id=0,
    eos_token_id=0,
)


def _pythia(d_model: int, n_layers: int, n_heads: int) -> dict:
    return dict(
        _PYTHIA_COMMON,
        hidden_size=d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        intermediate_size=4 * d_model,
    )


PYTHIA_PRESETS: dict[str, dict] = {
    "pythia-14m": _pythia(128, 6, 4),
    "pythia-31m": _pythia(256, 6, 8),
    "pythia-70m": _pythia(512, 6, 8),
    "pythia-160m": _pythia(768, 12, 12),
    "pythia-410m": _pythia(1024, 24, 16),
    "pythia-1b": _pythia(2048, 16, 8),
    "pythia-1.4b": _pythia(2048, 24, 16),
    "pythia-2.8b": _pythia(2560, 32, 32),
    # Not a Pythia model: the Pythia architecture at the size of arprobe's CPU default
    # (5.3M parameters with the 4096-token BPE), big enough to show anticipatory recovery.
    "tiny": _pythia(256, 4, 4),
}

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Inside ``weightless()``: models are built on the meta device (shapes only, no values, no weights
# read), for plans of runs too large to build here (``trainer.plan``).
_WEIGHTLESS = contextvars.ContextVar("weightless", default=False)


@contextlib.contextmanager
def weightless():
    """Within the block ``build_model`` builds every model on the meta device: the same modules and
    parameter shapes, no memory, no weights loaded, no initialisation."""
    token = _WEIGHTLESS.set(True)
    try:
        yield
    finally:
        _WEIGHTLESS.reset(token)


def weightless_model(
    cfg: ModelConfig, vocab_size: int, max_positions: int, *, resize_embeddings: bool = False
):
    """The model ``cfg`` describes on the meta device, from its config alone (a hub model's config
    from the local cache). ``vocab_size``: a random model's embedding rows, as ``build_model``."""
    # lazy: transformers takes seconds to import; only this path needs it
    from transformers import AutoModelForCausalLM

    dtype = _DTYPES.get(cfg.dtype, torch.float32)
    if cfg.init == "pretrained":
        config = _load_hf_config(cfg)
        _zero_dropout_config(config)
        if resize_embeddings:
            config.vocab_size = vocab_size
    else:
        config, _ = build_config(cfg, vocab_size, max_positions)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=cfg.trust_remote_code)
    model.config.dtype = dtype
    return model


@dataclass
class LoadedModel:
    model: torch.nn.Module  # transformers causal LM, on its device, train() mode, dropout off
    provenance: dict  # JSON-serialisable: where the model came from (stored as the run's `model` attrs)
    bridge_name: str  # model name for TransformerBridge.boot_transformers(bridge_name, hf_model=model, ...)


# --- public API ---------------------------------------------------------------------------


def build_model(
    cfg: ModelConfig, vocab_size: int, seed: int, max_positions: int, *, resize_embeddings: bool = False
) -> LoadedModel:
    """Load or randomly initialise the model ``cfg`` describes.

    ``vocab_size`` is the tokenizer's vocabulary (a random model's embedding gets exactly
    that many rows); ``max_positions`` is the longest sequence the run feeds (C).
    ``cfg.freeze_blocks`` > 0 freezes the embeddings and the first B blocks.
    ``resize_embeddings`` (compat authors): ``resize_token_embeddings(vocab_size)`` after loading,
    as the released code does; see ``resize_embeddings_as_released``.
    """
    dtype = _DTYPES.get(cfg.dtype)
    if dtype is None:
        raise UserError(f"model.dtype must be float32, bfloat16 or float16; got '{cfg.dtype}'.")
    device = resolve_device(cfg.device)
    if _WEIGHTLESS.get() and cfg.init in ("pretrained", "pythia", "normal"):
        return _weightless_loaded(cfg, vocab_size, max_positions, resize_embeddings, device)
    if cfg.init == "pretrained":
        model, provenance = _load_pretrained(cfg, vocab_size, max_positions, dtype, resize_embeddings)
        bridge_name = cfg.name
    elif cfg.init in ("pythia", "normal"):
        model, provenance = _build_random(cfg, vocab_size, seed, max_positions, dtype)
        # TransformerLens picks its adapter from the model's config; the name only has to be a
        # GPT-NeoX one for presets ("tiny" is not on any hub).
        bridge_name = (
            ("EleutherAI/pythia-14m" if cfg.name == "tiny" else f"EleutherAI/{cfg.name}")
            if cfg.name in PYTHIA_PRESETS
            else cfg.name
        )
    else:
        raise UserError(f"model.init must be pretrained, pythia or normal; got '{cfg.init}'.")

    if resize_embeddings:
        provenance["resized_embeddings"] = resize_embeddings_as_released(model, vocab_size, seed)
    model.to(device)
    model.train()
    disable_dropout(model)
    freeze_first_blocks(model, cfg.freeze_blocks)
    use_autocast(model, cfg.autocast)
    provenance.update(
        name=cfg.name,
        revision=cfg.revision,
        init=cfg.init,
        hf_config=model.config.to_dict(),
        attn_implementation=getattr(model.config, "_attn_implementation", None),
        n_params=sum(p.numel() for p in model.parameters()),
        n_embedding_params=embedding_params(model),
        n_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        freeze_blocks=cfg.freeze_blocks,
        dtype=cfg.dtype,
        autocast=cfg.autocast,
        device=str(device),
    )
    return LoadedModel(model=model, provenance=provenance, bridge_name=bridge_name)


def _weightless_loaded(cfg: ModelConfig, vocab_size: int, max_positions: int, resize: bool, device):
    """``build_model``'s answer inside ``weightless()``: the model on the meta device, frozen as the
    run freezes it, with the provenance a plan reads (counts, kind, device)."""
    if cfg.init == "pretrained" and cfg.name in PYTHIA_PRESETS:
        raise UserError(
            f"'{cfg.name}' is a size preset for random init; for pretrained weights give a hub id "
            f"(e.g. EleutherAI/{cfg.name}) or a local path."
        )
    model = weightless_model(cfg, vocab_size, max_positions, resize_embeddings=resize)
    model.train()
    freeze_first_blocks(model, cfg.freeze_blocks)
    bridge_name = cfg.name
    if cfg.init != "pretrained" and cfg.name in PYTHIA_PRESETS:
        bridge_name = "EleutherAI/pythia-14m" if cfg.name == "tiny" else f"EleutherAI/{cfg.name}"
    provenance = dict(
        kind="pretrained" if cfg.init == "pretrained" else "random",
        name=cfg.name,
        revision=cfg.revision,
        init=cfg.init,
        weightless=True,
        n_params=sum(p.numel() for p in model.parameters()),
        n_embedding_params=embedding_params(model),
        n_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        freeze_blocks=cfg.freeze_blocks,
        dtype=cfg.dtype,
        autocast=cfg.autocast,
        device=str(device),
    )
    return LoadedModel(model=model, provenance=provenance, bridge_name=bridge_name)


# Elements of the logits one cross-entropy call takes when a loss per token is asked for: a
# log-softmax of [rows, vocab] that stays in cache on CPU instead of a second copy of all the
# logits in memory (an eval batch's logits are 257 MB at T = 10, C = 128 and Pythia's vocabulary;
# one call over all of them took 88 ms there, 83-row pieces 16 ms, bit for bit the same).
CE_ELEMENTS = {"cpu": 1 << 22, "other": 1 << 26}


def ce_rows(vocab: int, device_type: str) -> int:
    """Rows (tokens) of [rows, vocab] logits per cross-entropy call for per-token losses."""
    return max(1, CE_ELEMENTS["cpu" if device_type == "cpu" else "other"] // vocab)


def use_autocast(model: torch.nn.Module, mode: str) -> None:
    """``mode`` "bfloat16": every forward of ``model`` (training, eval, recordings, replays) runs
    under ``torch.autocast`` in bf16 on the device of its inputs, while weights, gradients and the
    optimizer stay float32 (mixed precision: GPU tensor cores; on a CPU it is usually slower).
    Losses are taken from float32 logits (``tasks.text.token_nll``).

    The wrapper is a method bound to the model, not a closure over it: ``copy.deepcopy`` rebinds a
    bound method to the copy, so a copy (the skeleton the batched trainer calls through
    ``functional_call``) runs its own forward, not the original's."""
    if mode == "off":
        return
    assert mode == "bfloat16", mode
    model.forward = types.MethodType(_autocast_forward, model)


def _autocast_forward(self: torch.nn.Module, *args, **kwargs):
    inputs = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)]
    device = inputs[0].device.type if inputs else next(self.parameters()).device.type
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        return type(self).forward(self, *args, **kwargs)


def resize_embeddings_as_released(model, vocab_size: int, seed: int) -> list[int]:
    """``model.resize_token_embeddings(vocab_size)``, as the released code calls it after loading;
    returns [rows before, rows after].

    Pythia's tokenizer has 50,277 entries against 50,304 embedding rows, so this trims the input
    embedding and the unembedding (a tied one with it): the softmax runs over 50,277 logits. Rows
    are added only for a tokenizer longer than the model's embedding (no released configuration);
    they get the model's own initialisation (``mean_resizing=False``, transformers' behaviour
    before 4.46) from ``seed``, so the same run builds the same weights.
    """
    rows = model.get_input_embeddings().num_embeddings
    if rows != vocab_size:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model.resize_token_embeddings(vocab_size, mean_resizing=False)
    return [rows, model.get_input_embeddings().num_embeddings]


def embedding_params(model) -> int:
    """Values in the input and output embeddings (counted once when tied). Pythia's presets here
    pair its architecture with arprobe's vocabulary, so only the rest matches Pythia's sizes."""
    seen, total = set(), 0
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        for p in module.parameters() if module is not None else []:
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → cuda if available, else cpu; otherwise the named device, checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"Unknown device '{name}'; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"Device '{name}' was asked for but CUDA is not available; use --device cpu or auto."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"Device '{name}' does not exist; this machine has {torch.cuda.device_count()} CUDA "
                "device(s)."
            )
    return device


def n_blocks(model) -> int:
    """Number of transformer blocks (``num_hidden_layers``; GPT-2 calls it ``n_layer``)."""
    config = model.config
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if getattr(config, key, None) is not None:
            return int(getattr(config, key))
    return 0  # an architecture without a block count: nothing to freeze, no middle block


def freeze_first_blocks(model, n: int) -> None:
    """Freeze the input embeddings and the first ``n`` transformer blocks (paper Sec. 3.3).

    "Tune only the last 16-B blocks": the input side up to block n-1 gets
    ``requires_grad=False``; ``n=0`` freezes nothing. Learned position embeddings (GPT-2's
    ``wpe``) count as input embeddings. With tied input/output embeddings (GPT-2) the
    unembedding is frozen too, since it is the same tensor. Build the optimizer from
    parameters with ``requires_grad`` only.
    """
    total = n_blocks(model)
    if n < 0 or n > total:
        raise UserError(
            f"model.freeze_blocks must be in [0, {total}] (the model has {total} transformer blocks), "
            f"got {n}."
        )
    if n == 0:
        return
    blocks = _block_list(model)
    in_blocks = {id(p) for p in blocks.parameters()}
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding) and not any(
            id(p) in in_blocks for p in module.parameters()
        ):
            module.requires_grad_(False)
    for block in blocks[:n]:
        block.requires_grad_(False)


# --- pretrained --------------------------------------------------------------------------


def _load_pretrained(
    cfg: ModelConfig, vocab_size: int, max_positions: int, dtype: torch.dtype, resize_embeddings: bool = False
):
    """``from_pretrained`` on a hub id or a local folder; dropout is zeroed in the config first."""
    # lazy: transformers takes seconds to import; only this path needs it
    from transformers import AutoModelForCausalLM

    if cfg.name in PYTHIA_PRESETS:
        raise UserError(
            f"'{cfg.name}' is a size preset for random init; for pretrained weights give a hub id "
            f"(e.g. EleutherAI/{cfg.name}) or a local path."
        )
    config = _load_hf_config(cfg)
    _zero_dropout_config(config)
    with _hub_errors_as_user_errors(cfg), no_transformers_bars():
        model = AutoModelForCausalLM.from_pretrained(
            _source(cfg),
            config=config,
            revision=_hub_revision(cfg),
            trust_remote_code=cfg.trust_remote_code,
            dtype=dtype,
        )
    rows = model.get_input_embeddings().num_embeddings
    if vocab_size > rows and not resize_embeddings:
        raise UserError(
            f"The tokenizer has {vocab_size} tokens but model '{cfg.name}' embeds only {rows}; "
            "use the model's own tokenizer (data.tokenizer = auto)."
        )
    n_ctx = getattr(model.config, "max_position_embeddings", None)
    if n_ctx is not None and max_positions > n_ctx:
        raise UserError(
            f"data.context_length ({max_positions}) exceeds the {n_ctx} positions model '{cfg.name}' "
            "supports."
        )
    provenance = dict(
        kind="pretrained",
        overrides={},
        init_scheme="pretrained weights",
        commit=getattr(config, "_commit_hash", None),
    )
    local = local_revision(cfg.name, cfg.revision)
    if local is not None:
        provenance["path"] = str(local.resolve())
        # A model written by `arprobe pretrain` says what it was trained on; every run store keeps it.
        pretrain = _read_pretrain_provenance(local)
        if pretrain is not None:
            provenance["pretrain"] = pretrain
            provenance["init_scheme"] = (
                f"pretrained by arprobe pretrain: ladder {pretrain.get('ladder')}, size "
                f"{pretrain.get('size')}, {pretrain.get('revision')} ({pretrain.get('tokens_seen')} tokens)"
            )
    return model, provenance


@contextlib.contextmanager
def no_transformers_bars():
    """No transformers progress bar ("Loading weights", "Writing model shards") under our own."""
    # lazy: transformers takes seconds to import; only this path needs it
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


PRETRAIN_PROVENANCE_FILE = "arprobe_pretrain.json"  # written by arprobe pretrain into every model folder


def _read_pretrain_provenance(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / PRETRAIN_PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _load_hf_config(cfg: ModelConfig):
    """``AutoConfig.from_pretrained`` with the user-facing errors a bad name deserves."""
    # lazy: transformers takes seconds to import; only this path needs it
    from transformers import AutoConfig

    path = Path(cfg.name).expanduser()
    if looks_like_path(cfg.name) and not path.exists():
        raise UserError(f"Model path '{cfg.name}' does not exist.")
    if path.is_dir() and not (path / "config.json").is_file():
        raise UserError(
            f"Model folder '{cfg.name}' has no config.json; save the model there with save_pretrained."
        )
    with _hub_errors_as_user_errors(cfg):
        return AutoConfig.from_pretrained(
            _source(cfg),
            revision=_hub_revision(cfg),
            trust_remote_code=cfg.trust_remote_code,
        )


def _source(cfg: ModelConfig) -> str:
    """What to hand transformers: the local folder (at ``cfg.revision``: its ``<revision>/`` subfolder,
    as a ladder from arprobe pretrain keeps them) if there is one, else the hub id."""
    local = local_revision(cfg.name, cfg.revision)
    return str(local) if local is not None else cfg.name


def _hub_revision(cfg: ModelConfig) -> str | None:
    """The revision for transformers: a hub id's; none for a local folder (``_source`` resolved it)."""
    if Path(cfg.name).expanduser().exists():
        return None
    return cfg.revision or None


@contextlib.contextmanager
def _hub_errors_as_user_errors(cfg: ModelConfig):
    """Turn transformers' loading errors into one sentence a user can act on."""
    try:
        yield
    except (OSError, ValueError) as exc:
        name, local = cfg.name, Path(cfg.name).expanduser().exists()
        if isinstance(exc, OSError) and not local:
            at = f" at revision '{cfg.revision}'" if cfg.revision else ""
            preset = (
                f" and is not a size preset ({', '.join(PYTHIA_PRESETS)})" if cfg.init != "pretrained" else ""
            )
            raise UserError(
                f"Model '{name}'{at} was not found locally{preset}; a hub id needs network access "
                "or a local Hugging Face cache that holds it."
            ) from None
        # A folder that is there but broken, or a hub model that needs trust_remote_code.
        raise UserError(f"Could not load model '{name}': {' '.join(str(exc).split())}") from None


# --- random init -------------------------------------------------------------------------


def build_config(cfg: ModelConfig, vocab_size: int, max_positions: int):
    """The Hugging Face config of a random-init model: preset or hub/local config, plus overrides.

    Returns ``(config, overrides)`` where ``overrides`` lists the changes applied to the
    base architecture (for provenance). Dropout is zeroed.
    """
    # lazy: transformers takes seconds to import; only this path needs it
    from transformers import GPTNeoXConfig

    if cfg.name in PYTHIA_PRESETS:
        config = GPTNeoXConfig(**PYTHIA_PRESETS[cfg.name])
    else:
        config = _load_hf_config(cfg)
    overrides = _apply_overrides(config, cfg)
    config.vocab_size = vocab_size  # exactly the tokenizer's, so logits line up with token ids
    if getattr(config, "max_position_embeddings", None) is not None:
        config.max_position_embeddings = max(config.max_position_embeddings, max_positions)
    _zero_dropout_config(config)
    return config, overrides


def _apply_overrides(config, cfg: ModelConfig) -> dict:
    """Set width/depth/heads where the user asked (> 0); return what was changed."""
    d_model = cfg.d_model or config.hidden_size
    n_heads = cfg.n_heads or config.num_attention_heads
    # Checked before touching the config: transformers' strict configs reject it less clearly.
    if d_model % n_heads:
        raise UserError(f"model.d_model ({d_model}) must be divisible by model.n_heads ({n_heads}).")
    overrides = {}
    if d_model != config.hidden_size:
        overrides["d_model"] = d_model
        # Keep the MLP's expansion ratio (4 for GPT-NeoX/Pythia) rather than its absolute size.
        if getattr(config, "intermediate_size", None):
            config.intermediate_size = config.intermediate_size * d_model // config.hidden_size
        config.hidden_size = d_model
    if cfg.n_layers > 0 and cfg.n_layers != config.num_hidden_layers:
        overrides["n_layers"] = cfg.n_layers
        config.num_hidden_layers = cfg.n_layers
    if n_heads != config.num_attention_heads:
        overrides["n_heads"] = n_heads
        if getattr(config, "num_key_value_heads", None) == config.num_attention_heads:
            config.num_key_value_heads = n_heads  # plain multi-head attention stays so
        config.num_attention_heads = n_heads
    if overrides and getattr(config, "head_dim", None):
        config.head_dim = d_model // n_heads
    return overrides


def _build_random(cfg: ModelConfig, vocab_size: int, seed: int, max_positions: int, dtype: torch.dtype):
    """Build from config on CPU in float32 and initialise under ``seed``, then cast.

    Initialising in float32 on CPU makes the weights the same on every device and dtype
    (up to the final rounding), and leaves the caller's global RNG untouched.
    """
    # lazy: transformers takes seconds to import; only this path needs it
    from transformers import AutoModelForCausalLM

    config, overrides = build_config(cfg, vocab_size, max_positions)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # No attn_implementation: transformers picks sdpa where the architecture supports
        # it (deterministic on CPU; checked in tests) and eager otherwise.
        model = AutoModelForCausalLM.from_config(
            config, dtype=torch.float32, trust_remote_code=cfg.trust_remote_code
        )
        if cfg.init == "normal":
            scheme = init_normal_(model)
        elif model.config.model_type == "gpt_neox":
            scheme = init_pythia_(model)
        else:
            scheme = (
                f"{model.config.model_type} default (_init_weights); "
                "the pythia recipe is implemented for GPT-NeoX only"
            )
            warnings.warn(f"init 'pythia' is GPT-NeoX only; '{cfg.name}' keeps {scheme}.", stacklevel=3)
    model.to(dtype)
    model.config.dtype = dtype
    provenance = dict(kind="random", overrides=overrides, init_scheme=scheme, seed=seed)
    return model, provenance


@torch.no_grad()
def init_pythia_(model) -> str:
    """Pythia's initialisation (GPT-NeoX ``small_init`` + ``wang_init``), in place.

    Every weight matrix, embeddings and unembedding included: N(0, sqrt(2 / (5 d))).
    Each block's output projections (``attention.dense``, ``mlp.dense_4h_to_h``):
    N(0, 2 / (L sqrt(d))), so the residual stream's growth is independent of depth.
    Biases 0, LayerNorm weight 1. Returns a one-line description for provenance.
    """
    config = model.config
    assert config.model_type == "gpt_neox", "init_pythia_ expects a GPT-NeoX model"
    d, n_layers = config.hidden_size, config.num_hidden_layers
    small_std = math.sqrt(2 / (5 * d))
    wang_std = 2 / (n_layers * math.sqrt(d))
    for name, param in model.named_parameters():
        if name.endswith(("attention.dense.weight", "mlp.dense_4h_to_h.weight")):
            param.normal_(0.0, wang_std)
        else:
            _init_param(name, param, small_std)
    return (
        f"pythia: small_init std {small_std:.6g}, wang_init std {wang_std:.6g} "
        "(attention.dense, mlp.dense_4h_to_h)"
    )


@torch.no_grad()
def init_normal_(model, std: float = 0.02) -> str:
    """Every weight matrix (linear, embedding) ~ N(0, std), biases 0, norms 1 (paper App. B.4)."""
    for name, param in model.named_parameters():
        _init_param(name, param, std)
    return f"normal: every weight matrix N(0, {std})"


def _init_param(name: str, param: torch.Tensor, std: float) -> None:
    # By shape rather than module type, so GPT-2's Conv1D and other layer classes are covered:
    # matrices are weights, 1-D "weight"s are norm scales, the rest are biases.
    if param.dim() >= 2:
        param.normal_(0.0, std)
    elif name.endswith("weight"):
        param.fill_(1.0)
    else:
        param.zero_()


# --- helpers ------------------------------------------------------------------------------


def _zero_dropout_config(config) -> None:
    """Set every dropout probability in a config to 0 (before the model reads it in __init__)."""
    for key, value in config.to_dict().items():
        if (
            ("dropout" in key or "pdrop" in key)
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
        ):
            setattr(config, key, 0.0)


def disable_dropout(model) -> None:
    # Belt and braces for architectures whose dropout is not all driven by config fields.
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def _block_list(model) -> torch.nn.ModuleList:
    """The ModuleList holding the transformer blocks (gpt_neox.layers, transformer.h, model.layers)."""
    total = n_blocks(model)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == total:
            return module
    raise AssertionError(f"no list of {total} blocks in {type(model).__name__}")
