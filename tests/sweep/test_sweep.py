"""`arprobe sweep` and `arprobe analyze SWEEP_DIR` as a user calls them: grids × seeds of tiny runs
through the local and Ray backends, a killed sweep finished by running it again, a changed file
refused, sweep.json equal to what each store says."""

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from arprobe.cli.main import main
from tests.helpers import arprobe, eval_matrix, write_sweep


def manifest(sweep_dir: Path) -> dict:
    return json.loads((sweep_dir / "manifest.json").read_text())


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


GRID = {"order": ["cyclic", "shuffle"]}
SEEDS = [0, 1]
NAMES = ["order-cyclic_s0", "order-cyclic_s1", "order-shuffle_s0", "order-shuffle_s1"]


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """A 2-value × 2-seed sweep of tiny runs through the local backend (2 workers × 1 thread)."""
    root = tmp_path_factory.mktemp("sweep")
    sweep_file = write_sweep(root / "table1.toml", grid=GRID, seeds=SEEDS)
    result = arprobe(
        "sweep", str(sweep_file), "--out", str(root / "sweeps"), "--workers", "2", "--no-progress"
    )
    assert result.returncode == 0, result.stderr
    return root, sweep_file, root / "sweeps" / "tiny", result


# --- the sweep file --------------------------------------------------------------------------------


def test_points_are_grid_times_seeds_with_readable_names(tmp_path):
    from arprobe.sweep.spec import load_sweep

    spec = load_sweep(
        write_sweep(
            tmp_path / "s.toml", grid={"d_model": [32, 64], "optim.name": ["adam", "sgd"]}, seeds=[3, 4]
        )
    )
    points = spec.points()
    assert len(points) == 8
    assert points[0].name == "d_model-32_name-adam_s3"
    assert points[-1].name == "d_model-64_name-sgd_s4"
    assert points[0].options == {"model.d_model": 32, "optim.name": "adam"}
    assert [p.seed for p in points[:2]] == [3, 4]
    assert spec.base["data.n_docs"] == 5 and "seed" not in spec.base
    overrides = spec.overrides(points[0], tmp_path / "runs")
    assert overrides["name"] == points[0].name and overrides["out"] == str(tmp_path / "runs")
    assert overrides["seed"] == 3 and overrides["model.d_model"] == 32


def test_two_grid_keys_with_the_same_leaf_keep_their_paths(tmp_path):
    from arprobe.sweep.spec import load_sweep

    spec = load_sweep(
        write_sweep(tmp_path / "s.toml", grid={"model.name": ["tiny"], "optim.name": ["adam"]}, seeds=[0])
    )
    assert spec.points()[0].name == "model.name-tiny_optim.name-adam_s0"


def test_a_linked_factor_sets_its_options_together(tmp_path):
    from arprobe.sweep.spec import load_sweep

    sweep_file = tmp_path / "s.toml"
    sweep_file.write_text(
        'name = "opt"\nseeds = [0]\nlr = 0.5\n[grid]\n'
        'optim = [{name = "adam", lr = 1e-5}, {name = "sgd", lr = 1e-3}]\n'
        'stream = [{order = "cyclic", n_docs = 6}, {order = "insert", n_docs = 20, repeat_docs = 6}]\n'
    )
    spec = load_sweep(sweep_file)
    assert spec.grid["optim"] == [
        {"optim.name": "adam", "optim.lr": 1e-5},
        {"optim.name": "sgd", "optim.lr": 1e-3},
    ]
    assert "optim.lr" not in spec.base  # the linked value wins over the shared one
    points = spec.points()
    assert [p.name for p in points] == [
        "optim-adam+1e-05_stream-cyclic+6_s0",
        "optim-adam+1e-05_stream-insert+20+6_s0",
        "optim-sgd+0.001_stream-cyclic+6_s0",
        "optim-sgd+0.001_stream-insert+20+6_s0",
    ]
    overrides = spec.overrides(points[3], tmp_path)
    assert overrides["optim.name"] == "sgd" and overrides["optim.lr"] == 1e-3
    assert overrides["schedule.order"] == "insert" and overrides["data.n_docs"] == 20
    assert overrides["schedule.repeat_docs"] == 6


