"""What a run will do and how much disk it needs, before it starts.

``plan(cfg)`` is the public call: the recording table, the store's bytes by part, the resume
point's bytes, the least memory and the episodes of a run, built from the config without
training. ``arprobe run --dry-run``, ``arprobe sweep --dry-run`` and the benchmarks use it.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from arprobe.errors import UserError
from arprobe.storage import StoreLayout
from arprobe.storage.recordings import Recording, sizes_by_kind
from arprobe.storage.schema import allocated_bytes
from arprobe.tasks.registry import task_class
from arprobe.trainer.config import planned_episodes

# HDF5's own bytes: object headers, chunk indexes and attributes, per dataset and per file.
_METADATA_PER_DATASET = 4 << 10
_METADATA_PER_FILE = 128 << 10


def estimate_store_bytes(layout: StoreLayout, setup) -> dict[str, int]:
    """Bytes per part of the finished store, an upper bound: every dataset in whole chunks, as HDF5
    allocates them (tested against real stores of several shapes). Snapshot kinds are parts of
    their own, in the recording table's order."""
    K = len(setup.schedule)
    T, M, L = layout.n_docs, layout.steps_per_doc, len(layout.layer_names)
    f4 = 4
    recorded = sizes_by_kind([r for r in layout.recordings if r.kind != "checkpoints"])
    n_checkpoints = sum(len(r.episodes) for r in layout.recordings if r.kind == "checkpoints")
    state_shapes = [*layout.param_shapes.values(), *layout.optim_shapes.values()]
    docs = setup.task.store_arrays()
    losses = [(T,), (M,), (M, L), (M,), (), ()]  # eval, train, grad_norm, lr, schedule doc and epoch
    n_datasets = len(losses) + 2 * len(layout.recordings) + len(state_shapes) + 8
    parts = {
        "losses and stats": sum(allocated_bytes(shape, f4, K + 1) for shape in losses),
        "docs": sum(a.nbytes for a in docs.values()) + sum(len(t.encode()) + 16 for t in setup.texts) + 8 * K,
        **recorded,
        "checkpoints": sum(allocated_bytes(shape, f4, n_checkpoints) for shape in state_shapes)
        if n_checkpoints
        else 0,
        "metadata": _METADATA_PER_FILE + _METADATA_PER_DATASET * n_datasets,
    }
    parts["total"] = sum(parts.values())
    # The resume point beside the store while the run goes (twice while one replaces the other);
    # deleted when the run completes, so not in the store's total.
    parts["resume"] = 2 * f4 * sum(math.prod(shape) for shape in state_shapes) if layout.resume else 0
    parts["per_episode"] = parts["total"] // max(K, 1)
    return parts


@dataclass
class Plan:
    """What a run of one config will do and take, from ``plan(cfg)``: nothing trained or written."""

    episodes: int  # K, episodes the schedule plans
    recordings: list[Recording]  # the run's recording table, in the order the store is written
    sizes: dict[str, int]  # store bytes by part ("weights", "grads", ..., "total"), an upper bound
    memory: dict[str, tuple[int, str]]  # {part: (bytes, what sets them)}: the least memory (minimum_memory)
    n_params: int  # parameters of the model
    text: str  # the plan as `arprobe run --dry-run` prints it

    @property
    def store_bytes(self) -> int:
        """Bytes of the finished store."""
        return self.sizes["total"]

    @property
    def resume_bytes(self) -> int:
        """Bytes of the resume point beside the store while the run goes (0 without one)."""
        return self.sizes["resume"]

    @property
    def memory_bytes(self) -> int:
        return sum(size for size, _ in self.memory.values())


def plan(cfg, readers: Callable[[list], dict[str, list[str]]] | None = None) -> Plan:
    """The plan of a run of ``cfg``: data, tokenizer and model are built (to count parameters and
    shapes), nothing is trained or written. Raises UserError for a run this machine cannot hold.
    ``readers(recordings)``: {recording key: the probes that read it}, shown in the text (the CLI
    passes the probe registry's answer: the trainer does not know probes)."""
    # here: the loop imports this module's checks at its top, and `arprobe info` this module
    from arprobe.trainer.loop import prepare
    from arprobe.trainer.recorders import Recorder

    check_scale(cfg)
    setup = prepare(cfg)
    recorder = Recorder(setup.model, setup.names, setup.task, setup.cfg, setup.schedule, setup.device)
    layout = store_layout(setup, recorder)
    sizes = estimate_store_bytes(layout, setup)
    return Plan(
        episodes=len(setup.schedule),
        recordings=list(layout.recordings),
        sizes=sizes,
        memory=minimum_memory(cfg),
        n_params=int(setup.model_info.get("n_params", 0)),
        text=format_plan(setup, layout, sizes, readers(layout.recordings) if readers else {}),
    )


