"""The Ray backend: each point is a Ray task, on a cluster (``--address``) or on a Ray instance
started here. Workers write their stores straight into the sweep folder, so on a cluster the
folder must be on storage every node sees (a shared filesystem path, the same on every node)."""

from __future__ import annotations

from collections.abc import Callable

from arprobe.errors import UserError
from arprobe.sweep.backend import BackendOptions, SweepBackend
from arprobe.sweep.local import available_cores
from arprobe.sweep.worker import lost_record, run_point

INSTALL = 'pip install -e ".[ray]"'


def import_ray():
    try:
        # lazy: optional extra
        import ray
    except ImportError:
        raise UserError(
            f"The ray backend needs Ray, which is not installed; install it with: {INSTALL}"
        ) from None
    return ray


class RayBackend(SweepBackend):
    name = "ray"
    remote_flags = ("address", "gpus_per_run")

    def __init__(self, *, address: str, threads: int, gpus_per_run: float, max_in_flight: int = 0):
        self.ray = import_ray()
        self.address, self.threads, self.gpus = address, threads, gpus_per_run
        self.max_in_flight = max_in_flight
        self.started_here = False

    @classmethod
    def check_available(cls) -> None:
        import_ray()

    @classmethod
    def plan(cls, options: BackendOptions) -> tuple[int, int]:
        # A cluster's size is unknown before joining it: this machine's cores, or --workers.
        threads = options.threads or 1
        return options.workers or max(1, available_cores() // threads), threads

    @classmethod
    def from_options(cls, options: BackendOptions) -> RayBackend:
        return cls(
            address=options.address,
            threads=options.threads or 1,
            gpus_per_run=options.gpus_per_run,
            max_in_flight=options.workers,
        )

    def describe(self) -> str:
        where = f"cluster at {self.address}" if self.address else "a local Ray instance"
        gpus = f", {self.gpus:g} GPU(s)" if self.gpus else ""
        return f"ray: one task per run on {where}, {self.threads} CPU(s){gpus} per run"

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        try:
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                ray.init(include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(
                f"Could not {'join the Ray cluster at ' + self.address if self.address else 'start Ray'}: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}."
            ) from None
        self.started_here = True

    def _check_gpus(self, jobs: list[dict]) -> None:
        """Refuse runs that would train on CPU by accident: device auto, no GPU reserved, GPUs there."""
        if self.gpus or not any(device_of(job) == "auto" for job in jobs):
            return
        gpus = int(self.ray.cluster_resources().get("GPU", 0))
        if gpus:
            raise UserError(
                f"The Ray cluster has {gpus} GPU(s), but runs with model.device auto reserve none and "
                "would train on CPU: pass --gpus-per-run 1 (a fraction shares a GPU), or set "
                'model.device = "cpu" to train on CPU on purpose.'
            )

    def run(
        self, jobs: list[dict], on_start: Callable[[dict], None], on_done: Callable[[dict, dict], None]
    ) -> None:
        if not jobs:
            return
        ray = self.ray
        self._connect()
        try:
            self._check_gpus(jobs)
            task = ray.remote(num_cpus=self.threads, num_gpus=self.gpus or 0, max_retries=0)(run_point)
            cpus = int(ray.cluster_resources().get("CPU", 1))
            limit = self.max_in_flight or max(1, cpus // max(self.threads, 1))
            pending, in_flight = list(jobs), {}
            while pending or in_flight:
                while pending and len(in_flight) < limit:
                    job = pending.pop(0)
                    in_flight[task.remote(job)] = job
                    on_start(job)
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in done:
                    job = in_flight.pop(ref)
                    try:
                        record = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a task whose worker died
                        record = lost_record(job, "the Ray task failed", exc)
                    on_done(job, record)
        finally:
            if self.started_here:
                ray.shutdown()


def device_of(job: dict) -> str:
    """The model.device a job's runs ask for ("auto" unless set); a batched group: its first member."""
    job = job["members"][0] if job.get("members") else job
    overrides = job.get("overrides", {})
    return str(overrides.get("model.device", overrides.get("device", "auto")))
