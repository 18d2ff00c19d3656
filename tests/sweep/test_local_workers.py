"""Local sweep workers: one process runs several points in turn, a failing point or a dying
process costs only its own point, and with GPUs each worker sees one GPU (CUDA_VISIBLE_DEVICES)."""

import os

import pytest
import torch

from arprobe.errors import UserError
from arprobe.sweep.backend import BackendOptions
from arprobe.sweep.local import LocalBackend, visible_gpus
from arprobe.sweep.ray_backend import RayBackend


def echo_point(job: dict) -> dict:
    """A stand-in for run_point in the worker process: dies for "crash", raises for "raise"."""
    if job["name"].startswith("crash"):
        os._exit(3)
    marker = job["overrides"].get("marker")
    if marker and not os.path.exists(marker):  # dies on its first attempt only
        with open(marker, "w") as fh:
            fh.write(str(os.getpid()))
        os._exit(9)
    status = "failed" if job["name"].startswith("fail") else "complete"
    return {
        "name": job["name"],
        "status": status,
        "pid": os.getpid(),
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "threads": torch.get_num_threads(),
    }


def run_jobs(backend: LocalBackend, names: list[str]) -> tuple[list[str], dict[str, dict]]:
    started, done = [], {}
    backend.run(
        [{"name": n, "overrides": {}, "threads": 1} for n in names],
        lambda job: started.append(job["name"]),
        lambda job, record: done.setdefault(job["name"], record),
    )
    return started, done


def test_two_workers_run_six_points_in_two_processes():
    started, done = run_jobs(LocalBackend(2, 1, runner=echo_point), [f"p{i}" for i in range(5)] + ["fail"])
    assert sorted(started) == sorted(done) == sorted([f"p{i}" for i in range(5)] + ["fail"])
    assert len({r["pid"] for r in done.values()}) == 2  # imports paid once per worker, not per point
    assert os.getpid() not in {r["pid"] for r in done.values()}
    assert done["fail"]["status"] == "failed"
    assert [done[f"p{i}"]["status"] for i in range(5)] == ["complete"] * 5
    assert {r["threads"] for r in done.values()} == {1}


def test_a_dying_worker_costs_only_its_point_and_is_replaced():
    started, done = run_jobs(LocalBackend(2, 1, runner=echo_point), ["a", "crash", "b", "c", "d"])
    assert started.count("crash") == 1  # handed out twice (once more after the first death), started once
    assert done["crash"]["status"] == "failed"
    assert done["crash"]["error"] == "the worker process died twice (exit code 3)"
    assert all(done[n]["status"] == "complete" for n in "abcd")


def test_a_point_whose_worker_died_once_runs_again_in_a_new_worker(tmp_path):
    marker = tmp_path / "first-attempt-pid"
    started, done = [], {}
    jobs = [{"name": "once", "overrides": {"marker": str(marker)}, "threads": 1}]
    jobs += [{"name": n, "overrides": {}, "threads": 1} for n in "ab"]
    on_start = lambda job: started.append(job["name"])  # noqa: E731
    on_done = lambda job, record: done.setdefault(job["name"], record)  # noqa: E731
    LocalBackend(1, 1, runner=echo_point).run(jobs, on_start, on_done)
    assert started == ["once", "a", "b"] and done["once"]["status"] == "complete"
    assert done["once"]["pid"] != int(marker.read_text())  # the first worker died; a new one ran it
    assert done["a"]["pid"] == done["b"]["pid"] == done["once"]["pid"]


def test_each_worker_sees_its_own_gpu():
    _, done = run_jobs(LocalBackend(3, 1, gpus=["0", "1"], runner=echo_point), [f"p{i}" for i in range(6)])
    by_pid = {}
    for record in done.values():
        by_pid.setdefault(record["pid"], set()).add(record["gpu"])
    assert sorted(g for gpus in by_pid.values() for g in gpus) == ["0", "0", "1"]  # worker i: GPU i mod 2
    assert all(len(gpus) == 1 for gpus in by_pid.values())


@pytest.fixture
def four_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_gpu_sweeps_default_to_one_worker_per_gpu(four_gpus, monkeypatch, capsys):
    assert visible_gpus() == ["0", "1", "2", "3"]
    backend = LocalBackend.from_options(BackendOptions(n_jobs=8, uses_gpu=True))
    assert backend.workers == 4 and [backend.gpu_of(i) for i in range(5)] == ["0", "1", "2", "3", "0"]
    assert "GPU runs: one per GPU on the local backend, 4 at a time" in capsys.readouterr().out
    assert "GPU(s) 0,1,2,3 one per worker" in backend.describe()
    assert LocalBackend.from_options(BackendOptions(n_jobs=8, uses_gpu=True, workers=2)).workers == 2
    assert LocalBackend.from_options(BackendOptions(n_jobs=8, uses_gpu=False)).gpus == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert visible_gpus() == ["5", "7"]


class FakeRay:
    def __init__(self, gpus: int):
        self.gpus = gpus

    def cluster_resources(self) -> dict:
        return {"CPU": 8, "GPU": self.gpus} if self.gpus else {"CPU": 8}


def ray_backend(gpus_on_cluster: int, gpus_per_run: float) -> RayBackend:
    backend = object.__new__(RayBackend)  # no Ray needed: only the check is tested
    backend.ray, backend.gpus = FakeRay(gpus_on_cluster), gpus_per_run
    return backend


def test_ray_refuses_gpu_less_runs_with_device_auto_when_the_cluster_has_gpus():
    auto = [{"name": "a", "overrides": {"lr": 1e-3}, "threads": 1}]
    with pytest.raises(UserError, match=r"has 2 GPU\(s\), .* pass --gpus-per-run 1") as err:
        ray_backend(2, 0)._check_gpus(auto)
    assert str(err.value).count(". ") == 0  # one sentence
    ray_backend(2, 1)._check_gpus(auto)  # a GPU reserved per run
    ray_backend(0, 0)._check_gpus(auto)  # no GPU on the cluster: CPU is all there is
    ray_backend(2, 0)._check_gpus([{"name": "c", "overrides": {"model.device": "cpu"}, "threads": 1}])
    group = {"name": "g", "members": [{"name": "m", "overrides": {"device": "auto"}}]}
    with pytest.raises(UserError):
        ray_backend(1, 0)._check_gpus([group])
