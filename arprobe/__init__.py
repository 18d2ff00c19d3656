"""arprobe: cyclic fine-tuning of causal LMs, recorded into one HDF5 store, analysed by probes.

The Python API (``arprobe.api``), loaded on first use so that ``import arprobe`` and
``arprobe --help`` stay fast::

    arprobe.run(config=None, **overrides)      train; returns a Run (path, status, numbers)
    arprobe.resume(path)                       continue an unfinished run
    arprobe.open(path)                         the RunStore of a run
    arprobe.analyze(run, probes=None, ...)     run probes; numbers as dicts, figures inline
    arprobe.sweep(spec_or_path, ...)           run a sweep; one row per run
    arprobe.load_sweep(folder)                 one row per run of a sweep folder
"""

__version__ = "0.1.0"

# Names served by arprobe.api; ``sweep`` is also the subpackage arprobe.sweep, which is callable
# (arprobe/sweep/__init__.py), so arprobe.sweep(...) works whichever of the two Python finds.
_API = ("run", "resume", "open", "analyze", "sweep", "load_sweep", "make_config", "Run", "Analysis")

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        # Here, not at the top: arprobe.api is only needed by callers of the API (start-up of --help).
        from arprobe import api

        value = api.sweep if name == "sweep" else getattr(api, name)
        if name != "sweep":
            globals()[name] = value  # found directly next time
        return value
    raise AttributeError(f"module 'arprobe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
