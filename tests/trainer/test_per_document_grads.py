"""Per-document gradients: the out-of-memory and vmap fallbacks (run after the failed attempt is
freed), the attention a GPU's vmapped pass gets (batched, no warning) and device-correct norms."""

import logging
import sys
import warnings
import weakref

import pytest
import torch
from torch.func import functional_call, grad, vmap

from arprobe.tasks import text
from arprobe.trainer import batched
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from arprobe.trainer.loop import prepare

    return prepare(tiny_config(tmp_path_factory.mktemp("docgrads"), device="cpu", grads=["blocks.1.attn"]))


@pytest.fixture
def recorder(setup):
    from arprobe.trainer.recorders import Recorder

    return Recorder(setup.model, setup.names, setup.task, setup.cfg, setup.schedule, setup.device)


def _grads_capture(recorder):
    (rec,) = [r for r in recorder.table if r.kind == "grads"]
    return recorder.capture[rec.key]


class _Failing:
    """The task's per_document_grads, failing with ``error`` while ``fails(method, chunk)``; records
    each call's (method, chunk, exception being handled) and whether earlier attempts' tensors live."""

    def __init__(self, real, error, fails):
        self.real, self.error, self.fails = real, error, fails
        self.calls, self.refs = [], []

    def __call__(self, model, params, *, chunk, method):
        alive = any(r() is not None for r in self.refs)
        self.calls.append((method, chunk, sys.exc_info()[0], alive))
        if self.fails(method, chunk):
            return self._fail()
        return self.real(model, params, chunk=chunk, method=method)

    def _fail(self):
        held = torch.ones(1000)  # what a failed pass holds in its frames (its activations)
        self.refs.append(weakref.ref(held))
        yield [held]
        raise type(self.error)(*self.error.args)  # a new exception each time, as a real failure


def test_out_of_memory_halves_the_chunk_then_loops_outside_the_except_block(recorder, monkeypatch, caplog):
    capture = _grads_capture(recorder)
    expected = capture(10)  # [T, D] as computed without a failure
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    failing = _Failing(recorder.task.per_document_grads, oom, lambda method, chunk: method == "vmap")
    monkeypatch.setattr(recorder.task, "per_document_grads", failing)
    recorder._grad_chunk = 4
    with caplog.at_level(logging.WARNING, logger="arprobe.trainer.recorders"):
        got = capture(10)
    # 4 -> 2 -> 1 documents per vmapped pass, then one backward per document; every retry starts
    # with no exception being handled and the failed attempt's tensors already freed
    assert [c[:2] for c in failing.calls] == [("vmap", 4), ("vmap", 2), ("vmap", 1), ("loop", 1)]
    assert [c[2:] for c in failing.calls] == [(None, False)] * 4
    assert (recorder._grad_method, recorder._grad_chunk) == ("loop", 1)  # sticks for the run
    assert torch.equal(torch.as_tensor(got), torch.as_tensor(expected))
    messages = [r.getMessage() for r in caplog.records]
    assert messages[:2] == [
        "per-document gradients: out of memory (OutOfMemoryError: CUDA out of memory. Tried to allocate "
        f"2.00 GiB); retrying {n} documents per pass."
        for n in (2, 1)
    ]
    assert messages[2].startswith("per-document gradients: vmap failed (OutOfMemoryError: CUDA out of")
    assert messages[2].endswith("using one backward pass per document.")


def test_a_vmap_failure_loops_and_a_loop_failure_is_raised(recorder, monkeypatch):
    capture = _grads_capture(recorder)
    expected = capture(10)
    error = RuntimeError("vmap: data-dependent control flow")
    failing = _Failing(recorder.task.per_document_grads, error, lambda method, chunk: method == "vmap")
    monkeypatch.setattr(recorder.task, "per_document_grads", failing)
    recorder._grad_chunk = 4
    assert torch.equal(torch.as_tensor(capture(10)), torch.as_tensor(expected))
    assert [c[:2] for c in failing.calls] == [("vmap", 4), ("loop", 4)]  # chunk kept: not memory
    assert [c[2:] for c in failing.calls] == [(None, False)] * 2

    failing.fails = lambda method, chunk: True
    with pytest.raises(RuntimeError, match="data-dependent control flow"):
        capture(10)
    failing.error = torch.OutOfMemoryError("CUDA out of memory")  # the loop, one document: nothing left
    recorder._grad_chunk = 1
    with pytest.raises(torch.OutOfMemoryError):
        capture(10)


