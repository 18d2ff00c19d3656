"""benchmarks/gpu.py --smoke on CPU: every section runs at tiny shapes and writes finite numbers."""

import json
import math


def numbers(value, path=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from numbers(v, f"{path}/{k}")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield path, value


def test_the_gpu_benchmark_smoke_runs_every_section_on_cpu(tmp_path, one_thread):
    from benchmarks.gpu import PRECISIONS, main

    out = tmp_path / "gpu.json"
    main(["--smoke", "--device", "cpu", "--out", str(out)])
    result = json.loads(out.read_text())
    for section in ("agreement", "mfu", "syncs", "recordings", "batched"):
        assert "error" not in result[section] and "skipped" not in result[section], (section, result[section])
    assert result["agreement"]["float32"]["max_abs_diff_vs_cpu_fp32"] == 0.0  # CPU against itself
    assert result["agreement"]["bf16"]["within"] is True
    cases = {k: v for k, v in result["mfu"].items() if k != "section_s"}
    assert set(cases) == {f"tiny/{p}" for p in PRECISIONS}
    for case in cases.values():
        assert 0 < case["train_mfu"] and 0 < case["eval_mfu"] and case["peak_memory_bytes"] is None
    assert result["syncs"]["per_step"] == 0
    resume = result["recordings"]["resume_write"]
    assert resume["bytes"] > 0 and 0 < resume["copy_seconds_loop_waits"] <= resume["write_seconds_background"]
    assert result["batched"]["seeds"] == 4 and result["batched"]["speedup"] > 0
    found = dict(numbers(result))
    assert found and all(math.isfinite(v) for v in found.values()), found
