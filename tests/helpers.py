"""Helpers shared by test files in several feature folders: paths, the CLI in a subprocess, runs
watched while they write, installed-plugin metadata, sweep files, and probes on hand-made stores.

Test files import these from here (``from tests.helpers import run_one``), never from each other."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from arprobe.errors import UserError
from arprobe.probes.base import Probe
from arprobe.probes.registry import Registry
from arprobe.probes.runner import run_probe
from arprobe.science.geometry import cyclic_distance
from arprobe.storage import RunStore
from tests.conftest import TINY
from tests.store_factory import cyclic, make_store

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"

# --- the CLI in a subprocess ------------------------------------------------------------------


def cli(*args, timeout=60, env=None, **kwargs):
    """`python -m arprobe ARGS` in a process of its own, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "arprobe", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **kwargs,
    )


def one_line_error(result, code=2):
    """The one line of stderr of a CLI call that must fail with ``code`` and no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return lines[0]


# --- runs watched from outside ------------------------------------------------------------------

LONG = {"epochs": 6}  # 30 episodes: long enough to be caught mid-run


def start_run(out, name, **extra):
    """A tiny `arprobe run` of LONG episodes started in the background."""
    flags = []
    for key, value in {**TINY, **LONG, **extra}.items():
        flags += [f"--{key}", str(value)]
    return subprocess.Popen(
        [sys.executable, "-m", "arprobe", "run", "--out", str(out), "--name", name, "--no-progress", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for_episodes(path, n, proc, timeout=240):
    """Poll the store while the run writes it (SWMR); returns the episodes seen."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        if path.exists():
            try:
                with RunStore(path) as store:
                    done = store.completed_episodes
                    if done >= n:
                        return done
            except (UserError, OSError, KeyError):
                pass  # the file is being created
        time.sleep(0.02)
    raise AssertionError("run too slow")


def datasets_of(path):
    """Every dataset of an HDF5 file, by name."""
    out = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(
            lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
        )
    return out


# --- plugins "installed" without touching this environment ---------------------------------------


def install_dist_info(site: Path, name: str, version: str, entry_points: dict[str, str]) -> None:
    """What `pip install` leaves for importlib.metadata: METADATA and entry_points.txt."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = ["[arprobe.probes]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


# --- sweeps -------------------------------------------------------------------------------------

# Tiny runs that record only what the sweep needs (losses, the resume point): a few seconds each.
LEAN = {"weights_every": 0, "activations_every": 0, "grads_at": "never", "checkpoints": "none"}


def toml_value(value) -> str:
    if isinstance(value, dict):  # an inline table
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)  # numbers and strings are the same in TOML


def write_sweep(path: Path, *, grid: dict, seeds: list, name: str = "tiny", **extra) -> Path:
    """A sweep file of tiny, lean runs over ``grid`` × ``seeds``."""
    lines = [f'name = "{name}"', f"seeds = {toml_value(seeds)}"]
    lines += [f"{k} = {toml_value(v)}" for k, v in {**TINY, **LEAN, **extra}.items()]
    lines.append("[grid]")
    lines += [f"{k} = {toml_value(v)}" for k, v in grid.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def arprobe(*args, **kwargs):
    """`python -m arprobe ARGS` with one thread per process (sweeps start several)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "arprobe", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        **kwargs,
    )


def eval_matrix(path: Path) -> np.ndarray:
    with RunStore(path) as store:
        return store.eval_matrix()


# --- probes on hand-made stores -----------------------------------------------------------------

# T = 3, E = 2, cyclic (same matrix as tests/science/test_recovery_metrics.py). Every document: right
# after its training 1, then 3 (the peak), then 2 just before the next: RS(1) = (3 − 2) / (3 − 1) = 0.5.
EVAL = np.array([[4.0, 4, 4], [1, 5, 5], [3, 1, 5], [2, 3, 1], [0.5, 2, 3], [1, 0.5, 2], [2, 1, 0.5]])

# Insert order (App. B.7), T = 8: the block 0, 1, 2 every epoch, then 2, 1 and 2 one-off documents,
# so the epochs are 5, 4 and 5 episodes long (cycle length (5 + 4) / 2 = 4.5).
INSERT_DOC = [0, 1, 2, 3, 4, 0, 1, 2, 5, 0, 1, 2, 6, 7]
INSERT_EPOCH = [1] * 5 + [2] * 4 + [3] * 5


