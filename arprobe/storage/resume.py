"""The resume point of a running run: one small HDF5 file beside the store, replaced atomically.

``run.resume.h5`` holds the model, the kept optimizer state and the RNG after the newest resumable
episode. Each write goes to ``run.resume.h5.tmp`` and is renamed over the old file, so a kill at
any moment leaves either the old resume point or the new one, never half of each. The file
belongs to one store (``run_id``, written in both) and is deleted when the run completes: a
finished store carries no state it will never need (the resume point of the default run would
be 21 MB of its 80).

Stores written before this file existed keep two slots inside the store (``resume/``); the
writer still reads those (``RunWriter.reopen_for_resume``).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

FORMAT = "arprobe-resume"


def resume_path(store_path: Path) -> Path:
    """``<run>/run.h5`` -> ``<run>/run.resume.h5``."""
    store_path = Path(store_path)
    return store_path.with_name(store_path.stem + ".resume.h5")


def write_resume(
    store_path: Path,
    run_id: str,
    episode: int,
    params: dict[str, np.ndarray],
    optim: dict[str, np.ndarray],
    rng: np.ndarray,
) -> None:
    """Replace the resume point with the state after ``episode`` (atomic rename)."""
    final = resume_path(store_path)
    tmp = final.with_name(final.name + ".tmp")
    try:
        with h5py.File(tmp, "w", libver="latest") as h5:
            h5.attrs.update({"format": FORMAT, "run_id": run_id, "episode": int(episode)})
            for name, value in params.items():
                h5.create_dataset(f"model/{name}", data=value)
            for name, value in optim.items():
                h5.create_dataset(f"optim/{name}", data=value)
            h5.create_dataset("rng", data=rng)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_resume(store_path: Path, run_id: str) -> tuple[int, dict] | None:
    """(episode, {"model", "optim", "rng"}) of the store's resume point, or None when there is none.

    A file of another run (an --overwrite'n folder, a copied store) or one that cannot be read is
    an error a user can fix, in one sentence."""
    from arprobe.errors import UserError

    path = resume_path(store_path)
    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as h5:
            if h5.attrs.get("format") != FORMAT or str(h5.attrs.get("run_id", "")) != run_id:
                raise UserError(
                    f"'{path}' is not the resume point of '{store_path}' (another run wrote it); "
                    "remove it and start the run again with --overwrite."
                )
            episode = int(h5.attrs["episode"])
            state = {"model": {}, "optim": {}, "rng": h5["rng"][()]}
            for part in ("model", "optim"):
                if part in h5:
                    h5[part].visititems(
                        lambda n, o, part=part: (
                            state[part].__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None
                        )
                    )
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(
            f"The resume point '{path}' cannot be read ({exc}); start the run again with --overwrite."
        ) from None
    return episode, state


def remove_resume(store_path: Path) -> None:
    """Delete the resume point (and a leftover temporary file)."""
    final = resume_path(store_path)
    final.unlink(missing_ok=True)
    final.with_name(final.name + ".tmp").unlink(missing_ok=True)