@pytest.mark.parametrize(
    "grid, extra, message",
    [
        ({"d_modl": [64]}, {}, "Unknown option 'd_modl'. Did you mean 'd_model'?"),
        ({"d_model": 64}, {}, "grid.d_model must be a non-empty list of values"),
        ({"seed": [0, 1]}, {}, "give seeds at the top of the file as seeds = [0, 1, 2], not in [grid]"),
        ({"order": ["cyclic", "spiral"]}, {}, "point order-spiral_s0: schedule.order must be one of"),
        ({"d_model": [64, 64]}, {}, "grid.d_model lists a value twice"),
        ({"d_model": [64]}, {"seed": 3}, "sets both 'seed' and 'seeds'"),
        (
            {"name": ["tiny"]},
            {},
            "'name' cannot be a grid factor; the sweep names its runs (for the model, write",
        ),
        (
            {"lr": [0.1], "optim": [{"name": "sgd", "lr": 0.01}]},
            {},
            "grid factors 'optim.lr' and 'optim' both set",
        ),
    ],
)
def test_bad_sweep_file_is_one_line_and_leaves_nothing(tmp_path, grid, extra, message):
    sweep_file = write_sweep(tmp_path / "bad.toml", grid=grid, seeds=[0], **extra)
    result = arprobe("sweep", str(sweep_file), "--out", str(tmp_path / "sweeps"))
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "sweeps").exists()


def test_ray_backend_without_ray_names_the_install_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    sweep_file = write_sweep(tmp_path / "s.toml", grid=GRID, seeds=[0])
    assert main(["sweep", str(sweep_file), "--backend", "ray", "--out", str(tmp_path / "sweeps")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "arprobe sweep: error: The ray backend needs Ray, which is not installed; "
        'install it with: pip install -e ".[ray]"'
    )
    assert not (tmp_path / "sweeps").exists()


def test_split_cores_never_oversubscribes():
    from arprobe.sweep.local import split_cores

    assert split_cores(2, n_jobs=8) == (2, 1)
    assert split_cores(2, n_jobs=1) == (1, 2)  # one run gets both cores
    assert split_cores(16, n_jobs=8, workers=4) == (4, 4)
    assert split_cores(16, n_jobs=8, threads=4) == (4, 4)
    assert split_cores(8, n_jobs=2, threads=2) == (2, 2)


def test_gpu_runs_default_to_one_local_worker(tmp_path, monkeypatch, capsys):
    import argparse

    import torch

    from arprobe.cli.sweep import make_backend
    from arprobe.sweep.local import available_cores
    from arprobe.sweep.spec import load_sweep

    spec = load_sweep(write_sweep(tmp_path / "s.toml", grid={"d_model": [32, 64]}, seeds=[0, 1]))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    args = argparse.Namespace(backend="local", workers=0, threads=0, address="", gpus_per_run=0.0)
    gpu = make_backend(args, 4, spec)
    assert (gpu.workers, gpu.threads) == (1, available_cores())
    assert "GPU runs: one at a time on the local backend" in capsys.readouterr().out
    spec.base["model.device"] = "cpu"
    args.workers = 0
    assert make_backend(args, 4, spec).workers == min(available_cores(), 4)


def test_dry_run_lists_points_and_estimates_and_writes_nothing(tmp_path):
    sweep_file = write_sweep(tmp_path / "s.toml", grid={"d_model": [32]}, seeds=[0, 1])
    result = arprobe("sweep", str(sweep_file), "--out", str(tmp_path / "sweeps"), "--dry-run")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "sweep tiny: 2 runs (2 seed(s) × 1 point(s))" in out
    for name in ["d_model-32_s0", "d_model-32_s1"]:
        assert f"  {name}  new" in out
    assert "total store estimate: " in out and "(some unknown)" not in out
    assert "time estimate: " in out
    assert not (tmp_path / "sweeps").exists()


# --- running a sweep ---------------------------------------------------------------------------------


def test_local_sweep_writes_a_store_per_point_and_a_manifest(local_sweep):
    root, sweep_file, sweep_dir, result = local_sweep
    assert (
        "4 runs — 0 already done, 0 to resume, 4 to start; local: 2 worker process(es) × 1 torch thread(s)"
        in (result.stdout)
    )
    assert "4 of 4 runs complete (0 were already done, 4 run in this call)." in result.stdout
    assert (sweep_dir / "sweep.toml").read_text() == sweep_file.read_text()
    m = manifest(sweep_dir)
    assert m["factors"] == ["schedule.order"] and m["seeds"] == SEEDS
    assert [p["name"] for p in m["points"]] == NAMES
    for point in m["points"]:
        assert point["status"] == "complete" and point["episodes"] == 15
        assert point["seconds"] > 0 and point["attempts"][0]["action"] == "run"
        from arprobe.storage import RunStore

        with RunStore(sweep_dir / point["run"]) as store:
            assert store.status == "complete" and store.seed == point["seed"]
            assert store.config["schedule"]["order"] == point["options"]["schedule.order"]
            assert store.config["name"] == point["name"]


def test_rerun_skips_complete_runs_and_a_changed_file_is_refused(local_sweep, tmp_path):
    root, sweep_file, sweep_dir, _ = local_sweep
    before = {n: digest(sweep_dir / "runs" / n / "run.h5") for n in NAMES}
    again = arprobe("sweep", str(sweep_file), "--out", str(root / "sweeps"), "--no-progress")
    assert again.returncode == 0, again.stderr
    assert "4 runs — 4 already done, 0 to resume, 0 to start" in again.stdout
    assert {n: digest(sweep_dir / "runs" / n / "run.h5") for n in NAMES} == before
    assert all(len(p["attempts"]) == 1 for p in manifest(sweep_dir)["points"])

    changed = write_sweep(tmp_path / "tiny.toml", grid=GRID, seeds=SEEDS, epochs=4)
    kept = (sweep_dir / "manifest.json").read_text()
    refused = arprobe("sweep", str(changed), "--out", str(root / "sweeps"))
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"arprobe sweep: error: The sweep file differs from the one '{sweep_dir}' was made with "
        "(schedule.epochs); pass --extend to add only its new points, or use another --out or sweep name."
    )
    extend = arprobe("sweep", str(changed), "--out", str(root / "sweeps"), "--extend")
    assert extend.returncode == 2
    assert (
        "--extend only adds points, but the file changes the options every run shares (schedule.epochs)"
        in (extend.stderr)
    )
    assert (sweep_dir / "manifest.json").read_text() == kept


