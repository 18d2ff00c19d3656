"""The fast paths compute what the plain ones did, and the benchmark's code path runs (not timed)."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from arprobe.tasks import text
from tests.conftest import tiny_config
from tests.tolerances import sum_rtol


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from arprobe.trainer.loop import prepare

    return prepare(tiny_config(tmp_path_factory.mktemp("perf"), device="cpu"))


def _recorder(setup, cfg=None):
    from arprobe.trainer.recorders import Recorder

    cfg = cfg or setup.cfg
    return Recorder(setup.model, setup.names, setup.task, cfg, setup.schedule, setup.device)


def _reference_doc_losses(logits, tokens, lengths):
    """The loss as first written: slice off the last position, cross-entropy over a transposed axis."""
    targets = tokens[:, 1:]
    valid = torch.arange(targets.shape[1])[None, :] < (lengths[:, None] - 1)
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, reduction="none")
    return (nll * valid).sum(1) / valid.sum(1).clamp(min=1)


def test_losses_from_logits_match_the_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 9, 13, generator=g)
    tokens = torch.randint(0, 13, (4, 9), generator=g)
    lengths = torch.tensor([9, 5, 2, 1])  # full, padded, one target, no target (loss 0)
    got = text.losses_from_logits(logits, tokens, lengths)
    torch.testing.assert_close(got, _reference_doc_losses(logits, tokens, lengths))
    assert got[3] == 0
    # one document by hand: mean over its 4 real targets of -log softmax(logits[j])[token j+1]
    by_hand = -torch.stack([torch.log_softmax(logits[1, j], -1)[tokens[1, j + 1]] for j in range(4)]).mean()
    torch.testing.assert_close(got[1], by_hand)


def test_per_token_losses_in_pieces_are_the_one_call_numbers(monkeypatch):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 40, 257, generator=g)  # 120 rows
    targets = torch.randint(0, 257, (3, 40), generator=g)
    targets[1, 30:] = text.IGNORE
    whole = F.cross_entropy(logits.reshape(-1, 257), targets.reshape(-1), reduction="none")
    from arprobe.models.text import CE_ELEMENTS, ce_rows

    monkeypatch.setitem(CE_ELEMENTS, "cpu", 257 * 7)  # 7 rows a call: 18 calls, the last of 1 row
    assert ce_rows(257, "cpu") == 7
    calls = []
    real = F.cross_entropy
    monkeypatch.setattr(F, "cross_entropy", lambda x, *a, **k: calls.append(x.shape[0]) or real(x, *a, **k))
    got = text.token_nll(logits, targets)
    assert calls == [7] * 17 + [1]
    assert torch.equal(got, whole) and got[70:80].eq(0).all()  # bit for bit; ignored targets give 0
    # under autograd one call (pieces would each write a zero gradient of all the logits)
    calls.clear()
    leaf = logits.clone().requires_grad_()
    text.token_nll(leaf, targets).sum().backward()
    assert calls == [120] and leaf.grad.shape == logits.shape
    # the mean (training) is one call too
    calls.clear()
    text.token_nll(logits, targets, reduction="mean")
    assert calls == [120]


def test_batch_loss_ignores_masked_labels(setup):
    inputs = setup.task.eval_tokens[:1, :32]
    labels = inputs.clone()
    labels[:, 20:] = text.IGNORE
    logits = setup.model(input_ids=inputs).logits
    expected = F.cross_entropy(logits[0, :19], labels[0, 1:20])  # positions 0..18 predict labels 1..19
    batch = {"input_ids": inputs, "labels": labels}
    torch.testing.assert_close(setup.task.batch_loss(setup.model, batch), expected)


def test_vmap_and_loop_per_document_grads_agree(setup):
    from benchmarks.throughput import recorded_grad_params

    name, params = recorded_grad_params(_recorder(setup))
    assert name == "blocks.1.attn"  # blocks.mid.attn of the 2-block model
    tokens, lengths = setup.task.eval_tokens, setup.task.eval_lengths
    by = {
        m: [
            torch.cat([g.reshape(g.shape[0], -1) for g in chunk], 1)
            for chunk in text.per_document_grads(setup.model, params, tokens, lengths, chunk=2, method=m)
        ]
        for m in ("vmap", "loop")
    }
    vmap, loop = torch.cat(by["vmap"]), torch.cat(by["loop"])
    assert vmap.shape == (5, sum(p.numel() for p in params.values()))
    torch.testing.assert_close(vmap, loop, rtol=1e-4, atol=1e-6)
    # and the loop is the gradient of doc_losses, document by document
    loss = text.doc_losses(setup.model, tokens[3:4], lengths[3:4])[0]
    first = torch.autograd.grad(loss, list(params.values()))
    torch.testing.assert_close(loop[3], torch.cat([g.reshape(-1) for g in first]))


def test_the_loops_grad_norms_are_the_norms_of_each_group(setup):
    """The per-layer norms train_episode reads after each backward (Single.grad_norms, S = 1)."""
    from arprobe.trainer.members import Single

    groups = setup.names.parameter_groups(setup.model)
    norms = Single(setup.model, setup.cfg).grad_norms(groups, setup.device)
    setup.model.zero_grad(set_to_none=True)
    window = setup.task.eval_tokens[:1, :32]
    setup.task.batch_loss(setup.model, {"input_ids": window, "labels": window}).backward()
    params = dict(setup.model.named_parameters())
    expected = torch.stack(
        [
            torch.sqrt(sum(params[n].grad.double().square().sum() for n in names)).float()
            for names in groups.values()
        ]
    )
    # float32 sums of squares in another order than this float64 reference: relative error
    # ~sqrt(n)·eps for the largest group's n values (1e-5 fails on some CPUs for n ~ 3e4)
    largest = max(sum(params[n].numel() for n in names) for names in groups.values())
    torch.testing.assert_close(norms(), expected[None], rtol=sum_rtol(largest), atol=0.0)
    setup.model.zero_grad(set_to_none=True)


def test_pythia_1b_store_from_shapes():
    from arprobe.trainer.config import load_config
    from benchmarks.runs import store_from_shapes

    cfg = load_config(None, {"model.name": "pythia-1b", "n_docs": 25, "context_length": 256, "epochs": 5})
    b = store_from_shapes(cfg, 50304)
    # the plan trains the run's BPE tokenizer on its 25 documents, which holds fewer than the 50,304
    # target tokens: the embedding and unembedding (untied, 2048 wide) are that much smaller than
    # Pythia-1B's published 1,011,781,632 parameters, which hold 50,304 rows each
    vocab = b["vocab"]
    assert 1000 < vocab <= 50304
    assert b["n_params"] == 1_011_781_632 - 2 * 2048 * (50304 - vocab)
    assert b["unembed_values"] == vocab * 2048 and b["unembed_stored"] == 1 << 17  # record.sketch_dim
    assert b["attn_values"] == 4 * 2048 * 2048 + 4 * 2048 and b["attn_stored"] == 1 << 17
    # per episode: unembed sketch + the all-weights sketch + ln_final activations of one document
    # (each also before training: 126 snapshots over 125 episodes) + the attn sketches of T
    # documents once per T episodes, 4 bytes each, plus a few KB of losses and stats
    assert b["all_weights_dim"] == 65536
    per_episode = 4 * (((1 << 17) + 65536 + 256 * 2048) * (126 / 125) + (1 << 17))
    # plus losses, stats and HDF5's whole-chunk rounding (the estimate is an upper bound): under 1%
    assert per_episode <= b["recordings_per_episode"] <= per_episode * 1.01
    assert b["recordings_per_episode"] <= 10_000_000  # the store's target size per episode
    assert b["naive_per_episode"] == 4 * b["n_params"]


# The benchmark's pieces (benchmarks/__main__.py runs them in turn) on a tiny model: each returns
# every number the benchmark reports. `python -m benchmarks --quick` runs them all together.
BENCH = dict(n_docs=3, context_length=16, steps_per_doc=1, epochs=1, vocab_size=512, d_model=32,
             n_layers=1, n_heads=2, device="cpu")  # fmt: skip


def _bench_setup(tmp_path, **overrides):
    from arprobe.trainer.config import load_config
    from arprobe.trainer.loop import prepare

    return prepare(load_config(None, {**BENCH, "out": str(tmp_path), **overrides}))


def test_benchmark_peak_mfu_and_eval_batches(tmp_path):
    from benchmarks import throughput

    peak = throughput.measure_peak(torch.device("cpu"), size=64, repeats=1)
    assert peak["size"] == 64 and peak["gflops"] > 0 and peak["median_gflops"] > 0
    setup = _bench_setup(tmp_path)
    m = throughput.mfu_of(setup, peak["gflops"], train_repeats=1, eval_repeats=1)
    assert (m["width"], m["depth"], m["C"], m["T"], m["vocab"]) == (32, 1, 16, 3, 512)
    assert m["N"] == throughput.model_flop_params(setup.model) and m["train_mfu"] > 0 and m["eval_mfu"] > 0
    rows = throughput.eval_batch_sweep(setup, peak["gflops"], [1, 3], repeats=1)
    assert [e["batch"] for e in rows] == [1, 3]


def test_benchmark_per_document_grads_and_train_eval_split(tmp_path):
    from benchmarks import throughput

    grads = throughput.per_document_grads_methods(_bench_setup(tmp_path / "g"), 3, repeats=1)
    assert grads["loop_s"] > 0 and grads["vmap_s"] > 0
    split = throughput.train_eval_split(_bench_setup(tmp_path / "s"), [3, 6], episodes=1)
    assert [x["T"] for x in split] == [3, 6] and [x["M"] for x in split] == [1, 1]
    assert all(0 < x["eval_fraction"] < 1 for x in split)


def test_benchmark_compares_naive_and_arprobe_runs(tmp_path):
    from benchmarks import runs

    s = runs.compare_runs(BENCH, tmp_path, repeats={"naive": 1, "arprobe": 1, "arprobe_recording_off": 1})
    assert s["episodes"] == 3 and set(s["seconds"]) == {"naive", "arprobe", "arprobe_recording_off"}
    assert s["speedup_vs_naive"] > 0 and s["speedup_vs_naive_min"] > 0
    assert 0 < s["recording_seconds_in_run"] < s["seconds"]["arprobe"] and s["recording_overhead"] > 0
    assert np.isfinite(s["recording_overhead_run_vs_run"])
    # the naive loop and arprobe evaluate the same model on the same documents
    assert s["eval_row0_max_abs_diff"] < 1e-4
    assert s["store"]["bytes_per_episode"] > 0 and s["naive_bytes_per_episode"] > 0
    assert not (tmp_path / "naive").exists()  # the naive loop's model files are removed


def test_activations_from_the_eval_pass_equal_a_separate_forward(setup):
    recorder = _recorder(setup)
    recorder.activation_docs = [3, 0]  # out of order, in different eval batches of 2
    tokens, lengths = setup.task.eval_tokens, setup.task.eval_lengths
    with recorder.activations_from_eval(1) as after_batch:
        text.evaluate_docs(setup.model, tokens, lengths, 2, after_batch)
    ((hook, from_eval),) = recorder._eval_activations[1].items()
    assert hook == "ln_final.hook_normalized" and from_eval.shape == (2, 32, 64)
    torch.testing.assert_close(from_eval, recorder._capture_activations()[hook], rtol=1e-4, atol=1e-5)
    with recorder.activations_from_eval(2) as after_batch:  # activations_every=1: due every episode
        assert after_batch is not None  # but no eval ran: nothing kept, the snapshot will run its own forward
    assert 2 not in recorder._eval_activations
    cfg = setup.cfg
    off = _recorder(
        setup, dataclasses.replace(cfg, record=dataclasses.replace(cfg.record, activations_every=0))
    )
    with off.activations_from_eval(3) as after_batch:
        assert after_batch is None


@pytest.fixture(scope="module")
def float32_run(tmp_path_factory):
    from arprobe.trainer.loop import run

    out = tmp_path_factory.mktemp("precision")
    return run(tiny_config(out, name="f32", epochs=2, device="cpu"), progress=False).path


def test_bf16_autocast_trains_close_to_float32_and_replays_with_it(float32_run, tmp_path):
    from arprobe.storage import RunStore
    from arprobe.trainer.api import Replay
    from arprobe.trainer.loop import run

    path = run(
        tiny_config(tmp_path, name="bf16", epochs=2, device="cpu", autocast="bfloat16"), progress=False
    ).path
    with RunStore(path) as bf16, RunStore(float32_run) as f32:
        assert bf16.model_info["autocast"] == "bfloat16" and f32.model_info["autocast"] == "off"
        a, b = bf16.eval_matrix(), f32.eval_matrix()
        assert not np.array_equal(a, b)  # the forward really ran in bf16 ...
        np.testing.assert_allclose(a, b, atol=0.1)  # ... and trained the same (losses ~6 nats)
        replay = Replay(bf16, int(bf16.checkpoint_episodes()[0]))
        # the replayed model runs under the run's autocast: its eval equals the stored row
        # (a replay from the checkpoint: the same computation as the run's evaluation, bit for bit)
        np.testing.assert_array_equal(replay.evaluate(), a[replay.episode])


def test_a_copy_of_an_autocast_model_runs_its_own_weights(setup):
    import copy

    from arprobe.models.text import use_autocast

    model = copy.deepcopy(setup.model)
    use_autocast(model, "bfloat16")
    twin = copy.deepcopy(model)  # as the batched trainer copies a member into its skeleton
    with torch.no_grad():
        twin.get_output_embeddings().weight.zero_()
        tokens = setup.task.eval_tokens[:1]
        assert model(input_ids=tokens).logits.abs().max() > 0  # the original's weights ...
        assert twin(input_ids=tokens).logits.abs().max() == 0  # ... and the copy's own
        assert model(input_ids=tokens).logits.dtype == torch.bfloat16  # under autocast


def test_compiled_training_forward_matches_eager(float32_run, tmp_path):
    from arprobe.storage import RunStore
    from arprobe.trainer.loop import run

    path = run(
        tiny_config(tmp_path, name="compiled", epochs=2, device="cpu", compile=True), progress=False
    ).path
    with RunStore(path) as compiled, RunStore(float32_run) as eager:
        # inductor fuses and reorders float arithmetic; the training is otherwise the same
        np.testing.assert_allclose(compiled.train_loss(), eager.train_loss(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(compiled.eval_matrix(), eager.eval_matrix(), rtol=1e-4, atol=1e-4)
