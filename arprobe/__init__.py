"""arprobe: cyclic fine-tuning of causal LMs, recorded into one HDF5 store, analysed by probes."""

__version__ = "0.1.0"
