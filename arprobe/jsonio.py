"""JSON values and files: arrays and NaN as plain JSON, files written whole or not at all."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np


def to_jsonable(value: Any) -> Any:
    """Numbers, arrays and nested containers as plain JSON values; NaN and inf become null."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and os.replace, so a
    reader (a browser, a second analysis, a sweep restarted after a crash) sees the old file or the
    new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed write leaves no stray temporary file either
    return path


def write_json_atomic(path: Path, data: Any, *, indent: int = 1, sort_keys: bool = False) -> Path:
    """Write ``data`` (``to_jsonable`` first) as JSON, atomically (``write_text_atomic``). A value
    that is not JSON raises TypeError or ValueError before anything is written."""
    text = json.dumps(to_jsonable(data), indent=indent, sort_keys=sort_keys, allow_nan=False) + "\n"
    return write_text_atomic(path, text)