def store_layout(setup, recorder) -> StoreLayout:
    """Shapes of everything a run of ``setup`` writes, with ``recorder``'s recording table."""
    import torch  # here: `arprobe info` imports this module and needs no torch

    from arprobe.trainer.checkpoints import keeps_optimizer_state, optimizer_shapes

    return StoreLayout(
        n_docs=setup.cfg.data.n_docs,
        steps_per_doc=setup.cfg.schedule.steps_per_doc,
        layer_names=recorder.layer_names,
        recordings=recorder.table,
        planned_doc=setup.schedule.doc,
        planned_epoch=setup.schedule.epoch,
        param_shapes={n: tuple(p.shape) for n, p in setup.model.named_parameters()},
        optim_shapes=optimizer_shapes(setup.model, keeps_optimizer_state(setup.cfg)),
        rng_bytes=len(torch.Generator().get_state()),
        resume=setup.cfg.record.resume_every > 0,
    )


# Per-object bytes numpy spends besides the values: the loop keeps each eval row as its own array,
# and the schedule is drawn one epoch array at a time.
_NUMPY_ARRAY_BYTES = 112


def minimum_memory(cfg) -> dict[str, tuple[int, str]]:
    """{part: (bytes, what sets them)} of the memory the run needs at the least, from the config
    alone (nothing is allocated): what it keeps per episode and per token, not the model."""
    T, C, S = cfg.data.n_docs, cfg.data.context_length, cfg.data.max_shift
    K, E = planned_episodes(cfg), cfg.schedule.epochs
    parts = {
        # float32 rows [T], one array each; doc and epoch per episode, drawn one epoch at a time
        "the eval matrix": ((K + 1) * (4 * T + _NUMPY_ARRAY_BYTES), f"{K:,} episodes x T={T}"),
        "the schedule": (24 * K + 2 * _NUMPY_ARRAY_BYTES * E, f"{K:,} episodes"),
    }
    if not task_class(cfg.task).keeps_token_windows:
        return parts
    parts["the token windows"] = (
        12 * T * (C + 2 * S),
        f"T={T} x (C + 2 x max_shift) = {T * (C + 2 * S):,} tokens",
    )
    preset = _preset_shape(cfg.model)
    bpe = cfg.data.tokenizer == "bpe" or (cfg.data.tokenizer == "auto" and preset is not None)
    vocab = cfg.data.vocab_size if bpe else 260  # 260: the least a tokenizer has (the bytes and a few)
    parts["one forward's logits"] = (4 * C * vocab, f"C={C:,} x vocab {vocab:,}")
    if preset is not None:  # autograd keeps every block's input [C, d_model] for the backward pass
        d, L = preset
        parts["one step's activations"] = (4 * C * d * (L + 1), f"C={C:,} x d_model {d} x {L + 1} layers")
    return parts


def _preset_shape(m) -> tuple[int, int] | None:
    """(d_model, n_layers) of a randomly initialised size preset, overrides applied; None otherwise."""
    from arprobe.models.text import PYTHIA_PRESETS  # here: `arprobe info` imports this module

    preset = PYTHIA_PRESETS.get(m.name)
    if preset is None or m.init == "pretrained":
        return None
    return m.d_model or preset["hidden_size"], m.n_layers or preset["num_hidden_layers"]


def minimum_store_bytes(cfg) -> int:
    """Bytes the finished store holds at the least, from the config alone: the losses, stats and
    schedule of every episode, the weights/all sketch and the token windows."""
    T, M, K = cfg.data.n_docs, cfg.schedule.steps_per_doc, planned_episodes(cfg)
    per_episode = (
        4 * T + 12 * M + 16 + 4 * cfg.record.all_weights_dim
    )  # eval row, train/lr/grad_norm, schedule
    tokens = (
        4 * cfg.data.n_docs * (cfg.data.context_length + 2 * cfg.data.max_shift)
        if task_class(cfg.task).keeps_token_windows
        else 0
    )
    return K * per_episode + tokens


