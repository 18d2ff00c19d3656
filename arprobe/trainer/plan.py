"""What a run will do, how much memory, disk and time it needs, before it starts.

``plan(cfg)`` is the public call: the recording table, the store's bytes by part, the resume
point's bytes and writes, the device memory by part (``trainer.memory``, from shapes on the meta
device: no weights are loaded or initialised, so a 2.8B plan takes seconds), the time by part
(``trainer.rates``: measured on this machine's device, or a datasheet's with ``plan_device``) and
the episodes of a run, built from the config without training. ``arprobe run --dry-run``,
``arprobe sweep --dry-run`` and the benchmarks use it. ``check_scale`` refuses, before anything
is allocated, a run whose memory or store cannot fit.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from arprobe.errors import UserError
from arprobe.models.hub import check_hub_model, looks_like_path, resolve_ladder_name
from arprobe.storage import StoreLayout
from arprobe.storage.recordings import Recording, sizes_by_kind
from arprobe.storage.resume import resolved_policy, resume_write_plan, resumes
from arprobe.storage.schema import allocated_bytes
from arprobe.tasks.registry import task_class
from arprobe.trainer import memory
from arprobe.trainer.config import planned_episodes
from arprobe.trainer.memory import ModelShape, human_bytes

if TYPE_CHECKING:
    from arprobe.trainer.rates import Rate

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
    shape: ModelShape | None = None  # what memory and time depend on (None: not a model it can count)
    device: str = ""  # where the run would train: "cuda:0", "cpu", or a --plan-device name
    device_memory: dict[str, tuple[int, str]] | None = None  # {part: (bytes, what)} on that device
    free_bytes: int = 0  # free memory of that device (a datasheet's, less a CUDA reserve, for another)
    refusal: str = ""  # the sentence refusing a run that does not fit; "" when it fits
    times: dict[str, float] | None = None  # seconds by part (rates.time_estimate)
    rate: Rate | None = None  # the matmul rate the times assume
    resume_write: tuple[int, int] = (0, 0)  # (bytes of one resume write, writes per run)
    resume_when: str = ""  # when the resume point is written, in words
    steps_per_doc: int = 0  # M
    pairwise_batch: int = 0  # pairwise_recovery's replays at once on that device (batch -1 on a GPU)

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

    @property
    def peak_device_bytes(self) -> int:
        """The most device memory in use at once (``memory.peak_bytes``); 0 when not counted."""
        return memory.peak_bytes(self.device_memory) if self.device_memory else 0


def plan(
    cfg, readers: Callable[[list], dict[str, list[str]]] | None = None, *, plan_device: str = ""
) -> Plan:
    """The plan of a run of ``cfg``: data and tokenizer are built, the model only on the meta device
    (shapes, no values), nothing is trained or written. Raises UserError for a run whose host
    memory or store this machine cannot hold; a run that does not fit its device gets
    ``Plan.refusal`` (the dry-run prints the plan, then refuses). ``plan_device``: a name of
    ``rates.DATASHEETS`` to plan for that GPU instead of this machine's device ("cpu": this CPU).
    ``readers(recordings)``: {recording key: the probes that read it}, shown in the text (the CLI
    passes the probe registry's answer: the trainer does not know probes)."""
    # here: the loop imports this module's checks at its top, and `arprobe info` this module (no torch)
    from arprobe.models.text import weightless
    from arprobe.trainer import rates

    # lazy: import cycle (arprobe.trainer.loop imports this module)
    from arprobe.trainer.loop import prepare

    # lazy: pulls in torch, which importing this module does not need
    from arprobe.trainer.recorders import Recorder

    check_scale(cfg, device_check=False)  # the device check is below, from the model built here
    if plan_device and plan_device != "cpu":
        rates.datasheet(plan_device)  # an unknown name is refused before any work
    with weightless():
        setup = prepare(cfg)
    recorder = Recorder(setup.model, setup.names, setup.task, setup.cfg, setup.schedule, setup.device)
    layout = store_layout(setup, recorder)
    sizes = estimate_store_bytes(layout, setup)
    planned = Plan(
        episodes=len(setup.schedule),
        recordings=list(layout.recordings),
        sizes=sizes,
        memory=minimum_memory(cfg),
        n_params=int(setup.model_info.get("n_params", 0)),
        text="",
    )
    if setup.model_info.get("weightless"):  # a model built on the meta device: its shapes are known
        _plan_device(planned, cfg, setup, ModelShape.of(setup.model, cfg), plan_device)
    planned.text = format_plan(setup, layout, sizes, readers(layout.recordings) if readers else {})
    if planned.device_memory is not None:
        planned.text += "\n" + format_device_plan(planned)
    return planned


def _plan_device(planned: Plan, cfg, setup, shape: ModelShape, plan_device: str) -> None:
    """Fill ``planned``'s device memory, refusal, resume writes and times."""
    from arprobe.trainer import rates  # here: torch, which `arprobe info` does without

    grad_values = max((_full_dim(r) for r in planned.recordings if r.kind == "grads"), default=0)
    device, free = planned_free_memory(setup.device, plan_device)
    held = memory.state_bytes(shape, cfg)
    # the recorder sizes its chunk the same way when the first per-document gradients are taken
    chunk = (
        memory.grad_chunk_that_fits(cfg, shape, grad_values, free - sum(held.values())) if grad_values else 0
    )
    parts = memory.device_memory(cfg, shape, grad_values=grad_values, grad_chunk=chunk)
    planned.shape, planned.device, planned.device_memory, planned.free_bytes = shape, device, parts, free
    planned.refusal = fit_refusal(cfg, shape, parts, device, free, grad_values)
    planned.resume_write = resume_writes(cfg, shape, planned.episodes)
    policy = resolved_policy(cfg.record.resume_every, planned.resume_write[0])
    every = {"episode": "after every episode", "epoch": "once per epoch"}
    planned.resume_when = f"record.resume_every = {cfg.record.resume_every}: " + every.get(
        policy, f"every {policy} episodes"
    )
    planned.steps_per_doc = cfg.schedule.steps_per_doc
    shared = held["weights"] + held["optimizer state"]  # the replay's own model beside its copies
    planned.pairwise_batch = max(1, memory.members_that_fit(cfg, shape, free, cfg.data.n_docs, shared))
    planned.rate = rates.rate_for(cfg, setup.device, plan_device, setup.threads)
    planned.times = rates.time_estimate(run_work(cfg, planned), planned.rate)


def _full_dim(r: Recording) -> int:
    """Values of one row of a weights or grads recording before any sketch."""
    return int(r.sketch["full_dim"]) if r.sketch else int(math.prod(r.row_shape[-1:]))


def planned_free_memory(device, plan_device: str = "") -> tuple[str, int]:
    """(device name, bytes free on it) for a plan: a datasheet's memory less ``memory.CUDA_RESERVE``
    for ``plan_device``; else ``memory.free_memory_bytes`` of ``device`` (less the reserve on a GPU)."""
    from arprobe.trainer import rates  # here: torch, which `arprobe info` does without

    if plan_device and plan_device != "cpu":
        spec = rates.datasheet(plan_device)
        return spec.label, int(spec.memory) - memory.CUDA_RESERVE
    name = "cpu" if plan_device == "cpu" else str(device)
    free = memory.free_memory_bytes("cpu" if plan_device == "cpu" else device)
    return name, max(free - (memory.CUDA_RESERVE if name.startswith("cuda") else 0), 0)


def resume_writes(cfg, shape: ModelShape, episodes: int) -> tuple[int, int]:
    """(bytes of one resume write, writes per run), by ``storage.resume``'s policy for this model."""
    # lazy: pulls in torch, which importing this module does not need
    from arprobe.trainer.checkpoints import keeps_optimizer_state

    return resume_write_plan(
        cfg, shape.n_params, keeps_optimizer_state(cfg), n_trainable=shape.n_trainable, episodes=episodes
    )


def run_work(cfg, planned: Plan):
    """What a run of ``planned`` computes and writes (``rates.Work``), for ``rates.time_estimate``."""
    from arprobe.trainer import rates  # here: torch, which `arprobe info` does without

    K, T, C, M = planned.episodes, cfg.data.n_docs, cfg.data.context_length, cfg.schedule.steps_per_doc
    B = memory.eval_chunk(cfg)
    grads = [r for r in planned.recordings if r.kind == "grads"]
    sketched = sum(
        len(r.episodes) * _full_dim(r) * (T if r.kind == "grads" else 1)
        for r in planned.recordings
        if r.sketch
    )
    size, writes = planned.resume_write
    return rates.Work(
        n_params=planned.n_params,
        n_layers=planned.shape.n_layers if planned.shape else 0,
        steps=K * M,
        step_tokens=C,
        eval_tokens=(K + 1) * T * C,
        eval_forwards=(K + 1) * -(-T // B),
        grad_tokens=sum(len(r.episodes) for r in grads) * T * C,
        sketched_values=sketched,
        store_bytes=planned.store_bytes,
        resume_bytes=size,
        resume_writes=writes,
    )


# What to change when a part of the device memory is the largest and the run does not fit.
_CHANGE = {
    "weights": "use a smaller model or a device with more memory",
    "gradients": "freeze blocks (model.freeze_blocks) or use a smaller model",
    "optimizer state": "use optim.name sgd (no optimizer state) or a smaller model",
    "one step's activations": "lower data.context_length or set model.autocast bfloat16",
    "per-document gradients": "record a smaller layer's gradients (record.grads) "
    "or set record.grads_at never",
}


def fit_refusal(
    cfg, shape: ModelShape, parts: dict[str, tuple[int, str]], device: str, free: int, grad_values: int = 0
) -> str:
    """One sentence refusing a run whose peak device memory exceeds ``free``, naming what to
    change; "" when it fits. Per-document gradients count one document at a time: the recorder
    halves its chunk when the device runs out of memory (down to one document)."""
    if "per-document gradients" in parts:
        one_doc = memory.document_grad_bytes(shape, cfg.data.context_length, grad_values)
        parts = {**parts, "per-document gradients": (one_doc, "one document at a time")}
    need = memory.peak_bytes(parts)
    if need <= free:
        return ""
    biggest = max(parts, key=lambda p: parts[p][0])
    if biggest == "the eval batch's logits":
        held = memory.peak_bytes({p: v for p, v in parts.items() if p in memory.HELD})
        per_doc = 8 * cfg.data.context_length * shape.vocab
        fit = max(0, (free - held) // per_doc)
        change = f"set eval_batch_size {fit}" if fit >= 1 else _CHANGE["weights"]
    else:
        change = _CHANGE[biggest]
    return (
        f"The run needs {human_bytes(need)} on {device} with {human_bytes(free)} free "
        f"({human_bytes(parts[biggest][0])} for {biggest}); {change}."
    )


def store_layout(setup, recorder) -> StoreLayout:
    """Shapes of everything a run of ``setup`` writes, with ``recorder``'s recording table."""
    import torch  # here: `arprobe info` imports this module and needs no torch

    # lazy: pulls in torch, which importing this module does not need
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
        resume=resumes(setup.cfg.record.resume_every),
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


# What to lower when a part does not fit.
_LOWER = {
    "the eval matrix": "schedule.epochs or data.n_docs",
    "the schedule": "schedule.epochs or data.n_docs",
    "the token windows": "data.context_length, data.max_shift or data.n_docs",
    "one forward's logits": "data.context_length",
    "one step's activations": "data.context_length",
}


def check_scale(cfg, run_dir: Path | None = None, *, device_check: bool = True) -> None:
    """Refuse, before anything is allocated, a run this machine cannot hold: its least memory
    (``minimum_memory``) against the memory free here (``memory.free_memory_bytes``); its peak
    device memory against its device's free memory (``check_device_memory``, from the model's
    shapes on the meta device); and (when ``run_dir`` is given) its least store against the free
    disk. No weights are read or allocated."""
    free, parts = memory.free_memory_bytes("cpu"), minimum_memory(cfg)
    need = sum(size for size, _ in parts.values())
    if need > free:
        biggest = max(parts, key=lambda p: parts[p][0])
        size, what = parts[biggest]
        raise UserError(
            f"The run needs at least {human_bytes(need)} of memory ({human_bytes(size)} for {biggest}, "
            f"{what}) but this machine has {human_bytes(free)} free; lower {_LOWER[biggest]}."
        )
    if device_check:
        check_device_memory(cfg)
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


def check_device_memory(cfg, members: int = 1) -> None:
    """Refuse a run (of ``members`` models trained as one) whose peak memory exceeds what its device
    has free, in one sentence naming what to change. Text runs only; a model whose config cannot be
    read here is left to the run's own loading, which says why."""
    # lazy: pulls in torch, which importing this module does not need
    from arprobe.models.text import resolve_device

    model = config_model(cfg)
    if model is None:
        return
    shape = ModelShape.of(model, cfg)
    device = resolve_device(cfg.model.device)
    name, free = planned_free_memory(device)
    if members > 1:
        memory.check_members_fit(cfg, shape, members, name, free)
        return
    grad_values = recorded_grad_values(cfg, model)  # counted one document at a time (fit_refusal)
    parts = memory.device_memory(cfg, shape, grad_values=grad_values)
    refusal = fit_refusal(cfg, shape, parts, name, free, grad_values)
    if refusal:
        raise UserError(refusal)


def recorded_grad_values(cfg, model) -> int:
    """Values of the largest layer whose per-document gradients a run of ``cfg`` records, read off
    the weightless ``model`` through its architecture's names table; 0 when it records none, or when
    the names are not known before loading (the recorder sizes its chunk itself then)."""
    # lazy: pulls in torch, which importing this module does not need
    from arprobe.models.naming import tabled_names

    rec = cfg.record
    if rec.grads_at == "never" or not rec.grads:
        return 0
    names = tabled_names(model)
    if names is None:
        return 0
    try:
        modules = [model.get_submodule(names.module_path(c)) for c in rec.grads]
    except (UserError, AttributeError):  # an unknown layer: the run's recorder says so, in its words
        return 0
    return max(sum(p.numel() for p in m.parameters()) for m in modules)


def config_shape(cfg) -> ModelShape | None:
    """The ``ModelShape`` of a text run's model (``config_model``); None where that has none."""
    model = config_model(cfg)
    return ModelShape.of(model, cfg) if model is not None else None


def config_model(cfg):
    """A text run's model built on the meta device from its config alone (a hub model's config from
    the local cache): shapes, no values. None for other tasks or a config not readable here."""
    # here: transformers and torch, which `arprobe info` (an importer of this module) does without
    # lazy: pulls in torch, which importing this module does not need
    from arprobe.models.text import PYTHIA_PRESETS, freeze_first_blocks, weightless_model

    if not task_class(cfg.task).keeps_token_windows:  # a text task's model (models.text) from its config
        return None
    m = dataclasses.replace(cfg.model, name=resolve_ladder_name(cfg.model.name))
    bpe = cfg.data.tokenizer == "bpe" or (cfg.data.tokenizer == "auto" and m.name in PYTHIA_PRESETS)
    if m.init != "pretrained" and not bpe:
        return None  # the embedding's rows are the hub tokenizer's length, known once it is loaded
    try:
        if m.name not in PYTHIA_PRESETS and not looks_like_path(m.name):
            check_hub_model(m.name, m.revision)  # in the local cache, or the hub reachable
        # a random model's BPE holds at most data.vocab_size tokens; a pretrained one keeps its rows
        model = weightless_model(m, cfg.data.vocab_size, cfg.data.context_length)
        freeze_first_blocks(model, m.freeze_blocks)
    except (UserError, OSError, ValueError):
        return None
    return model


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


def format_device_plan(planned: Plan) -> str:
    """The device memory, resume writes and time of ``planned``, as the dry-run prints them."""
    from arprobe.trainer.rates import format_seconds  # here: torch, which `arprobe info` does without

    parts, peak = planned.device_memory, planned.peak_device_bytes
    lines = [f"memory on {planned.device} (from shapes on the meta device; nothing loaded):"]
    for part, (size, what) in parts.items():
        if size:
            held = "" if part in memory.HELD else " (in turn)"
            lines.append(f"  {part:<24} {human_bytes(size):>9}  {what}{held}")
    # the per-document chunk is already what fits (``_plan_device``): the peak fits unless refused
    free, fits = human_bytes(planned.free_bytes), "fits" if not planned.refusal else "DOES NOT FIT"
    lines.append(f"  {'peak':<24} {human_bytes(peak):>9}  held + the largest in turn; {free} free: {fits}")
    size, writes = planned.resume_write
    if writes:
        lines.append(
            f"resume point: {human_bytes(size)} a write, {writes} write(s) per run "
            f"({planned.resume_when}), {human_bytes(size * writes)} written in all"
        )
    else:
        lines.append("resume point: none (record.resume_every = 0: the run cannot be resumed)")
    if any(r.kind == "checkpoints" for r in planned.recordings):
        lines.append(
            f"pairwise_recovery afterwards (batch -1 on a GPU): {planned.pairwise_batch} replay(s) at once "
            "fit in that free memory, each a copy of the model with its gradients, optimizer state and "
            "activations"
        )
    t = planned.times
    lines.append(f"time on {planned.device}: {planned.rate.describe()}; a guide, not a measurement:")
    lines.append(
        f"  step {format_seconds(t['step'])} x {planned.episodes * planned.steps_per_doc:,} = "
        f"{format_seconds(t['training'])} training; eval {format_seconds(t['eval'])}; recording "
        f"{format_seconds(t['recording'])}; resume writes {format_seconds(t['resume writes'])} "
        f"(background); total about {format_seconds(t['total'])}"
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
