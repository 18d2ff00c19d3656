"""Fail fast, in one sentence, when a hub id can be neither found locally nor fetched; resolve a local
folder's revision.

Without this, an offline machine spends 30-50 s in the hub client's retries and then reports
an error about whichever file it tried first (often the tokenizer).

A local folder has revisions when it holds ``<revision>/config.json`` subfolders, as every size of a
ladder written by ``arprobe pretrain`` does (``<ladder>/<size>/step512/``): ``--revision step512``
then loads that subfolder, as it picks a branch of a hub repository.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from arprobe.errors import UserError


def check_hub_model(name: str, revision: str = "") -> None:
    """Raise UserError unless ``name`` is a local folder, is in the local Hugging Face cache, or
    the hub answers within a few seconds."""
    if Path(name).expanduser().exists():
        local_revision(name, revision)  # a missing revision is named here, before anything loads
        return
    # lazy: huggingface_hub takes seconds to import; only this path needs it
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json", revision=revision or None)
    except Exception:  # a malformed id: let the loader say what is wrong with it
        return
    if isinstance(cached, str):
        return
    at = f" at revision '{revision}'" if revision else ""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise UserError(
            f"Model '{name}'{at} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
            "unset it on a machine with network access, or give a local folder written by save_pretrained."
        )
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not hub_reachable(endpoint):
        raise UserError(
            f"Model '{name}'{at} is not in the local Hugging Face cache and the hub ({endpoint}) cannot be "
            "reached; connect to the network, or give a local folder written by save_pretrained."
        )


def hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


_PATH_SUFFIXES = (".txt", ".jsonl")  # data files named without a folder are still paths


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a local path rather than a hub id ("org/name" has one slash)."""
    return (
        name.startswith((".", "~", "/"))
        or name.endswith(_PATH_SUFFIXES)
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
        or os.path.isabs(name)
    )


def cache_root() -> Path:
    """``$ARPROBE_CACHE`` if set, else ``~/.cache/arprobe``: tokenizers and ladders live under it."""
    root = os.environ.get("ARPROBE_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "arprobe"


def ladders_dir() -> Path:
    """``<arprobe cache>/ladders``, where ``arprobe pretrain`` writes its ladders by default."""
    return cache_root() / "ladders"


def resolve_ladder_name(name: str) -> str:
    """``<ladder>/<size>`` (e.g. ``default/5m``) -> the folder ``arprobe pretrain`` wrote under the
    arprobe cache, when there is one and no local path of that name; otherwise ``name`` unchanged."""
    if Path(name).expanduser().exists() or name.count("/") != 1:
        return name
    folder = ladders_dir() / name
    return str(folder) if (folder / "config.json").is_file() else name


def local_revision(name: str, revision: str = "") -> Path | None:
    """The folder to load for local model ``name`` at ``revision``: ``name`` itself without a revision,
    ``name/<revision>/`` with one; None when ``name`` is not a local path (a hub id)."""
    path = Path(name).expanduser()
    if not path.exists():
        return None
    if not revision:
        return path
    if (path / revision / "config.json").is_file():
        return path / revision
    revisions = local_revisions(path)
    if revisions:
        shown = ", ".join(revisions[:12]) + (", ..." if len(revisions) > 12 else "")
        raise UserError(f"Model folder '{name}' has no revision '{revision}'; it has {shown}.")
    raise UserError(
        f"Model folder '{name}' has no revisions, so --revision '{revision}' cannot be loaded from it; "
        "revisions need a hub id or a ladder size written by arprobe pretrain (its step<N>/ folders)."
    )


def local_revisions(path: Path) -> list[str]:
    """Subfolders of ``path`` that are models (hold config.json), step<N> in step order."""
    if not path.is_dir():
        return []
    names = [p.name for p in path.iterdir() if (p / "config.json").is_file() and not p.name.startswith(".")]

    def order(name: str):
        digits = name[4:] if name.startswith("step") else ""
        return (0, int(digits), name) if digits.isdigit() else (1, 0, name)

    return sorted(names, key=order)