def insert_loss() -> np.ndarray:
    """[15, 8]: 6 before a document's first training; j episodes after its last training
    1, 3, 4 (the peak), 3.5, 3, 2.5 for j = 0..5."""
    after = [1, 3, 4, 3.5, 3, 2.5]
    loss = np.full((15, 8), 6.0)
    for t in range(8):
        trained = [k + 1 for k, d in enumerate(INSERT_DOC) if d == t]
        for row in range(15):
            last = [k for k in trained if k <= row]
            if last:
                loss[row, t] = after[min(row - last[-1], 5)]
    return loss


def insert_weights() -> np.ndarray:
    """[15, 3]: one anticlockwise revolution of radius 1 per stored epoch, evenly spaced in it."""
    bounds = np.array([0, 5, 9, 14])
    turns = np.interp(np.arange(15), bounds, np.arange(4))
    return np.stack([np.cos(2 * np.pi * turns), np.sin(2 * np.pi * turns), np.full(15, 3.0)], axis=1)


# Shuffle (x_1 first, the rest re-shuffled every epoch), T = 3, E = 3: episodes train
# 0 1 2 | 0 2 1 | 0 1 2. Loss 5 before a document's first training, 1 right after each training,
# then +1 per episode, except document 1, which peaks at 4 (row 4) and recovers to 3 (row 5).
SHUFFLE_DOC = [0, 1, 2, 0, 2, 1, 0, 1, 2]
SHUFFLE_EPOCH = np.repeat([1, 2, 3], 3)
SHUFFLE_LOSS = np.array(
    [
        [5.0, 5, 5],
        [1, 5, 5],
        [2, 1, 5],
        [3, 2, 1],
        [1, 4, 2],
        [2, 3, 1],
        [3, 1, 2],
        [1, 2, 3],
        [2, 1, 4],
        [3, 2, 1],
    ]
)


def insert_run(path: Path) -> Path:
    """A store of the insert order above: its loss, one revolution of the weights per stored epoch."""
    return make_store(
        path,
        loss_eval=insert_loss(),
        schedule_doc=INSERT_DOC,
        schedule_epoch=INSERT_EPOCH,
        weights={"all": (np.arange(15), insert_weights().astype(np.float32))},
        config={"schedule": {"order": "insert"}},
    )


def shuffle_grads() -> np.ndarray:
    """[1, T = 3, 6]: random gradients at the end of the shuffled run."""
    return np.random.default_rng(0).normal(size=(1, 3, 6)).astype(np.float32)


def shuffle_run(path: Path) -> Path:
    """A store of the shuffle order above, with gradients at its last episode."""
    return make_store(
        path,
        loss_eval=SHUFFLE_LOSS,
        schedule_doc=SHUFFLE_DOC,
        schedule_epoch=SHUFFLE_EPOCH,
        grads={"blocks.0.attn": (np.array([9]), shuffle_grads())},
        config={"schedule": {"order": "shuffle"}},
    )


# Partial shuffle, T = 4, documents 2..3 (positions 1, 2) re-shuffled: 0 1 2 3 | 0 2 1 3. Loss 5 before
# the first training, 1 right after, +1 per episode; document 1 dips to 3 at row 6 before its return.
PARTIAL_DOC = [0, 1, 2, 3, 0, 2, 1, 3]
PARTIAL_LOSS = np.array(
    [
        [5.0, 5, 5, 5],
        [1, 5, 5, 5],
        [2, 1, 5, 5],
        [3, 2, 1, 5],
        [4, 3, 2, 1],
        [1, 4, 3, 2],
        [2, 3, 1, 3],
        [3, 1, 2, 4],
        [4, 2, 3, 1],
    ]
)


def partial_shuffle_run(path: Path) -> Path:
    return make_store(
        path,
        loss_eval=PARTIAL_LOSS,
        schedule_doc=PARTIAL_DOC,
        schedule_epoch=np.repeat([1, 2], 4),
        config={"schedule": {"order": "partial-shuffle"}},
    )


# Orders of a few episodes (forgetting, recovery_map, model_clock, order_decoding). T = 3, shuffled:
# epoch 1 trains 0, 1, 2; epoch 2 trains 2 (again at once), 0, 1.
SHORT_SHUFFLE_DOC, SHORT_SHUFFLE_EPOCH = np.array([0, 1, 2, 2, 0, 1]), np.array([1, 1, 1, 2, 2, 2])
SHORT_SHUFFLE_EVAL = np.array(
    [[4.0, 4, 4], [1, 4, 4], [2, 1, 4], [3, 2, 1], [2, 3, 0.5], [0.5, 2, 1], [1, 0.5, 2]]
)

