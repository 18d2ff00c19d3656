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
    from benchmarks.gpu import PRECISIONS, SECTIONS, main

    out = tmp_path / "gpu.json"
    main(["--smoke", "--device", "cpu", "--out", str(out)])
    result = json.loads(out.read_text())
    for section in SECTIONS:
        assert "error" not in result[section] and "skipped" not in result[section], (section, result[section])
    assert result["agreement"]["float32"]["max_abs_diff_vs_cpu_fp32"] == 0.0  # CPU against itself
    assert result["agreement"]["bf16"]["within"] is True
    cases = {k: v for k, v in result["mfu"].items() if k != "section_s"}
    assert set(cases) == {f"tiny/{p}" for p in PRECISIONS}
    for case in cases.values():
        assert 0 < case["train_mfu"] and 0 < case["eval_mfu"] and case["peak_memory_bytes"] is None
    assert len({case["prepare_s"] for case in cases.values()}) == 1  # one build serves the precisions
    assert result["syncs"]["per_step"] == 0
    resume = result["recordings"]["resume_write"]
    assert resume["bytes"] > 0 and 0 < resume["copy_seconds_loop_waits"] <= resume["write_seconds_background"]
    assert result["batched"]["seeds"] == 4 and result["batched"]["speedup"] > 0
    e2e = result["e2e"]
    assert (e2e["status"], e2e["episodes_done"], e2e["episodes_planned"]) == ("complete", 10, 10)
    assert 0 < e2e["setup_s"] < e2e["wall_s"] and 0 < e2e["training_s"] < e2e["wall_s"]
    assert e2e["gpu_busy_share_of_wall"] is None and e2e["utilisation_samples"] == 0  # no GPU here
    assert e2e["store_bytes"] > 0 and "projected_wall_s" not in e2e
    found = dict(numbers(result))
    assert found and all(math.isfinite(v) for v in found.values()), found


def test_the_end_to_end_run_is_stopped_at_its_limit_and_projected(tmp_path, one_thread):
    """Past its time limit the paper run gets SIGTERM as from a user: it stops after an episode,
    resumable, and the whole run's time is projected from the episodes done."""
    import time

    import torch

    import benchmarks.gpu as gpu

    run = {**gpu.SMALL_RUN, "epochs": 400}  # 2,000 episodes: minutes, were it not stopped
    sizes = {**gpu.SMOKE, "e2e": {"shape": "tiny", "run": run, "limit_s": 0.5}}
    out = gpu.end_to_end(tmp_path, torch.device("cpu"), sizes, True, time.monotonic() + 60)
    assert out["status"] == "stopped" and 1 <= out["episodes_done"] < 100
    assert out["episodes_planned"] == 2000
    assert out["projected_wall_s"] > out["wall_s"]
    assert out["projection"] == f"setup + 2000 episodes x the mean of the {out['episodes_done']} done"


def test_one_model_switches_autocast_on_and_off_as_the_mfu_cases_do():
    """The mfu section turns bf16 autocast on with ``use_autocast`` and off by dropping the
    instance's forward: the logits' dtype follows."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from arprobe.models.text import use_autocast

    model = GPTNeoXForCausalLM(
        GPTNeoXConfig(
            vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
    )
    tokens = torch.arange(8)[None]
    dtypes = []
    for autocast in ("off", "bfloat16", "off"):
        model.__dict__.pop("forward", None)
        use_autocast(model, autocast)
        dtypes.append(model(tokens).logits.dtype)
    assert dtypes == [torch.float32, torch.bfloat16, torch.float32]