def test_a_sweep_folder_in_use_is_refused(local_sweep):
    import socket

    root, sweep_file, sweep_dir, _ = local_sweep
    lock = sweep_dir / ".lock"
    lock.write_text(f"{socket.gethostname()} {os.getpid()}")  # this test's process: alive
    try:
        busy = arprobe("sweep", str(sweep_file), "--out", str(root / "sweeps"))
    finally:
        lock.unlink()
    assert busy.returncode == 2
    assert busy.stderr.strip() == (
        f"arprobe sweep: error: '{sweep_dir}' is being run by process {os.getpid()}; "
        "wait for it or stop it first."
    )


def test_sweep_json_equals_the_numbers_of_each_store(local_sweep):
    from arprobe.science.recovery import online_loss, recovery_scores
    from arprobe.storage import RunStore

    root, _, sweep_dir, _ = local_sweep
    result = arprobe("analyze", str(sweep_dir))
    assert result.returncode == 0, result.stderr
    report = sweep_dir / "report"
    summary = json.loads((report / "sweep.json").read_text())
    assert [p["label"] for p in summary["points"]] == ["order=cyclic", "order=shuffle"]
    for point, order in zip(summary["points"], ["cyclic", "shuffle"]):
        rs, online = [], []
        for seed in SEEDS:
            with RunStore(sweep_dir / "runs" / f"order-{order}_s{seed}") as store:
                schedule = store.schedule()
                rs.append(recovery_scores(store.eval_matrix(), schedule.doc))
                online.append(
                    online_loss(store.eval_matrix(), schedule.doc, schedule.epoch).mean_after_first_epoch
                )
        rs = np.array(rs)  # [seed, epoch]
        assert point["n"] == 2 and point["seeds"] == SEEDS
        assert point["recovery_score"]["epochs"] == [1, 2]
        got = np.array(point["recovery_score"]["per_seed"], dtype=float)  # null -> nan
        np.testing.assert_array_equal(got, rs)
        assert point["final_recovery_score"]["epoch"] == 2
        np.testing.assert_array_equal(
            np.array(point["final_recovery_score"]["per_seed"], dtype=float), rs[:, -1]
        )
        assert point["online_loss"]["epochs"] == [2, 3]
        assert point["online_loss"]["per_seed"] == online
        assert point["online_loss"]["mean"] == pytest.approx(np.mean(online))
        assert point["online_loss"]["std"] == pytest.approx(np.std(online, ddof=1))
        curve = point["shift_averaged_curve"]
        assert len(curve["epochs"]) == len(curve["mean"]) and curve["epochs"][0] == 0.0
    # Table 1: shuffle minus cyclic, paired by seed, t interval with 1 degree of freedom.
    row = summary["table1"]["rows"][0]
    cyc, shu = (summary["points"][i]["online_loss"]["per_seed"] for i in (0, 1))
    diffs = np.subtract(shu, cyc)
    d = row["differences"]["shuffle"]
    assert d["minus"] == "cyclic" and d["seeds"] == SEEDS and d["n"] == 2
    assert d["mean"] == pytest.approx(diffs.mean())
    half = 12.7062047 * np.std(diffs, ddof=1) / math.sqrt(2)
    assert d["ci_low"] == pytest.approx(diffs.mean() - half) and d["ci_high"] == pytest.approx(
        diffs.mean() + half
    )
    figures = ["curves_order", "online_loss", "rs_per_epoch", "rs_vs_order"]
    assert sorted(p.name for p in report.glob("*.png")) == [f"{f}.png" for f in figures]
    for f in figures:  # every figure also as SVG, and the numbers drawn as CSV
        assert (report / f"{f}.svg").exists() and (report / f"{f}.csv").exists(), f
    table = (report / "table1.md").read_text()
    assert (
        "| point | cyclic (mean ± std) | shuffle (mean ± std) | shuffle − cyclic [95% CI] | seeds |" in table
    )
    index = (report / "index.html").read_text()
    assert "Online loss, epochs 2..E (Table 1)" in index and "<img src='rs_vs_order.png'" in index
    assert "order=cyclic" in result.stdout and "online loss" in result.stdout