def machine_memory_bytes() -> int:
    """The memory this process may use: the machine's, or its control group's limit when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()  # cgroup v2; "max" when unset
        total = min(total, int(limit))
    except (OSError, ValueError):
        pass
    return total


# What to lower when a part does not fit.
_LOWER = {
    "the eval matrix": "schedule.epochs or data.n_docs",
    "the schedule": "schedule.epochs or data.n_docs",
    "the token windows": "data.context_length, data.max_shift or data.n_docs",
    "one forward's logits": "data.context_length",
    "one step's activations": "data.context_length",
}


def check_scale(cfg, run_dir: Path | None = None) -> None:
    """Refuse, before anything is allocated, a run this machine cannot hold: its least memory
    (``minimum_memory``) against the machine's, and (when ``run_dir`` is given) its least store
    against the free disk. Arithmetic on the config only: instant."""
    memory, parts = machine_memory_bytes(), minimum_memory(cfg)
    need = sum(size for size, _ in parts.values())
    if need > memory:
        biggest = max(parts, key=lambda p: parts[p][0])
        size, what = parts[biggest]
        raise UserError(
            f"The run needs at least {human_bytes(need)} of memory ({human_bytes(size)} for {biggest}, "
            f"{what}) but this machine has {human_bytes(memory)}; lower {_LOWER[biggest]}."
        )
    if run_dir is None:
        return
    folder = Path(run_dir)
    while not folder.exists():
        folder = folder.parent
    free, need = shutil.disk_usage(folder).free, minimum_store_bytes(cfg)
    replaced = Path(run_dir) / "run.h5"  # --overwrite: its bytes come back
    if need > free + (replaced.stat().st_size if replaced.exists() else 0):
        raise UserError(
            f"The store of {planned_episodes(cfg):,} episodes needs at least {human_bytes(need)} but only "
            f"{human_bytes(free)} is free under '{folder}'; lower schedule.epochs, record.all_weights_dim "
            "or data.context_length, or use another --out."
        )


def check_disk_space(run_dir: Path, estimate: dict[str, int]) -> None:
    """Refuse to start a run whose store cannot fit on the disk (with 5% to spare)."""
    folder = Path(run_dir)
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    existing = (Path(run_dir) / "run.h5").stat().st_size if (Path(run_dir) / "run.h5").exists() else 0
    need = int(estimate["total"] + estimate.get("resume", 0))  # an upper bound already
    if need > free + existing:
        raise UserError(
            f"The store needs about {human_bytes(need)} but only {human_bytes(free)} is free under "
            f"'{folder}'; free space, record less (record.weights_every, record.checkpoints, "
            "record.sketch_dim) or use another --out."
        )


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def data_note(setup) -> str:
    """How many documents were dropped as too short and how many are padded to C."""
    if getattr(setup.task, "data_note", None):  # a task whose documents are not text says what they are
        return setup.task.data_note
    C = setup.cfg.data.context_length
    padded = int((setup.task.eval_lengths.cpu().numpy() < C).sum())
    return (
        f"{setup.n_dropped} candidate(s) under data.min_tokens={setup.cfg.data.min_tokens} tokens dropped, "
        f"{padded} of {len(setup.texts)} chosen document(s) shorter than C and padded"
    )


def format_plan(setup, layout: StoreLayout, estimate: dict[str, int], enabled: dict[str, list[str]]) -> str:
    """The run plan a person checks before spending GPU hours."""
    cfg, schedule = setup.cfg, setup.schedule
    K, E, M = len(schedule), schedule.n_epochs, cfg.schedule.steps_per_doc
    info = setup.model_info
    order = schedule.doc[: min(K, 12)].tolist()
    lines = [
        f"run:      {cfg.run_dir / 'run.h5'}",
        f"model:    {info.get('kind')} {info.get('name')} ({parameter_split(info)}, init {info.get('init')}) "
        f"on {setup.device}, {setup.threads} torch thread(s)",
        f"data:     {setup.data_provenance}; T={cfg.data.n_docs}, C={cfg.data.context_length}; "
        f"{data_note(setup)}",
        f"schedule: {cfg.schedule.order}, E={E}, M={M}: {K} episodes, {K * M} gradient steps, "
        f"{K + 1} eval rows of {cfg.data.context_length * cfg.data.n_docs} tokens; "
        f"first episodes train docs {order}{' ...' if K > 12 else ''}",
        f"optim:    {cfg.optim.name} lr {cfg.optim.lr:g} ({cfg.optim.lr_schedule}), state "
        f"{'reset per document' if cfg.optim.reset_per_doc else 'kept'}",
        "recordings:",
    ]
    for r in layout.recordings:
        lines.append(
            f"  {r.key:<34} {r.when}: {len(r.episodes)} x {list(r.row_shape)}"
            + (" (sketch)" if r.sketch else "")
            + (f" -> {', '.join(enabled[r.key])}" if enabled.get(r.key) else "")
        )
    lines.append("store estimate:")
    for part, size in estimate.items():
        if part not in ("total", "per_episode", "resume") and size:
            lines.append(f"  {part:<17} {human_bytes(size)}")
    total, per = human_bytes(estimate["total"]), human_bytes(estimate["per_episode"])
    lines.append(f"  {'total':<17} {total} ({per} per episode)")
    if estimate.get("resume"):
        lines.append(
            f"  while running: up to {human_bytes(estimate['resume'])} more in run.resume.h5 beside it "
            "(the resume point; deleted when the run completes)"
        )
    return "\n".join(lines)


def parameter_split(info: dict) -> str:
    """ "5.30M params: 4.25M non-embedding + 1.05M embedding (input and output), 5.30M trainable"."""
    n, emb = info.get("n_params", 0), info.get("n_embedding_params")
    trainable = f"{info.get('n_trainable', 0) / 1e6:.2f}M trainable"
    if emb is None:
        return f"{n / 1e6:.2f}M params, {trainable}"
    return (
        f"{n / 1e6:.2f}M params: {(n - emb) / 1e6:.2f}M non-embedding + {emb / 1e6:.2f}M embedding "
        f"(input and output), {trainable}"
    )
