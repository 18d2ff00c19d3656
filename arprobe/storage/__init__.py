"""The HDF5 run store: writer (used by the trainer), reader (used by probes and the CLI)."""

from arprobe.storage.reader import RunStore, resolve_store_path
from arprobe.storage.writer import RunWriter, StoreLayout

__all__ = ["RunStore", "RunWriter", "StoreLayout", "resolve_store_path"]
