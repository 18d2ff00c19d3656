"""Image models: a small ViT and a small VGG built in PyTorch from config, GPT-2 / Image GPT for
causal image modelling, any Hugging Face image classifier, and the names the recorder uses.

Built-in models (``vit-tiny``, ``vgg-small``) are plain ``nn.Module``s whose module paths already
are the names arprobe records by: ``embed``, ``pos_embed``, ``blocks.{i}`` (``.ln1``, ``.attn``,
``.ln2``, ``.mlp`` for the ViT; ``.conv0`` … for a VGG stage), ``ln_final`` and ``unembed`` (the
classifier). Their architecture is a JSON spec stored in the run (``model_info["spec"]``), so a
replay rebuilds them from the store with ``build_from_spec`` and nothing else.

Causal image models are Hugging Face GPT-2 (random init from config, as Image GPT's architecture
is GPT-2's) or Image GPT (``openai/imagegpt-*`` by hub id or path). Both expose
``transformer.wte/wpe/h.{i}/ln_f`` and ``lm_head``, named here by hand in TransformerLens terms.

Every model comes back in train() mode with dropout off (paper App. A.2: Image GPT would not
fine-tune stably with dropout).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from arprobe.errors import UserError
from arprobe.models.hub import check_hub_model, looks_like_path
from arprobe.models.naming import ModelNames
from arprobe.models.text import _DTYPES, _zero_dropout_config, disable_dropout, init_normal_, resolve_device

# Random-init architectures. d_model / n_layers / n_heads override them (0: keep).
VIT_PRESETS = {"vit-tiny": dict(d_model=64, n_layers=4, n_heads=4)}
# VGG: d_model is the first stage's channels (doubled each stage), n_layers the number of stages.
VGG_PRESETS = {"vgg-small": dict(d_model=16, n_layers=3, convs_per_stage=2, hidden=128)}
# GPT-2 shapes for causal image modelling; "tiny" matches the text default's width and depth, the
# imagegpt-* entries are Image GPT's published shapes (small: 76M, medium: 455M parameters).
IMAGE_LM_PRESETS = {
    "tiny": dict(n_embd=256, n_layer=4, n_head=4),
    "imagegpt-small": dict(n_embd=512, n_layer=24, n_head=8),
    "imagegpt-medium": dict(n_embd=1024, n_layer=36, n_head=8),
}


# --- names ----------------------------------------------------------------------------------


@dataclass
class VisionNames(ModelNames):
    """``ModelNames`` plus stand-ins: the text defaults (``blocks.mid.attn``,
    ``ln_final.hook_normalized``) mapped to this model's nearest equivalent when it has no such
    component (a VGG has no attention and no final norm). The store records the real name."""

    stand_ins: dict[str, str] = field(default_factory=dict)

    def expand(self, name: str) -> str:
        name = super().expand(name)
        return self.stand_ins.get(name, name)


def _with_stand_ins(components: dict[str, str], n_blocks: int) -> VisionNames:
    mid, last = n_blocks // 2, max(n_blocks - 1, 0)
    stand_ins = {}
    if n_blocks and f"blocks.{mid}.attn" not in components:
        attn = [c for c in components if c.startswith(f"blocks.{mid}.") and "attention" in c.split(".")[2]]
        stand_ins[f"blocks.{mid}.attn"] = min(attn, key=len) if attn else f"blocks.{mid}"
    if n_blocks and "ln_final" not in components:
        stand_ins["ln_final.hook_normalized"] = f"blocks.{last}.hook_out"
    return VisionNames(components=components, n_blocks=n_blocks, stand_ins=stand_ins)


def builtin_names(model: nn.Module) -> VisionNames:
    """Module paths are the names (built-in models are laid out in TransformerLens terms)."""
    components = {path: path for path, _ in model.named_modules() if path}
    return _with_stand_ins(components, len(model.blocks))


def gpt2_names(model: nn.Module) -> VisionNames:
    """TransformerLens names of a GPT-2 / Image GPT causal model (same module layout)."""
    n = len(model.transformer.h)
    components = {
        "embed": "transformer.wte",
        "pos_embed": "transformer.wpe",
        "ln_final": "transformer.ln_f",
        "unembed": "lm_head",
    }
    for i in range(n):
        for tl, hf in (("", ""), (".ln1", ".ln_1"), (".attn", ".attn"), (".ln2", ".ln_2"), (".mlp", ".mlp")):
            components[f"blocks.{i}{tl}"] = f"transformer.h.{i}{hf}"
    return VisionNames(components=components, n_blocks=n)


def hub_classifier_names(model: nn.Module) -> VisionNames:
    """A Hugging Face image classifier: its module paths, plus ``blocks.{i}`` for its longest list
    of layers and ``unembed`` for the classifier head."""
    components = {path: path for path, _ in model.named_modules() if path}
    lists = [(path, m) for path, m in model.named_modules() if isinstance(m, nn.ModuleList)]
    n = 0
    if lists:
        path, blocks = max(lists, key=lambda pm: len(pm[1]))
        n = len(blocks)
        for sub in list(components):
            if sub == path or sub.startswith(path + "."):
                rest = sub[len(path) + 1 :]
                if rest:
                    components["blocks." + rest] = sub
    embeddings = [p for p in components if p.split(".")[-1] == "embeddings"]
    if embeddings:  # the input side, frozen with the first blocks (model.freeze_blocks)
        components["embed"] = components[min(embeddings, key=len)]
    head = "classifier" if "classifier" in components else None
    if head is None:
        linears = [p for p, m in model.named_modules() if isinstance(m, nn.Linear)]
        head = linears[-1] if linears else None
    if head is not None:
        components["unembed"] = components[head]
    return _with_stand_ins(components, n)


# --- built-in classifiers -----------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Image [N, 3, H, W] -> [N, 1 + P, d]: a class token, then one token per patch."""

    def __init__(self, patch_size: int, d_model: int):
        super().__init__()
        self.proj = nn.Conv2d(3, d_model, patch_size, stride=patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.proj(pixels).flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1)


