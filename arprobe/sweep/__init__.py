"""Sweeps: a run config times a grid of options times seeds, run locally or on Ray, aggregated.

spec.py      the sweep file: read, check, expand into points
manifest.py  the sweep folder: manifest.json, a point's store state, refusing a changed file
worker.py    one point: run, resume or skip it (the only code a backend ships to a worker)
local.py     process-pool backend; ray_backend.py: Ray backend (optional extra)
execute.py   the command's engine: reconcile, dispatch, progress bar, failures
estimate.py  --dry-run: store sizes and a time estimate
report.py    aggregation over seeds (sweep.json), figures, index.html
"""

import importlib
import sys
import types


class _CallablePackage(types.ModuleType):
    """This package, callable: ``arprobe.sweep(spec, ...)`` is the API's ``arprobe.api.sweep``
    whether Python finds the function or (once imported) this package under that name."""

    def __call__(self, *args, **kwargs):
        # By name, on call: the API sits above the sweep engine (it runs the `arprobe sweep` command).
        return importlib.import_module("arprobe.api").sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
