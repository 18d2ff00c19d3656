"""The run configuration: one dataclass with nested sections, every field defaulted.

Sources, in rising precedence: defaults < TOML file < ``--key value`` flags. A flag may name
a field by its full dotted path (``--optim.lr``) or by its leaf name when that is unique
(``--lr``). Unknown keys are an error naming the closest valid key.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import hashlib
import inspect
import json
import re
import textwrap
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from arprobe.errors import UserError
from arprobe.tasks.registry import task_class
from arprobe.trainer.loggers import parse_report_to
from arprobe.values import flatten, parse_bool


@dataclass
class DataConfig:
    source: str = "pydoc"  # "pydoc" (embedded), a .txt/.jsonl file, a folder, a save_to_disk folder, a hub id
    n_docs: int = 10  # T: documents in the cycle
    context_length: int = 64  # C: tokens kept per document (first C; shorter ones are padded)
    field: str = "text"  # text field for JSONL and datasets (CNN/DailyMail: "article")
    hf_config: str = ""  # dataset config name for hub datasets ("3.0.0", "wikitext-103-raw-v1")
    split: str = "train"  # dataset split
    min_tokens: int = 16  # documents with fewer real tokens are dropped before sampling
    tokenizer: str = (
        "auto"  # "auto": the model's own, or "bpe" for a preset; "bpe": trained on the docs; a hub id/path
    )
    vocab_size: int = 4096  # vocabulary of the trained BPE tokenizer
    mask_prob: float = 0.0  # p: probability of replacing each input token with the mask token (Sec. 3.3)
    max_shift: int = 0  # S: each training window moves by a random s in [-S, +S] tokens (Sec. 3.3)


@dataclass
class ModelConfig:
    name: str = (
        "tiny"  # a size preset ("tiny": d256 L4 H4; pythia-14m ... pythia-2.8b), a hub id, or a local path
    )
    init: str = "pythia"  # "pretrained" (weights from name), "pythia" (Pythia init) or "normal" (N(0, 0.02))
    revision: str = ""  # hub revision, e.g. "step143000" for Pythia's intermediate checkpoints
    d_model: int = 0  # width override for random init (0: keep the preset's)
    n_layers: int = 0  # depth override for random init (0: keep the preset's)
    n_heads: int = 0  # attention-head override for random init (0: keep the preset's)
    freeze_blocks: int = 0  # B: freeze the embedding and the first B transformer blocks (Sec. 3.3)
    trust_remote_code: bool = False  # let transformers run code shipped with a hub model
    dtype: str = "float32"  # parameter dtype: float32 | bfloat16 | float16
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
    autocast: str = "off"  # "bfloat16": forwards under bf16 autocast, float32 weights and optimizer (GPU)
    compile: bool = False  # torch.compile the training forward: faster steps after a 1-2 min compile
    tf32: bool = True  # CUDA: float32 matmuls and convolutions on TF32 tensor cores (CPU runs: no effect)


@dataclass
class OptimConfig:
    name: str = "adam"  # "adam" or "sgd" (the paper's vanilla gradient descent)
    lr: float = 1e-3  # peak learning rate (paper: 1e-3 for SGD, 1e-5 for Adam on pretrained models)
    lr_schedule: str = "constant"  # "constant" or "cosine" (over all steps, down to min_lr; App. B.6)
    min_lr: float = 0.0  # floor of the cosine schedule
    reset_per_doc: bool = True  # reset the optimizer state at the start of every episode (paper)
    weight_decay: float = 0.0  # decoupled for Adam, L2 for SGD; never on biases or LayerNorm weights
    grad_clip: float = 0.0  # clip the global gradient norm to this value (0: off)


@dataclass
class ScheduleConfig:
    order: str = "cyclic"  # "cyclic", "shuffle", "partial-shuffle" (App. B.1) or "insert" (App. B.7)
    steps_per_doc: int = 10  # M: gradient steps on one document in a row (batch size 1)
    epochs: int = 4  # E: passes over the sequence
    shuffle_until: int = 0  # partial-shuffle: documents 2..N are re-shuffled each epoch (0: N = T)
    repeat_docs: int = 0  # insert: the first R documents repeat each epoch (0: R = T // 2)
    insert_min: int = 1  # insert: fewest one-off documents inserted after the repeating block
    insert_max: int = 3  # insert: most one-off documents inserted after the repeating block


@dataclass
class RecordConfig:
    weights: list[str] = field(
        default_factory=lambda: ["unembed"]
    )  # parameter groups snapshotted (TransformerLens names)
    weights_every: int = 1  # snapshot weights every N episodes (0: never)
    grads: list[str] = field(
        default_factory=lambda: ["blocks.mid.attn"]
    )  # layers whose per-document gradients are recorded ("mid": middle block)
    grads_at: str = (
        "epoch"  # when per-document gradients are recorded: "epoch" (end of each), "end" or "never"
    )
    activations: list[str] = field(
        default_factory=lambda: ["ln_final.hook_normalized"]
    )  # TransformerLens hook names captured
    activation_docs: list[int] = field(
        default_factory=lambda: [0]
    )  # documents (0-based) whose activations are captured
    activations_every: int = 1  # capture activations every N episodes (0: never)
    checkpoints: str = (
        "probes"  # full checkpoints: "probes" (end of epoch E-1, pairwise_recovery's), "epoch", "none", N
    )
    resume_every: str = "auto"  # auto (every episode < 200 MB, else every epoch), episode, epoch, N (0: off)
    all_weights_dim: int = (
        65536  # weights/all: every parameter as one count-sketch of this size, every episode (0: off)
    )
    sketch_dim: int = (
        131072  # weights/grads over 2*sketch_dim values: a seeded count-sketch of this size (0: exact)
    )


@dataclass
class ImageConfig:
    image_size: int = 16  # side of every image after resizing (digits: upsampled from 8x8)
    resize: int = 0  # shorter side resized to this, then centre crop (paper A.3: 256, 224); 0: straight
    images_per_doc: int = 0  # images per document (0: image-lm 1, image-classification 32, the paper's)
    n_colors: int = 16  # image-lm palette size: k-means colour clusters of the run's images (Image GPT: 512)
    patch_size: int = 4  # vit-tiny patch side (image_size must be a multiple)
    hflip_prob: float = 0.0  # flip each training image horizontally with this probability (off)
    crop_pad: int = 0  # image-classification: shift each training image by up to this many pixels (off)
    image_field: str = ""  # image column of a dataset (empty: the first column of images)
    label_field: str = ""  # label column of a dataset (empty: the first class-label column, or label)


# The largest seed: torch and numpy's Generator take 64 bits, but the image tasks' k-means palette
# (scikit-learn's random_state) and the released code's numpy.random.seed take only 32.
MAX_SEED = 2**32 - 1


@dataclass
class RunConfig:
    name: str = ""  # run name; the store goes to <out>/<name>/run.h5 (empty: derived from the config)
    out: str = "runs"  # folder that holds runs
    seed: int = (
        0  # seeds sampling, schedule, init and data randomness; 0 .. 2**32-1 (every generator takes it)
    )
    task: str = "text-lm"  # what is trained: text-lm, image-lm, image-classification (Sec. 3.4) or a plugin
    threads: int = 0  # torch CPU threads (0: the cores this process may use, from its affinity mask)
    eval_batch_size: int = 0  # documents per forward pass of the eval matrix (0: about 16k tokens per batch)
    compat: str = "arprobe"  # "authors": sample, tokenise, resize and decay as the released code (README)
    control: str = ""  # "shuffle": also train the matched shuffled control (same seed) into <run>/control/
    report_to: str = ""  # live loggers, comma-separated: tensorboard, wandb, mlflow (each an optional extra)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    image: ImageConfig = field(default_factory=ImageConfig)  # image tasks (also data.source, n_docs, split)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / (self.name or default_run_name(self))


# Short forms of the options most often varied, for run names; others use their leaf name.
_SHORT = {
    "task": "",
    "optim.name": "",
    "compat": "",
    "control": "control",
    "optim.lr": "lr",
    "optim.lr_schedule": "",
    "optim.min_lr": "minlr",
    "optim.reset_per_doc": "reset",
    "optim.weight_decay": "wd",
    "optim.grad_clip": "clip",
    "model.name": "",
    "model.init": "init",
    "model.d_model": "d",
    "model.n_layers": "L",
    "model.n_heads": "H",
    "model.freeze_blocks": "freeze",
    "model.revision": "",
    "model.dtype": "",
    "data.mask_prob": "mask",
    "data.max_shift": "shift",
    "data.source": "data",
    "data.vocab_size": "V",
    "data.min_tokens": "min",
    "schedule.shuffle_until": "N",
    "schedule.repeat_docs": "R",
    "schedule.insert_min": "imin",
    "schedule.insert_max": "imax",
}
# Keys that never change what is trained, or are already in the name's fixed part.
_NOT_IN_NAME = {
    "name",
    "out",
    "report_to",
    "seed",
    "threads",
    "eval_batch_size",
    "model.device",
    "schedule.order",
    "data.n_docs",
    "data.context_length",
    "schedule.steps_per_doc",
    "schedule.epochs",
}
_MAX_NAME = 80
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def default_run_name(cfg: RunConfig) -> str:
    """``<order>-T<T>-C<C>-M<M>-E<E>[-<option><value>...]-s<seed>``: every training option that
    differs from the default, in short form; a short hash of them when that would be too long."""
    base = (
        f"{cfg.schedule.order}-T{cfg.data.n_docs}-C{cfg.data.context_length}"
        f"-M{cfg.schedule.steps_per_doc}-E{cfg.schedule.epochs}"
    )
    changed = {
        k: v
        for k, v in flatten(cfg.to_dict()).items()
        if k not in _NOT_IN_NAME and not k.startswith("record.")
    }
    defaults = flatten(RunConfig().to_dict())
    changed = {k: v for k, v in changed.items() if v != defaults[k]}
    parts = [f"{_SHORT.get(k, k.split('.')[-1])}{_short_value(v)}" for k, v in sorted(changed.items())]
    name = "-".join([base, *parts])
    if len(name) > _MAX_NAME:
        digest = hashlib.sha1(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]
        name = f"{base}-{digest}"
    return f"{name}-s{cfg.seed}"


def _short_value(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value).rstrip("/").split("/")[-1]  # a hub id or path: its last part
    return "".join(c if c.isalnum() or c in ".+" else "_" for c in text)


def training_differences(a: dict, b: dict) -> list[str]:
    """``key: a vs b`` for every option two stored configs train differently with."""
    # Through the config class: a store written before a key existed has that key's default.
    fa, fb = flatten(config_from_dict(a).to_dict()), flatten(config_from_dict(b).to_dict())
    skip = {"name", "out", "threads", "eval_batch_size", "model.device", "report_to"}
    return [
        f"{k}: {fa.get(k)!r} vs {fb.get(k)!r}"
        for k in sorted(set(fa) | set(fb))
        if k not in skip and fa.get(k) != fb.get(k)
    ]


# --- keys -------------------------------------------------------------------------------


def _fields(cls) -> dict[str, dataclasses.Field]:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        f.type = hints[f.name]
        out[f.name] = f
    return out


def _is_section(tp) -> bool:
    return dataclasses.is_dataclass(tp)


def all_keys() -> dict[str, type]:
    """Every settable dotted key and its type: {"optim.lr": float, "seed": int, ...}."""
    keys: dict[str, type] = {}
    for name, f in _fields(RunConfig).items():
        if _is_section(f.type):
            for sub, sf in _fields(f.type).items():
                keys[f"{name}.{sub}"] = sf.type
        else:
            keys[name] = f.type
    return keys


def resolve_key(key: str) -> str:
    """Map a full or leaf key ("lr", "optim.lr", "n-docs") to its dotted path, or raise."""
    key = key.replace("-", "_")
    keys = all_keys()
    if key in keys:
        return key
    leaves = [k for k in keys if k.split(".")[-1] == key]
    if len(leaves) == 1:
        return leaves[0]
    if len(leaves) > 1:
        raise UserError(f"Option '{key}' is ambiguous: use one of {', '.join(leaves)}.")
    candidates = list(keys) + [k.split(".")[-1] for k in keys]
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise UserError(f"Unknown option '{key}'.{hint} See `arprobe run --help-config` for every option.")


def _coerce(value, tp, key: str):
    origin = typing.get_origin(tp)
    try:
        if origin in (list, types.GenericAlias) or origin is list:
            (item_tp,) = typing.get_args(tp)
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()] if value.strip() else []
            return [_coerce(v, item_tp, key) for v in value]
        if tp is bool:
            return value if isinstance(value, bool) else parse_bool(value)
        if isinstance(value, bool) and tp in (int, float, str):
            raise ValueError  # TOML true is not the number 1
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value.strip())
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        pass
    else:
        raise AssertionError(f"unsupported config type {tp} for {key}")
    raise UserError(f"Option '{key}' expects {getattr(tp, '__name__', str(tp))}, got {value!r}.")


def set_key(cfg: RunConfig, key: str, value) -> None:
    path = resolve_key(key)
    tp = all_keys()[path]
    target = cfg
    *sections, leaf = path.split(".")
    for s in sections:
        target = getattr(target, s)
    setattr(target, leaf, _coerce(value, tp, path))


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> RunConfig:
    """Build a RunConfig from defaults, an optional TOML file, then key/value overrides."""
    cfg = RunConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"Config file '{path}' does not exist.")
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise UserError(f"Config file '{path}' is not text (TOML is UTF-8); give a TOML file.") from None
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"Config file '{path}' is not valid TOML: {exc}.") from None
        for key, value in flatten(table).items():
            set_key(cfg, key, value)
    for key, value in (overrides or {}).items():
        set_key(cfg, key, value)
    validate(cfg)
    return cfg


def config_from_dict(table: dict) -> RunConfig:
    """Rebuild a stored (resolved) config; used when reading a run back."""
    cfg = RunConfig()
    for key, value in flatten(table).items():
        set_key(cfg, key, value)
    return cfg


def planned_episodes(cfg: RunConfig) -> int:
    """K, the episodes the config plans (an upper bound for the insert order), from the config alone."""
    s, T = cfg.schedule, cfg.data.n_docs
    if s.order == "insert":
        repeat = s.repeat_docs or T // 2
        return s.epochs * repeat + max(T - repeat, 0)  # every one-off document appears once at most
    return s.epochs * T


# Episode numbers and token positions are int32 in the store: no machine runs more than this.
MAX_INT32 = 2**31 - 1


def validate(cfg: RunConfig) -> None:
    """Range checks a user can trip; one sentence each. Long because it is a table of checks."""
    # Here, not at the top: the resume module imports torch and h5py, which `--help` need not pay for.
    from arprobe.storage.resume import check_resume_every

    d, m, o, s, r = cfg.data, cfg.model, cfg.optim, cfg.schedule, cfg.record
    checks = [
        (cfg.seed >= 0, f"seed must be a non-negative integer, got {cfg.seed}."),
        (
            cfg.seed <= MAX_SEED,
            f"seed must be at most 2**32-1 = {MAX_SEED} (scikit-learn's and numpy's legacy generators "
            f"take no more), got {cfg.seed}.",
        ),
        (
            not cfg.name or (RUN_NAME.match(cfg.name) is not None and ".." not in cfg.name),
            f"name {cfg.name!r} is not a folder name: use letters, digits and . _ + - (no / or ..).",
        ),
        (o.grad_clip >= 0, f"optim.grad_clip must be non-negative (0: off), got {o.grad_clip}."),
        (o.weight_decay >= 0, f"optim.weight_decay must be non-negative, got {o.weight_decay}."),
        (
            not r.checkpoints.isdigit() or int(r.checkpoints) >= 1,
            "record.checkpoints must be 'probes', 'epoch', 'none' or a positive number of episodes; "
            f"got '{r.checkpoints}'.",
        ),
        (d.n_docs >= 2, f"data.n_docs (T) must be at least 2, got {d.n_docs}."),
        (d.context_length >= 2, f"data.context_length (C) must be at least 2, got {d.context_length}."),
        (s.steps_per_doc >= 1, f"schedule.steps_per_doc (M) must be at least 1, got {s.steps_per_doc}."),
        (s.epochs >= 1, f"schedule.epochs (E) must be at least 1, got {s.epochs}."),
        (o.lr > 0, f"optim.lr must be positive, got {o.lr}."),
        (0.0 <= d.mask_prob < 1.0, f"data.mask_prob (p) must be in [0, 1), got {d.mask_prob}."),
        (d.max_shift >= 0, f"data.max_shift (s) must be non-negative, got {d.max_shift}."),
        (
            d.vocab_size >= 260,
            f"data.vocab_size must be at least 260 (the byte alphabet), got {d.vocab_size}.",
        ),
        (m.freeze_blocks >= 0, f"model.freeze_blocks must be non-negative, got {m.freeze_blocks}."),
        (
            min(m.d_model, m.n_layers, m.n_heads) >= 0,
            "model.d_model, n_layers and n_heads must be non-negative.",
        ),
        (o.name in ("adam", "sgd"), f"optim.name must be 'adam' or 'sgd', got '{o.name}'."),
        (
            o.lr_schedule in ("constant", "cosine"),
            f"optim.lr_schedule must be 'constant' or 'cosine', got '{o.lr_schedule}'.",
        ),
        (0 <= o.min_lr <= o.lr, f"optim.min_lr must be in [0, lr], got {o.min_lr}."),
        (
            s.order in ("cyclic", "shuffle", "partial-shuffle", "insert"),
            f"schedule.order must be one of cyclic, shuffle, partial-shuffle, insert; got '{s.order}'.",
        ),
        (cfg.control in ("", "shuffle"), f"control must be '' or 'shuffle'; got '{cfg.control}'."),
        (
            not cfg.control or s.order in ("cyclic", "partial-shuffle"),
            f"control = 'shuffle' is the matched control of a cyclic or partial-shuffle run; this run's "
            f"order is '{s.order}' (an insert order has documents a shuffle would not match).",
        ),
        (
            m.init in ("pretrained", "pythia", "normal"),
            f"model.init must be pretrained, pythia or normal; got '{m.init}'.",
        ),
        (
            m.autocast in ("off", "bfloat16"),
            f"model.autocast must be off or bfloat16; got '{m.autocast}'.",
        ),
        (
            m.dtype in ("float32", "bfloat16", "float16"),
            f"model.dtype must be float32, bfloat16 or float16; got '{m.dtype}'.",
        ),
        (
            r.grads_at in ("epoch", "end", "never"),
            f"record.grads_at must be epoch, end or never; got '{r.grads_at}'.",
        ),
        (
            r.checkpoints in ("probes", "epoch", "none") or r.checkpoints.isdigit(),
            f"record.checkpoints must be 'probes', 'epoch', 'none' or a number of episodes; "
            f"got '{r.checkpoints}'.",
        ),
        (cfg.eval_batch_size >= 0, f"eval_batch_size must be non-negative, got {cfg.eval_batch_size}."),
        (cfg.compat in ("arprobe", "authors"), f"compat must be 'arprobe' or 'authors', got '{cfg.compat}'."),
        (
            min(r.weights_every, r.activations_every, r.sketch_dim, r.all_weights_dim) >= 0,
            "record.*_every and record.sketch_dim must be non-negative.",
        ),
        (check_resume_every(r.resume_every) is None, check_resume_every(r.resume_every) or ""),
        (
            0 <= s.insert_min <= s.insert_max,
            f"schedule.insert_min must be in [0, insert_max], got {s.insert_min}.",
        ),
        (
            all(0 <= i < d.n_docs for i in r.activation_docs),
            f"record.activation_docs must be in [0, {d.n_docs - 1}].",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    validate_image(cfg)
    validate_scale(cfg)
    parse_report_to(cfg.report_to)  # a known logger whose extra is installed


def validate_scale(cfg: RunConfig) -> None:
    """Sizes no machine runs, whatever its memory (the store keeps episodes and token positions as
    int32); what this machine can hold is checked by ``plan.check_scale`` before anything is built."""
    window = cfg.data.context_length + 2 * cfg.data.max_shift
    if planned_episodes(cfg) > MAX_INT32:
        raise UserError(
            f"The run plans {planned_episodes(cfg):,} episodes (schedule.epochs x data.n_docs); a store "
            f"holds at most 2**31-1 = {MAX_INT32:,}: lower schedule.epochs."
        )
    if window > MAX_INT32:
        raise UserError(
            f"Each document window holds C + 2 * max_shift = {window:,} tokens; a store holds at most "
            f"2**31-1 = {MAX_INT32:,}: lower data.context_length or data.max_shift."
        )


def validate_image(cfg: RunConfig) -> None:
    """The task name (an installed ``arprobe.tasks`` plugin), the image section's ranges, and the
    task's own checks: options that mean nothing for it are refused."""
    # Here, not at the top: the registry reads entry points, which `--help` need not pay for.

    im = cfg.image
    task = task_class(cfg.task)  # an unknown name lists the installed tasks
    checks = [
        (im.image_size >= 2, f"image.image_size must be at least 2, got {im.image_size}."),
        (
            im.resize == 0 or im.resize >= im.image_size,
            f"image.resize must be 0 or at least image.image_size, got {im.resize}.",
        ),
        (im.images_per_doc >= 0, f"image.images_per_doc must be non-negative, got {im.images_per_doc}."),
        (2 <= im.n_colors <= 4096, f"image.n_colors must be in [2, 4096], got {im.n_colors}."),
        (im.patch_size >= 1, f"image.patch_size must be at least 1, got {im.patch_size}."),
        (0.0 <= im.hflip_prob <= 1.0, f"image.hflip_prob must be in [0, 1], got {im.hflip_prob}."),
        (im.crop_pad >= 0, f"image.crop_pad must be non-negative, got {im.crop_pad}."),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    task.validate_config(cfg)


def describe_keys() -> str:
    """One line per key with its default and comment, for --help-config, in aligned columns."""
    rows = []
    for cls, prefix in [
        (RunConfig, ""),
        (DataConfig, "data."),
        (ModelConfig, "model."),
        (OptimConfig, "optim."),
        (ScheduleConfig, "schedule."),
        (RecordConfig, "record."),
        (ImageConfig, "image."),
    ]:
        source = textwrap.dedent(inspect.getsource(cls))
        lines = source.splitlines()
        comments = {}
        # A field's comment may sit on any line of its statement (the formatter wraps long defaults).
        for node in ast.parse(source).body[0].body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                for line in lines[node.lineno - 1 : node.end_lineno]:
                    if "#" in line:
                        comments[node.target.id] = line.split("#", 1)[1].strip()
                        break
        defaults = cls()
        for f in dataclasses.fields(cls):
            value = getattr(defaults, f.name)
            if _is_section(type(value)):
                continue
            shown = ",".join(str(v) for v in value) if isinstance(value, list) else repr(value)
            rows.append((f"--{prefix}{f.name}", shown, comments.get(f.name, "")))
    key_width = max(len(k) for k, _, _ in rows)
    value_width = min(max(len(v) for _, v, _ in rows), 24)
    lines = []
    for key, value, comment in rows:
        if len(value) > value_width:  # a long default gets its own line, so the comments stay aligned
            lines.append(f"  {key:<{key_width}}  {value}")
            lines.append(f"  {'':<{key_width}}  {'':<{value_width}}  {comment}".rstrip())
        else:
            lines.append(f"  {key:<{key_width}}  {value:<{value_width}}  {comment}".rstrip())
    return "\n".join(lines)
