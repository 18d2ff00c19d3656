"""`run --dry-run` and `sweep --dry-run` print the device memory and time plan; a run that does not
fit its device is refused in one sentence before anything is built (free memory mocked)."""

from arprobe.cli.main import main
from arprobe.trainer import memory
from arprobe.trainer.memory import device_memory, human_bytes, peak_bytes
from arprobe.trainer.plan import config_shape
from arprobe.trainer.rates import format_seconds
from tests.conftest import TINY, tiny_config
from tests.helpers import write_sweep


def tiny_args(tmp_path) -> list[str]:
    args = ["--out", str(tmp_path / "runs")]
    for key, value in TINY.items():
        args += [f"--{key}", str(value)]
    return args


def test_dry_run_plans_memory_and_time_for_another_device(tmp_path, capsys):
    code = main(["run", *tiny_args(tmp_path), "--autocast", "bfloat16", "--dry-run", "--plan-device", "h200"])
    out = capsys.readouterr().out
    assert code == 0
    N = 165_632  # tests/trainer/test_memory_plan.py counts it by hand
    assert "memory on NVIDIA H200 SXM 141 GB (from shapes on the meta device; nothing loaded):" in out
    assert f"  {'weights':<24} {human_bytes(4 * N):>9}  {N:,} values x 4 B" in out
    assert f"  {'optimizer state':<24} {human_bytes(8 * N):>9}  Adam: 2 values per trainable weight" in out
    assert f"{human_bytes(141e9 - 2**30)} free: fits" in out
    # one step: 6 N C FLOPs at 40% of 989 TFLOP/s is 0.08 us, under the 0.9 ms of launching
    # 80 x 2 blocks + 20 kernels at 5 us: the launch floor is the step
    assert (
        "time on NVIDIA H200 SXM 141 GB: 989 TFLOP/s bf16 (datasheet of NVIDIA H200 SXM 141 GB) at 40% MFU"
        in out
    )
    assert f"  step {format_seconds(5e-6 * (80 * 2 + 20))} x {5 * 3 * 3} = " in out
    assert "resume point: " in out and " written in all" in out
    assert "pairwise_recovery afterwards (batch -1 on a GPU): 5 replay(s) at once fit" in out  # all T = 5
    assert not (tmp_path / "runs").exists()


def test_a_run_that_does_not_fit_is_refused_before_anything_is_built(tmp_path, capsys, monkeypatch):
    cfg = tiny_config(tmp_path)
    shape = config_shape(cfg)
    parts = device_memory(cfg, shape, grad_values=3 * 64 * 64 + 3 * 64 + 64 * 64 + 64)
    need = peak_bytes(parts)
    free = need // 2  # the host check (a few KB for the eval matrix and windows) still passes
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: free)
    code = main(["run", *tiny_args(tmp_path)])
    err = capsys.readouterr().err.strip()
    without_grads = peak_bytes(device_memory(cfg, shape))  # the run's check, before the recorder exists
    assert code == 2 and err == (
        f"arprobe run: error: The run needs {human_bytes(without_grads)} on cpu with "
        f"{human_bytes(free)} free "
        f"({human_bytes(8 * shape.n_params)} for optimizer state); use optim.name sgd (no optimizer state) "
        "or a smaller model."
    )
    assert not (tmp_path / "runs").exists()
    # the dry-run prints the whole plan, then refuses in the same sentence: per-document gradients
    # are planned with the chunk that fits (here one document, 582.7 KB, under the eval logits'
    # 655 KB), so the peak it prints is the one it refuses, the run's check's, not the full chunk's
    code = main(["run", *tiny_args(tmp_path), "--dry-run"])
    captured = capsys.readouterr()
    assert need > without_grads
    assert code == 2 and f"{human_bytes(free)} free: DOES NOT FIT" in captured.out
    assert f"  {'peak':<24} {human_bytes(without_grads):>9}" in captured.out
    assert f"  {'per-document gradients':<24} {'582.7 KB':>9}  1 doc(s) at once" in captured.out
    assert captured.err.strip() == err
    assert not (tmp_path / "runs").exists()


def test_plan_device_names_are_checked(tmp_path, capsys):
    code = main(["run", *tiny_args(tmp_path), "--dry-run", "--plan-device", "tpu"])
    err = capsys.readouterr().err
    assert (
        code == 2 and "Unknown --plan-device 'tpu'; known: h100, h200, a100-40, a100-80, l40s, v100, " in err
    )
    code = main(["run", *tiny_args(tmp_path), "--plan-device", "h100"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.endswith("--plan-device plans for another device; use it with --dry-run.")
    assert not (tmp_path / "runs").exists()


def test_sweep_dry_run_times_runs_on_the_planned_device(tmp_path, capsys):
    sweep_file = write_sweep(tmp_path / "s.toml", grid={"d_model": [64]}, seeds=[0])
    code = main(
        ["sweep", str(sweep_file), "--out", str(tmp_path / "sweeps"), "--dry-run", "--plan-device", "h100"]
    )
    out = capsys.readouterr().out
    assert code == 0
    (line,) = [x for x in out.splitlines() if x.startswith("time estimate: ")]
    assert "(datasheet of NVIDIA H100 SXM 80 GB) at 40% MFU on NVIDIA H100 SXM 80 GB" in line
    assert "+ 5 s setup per run" in line
    assert not (tmp_path / "sweeps").exists()