class PosEmbed(nn.Module):
    def __init__(self, n_positions: int, d_model: int):
        super().__init__()
        self.W_pos = nn.Parameter(torch.zeros(1, n_positions, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.W_pos


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, P, d = x.shape
        q, k, v = self.qkv(x).view(N, P, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        return self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(N, P, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln1(x)), then + mlp(ln2(x))."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class ViT(nn.Module):
    """A small vision transformer (Dosovitskiy et al. 2020): patches + class token, pre-norm blocks,
    final LayerNorm, a linear classifier on the class token. Returns logits [N, classes]."""

    def __init__(
        self, image_size: int, patch_size: int, d_model: int, n_layers: int, n_heads: int, n_classes: int
    ):
        super().__init__()
        self.embed = PatchEmbed(patch_size, d_model)
        self.pos_embed = PosEmbed(1 + (image_size // patch_size) ** 2, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads) for _ in range(n_layers))
        self.ln_final = nn.LayerNorm(d_model)
        self.unembed = nn.Linear(d_model, n_classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.pos_embed(self.embed(pixel_values))
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_final(x)[:, 0])


class VGG(nn.Module):
    """A small VGG (Simonyan & Zisserman 2014): stages of 3x3 conv + ReLU ending in a 2x2 max-pool,
    channels doubling per stage, then one hidden fully connected layer and the classifier. No
    batch norm, as VGG-19 (batch statistics would make a document's loss depend on its batch-mates
    in eval). Returns logits [N, classes]."""

    def __init__(
        self, image_size: int, d_model: int, n_layers: int, convs_per_stage: int, hidden: int, n_classes: int
    ):
        super().__init__()
        stages, channels = [], 3
        for s in range(n_layers):
            width = d_model * 2**s
            layers: dict[str, nn.Module] = {}
            for c in range(convs_per_stage):
                layers[f"conv{c}"] = nn.Conv2d(channels, width, 3, padding=1)
                layers[f"relu{c}"] = nn.ReLU()
                channels = width
            layers["pool"] = nn.MaxPool2d(2)
            stages.append(nn.Sequential(OrderedDict(layers)))
        self.blocks = nn.ModuleList(stages)
        side = image_size // 2**n_layers
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels * side * side, hidden), nn.ReLU())
        self.unembed = nn.Linear(hidden, n_classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = pixel_values
        for stage in self.blocks:
            x = stage(x)
        return self.unembed(self.head(x))


def builtin_spec(cfg, *, image_size: int, patch_size: int, n_classes: int) -> dict:
    """The JSON architecture spec of a built-in classifier from the model config, or a UserError."""
    m = cfg
    if m.name in VIT_PRESETS:
        spec = dict(VIT_PRESETS[m.name], architecture="vit", image_size=image_size, patch_size=patch_size)
        spec.update(
            {k: v for k, v in (("d_model", m.d_model), ("n_layers", m.n_layers), ("n_heads", m.n_heads)) if v}
        )
        if spec["d_model"] % spec["n_heads"]:
            raise UserError(
                f"model.d_model ({spec['d_model']}) must be divisible by model.n_heads ({spec['n_heads']})."
            )
        if image_size % patch_size:
            raise UserError(
                f"image.image_size ({image_size}) must be divisible by image.patch_size ({patch_size})."
            )
    elif m.name in VGG_PRESETS:
        spec = dict(VGG_PRESETS[m.name], architecture="vgg", image_size=image_size)
        spec.update({k: v for k, v in (("d_model", m.d_model), ("n_layers", m.n_layers)) if v})
        if image_size < 2 ** spec["n_layers"]:
            raise UserError(
                f"image.image_size ({image_size}) is too small for {spec['n_layers']} VGG stages, each "
                f"halving it; use at least {2 ** spec['n_layers']} or fewer stages (model.n_layers)."
            )
    else:
        raise AssertionError(f"not a built-in classifier: {m.name}")
    spec["n_classes"] = n_classes
    return spec


def build_from_spec(spec: dict) -> nn.Module:
    """A built-in classifier from its stored spec (default PyTorch initialisation)."""
    s = dict(spec)
    arch = s.pop("architecture")
    if arch == "vit":
        model = ViT(
            s["image_size"], s["patch_size"], s["d_model"], s["n_layers"], s["n_heads"], s["n_classes"]
        )
        for p in (model.embed.cls, model.pos_embed.W_pos):
            nn.init.trunc_normal_(p, std=0.02)
        return model
    if arch == "vgg":
        return VGG(
            s["image_size"], s["d_model"], s["n_layers"], s["convs_per_stage"], s["hidden"], s["n_classes"]
        )
    raise UserError(f"Unknown built-in architecture '{arch}' in the store.")


# --- loading ------------------------------------------------------------------------------


@dataclass
class LoadedVision:
    model: nn.Module
    names: VisionNames
    info: dict  # JSON-serialisable provenance (the run's `model` attrs)


def load_classifier(m, *, seed: int, image_size: int, patch_size: int, n_classes: int) -> LoadedVision:
    """A built-in classifier (vit-tiny, vgg-small; "tiny" is vit-tiny) or a Hugging Face
    ``AutoModelForImageClassification`` by hub id or path (pretrained, or random init of its config)."""
    name = "vit-tiny" if m.name == "tiny" else m.name
    if name in VIT_PRESETS or name in VGG_PRESETS:
        if m.init == "pretrained":
            raise UserError(
                f"'{name}' is built here from config and has no pretrained weights; use --init pythia "
                "(its default initialisation) or normal, or give a hub id / path of a pretrained classifier."
            )
        spec = builtin_spec(
            _named(m, name), image_size=image_size, patch_size=patch_size, n_classes=n_classes
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_from_spec(spec)
            scheme = (
                init_normal_(model)
                if m.init == "normal"
                else "PyTorch default (ViT: class/position tokens N(0, 0.02))"
            )
        info = dict(kind="builtin", spec=spec, init_scheme=scheme, seed=seed)
        names = builtin_names(model)
    else:
        model, info = _hub_classifier(m, name, seed)
        names = hub_classifier_names(model)
        n_out = getattr(model.config, "num_labels", None)
        if n_out is not None and n_classes > n_out:
            raise UserError(
                f"The data has {n_classes} classes but model '{name}' predicts only {n_out}; "
                "use a model with at least as many labels or a dataset with fewer classes."
            )
    return LoadedVision(model=_finish(model, m, names, info, name), names=names, info=info)


def load_image_lm(m, *, seed: int, n_colors: int, n_positions: int) -> LoadedVision:
    """GPT-2 from a preset (random init, vocabulary = palette + a start token) or Image GPT /
    any GPT-2-layout causal model by hub id or path (pretrained or random init of its config)."""
    # lazy: transformers takes seconds to import; only this path needs it
    from transformers import GPT2Config, GPT2LMHeadModel

    if m.name in IMAGE_LM_PRESETS:
        if m.init == "pretrained":
            raise UserError(
                f"'{m.name}' is a size preset for random init; for pretrained weights give a hub id "
                "(e.g. openai/imagegpt-small) or a local path."
            )
        shape = dict(IMAGE_LM_PRESETS[m.name])
        for key, value in (("n_embd", m.d_model), ("n_layer", m.n_layers), ("n_head", m.n_heads)):
            shape[key] = value or shape[key]
        if shape["n_embd"] % shape["n_head"]:
            raise UserError(
                f"model.d_model ({shape['n_embd']}) must be divisible by model.n_heads ({shape['n_head']})."
            )
        config = GPT2Config(
            vocab_size=n_colors + 1,
            n_positions=n_positions,
            tie_word_embeddings=False,
            bos_token_id=n_colors,
            eos_token_id=n_colors,
            **shape,
        )  # untied, as Image GPT
        _zero_dropout_config(config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = GPT2LMHeadModel(config)
            scheme = init_normal_(model) if m.init == "normal" else "gpt2 default (_init_weights)"
        info = dict(kind="random", overrides={}, init_scheme=scheme, seed=seed)
    else:
        model, info = _hub_image_lm(m, seed)
        out = model.lm_head.out_features
        if out < n_colors:
            raise UserError(f"Model '{m.name}' predicts {out} colours but the palette has {n_colors}.")
        if model.config.n_positions < n_positions:
            raise UserError(
                f"Model '{m.name}' has {model.config.n_positions} positions but a document is {n_positions} "
                "tokens; lower image.image_size or image.images_per_doc."
            )
    names = gpt2_names(model)
    info["hf_config"] = model.config.to_dict()
    info["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    return LoadedVision(model=_finish(model, m, names, info, m.name), names=names, info=info)


def _named(m, name: str):
    return dataclasses.replace(m, name=name)


def _finish(model: nn.Module, m, names: VisionNames, info: dict, name: str) -> nn.Module:
    model.to(device=resolve_device(m.device), dtype=_DTYPES[m.dtype])
    model.train()
    disable_dropout(model)
    freeze_vision_blocks(model, names, m.freeze_blocks)
    info.update(
        name=name,
        revision=m.revision,
        init=m.init,
        n_params=sum(p.numel() for p in model.parameters()),
        n_embedding_params=None,
        n_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        freeze_blocks=m.freeze_blocks,
        dtype=m.dtype,
        device=str(next(model.parameters()).device),
    )
    return model


def freeze_vision_blocks(model: nn.Module, names: ModelNames, n: int) -> None:
    """Freeze the input side (``embed``, ``pos_embed``) and blocks 0..n-1 (paper Sec. 3.3)."""
    if n < 0 or n > names.n_blocks:
        raise UserError(
            f"model.freeze_blocks must be in [0, {names.n_blocks}] "
            f"(the model has {names.n_blocks} blocks), got {n}."
        )
    if n == 0:
        return
    for component in ["embed", "pos_embed", *[f"blocks.{i}" for i in range(n)]]:
        if component in names.components:
            model.get_submodule(names.components[component]).requires_grad_(False)


def _hub_classifier(m, name: str, seed: int):
    # lazy: transformers takes seconds to import; only this path needs it
    from transformers import AutoConfig, AutoModelForImageClassification

    if name in IMAGE_LM_PRESETS:
        raise UserError(
            f"'{name}' is an image-lm preset; image-classification takes vit-tiny, vgg-small "
            "or a hub id or path."
        )
    source = _source(name, m.revision)
    with _loading_errors(name, m.revision):
        config = AutoConfig.from_pretrained(source, revision=m.revision or None)
        _zero_dropout_config(config)
        if m.init == "pretrained":
            model = AutoModelForImageClassification.from_pretrained(
                source, config=config, revision=m.revision or None
            )
            return model, dict(
                kind="pretrained", init_scheme="pretrained weights", hf_config=config.to_dict()
            )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageClassification.from_config(config)
        scheme = init_normal_(model) if m.init == "normal" else f"{config.model_type} default (_init_weights)"
    return model, dict(kind="random", init_scheme=scheme, seed=seed, hf_config=config.to_dict())


def _hub_image_lm(m, seed: int):
    # lazy: transformers takes seconds to import; only this path needs it
    from transformers import AutoConfig

    if m.name in VIT_PRESETS or m.name in VGG_PRESETS:
        raise UserError(
            f"'{m.name}' is an image-classification model; image-lm takes a preset "
            f"({', '.join(IMAGE_LM_PRESETS)}) or an Image GPT / GPT-2 hub id or path."
        )
    source = _source(m.name, m.revision)
    with _loading_errors(m.name, m.revision):
        config = AutoConfig.from_pretrained(source, revision=m.revision or None)
        _zero_dropout_config(config)
        cls = causal_image_class(config.model_type, m.name)
        if m.init == "pretrained":
            model = cls.from_pretrained(source, config=config, revision=m.revision or None)
            return model, dict(kind="pretrained", overrides={}, init_scheme="pretrained weights")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
        scheme = init_normal_(model) if m.init == "normal" else f"{config.model_type} default (_init_weights)"
    return model, dict(kind="random", overrides={}, init_scheme=scheme, seed=seed)


def causal_image_class(model_type: str, name: str):
    """The model class of a causal image model: Image GPT or GPT-2 (nothing from a model's own code)."""
    # lazy: transformers takes seconds to import; only this path needs it
    from transformers import GPT2LMHeadModel, ImageGPTForCausalImageModeling

    classes = {"imagegpt": ImageGPTForCausalImageModeling, "gpt2": GPT2LMHeadModel}
    if model_type not in classes:
        raise UserError(
            f"Model '{name}' is a '{model_type}' model; image-lm takes Image GPT or GPT-2 models "
            f"(or a preset: {', '.join(IMAGE_LM_PRESETS)})."
        )
    return classes[model_type]


def _source(name: str, revision: str = "") -> str:
    """A local folder's path, or the hub id once it is known to be cached or reachable (fails in one
    sentence within seconds offline, instead of the hub client's retries)."""
    path = Path(name).expanduser()
    if looks_like_path(name) and not path.exists():
        raise UserError(f"Model path '{name}' does not exist.")
    if path.exists():
        return str(path)
    check_hub_model(name, revision)
    return name


class _loading_errors:
    """transformers' loading errors as one sentence."""

    def __init__(self, name: str, revision: str):
        self.name, self.revision = name, revision

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or not isinstance(exc, (OSError, ValueError)):
            return False

        if isinstance(exc, OSError) and not Path(self.name).expanduser().exists():
            at = f" at revision '{self.revision}'" if self.revision else ""
            raise UserError(
                f"Model '{self.name}'{at} was not found locally and is not a built-in model; a hub id needs "
                "network access or a local Hugging Face cache that holds it."
            ) from None
        raise UserError(f"Could not load model '{self.name}': {' '.join(str(exc).split())}") from None


def vision_model_from_info(info: dict, cfg, *, causal: bool) -> nn.Module:
    """The run's architecture from the store's ``model`` info — a built-in spec, or a Hugging Face
    config with a fixed class (never a model's own code): a causal image model when ``causal``
    (image-lm), else a classifier — frozen and dropout-free as the run's was. Its weights come from
    a checkpoint after."""
    # lazy: transformers takes seconds to import; only this path needs it
    from transformers import AutoConfig, AutoModelForImageClassification

    if info.get("kind") == "builtin":
        model = build_from_spec(info["spec"])
        names = builtin_names(model)
    else:
        hf_config = dict(info["hf_config"])
        model_type = hf_config.pop("model_type")
        drop = ("architectures", "transformers_version", "auto_map")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = AutoConfig.for_model(model_type, **{k: v for k, v in hf_config.items() if k not in drop})
        if causal:
            model = causal_image_class(model_type, info.get("name", model_type))(config)
            names = gpt2_names(model)
        else:
            model = AutoModelForImageClassification.from_config(config)
            names = hub_classifier_names(model)
    disable_dropout(model)
    freeze_vision_blocks(model, names, cfg.model.freeze_blocks)
    return model