def test_the_attention_a_gpu_pass_gets_is_batched_by_vmap_without_a_warning(setup):
    """What ``batched_attention`` gives a CUDA pass (the math SDPA backend), run here on CPU tensors:
    vmap batches it (no per-document fallback, no warning at all) and it agrees with the per-document
    loop. On CPU itself the fallback is kept, bit for bit the loop's."""
    model, task = setup.model, setup.task
    params = {n: p for n, p in model.named_parameters() if n.startswith("gpt_neox.layers.1.attention")}
    tokens, lengths = task.eval_tokens, task.eval_lengths

    def loss_of(p, doc, length):
        logits = functional_call(model, p, args=(), kwargs={"input_ids": doc[None]}).logits
        return text.losses_from_logits(logits, doc[None], length[None])[0]

    detached = {n: p.detach() for n, p in params.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        with torch.no_grad(), text.batched_attention(torch.device("cuda")):
            assert torch.backends.cuda.math_sdp_enabled() and not torch.backends.cuda.flash_sdp_enabled()
            math = vmap(grad(loss_of), in_dims=(None, 0, 0))(detached, tokens, lengths)
        assert torch.backends.cuda.flash_sdp_enabled()  # restored after the pass
    loop = [
        torch.cat(c)
        for c in zip(*text.per_document_grads(model, params, tokens, lengths, chunk=5, method="loop"))
    ]
    cpu = [torch.cat(c) for c in zip(*text.per_document_grads(model, params, tokens, lengths, chunk=5))]
    for name, looped, on_cpu in zip(params, loop, cpu):
        torch.testing.assert_close(math[name], looped, rtol=1e-4, atol=1e-6)
        assert torch.equal(on_cpu, looped)  # the CPU path: the loop's numbers exactly


def test_batched_member_norms_follow_the_run_device():
    # meta tensors stand in for a GPU run's: a parameter without a gradient must not add a CPU zero
    assert batched._member_squares(None, 3, torch.device("meta")).device.type == "meta"
    params = {"a": torch.zeros(2, 4, 5, device="meta", requires_grad=True)}
    params["b"] = torch.zeros(2, 7, device="meta", requires_grad=True)
    params["a"].grad = torch.zeros(2, 4, 5, device="meta")  # "b" has none: unused by the loss

    class Stack:
        S = 2

        def __init__(self):
            self.params = params

        def trainable(self):
            return list(params)

    norms = batched.GroupNorms(Stack(), {"layer0": ["a"], "layer1": ["b"]}, torch.device("meta"))
    out = norms()
    assert out.shape == (2, 2) and out.device.type == "meta"
    # on CPU the numbers: member s's norm of each layer's slice; zero where there is no gradient
    cpu = {"a": torch.zeros(2, 4, 5, requires_grad=True), "b": torch.zeros(2, 7, requires_grad=True)}
    cpu["a"].grad = torch.stack([torch.full((4, 5), 1.0), torch.full((4, 5), 2.0)])
    params.clear()
    params.update(cpu)
    got = batched.GroupNorms(Stack(), {"layer0": ["a"], "layer1": ["b"]}, torch.device("cpu"))()
    torch.testing.assert_close(got, torch.tensor([[20**0.5, 0.0], [2 * 20**0.5, 0.0]]))


def test_the_first_pass_sizes_the_chunk_from_free_memory(setup, monkeypatch):
    """At the first per-document gradients the recorder takes as many documents per pass as the
    memory free then allows (the plan's rule), at most its default; the gradients do not change."""
    from arprobe.trainer import memory
    from arprobe.trainer.recorders import Recorder

    def fresh():
        return Recorder(setup.model, setup.names, setup.task, setup.cfg, setup.schedule, setup.device)

    unconstrained = fresh()
    expected = _grads_capture(unconstrained)(10)
    assert unconstrained._grad_chunk == setup.cfg.data.n_docs  # room for all: a quarter of 512, at most T

    recorder = fresh()
    params = recorder._component_params("blocks.1.attn")
    shape = memory.ModelShape.of(setup.model, setup.cfg)
    one_doc = memory.document_grad_bytes(
        shape, setup.cfg.data.context_length, sum(p.numel() for p in params.values())
    )
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: 2 * one_doc + 1)
    calls = []
    real = recorder.task.per_document_grads
    monkeypatch.setattr(
        recorder.task,
        "per_document_grads",
        lambda *a, chunk, method: calls.append(chunk) or real(*a, chunk=chunk, method=method),
    )
    got = _grads_capture(recorder)(10)
    assert recorder._grad_chunk == 2 and set(calls) == {2}
    assert torch.allclose(torch.as_tensor(got), torch.as_tensor(expected), atol=1e-6)
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: 10**15)
    _grads_capture(recorder)(10)
    assert recorder._grad_chunk == 2  # sized once: a later pass keeps it