def test_a_probe_over_every_run_is_aggregated_per_point(local_sweep, tmp_path):
    root, _, sweep_dir, _ = local_sweep
    out = tmp_path / "report"
    result = arprobe("analyze", str(sweep_dir), "--probe", "recovery_score", "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "sweep.json").read_text())
    for point in summary["points"]:
        probe = point["probes"]["recovery_score"]
        assert probe["status"] == ["ok", "ok"]
        per_seed = np.array(probe["headline"]["recovery_score"]["per_seed"], dtype=float)
        np.testing.assert_array_equal(per_seed, np.array(point["recovery_score"]["per_seed"], dtype=float))
    for name in NAMES:
        assert (sweep_dir / "runs" / name / "report" / "recovery_score" / "result.json").is_file()


def test_analyze_several_runs_groups_them_by_config_minus_seed(local_sweep, tmp_path):
    root, _, sweep_dir, _ = local_sweep
    runs = [str(sweep_dir / "runs" / n) for n in NAMES]
    out = tmp_path / "report"
    result = arprobe("analyze", *runs, "--probe", "online_loss", "--out", str(out))
    assert result.returncode == 0, result.stderr
    groups = json.loads((out / "groups" / "sweep.json").read_text())
    assert groups["factors"] == ["schedule.order"]
    assert [(p["label"], p["n"]) for p in groups["points"]] == [("order=cyclic", 2), ("order=shuffle", 2)]
    swept = (
        json.loads((sweep_dir / "report" / "sweep.json").read_text())
        if (sweep_dir / "report").exists()
        else None
    )
    if swept:  # the same runs give the same numbers, from a folder or from a list of runs
        assert groups["points"][0]["online_loss"] == swept["points"][0]["online_loss"]
    assert groups["table1"]["rows"][0]["differences"]["shuffle"]["n"] == 2
    assert (out / "online_loss" / "result.json").is_file()


def test_ray_backend_gives_the_same_stores(local_sweep, tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")
    root, sweep_file, sweep_dir, _ = local_sweep
    result = arprobe(
        "sweep", str(sweep_file), "--backend", "ray", "--out", str(tmp_path / "sweeps"), "--no-progress"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ray: one task per run on a local Ray instance, 1 CPU(s) per run" in result.stdout
    ray_dir = tmp_path / "sweeps" / "tiny"
    assert [p["status"] for p in manifest(ray_dir)["points"]] == ["complete"] * 4
    for name in NAMES:
        np.testing.assert_array_equal(
            eval_matrix(ray_dir / "runs" / name), eval_matrix(sweep_dir / "runs" / name)
        )


def test_killed_sweep_finishes_when_run_again_without_training_a_run_twice(local_sweep, tmp_path):
    """Kill the whole sweep (parent and workers) in the middle of a run, then run it again."""
    from arprobe.sweep.manifest import inspect_store

    root, _, reference, _ = local_sweep
    names = NAMES[:2]  # the cyclic runs of the module's sweep, which serve as the uninterrupted reference
    sweep_file = write_sweep(tmp_path / "tiny.toml", grid={"order": ["cyclic"]}, seeds=SEEDS)
    out = tmp_path / "sweeps"
    sweep_dir = out / "tiny"
    args = [sys.executable, "-m", "arprobe", "sweep", str(sweep_file), "--out", str(out), "--workers", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*args, "--threads", "1", "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            states = [inspect_store(sweep_dir / "runs" / n / "run.h5")[:2] for n in names]
            done = [s for s, _ in states if s == "complete"]
            if done and any(s == "unfinished" and k >= 2 for s, k in states):
                break
            assert proc.poll() is None, "the sweep finished before it could be killed"
            time.sleep(0.02)
        else:
            pytest.fail("the sweep never reached a run in progress")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    states = {n: inspect_store(sweep_dir / "runs" / n / "run.h5")[:2] for n in names}
    complete = [n for n, (s, _) in states.items() if s == "complete"]
    interrupted = [n for n, (s, _) in states.items() if s == "unfinished"]
    assert complete and interrupted and len(complete) < 2
    kept = {n: digest(sweep_dir / "runs" / n / "run.h5") for n in complete}

    again = arprobe(
        "sweep", str(sweep_file), "--out", str(out), "--workers", "1", "--threads", "1", "--no-progress"
    )
    assert again.returncode == 0, again.stderr
    assert f"{len(complete)} already done, {len(interrupted)} to resume" in again.stdout
    m = {p["name"]: p for p in manifest(sweep_dir)["points"]}
    for name in names:
        assert m[name]["status"] == "complete" and m[name]["episodes"] == 15
        # Same numbers as the uninterrupted sweep: resumed bit for bit, nothing trained twice over.
        np.testing.assert_array_equal(
            eval_matrix(sweep_dir / "runs" / name), eval_matrix(reference / "runs" / name)
        )
    for name in complete:  # finished before the kill: untouched, no attempt in the second call
        assert digest(sweep_dir / "runs" / name / "run.h5") == kept[name]
        assert [a["action"] for a in m[name]["attempts"]] == ["run"]
    for name in interrupted:  # continued from its store, not started again
        last = m[name]["attempts"][-1]
        assert last["action"] == "resume" and last["from_episode"] == states[name][1] >= 2


def test_failed_run_does_not_stop_the_others_and_extend_adds_points(tmp_path):
    sweep_file = write_sweep(
        tmp_path / "s.toml", grid={"source": ["pydoc", str(tmp_path / "missing.jsonl")]}, seeds=[0], epochs=2
    )
    out = tmp_path / "sweeps"
    first = arprobe(
        "sweep", str(sweep_file), "--out", str(out), "--workers", "1", "--threads", "1", "--no-progress"
    )
    assert first.returncode == 1
    assert "1 of 2 runs complete" in first.stdout
    assert "arprobe sweep: 1 run(s) did not complete:" in first.stderr
    failed = [p for p in manifest(out / "tiny")["points"] if p["status"] != "complete"]
    assert len(failed) == 1 and failed[0]["status"] == "failed" and "does not exist" in failed[0]["error"]
    assert f"  {failed[0]['name']}: failed: {failed[0]['error']}" in first.stderr
    assert "Traceback" not in first.stderr

    write_sweep(
        sweep_file, grid={"source": ["pydoc", str(tmp_path / "missing.jsonl")]}, seeds=[0, 1], epochs=2
    )
    extended = arprobe(
        "sweep",
        str(sweep_file),
        "--out",
        str(out),
        "--extend",
        "--workers",
        "1",
        "--threads",
        "1",
        "--no-progress",
    )
    assert extended.returncode == 1  # the missing source still fails, for both seeds
    assert "4 runs — 1 already done, 0 to resume, 3 to start" in extended.stdout
    points = manifest(out / "tiny")["points"]
    assert [p["seed"] for p in points] == [0, 0, 1, 1]
    assert sum(p["status"] == "complete" for p in points) == 2
    assert "seeds = [0, 1]" in (out / "tiny" / "sweep.toml").read_text()


def test_paper_table_is_written_from_the_reports(local_sweep, tmp_path):
    from benchmarks.paper_table import END, START, build_table, replace_between_markers

    root, _, sweep_dir, _ = local_sweep
    out = tmp_path / "sweeps" / "table1-cpu" / "report"  # where the Table 1 twin's report would be
    assert arprobe("analyze", str(sweep_dir), "--out", str(out)).returncode == 0
    summary = json.loads((out / "sweep.json").read_text())
    table = build_table(tmp_path / "sweeps", kept=tmp_path / "kept")
    assert (tmp_path / "kept" / "table1-cpu.json").read_text() == (out / "sweep.json").read_text()
    lines = table.splitlines()[2:]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines if not line.startswith("| 〃")}
    assert len(rows) == 19 and len(lines) == 19 + 6  # six figures have a pretrained-ladder twin too
    d = summary["table1"]["rows"][0]["differences"]["shuffle"]
    cyclic = summary["points"][0]["online_loss"]
    assert f"cyclic {cyclic['mean']:.3f} ± {cyclic['std']:.3f}, shuffle " in rows["Table 1"]
    verdict = "yes" if d["ci_low"] > 0 else "no" if d["ci_high"] < 0 else "inconclusive"
    assert f"| {verdict}: shuffle − cyclic online loss, paired by seed: " in rows["Table 1"]
    assert f"{d['mean']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}] (n=2)" in rows["Table 1"]
    assert "(measured by an earlier version of the twin: E=3, 2 seeds;" in rows["Table 1"]
    assert rows["Fig. 1"].endswith("| not yet measured | — |")
    readme = f"intro\n{START}\nold\n{END}\nrest\n"
    assert replace_between_markers(readme, "NEW") == f"intro\n{START}\nNEW\n{END}\nrest\n"


# --- matched controls ------------------------------------------------------------------------------


def test_control_shuffle_gives_every_point_its_matched_shuffled_twin(tmp_path):
    from arprobe.sweep.manifest import new_entry
    from arprobe.sweep.spec import Point, load_sweep

    spec = load_sweep(
        write_sweep(tmp_path / "s.toml", grid={"d_model": [32, 64]}, seeds=[3, 4], control="shuffle")
    )
    points = spec.points()
    # each point is followed by its control: same options, same seed (same documents and initialisation)
    assert [(p.name, p.control) for p in points[:2]] == [
        ("d_model-32_s3", None),
        ("d_model-32_control-shuffle_s3", "shuffle"),
    ]
    assert len(points) == 8 and [p.seed for p in points[:4]] == [3, 3, 4, 4]
    primary, control = points[0], points[1]
    assert control.options == primary.options and control.seed == primary.seed
    assert control.key != primary.key and control.group_key != primary.group_key
    a, b = spec.overrides(primary, tmp_path), spec.overrides(control, tmp_path)
    assert "schedule.order" not in a and b["schedule.order"] == "shuffle"  # the point: the default, cyclic
    assert {k: v for k, v in a.items() if k not in ("schedule.order", "name")} == {
        k: v for k, v in b.items() if k not in ("schedule.order", "name")
    }
    entry = new_entry(control)
    assert entry["control"] == "shuffle" and "control" not in new_entry(primary)
    assert Point.from_entry(entry) == control  # the manifest entry gives the same point back
    assert spec.canonical()["control"] == "shuffle"


@pytest.mark.parametrize(
    "grid, extra, message",
    [
        ({"d_model": [32]}, {"control": "reverse"}, "control must be one of 'shuffle', got 'reverse'."),
        (
            {"order": ["cyclic", "shuffle"]},
            {"control": "shuffle"},
            "control = 'shuffle' sets schedule.order itself, but grid.schedule.order varies it;",
        ),
        (
            {"schedule": [{"order": "cyclic"}, {"order": "partial-shuffle", "shuffle_until": 3}]},
            {"control": "shuffle"},
            "but grid.schedule varies it;",
        ),
        (
            {"d_model": [32]},
            {"control": "shuffle", "order": "shuffle"},
            "which every run already has; the control would repeat each point.",
        ),
    ],
)
def test_a_control_that_cannot_be_matched_is_refused(tmp_path, grid, extra, message):
    from arprobe.errors import UserError
    from arprobe.sweep.spec import load_sweep

    with pytest.raises(UserError) as err:
        load_sweep(write_sweep(tmp_path / "bad.toml", grid=grid, seeds=[0], **extra))
    assert message in str(err.value)


def test_report_pairs_each_point_with_its_control_seed_by_seed(tmp_path):
    from arprobe.sweep.report import groups_from_manifest, pair_with_controls

    # The manifest of a `control = "shuffle"` sweep: each point followed by its control, one folder each.
    entries = []
    for seed in (0, 1, 2):
        entries.append({"name": f"d_model-32_s{seed}", "options": {"model.d_model": 32}, "seed": seed})
        entries.append(
            {"name": f"d_model-32_control-shuffle_s{seed}", "options": {"model.d_model": 32}, "seed": seed}
            | {"control": "shuffle"}
        )
    for e in entries:
        e["run"] = f"runs/{e['name']}"
    factors, _, groups = groups_from_manifest(
        tmp_path, {"factors": ["model.d_model"], "grid": {}, "points": entries}
    )
    assert [(g.label(factors), [name for name, _ in g.runs]) for g in groups] == [
        ("d_model=32", ["d_model-32_s0", "d_model-32_s1", "d_model-32_s2"]),
        (
            "d_model=32 (shuffle control)",
            [
                "d_model-32_control-shuffle_s0",
                "d_model-32_control-shuffle_s1",
                "d_model-32_control-shuffle_s2",
            ],
        ),
    ]

    def entry(values, online, seeds, control=None):
        e = {
            "options": {"model.d_model": 32},
            "n": len(seeds),
            "seeds": seeds,
            "final_recovery_score": {"per_seed": values},
            "first_doc_recovery_score": {"per_seed": values},
            "online_loss": {"per_seed": online},
        }
        return e | {"control": control} if control else e

    # The control's seeds come in another order and lack seed 2: pairs are by seed, not by position.
    point = entry([0.40, 0.50, 0.45], [3.5, 3.6, 3.4], [0, 1, 2])
    control = entry([0.15, 0.10], [4.1, 4.0], [1, 0], control="shuffle")
    pair_with_controls([point, control])
    pairs = point["versus_control"]
    assert pairs["control"] == "shuffle" and pairs["seeds"] == [0, 1] and "versus_control" not in control
    # ΔRS per seed: 0.40 − 0.10 = 0.30, 0.50 − 0.15 = 0.35: mean 0.325, sd 0.0353553;
    # half-width t_{.975,1} · sd / √2 = 12.7062 · 0.025 = 0.317655
    d = pairs["final_recovery_score"]
    assert d["n"] == 2 and d["minus"] == "control"
    assert d["mean"] == pytest.approx(0.325, rel=1e-12)
    assert d["ci_low"] == pytest.approx(0.325 - 0.317655, rel=1e-4)
    assert d["ci_high"] == pytest.approx(0.325 + 0.317655, rel=1e-4)
    # online loss per seed: 3.5 − 4.0 = −0.5, 3.6 − 4.1 = −0.5: no spread, a zero-width interval
    o = pairs["online_loss"]
    assert o["mean"] == pytest.approx(-0.5, rel=1e-12) and o["ci_low"] == pytest.approx(o["ci_high"])
