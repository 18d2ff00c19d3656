"""Hand-made run stores with known contents: test a probe without a training run.

The factory plugin authors and arprobe's own tests use. ``make_store`` writes an ordinary
``run.h5`` with the real ``RunWriter``, holding exactly the losses, schedule and recordings given,
so a probe's numbers can be checked against answers worked out by hand::

    from arprobe.testing import cyclic, make_store

    doc, epoch = cyclic(T=3, E=2)
    loss = np.array([[5, 5, 5], [1, 6, 6], [2, 1, 6], [3, 2, 1], [1, 3, 2], [2, 1, 3], [3, 2, 1]])
    make_store(tmp_path / "run", loss_eval=loss, schedule_doc=doc, schedule_epoch=epoch)
    with RunStore(tmp_path / "run") as store:
        result = MyProbe().run(store, tmp_path / "out")
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from arprobe.storage import RunWriter, StoreLayout
from arprobe.storage.recordings import Recording
from arprobe.trainer.config import RunConfig


def make_store(
    run_dir: Path,
    *,
    loss_eval: np.ndarray,  # [K+1, T]
    schedule_doc: np.ndarray,  # [K] 0-based
    schedule_epoch: np.ndarray | None = None,  # [K] 1-based; default: cyclic epochs of T
    steps_per_doc: int = 2,
    loss_train: np.ndarray | None = None,  # [K, M]; default: column 0 = loss_eval before the episode
    weights: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,  # name -> (episodes [S], values [S, D])
    grads: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,  # name -> (episodes [G], values [G, T, D])
    activations: dict[str, tuple[np.ndarray, np.ndarray]]
    | None = None,  # hook -> (episodes [A], values [A, n, C, d])
    activation_docs: list[int] | None = None,
    context_length: int = 4,
    seed: int = 0,
    config: dict
    | None = None,  # overrides of the stored config, by section: {"schedule": {"order": "shuffle"}}
) -> Path:
    """Write ``run_dir/run.h5`` with exactly the given data; returns run_dir."""
    loss_eval = np.asarray(loss_eval, dtype=np.float32)
    schedule_doc = np.asarray(schedule_doc)
    K, T = loss_eval.shape[0] - 1, loss_eval.shape[1]
    M = steps_per_doc
    if schedule_epoch is None:
        schedule_epoch = np.arange(K) // T + 1
    if loss_train is None:
        loss_train = np.repeat(loss_eval[:-1][np.arange(K), schedule_doc][:, None], M, axis=1)
    weights, grads, activations = weights or {}, grads or {}, activations or {}

    cfg = RunConfig()
    cfg.data.n_docs, cfg.data.context_length = T, context_length
    cfg.schedule.steps_per_doc, cfg.schedule.epochs = M, int(np.max(schedule_epoch))
    cfg.seed, cfg.name, cfg.out = seed, Path(run_dir).name, str(Path(run_dir).parent)
    cfg_dict = cfg.to_dict()
    for section, values in (config or {}).items():
        if isinstance(values, dict):
            cfg_dict[section].update(values)
        else:
            cfg_dict[section] = values

    K = len(schedule_doc)

    recordings = hand_made_recordings(
        {"weights": weights, "grads": grads, "activations": activations}, activation_docs
    )
    # No model here, so no checkpoints or resume slots.
    layout = StoreLayout(
        n_docs=T,
        steps_per_doc=M,
        layer_names=["embed"],
        recordings=recordings,
        planned_doc=np.asarray(schedule_doc[:K]),
        planned_epoch=np.asarray(schedule_epoch[:K]),
        resume=False,
    )

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    writer = RunWriter.create(
        run_dir / "run.h5",
        layout=layout,
        config_json=json.dumps(cfg_dict),
        seed=seed,
        docs={
            "tokens": np.zeros((T, context_length), np.int32),
            "lengths": np.full(T, context_length, np.int32),
            "window_start": np.zeros(T, np.int32),
        },
        texts=[f"document {t}" for t in range(T)],
        model_info={"kind": "hand-made"},
        initial_eval=loss_eval[0],
    )

    def record(episode: int) -> None:
        for kind, table in (("weights", weights), ("grads", grads), ("activations", activations)):
            for name, (episodes, values) in table.items():
                for i in np.flatnonzero(np.asarray(episodes) == episode):
                    writer.append_recording(kind, name, episode, values[i])

    record(0)
    writer.commit(0)
    for k in range(1, K + 1):
        writer.append_episode(
            doc=int(schedule_doc[k - 1]),
            epoch=int(schedule_epoch[k - 1]),
            eval_row=loss_eval[k],
            train_loss=np.asarray(loss_train[k - 1], np.float32),
            grad_norm=np.zeros((M, 1), np.float32),
            lr=np.full(M, 1e-3, np.float32),
        )
        record(k)
        writer.commit(k)
    writer.close("complete")
    return run_dir


def hand_made_recordings(by_kind: dict[str, dict], activation_docs: list[int] | None) -> list[Recording]:
    """The recording table of ``make_store``'s data: {kind: {name: (episodes, values [S, *row])}}."""
    return [
        Recording(
            kind=kind,
            name=name,
            what=f"hand-made {kind}",
            when="as given",
            row_shape=tuple(values.shape[1:]),
            episodes=tuple(int(e) for e in episodes),
            attrs={"docs": list(activation_docs or [0])} if kind == "activations" else {},
        )
        for kind, recorded in by_kind.items()
        for name, (episodes, values) in recorded.items()
    ]


def cyclic(T: int, E: int) -> tuple[np.ndarray, np.ndarray]:
    """(schedule_doc [T*E], schedule_epoch [T*E]) of a cyclic run."""
    return np.tile(np.arange(T), E), np.repeat(np.arange(1, E + 1), T)


def helix(T: int, E: int, *, dim: int = 12, drift: float = 5.0, radii=None, seed: int = 0) -> np.ndarray:
    """Weight snapshots [T*E + 1, dim] on a helix: one anticlockwise revolution per epoch in a
    random plane, radius radii[e] in epoch e (default 1 everywhere), plus a steady drift along
    a third direction. Snapshot k is taken after episode k."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(dim, 3)))  # orthonormal: circle plane u, v and drift axis
    u, v, axis = basis.T
    radii = np.ones(E) if radii is None else np.asarray(radii, dtype=float)
    k = np.arange(T * E + 1)
    epoch = np.clip(
        (k - 1) // T, 0, E - 1
    )  # episode k belongs to epoch (k − 1) // T; snapshot 0 to the first
    angle = 2 * np.pi * k / T
    r = radii[epoch]
    return (
        (r * np.cos(angle))[:, None] * u
        + (r * np.sin(angle))[:, None] * v
        + (drift * k / (T * E))[:, None] * axis
        + 3.0
    )