# T = 5, insert order: documents 0, 1 repeat; 2, 3, 4 are one-off; epoch 1 is 3 episodes, epoch 2 is 4.
SHORT_INSERT_DOC, SHORT_INSERT_EPOCH = np.array([0, 1, 2, 0, 1, 3, 4]), np.array([1, 1, 1, 2, 2, 2, 2])
SHORT_INSERT_EVAL = np.array(
    [
        [4.0, 4, 4, 4, 4],
        [1, 4, 4, 4, 4],  # 1: doc 0
        [2, 1, 4, 4, 4],  # 2: doc 1
        [3, 3, 1, 4, 4],  # 3: doc 2 (end of epoch 1)
        [0.5, 2, 2, 4, 4],  # 4: doc 0
        [1, 0.5, 3, 4, 4],  # 5: doc 1
        [2, 1, 3, 1, 4],  # 6: doc 3
        [3, 2, 3, 2, 1],  # 7: doc 4 (end of epoch 2)
    ]
)


def probe(name: str) -> Probe:
    """The registered probe ``name``, without progress bars."""
    p = Registry().get(name)
    p.progress = False
    return p


def outcome_of(name: str, run_dir: Path, out: Path, **options):
    """Run probe ``name`` on one store; its outcome and its result.json, whatever the status."""
    with RunStore(run_dir) as store:
        outcome = run_probe(probe(name), [store], out, options)
    return outcome, json.loads((out / name / "result.json").read_text())


def run_one(name: str, run_dir: Path, out: Path, **options) -> dict:
    """Run probe ``name`` on one store, return its result.json (asserting it ran and drew figures)."""
    outcome, record = outcome_of(name, run_dir, out, **options)
    assert outcome.status == "ok", outcome.reason
    assert record["status"] == "ok" and record["figures"] == outcome.figures and record["figures"]
    for fig in record["figures"]:
        assert (out / name / fig).stat().st_size > 10_000  # a real PNG, not an empty canvas
    return record


class Chatty(Probe):
    """A plugin-like probe that shows a progress bar whatever self.progress says."""

    description = "Shows a bar whatever self.progress says."

    def run(self, store, out):
        for _ in tqdm(range(3), desc="plugin bar"):
            pass
        return {}


# The built-in probes of arprobe's own entry points.
BUILTINS = [
    "activation_drift",
    "gradient_similarity",
    "learning_dynamics",
    "loss_curves",
    "online_loss",
    "pairwise_recovery",
    "pca_weights",
    "recovery_score",
    "relearning",
    "toy_model",
    "weight_residual_similarity",
]


# --- cosine matrices and stores for the nulls ---------------------------------------------------


def positional_cosines(T: int, spread: float = 0.04) -> np.ndarray:
    """A cosine matrix that is purely positional: 0.3 + u_i + u_j off the diagonal, 1 on it, with u
    highest in the middle of the sequence (Σ u = 0)."""
    u = -spread * np.abs(np.arange(T) - (T - 1) / 2)
    u -= u.mean()
    m = 0.3 + u[:, None] + u[None, :]
    np.fill_diagonal(m, 1.0)
    return m


def distance_cosines(T: int) -> np.ndarray:
    """A cosine matrix that depends only on cyclic distance: cos(2π d / T)."""
    i, j = np.indices((T, T))
    return np.cos(2 * np.pi * cyclic_distance(i, j, T) / T)


def grads_with_cosines(cos: np.ndarray, dim: int = 16) -> np.ndarray:
    """Unit vectors [T, dim] whose cosine matrix is ``cos`` (positive definite)."""
    factor = np.linalg.cholesky(cos)
    out = np.zeros((len(cos), dim))
    out[:, : len(cos)] = factor
    return out


def random_eval_store(path, T, E, *, order="cyclic", weights=None, grads=None, seed=0):
    """A store of T documents, E epochs and a random eval matrix, in the cyclic or a shuffled order."""
    doc, epoch = cyclic(T, E)
    if order == "shuffle":
        rng = np.random.default_rng(seed + 1)
        doc = np.concatenate([rng.permutation(T) for _ in range(E)])
    rng = np.random.default_rng(seed)
    return make_store(
        path,
        loss_eval=rng.uniform(1, 5, size=(T * E + 1, T)),
        schedule_doc=doc,
        schedule_epoch=epoch,
        weights=weights,
        grads=grads,
        config={"schedule": {"order": order}},
    )
