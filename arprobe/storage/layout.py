"""Where things sit in a run folder, beside ``run.h5``."""

from __future__ import annotations

from pathlib import Path

CONTROL_DIR = "control"  # <run>/control/run.h5: the matched shuffled control (``control = "shuffle"``)


def control_store_path(store_path: str | Path) -> Path | None:
    """``<run>/control/run.h5`` of the store at ``store_path`` (its run.h5), if it exists."""
    path = Path(store_path).parent / CONTROL_DIR / "run.h5"
    return path if path.is_file() else None
