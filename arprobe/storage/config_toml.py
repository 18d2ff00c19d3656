"""The resolved config as ``config.toml`` beside ``run.h5``: the same config the store keeps in its
``config`` attribute, as a TOML file that ``arprobe run --config <run>/config.toml`` (with another
``--name``) trains the run again from. Written atomically (a temporary file, then os.replace)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

CONFIG_FILE = "config.toml"
HEADER = (
    "# The resolved config of this run (defaults, config file and command-line options together).\n"
    "# Train it again with: arprobe run --config <this file> --name <a new name>\n"
)


def toml_value(value) -> str:
    """One TOML value: text, integer, float, boolean, or a list of those."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest text that reads back to the same float
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's string escapes are TOML basic-string escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"a config value of type {type(value).__name__} has no TOML form")


def to_toml(table: dict, prefix: str = "") -> str:
    """A nested dict (a config's ``to_dict()``) as TOML: scalars first, then one [section] per table."""
    lines = [f"{key} = {toml_value(value)}" for key, value in table.items() if not isinstance(value, dict)]
    text = "\n".join(lines) + ("\n" if lines else "")
    for key, value in table.items():
        if isinstance(value, dict):
            name = f"{prefix}{key}"
            text += f"\n[{name}]\n" + to_toml(value, prefix=f"{name}.")
    return text


def write_config_toml(run_dir: Path, config: dict) -> Path:
    """Write ``run_dir/config.toml`` whole or not at all; returns its path."""
    path = Path(run_dir) / CONFIG_FILE
    tmp = path.with_name(f".{CONFIG_FILE}.{os.getpid()}.tmp")
    try:
        tmp.write_text(HEADER + to_toml(config), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
