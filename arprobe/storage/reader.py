"""The run store's reader, used by probes and the CLI.

Opens the file in SWMR read mode, so it works while the run is still writing, and shows only
committed episodes: every accessor is cut at ``completed_episodes``.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import h5py
import numpy as np

from arprobe.errors import MissingDataError, StoreError, UserError
from arprobe.science.schedule import Schedule
from arprobe.storage.lock import h5_file
from arprobe.storage.recordings import kind as recording_kind
from arprobe.storage.recover import read_superblock
from arprobe.storage.schema import FORMAT, FORMAT_VERSION, STATUSES


def resolve_store_path(run: str | Path) -> Path:
    """Accept a run folder or the run.h5 file itself."""
    path = Path(run)
    if path.is_dir():
        path = path / "run.h5"
    if not path.exists():
        raise UserError(f"No run store at '{path}': give a run folder (runs/<name>) or its run.h5.")
    return path


class RunStore:
    """Typed read access to one ``run.h5``. Use as a context manager or call ``close()``."""

    def __init__(self, run: str | Path):
        self.path = resolve_store_path(run)
        self.h5 = open_store_file(self.path)
        try:
            self._check_format()
        except BaseException:
            self.h5.close()
            raise

    def _check_format(self) -> None:
        with self.reading("its root attributes"):
            attrs = self.h5.attrs
            if attrs.get("format") != FORMAT:
                raise StoreError(f"'{self.path}' is an HDF5 file but not an arprobe run store.")
            try:
                version = int(attrs.get("format_version", 0))
            except (TypeError, ValueError):
                raise StoreError(
                    f"'{self.path}' has a malformed format_version attribute; it is damaged."
                ) from None
            if version > FORMAT_VERSION:
                raise StoreError(
                    f"'{self.path}' has store format {version}, newer than this arprobe "
                    f"understands ({FORMAT_VERSION}); upgrade arprobe."
                )
            if version < 1:
                raise StoreError(f"'{self.path}' has format_version {version}; it is damaged.")
            stored = attrs.get("status", "running")
            stored = stored.decode(errors="replace") if isinstance(stored, bytes) else str(stored)
            if stored not in STATUSES:
                raise StoreError(f"'{self.path}' has an unknown status {stored!r}; it is damaged.")
        # Read once here so that a store whose config or live status is malformed is refused when it
        # is opened, not by every probe that reads it later.
        self.config  # noqa: B018
        self.status  # noqa: B018

    @contextlib.contextmanager
    def reading(self, what: str):
        """Turn HDF5's errors while reading ``what`` (a corrupt chunk, a failed checksum, a
        missing object in a damaged file) into one sentence naming the file."""
        try:
            yield
        except (UserError, MissingDataError):
            raise
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            text = str(exc)
            detail = text.split("(")[0].strip().rstrip(".") or type(exc).__name__
            if "filter returned failure" in text or "checksum" in text.lower():
                detail = "a checksum does not match: the bytes on disk changed"
            raise StoreError(
                f"'{self.path}' is damaged: reading {what} failed ({detail}); the file was cut short "
                "or changed on disk — restore it from a copy, or --resume the run if it was running."
            ) from None

    def __repr__(self) -> str:
        """``<RunStore runs/x/run.h5: complete, 15 of 15 episodes, T=5 C=32 M=3 E=3>`` (what a
        notebook shows for ``arprobe.open(path)``); never raises, also for a closed or damaged store."""
        if not self.h5:
            return f"<RunStore {self.path} (closed)>"
        try:
            cfg = self.config
            size = (
                f"T={self.n_docs} C={cfg.get('data', {}).get('context_length', '?')} "
                f"M={self.steps_per_doc} E={cfg.get('schedule', {}).get('epochs', '?')}"
            )
            done = f"{self.completed_episodes} of {len(self.planned_schedule())} episodes"
            return f"<RunStore {self.path}: {self.status}, {done}, {size}>"
        except Exception as exc:  # a repr must not raise: say what could not be read
            return f"<RunStore {self.path}: unreadable ({type(exc).__name__})>"

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.h5.close()

    def _dataset(self, name: str) -> h5py.Dataset:
        with self.reading(name):
            ds = self.h5[name]
            if self.h5.swmr_mode:
                ds.refresh()
        return _Checked(ds, self, name)

    def _int_attr(self, name: str) -> int:
        with self.reading(f"its {name} attribute"):
            return int(self.h5.attrs[name])

    # --- run-level facts ------------------------------------------------------------------

    @property
    def config(self) -> dict:
        with self.reading("its config attribute"):
            try:
                config = json.loads(self.h5.attrs["config"])
            except (json.JSONDecodeError, UnicodeDecodeError, TypeError):  # TypeError: not text at all
                raise StoreError(
                    f"'{self.path}' has a config attribute that is not valid JSON; it is damaged."
                ) from None
        if not isinstance(config, dict):
            raise StoreError(
                f"'{self.path}' has a config attribute that is not a JSON object; it is damaged."
            )
        return config

    @property
    def status(self) -> str:
        """running | complete | stopped | failed | diverged: the live record (format 2) or the attribute."""
        with self.reading("its status"):
            if "state/status" in self.h5:
                status = self._dataset("state/status")[0].decode()
            else:
                status = str(self.h5.attrs["status"])
        if status not in STATUSES:
            raise StoreError(f"'{self.path}' has an unknown status {status!r}; it is damaged.")
        return status

    @property
    def stop_reason(self) -> str:
        with self.reading("its stop reason"):
            if "state/stop_reason" in self.h5:
                return self._dataset("state/stop_reason")[0].decode(errors="replace")
            return str(self.h5.attrs.get("stop_reason", ""))

    @property
    def completed_episodes(self) -> int:
        """Episodes fully written: the live counter while running, the final attribute after."""
        with self.reading("its episode counter"):
            return int(self._dataset("progress")[0])

    @property
    def seed(self) -> int:
        return self._int_attr("seed")

    @property
    def n_docs(self) -> int:
        return self._int_attr("n_docs")

    @property
    def steps_per_doc(self) -> int:
        return self._int_attr("steps_per_doc")

    @property
    def model_info(self) -> dict:
        with self.reading("its model description"):
            return json.loads(self.h5["model"].attrs["info"])

    @property
    def layer_names(self) -> list[str]:
        with self.reading("its layer names"):
            return json.loads(self.h5["stats/grad_norm"].attrs["layers"])

    # --- per-episode data -----------------------------------------------------------------

    def docs(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """tokens int32 [T, W], lengths int32 [T], texts [T]."""
        with self.reading("its documents"):
            texts = [t.decode() if isinstance(t, bytes) else str(t) for t in self.h5["docs/text"][:]]
            return self.h5["docs/tokens"][:], self.h5["docs/lengths"][:], texts

    def doc_texts(self) -> list[str]:
        """One line per document for people [T] (``docs/text``), whatever the task."""
        with self.reading("its documents"):
            return [t.decode() if isinstance(t, bytes) else str(t) for t in self.h5["docs/text"][:]]

    def doc_arrays(self) -> dict[str, np.ndarray]:
        """Every ``docs/<name>`` array but the text, as the task stored them; a format-1 store gets
        ``window_start`` = 0 (its window shift was one-sided from token 0)."""
        with self.reading("its documents"):
            out = {name: ds[:] for name, ds in self.h5["docs"].items() if name != "text"}
        if "window_start" not in out and "lengths" in out:
            out["window_start"] = np.zeros_like(out["lengths"])
        return out

    def eval_matrix(self) -> np.ndarray:
        """float32 [K+1, T]: row 0 before training, row k after episode k."""
        k = self.completed_episodes
        return self._dataset("loss/eval")[: k + 1]

    def schedule(self) -> Schedule:
        """The schedule of the completed episodes 1..K: document, epoch, position, epoch bounds."""
        k = self.completed_episodes
        return Schedule(self._dataset("schedule/doc")[:k], self._dataset("schedule/epoch")[:k], self.n_docs)

    def planned_schedule(self) -> Schedule:
        """The whole schedule the run was set up to train (stored from format 2; before that, the
        completed episodes)."""
        if "schedule/planned_doc" not in self.h5:
            return self.schedule()
        with self.reading("its planned schedule"):
            doc, epoch = self.h5["schedule/planned_doc"][:], self.h5["schedule/planned_epoch"][:]
        return Schedule(doc, epoch, self.n_docs)

    def train_loss(self) -> np.ndarray:
        """float32 [K, M]: loss at every gradient step; column 0 is the online loss."""
        return self._dataset("loss/train")[: self.completed_episodes]

    def grad_norm(self) -> np.ndarray:
        """float32 [K, M, L]: gradient norm of every layer group (``layer_names``) at every step."""
        return self._dataset("stats/grad_norm")[: self.completed_episodes]

    def learning_rate(self) -> np.ndarray:
        """float32 [K, M]."""
        return self._dataset("stats/lr")[: self.completed_episodes]

    # --- recordings -----------------------------------------------------------------------

    def recorded(self, kind: str) -> list[str]:
        """Names recorded under a snapshot kind (``weights``, ``grads``, ...) with at least one snapshot."""
        if kind not in self.h5:
            return []
        return [name for name in self.h5[kind] if len(self.recording_episodes(kind, name))]

    def recording_episodes(self, kind: str, name: str) -> np.ndarray:
        return self._committed(f"{kind}/{name}/episodes")

    def _committed(self, episodes_path: str) -> np.ndarray:
        """Leading entries of an ``episodes`` dataset that are written and committed."""
        episodes = self._dataset(episodes_path)[:]
        done = self.completed_episodes
        n = 0
        while n < len(episodes) and 0 <= episodes[n] <= done:
            n += 1
        return episodes[:n]

    def recording(self, kind: str, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(episodes int32 [S], values float32 [S, *row]) of any snapshot kind of the recording table."""
        if kind not in self.h5 or name not in self.h5[kind] or not len(self.recording_episodes(kind, name)):
            have = ", ".join(self.recorded(kind)) or "none"
            entry = recording_kind(kind)
            raise MissingDataError(
                f"Run '{self.path.parent.name}' has no {entry.words} '{name}' (recorded: {have}); "
                f"record it with {entry.option}."
            )
        episodes = self.recording_episodes(kind, name)
        return episodes, self._dataset(f"{kind}/{name}/values")[: len(episodes)]

    def recording_info(self, kind: str, name: str) -> dict:
        """What the recording table said about a recording: {"what", "when", ...} (format 2; empty before)."""
        if kind == "checkpoints":
            attrs = self.h5["checkpoints"].attrs if "checkpoints" in self.h5 else {}
        else:
            attrs = self.h5[kind][name].attrs
        return {
            k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items() if k in ("what", "when")
        }

    @property
    def format_version(self) -> int:
        return int(self.h5.attrs.get("format_version", 1))

    def sketch_info(self, kind: str, name: str) -> dict | None:
        """{"dim", "seed", "full_dim"} if the recording is a sketch, else None."""
        attrs = self.h5[kind][name].attrs
        if "sketch_dim" not in attrs:
            return None
        return {k[len("sketch_") :]: int(v) for k, v in attrs.items() if k.startswith("sketch_")}

    def weights(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(episodes int32 [S], values float32 [S, D]); episode 0 is the initial model."""
        return self.recording("weights", name)

    def grads(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(episodes int32 [G], values float32 [G, T, D]): the gradient of every document's loss,
        taken at the model after that episode."""
        return self.recording("grads", name)

    def activations(self, hook: str) -> tuple[np.ndarray, list[int], np.ndarray]:
        """(episodes int32 [A], docs [n], values float32 [A, n, C, d])."""
        episodes, values = self.recording("activations", hook)
        return episodes, json.loads(self.h5["activations"][hook].attrs["docs"]), values

    # --- checkpoints ----------------------------------------------------------------------

    def checkpoint_episodes(self) -> np.ndarray:
        """Episodes with a full checkpoint."""
        if "checkpoints" not in self.h5:  # record.checkpoints = none
            return np.zeros(0, dtype=np.int32)
        return self._committed("checkpoints/episodes")

    def checkpoint(self, episode: int) -> dict:
        """{"model": {param: array}, "optim": {"<param>/<state>": array}, "rng": uint8 array | None}."""
        episodes = self.checkpoint_episodes()
        hits = np.flatnonzero(episodes == episode)
        if not len(hits):
            have = ", ".join(map(str, episodes)) or "none"
            raise MissingDataError(
                f"Run '{self.path.parent.name}' has no checkpoint at episode {episode} (have: {have}); "
                f"record it with {recording_kind('checkpoints').option}."
            )
        i = int(hits[-1])
        with self.reading(f"its checkpoint at episode {episode}"):
            ck = self.h5["checkpoints"]
            model = {name: ck["model"][name][i] for name in ck.get("model", {})}
            optim = {}
            if "optim" in ck:
                ck["optim"].visititems(
                    lambda n, obj: optim.__setitem__(n, obj[i]) if isinstance(obj, h5py.Dataset) else None
                )
            rng = ck["rng"][i] if "rng" in ck else None
        return {"model": model, "optim": optim, "rng": rng}


def open_store_file(path: Path) -> h5py.File:
    """Open a store for reading, failing fast with one sentence on a file that cannot be one.

    The superblock is read first: a file shorter than the size its closed superblock records is
    truncated, and is refused before HDF5 tries to read it (in SWMR mode HDF5 retries a damaged
    read for minutes). A file marked as open by a writer (a live run, or one whose writer was
    killed) is opened for single-writer/multi-reader access; a closed one plainly, so damage is
    reported at once.
    """
    try:
        superblock = read_superblock(path)
    except ValueError as exc:
        raise StoreError(f"'{path}' is not a readable run store: {exc}.") from None
    except OSError as exc:
        raise StoreError(f"'{path}' cannot be read: {exc.strerror or exc}.") from None
    size = path.stat().st_size
    live = bool(superblock.get("flags"))
    if not live and "eof" in superblock and size < superblock["eof"]:
        raise StoreError(
            f"'{path}' is truncated: it has {size:,} of the {superblock['eof']:,} bytes its header records "
            "(an interrupted copy or a full disk); restore it from a copy."
        )
    try:
        if live:
            return h5_file(path, "r", libver="latest", swmr=True)
        return h5_file(path, "r")
    except OSError as exc:
        detail = str(exc).split("(")[0].strip().rstrip(".")
        raise StoreError(
            f"'{path}' is not a readable HDF5 file ({detail}); it is damaged or not a run store."
        ) from None


class _Checked:
    """A dataset whose reads turn HDF5 errors (a failed checksum, a damaged chunk) into StoreError."""

    def __init__(self, ds: h5py.Dataset, store: RunStore, name: str):
        self._ds, self._store, self._name = ds, store, name

    def __getitem__(self, key):
        with self._store.reading(self._name):
            return self._ds[key]

    def __getattr__(self, attr):
        return getattr(self._ds, attr)
