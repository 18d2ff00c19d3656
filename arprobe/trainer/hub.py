"""Fail fast, in one sentence, when a hub id can be neither found locally nor fetched.

Without this, an offline machine spends 30-50 s in the hub client's retries and then reports
an error about whichever file it tried first (often the tokenizer).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from arprobe.errors import UserError

_TRUE = ("1", "true", "yes", "on")


def check_hub_model(name: str, revision: str = "") -> None:
    """Raise UserError unless ``name`` is a local folder, is in the local Hugging Face cache, or
    the hub answers within a few seconds."""
    if Path(name).expanduser().exists():
        return
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json", revision=revision or None)
    except Exception:  # a malformed id: let the loader say what is wrong with it
        return
    if isinstance(cached, str):
        return
    at = f" at revision '{revision}'" if revision else ""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE:
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
