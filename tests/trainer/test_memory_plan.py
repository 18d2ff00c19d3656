"""The memory plan from shapes (trainer.memory), the fit checks with a mocked free-memory figure, and
the time arithmetic (trainer.rates), checked by hand on small cases."""

import pytest

from arprobe.errors import UserError
from arprobe.trainer import memory, rates
from arprobe.trainer.memory import device_memory, human_bytes, peak_bytes
from arprobe.trainer.plan import check_device_memory, config_shape, fit_refusal
from tests.conftest import tiny_config

# The tiny config: GPT-NeoX, d = 64, L = 2 blocks, H = 2 heads, vocab 512 (its BPE), C = 32, T = 5.
d, L, H, V, C, T = 64, 2, 2, 512, 32, 5


def neox_params(d: int, L: int, V: int) -> int:
    """GPT-NeoX parameters by hand: embedding and unembedding V x d; per block two LayerNorms (4d),
    qkv (3d^2 + 3d), attention out (d^2 + d), MLP (4d^2 + 4d and 4d^2 + d); the final LayerNorm (2d)."""
    return 2 * V * d + L * (12 * d * d + 13 * d) + 2 * d


def activations(d, L, H, V, C, act_bytes=4) -> int:
    """Korthikanti et al.: (34 C d + 5 H C^2) bytes per block at 16-bit, scaled to act_bytes; three
    float32 [C, V] copies for the logits."""
    return L * (34 * C * d + 5 * H * C * C) * act_bytes // 2 + 12 * C * V


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("runs"))
    return cfg, config_shape(cfg)


def test_the_tiny_models_parts_by_hand(tiny):
    cfg, shape = tiny
    N = neox_params(d, L, V)
    assert N == 165_632
    assert (shape.n_params, shape.n_trainable, shape.d_model, shape.n_layers, shape.n_heads, shape.vocab) == (
        N, N, d, L, H, V,
    )  # fmt: skip
    grad_values = 3 * d * d + 3 * d + d * d + d  # blocks.1.attn: qkv and its output projection
    parts = device_memory(cfg, shape, grad_values=grad_values)
    sizes = {part: size for part, (size, _) in parts.items()}
    step = activations(d, L, H, V, C)
    assert sizes == {
        "weights": 4 * N,
        "gradients": 4 * N,
        "optimizer state": 8 * N,  # Adam: two float32 moments per weight
        "one step's activations": step,
        "the eval batch's logits": 2 * 4 * T * C * V,  # the eval batch (16384 // C = 512) holds all T
        # a quarter of the eval batch (512 // 4 = 128 documents), at most T = 5, at once
        "per-document gradients": T * (4 * grad_values + step),
    }
    # held throughout, plus the largest of what comes and goes
    assert peak_bytes(parts) == 16 * N + max(step, 8 * T * C * V, T * (4 * grad_values + step))


def test_the_eval_logits_take_one_float32_copy_and_a_piece_of_log_softmax_at_pythias_vocabulary(tiny):
    import dataclasses

    cfg, shape = tiny
    pythia = dataclasses.replace(shape, vocab=50304)
    rows = 2**26 // 50304  # rows of one cross-entropy call on a GPU (the larger budget): 1,334
    size, what = device_memory(cfg, pythia)["the eval batch's logits"]
    assert rows == 1334
    # the tiny run's T = 5 docs x C = 32 = 160 rows: one call, so two whole float32 copies
    assert size == 2 * 4 * T * C * 50304 and "x 2 float32 copies" in what
    paper = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, n_docs=25, context_length=256))
    size, what = device_memory(paper, pythia)["the eval batch's logits"]
    assert size == 4 * (25 * 256 + rows) * 50304  # 1.55 GB, not the 2.58 GB of two whole copies
    assert what.endswith("in float32, + the log-softmax of 1,334 rows at a time")


def test_optimizer_precision_and_members_change_the_parts(tiny, tmp_path):
    cfg, shape = tiny
    N = shape.n_params
    sgd = tiny_config(tmp_path, **{"optim.name": "sgd"})
    assert device_memory(sgd, shape)["optimizer state"][0] == 0
    bf16 = tiny_config(tmp_path, **{"model.autocast": "bfloat16"})
    half = config_shape(bf16)
    assert half.act_bytes == 2 and half.param_bytes == 4  # float32 weights, bf16 activations
    assert device_memory(bf16, half)["one step's activations"][0] == activations(d, L, H, V, C, act_bytes=2)
    three = device_memory(cfg, shape, members=3, grad_values=100)
    one = device_memory(cfg, shape, members=1, grad_values=100)
    for part in (
        "weights",
        "gradients",
        "optimizer state",
        "one step's activations",
        "the eval batch's logits",
    ):
        assert three[part][0] == 3 * one[part][0]
    assert three["per-document gradients"] == one["per-document gradients"]  # one member at a time
    assert three["weights"][0] == 3 * 4 * N and "x 3 members" in three["weights"][1]


def test_a_2_8b_model_is_planned_on_the_meta_device(tmp_path):
    from arprobe.models.text import weightless_model

    cfg = tiny_config(tmp_path, **{"model.name": "pythia-2.8b", "d_model": 0, "n_layers": 0, "n_heads": 0,
                                   "vocab_size": 4096, "context_length": 256})  # fmt: skip
    model = weightless_model(cfg.model, 4096, 256)
    assert all(p.is_meta for p in model.parameters())  # shapes only: no memory, no initialisation
    shape = config_shape(cfg)
    assert shape.n_params == neox_params(2560, 32, 4096) == 2_538_624_000
    assert (shape.d_model, shape.n_layers, shape.n_heads) == (2560, 32, 32)


def test_a_run_that_does_not_fit_is_refused_in_one_sentence(tiny, monkeypatch):
    cfg, shape = tiny
    parts = device_memory(cfg, shape, grad_values=0)
    need = peak_bytes(parts)
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: need)
    check_device_memory(cfg)  # exactly enough: no error
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: need - 1)
    with pytest.raises(UserError) as caught:
        check_device_memory(cfg)
    assert str(caught.value) == (
        f"The run needs {human_bytes(need)} on cpu with {human_bytes(need - 1)} free "
        f"({human_bytes(8 * shape.n_params)} for optimizer state); use optim.name sgd (no optimizer "
        "state) or a smaller model."
    )


def test_batched_members_are_sized_from_free_memory(tiny, monkeypatch):
    from arprobe.sweep.batching import AUTO, members_for

    cfg, shape = tiny
    five = peak_bytes(device_memory(cfg, shape, members=5))
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: five)
    assert memory.members_that_fit(cfg, shape, five, 8) == 5
    assert members_for(cfg, AUTO, points=10) == 5  # as many as fit, up to 8
    assert members_for(cfg, AUTO, points=3) == 3  # never more than the points
    assert members_for(cfg, 4, points=10) == 4
    with pytest.raises(UserError) as caught:
        members_for(cfg, 8, points=10)
    eight = peak_bytes(device_memory(cfg, shape, members=8))
    assert str(caught.value) == (
        f"--batch-seeds 8 needs {human_bytes(eight)} on cpu with {human_bytes(five)} free; "
        "use --batch-seeds 5 or fewer."
    )


def test_pairwise_replays_are_sized_from_free_memory(tiny, monkeypatch):
    from arprobe.models.text import weightless_model

    cfg, shape = tiny
    model = weightless_model(cfg.model, V, C)
    shared = 4 * shape.n_params + 8 * shape.n_params  # the replay's own weights and Adam moments
    free = shared + peak_bytes(device_memory(cfg, shape, members=3))
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: free)
    assert memory.replays_that_fit(model, cfg, T, "cpu") == 3
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: 10**15)
    assert memory.replays_that_fit(model, cfg, T, "cpu") == T  # at most T
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: 0)
    assert memory.replays_that_fit(model, cfg, T, "cpu") == 1  # one after another


def test_time_arithmetic_by_hand():
    work = rates.Work(n_params=10**9, n_layers=16, steps=100, step_tokens=256, eval_tokens=10**6,
                      eval_forwards=10, grad_tokens=10**4, sketched_values=10**9, store_bytes=2 * 10**9,
                      resume_bytes=4 * 10**9, resume_writes=3)  # fmt: skip
    rate = rates.Rate(flops=1e15, precision="bf16", kind="cuda", source="test", bandwidth=4e12)
    t = rates.time_estimate(work, rate)
    achieved = 1e15 * 0.40
    launch = 5e-6 * (80 * 16 + 20)  # 6.5 ms of kernel launches > 3.84 ms of compute
    assert t["step"] == pytest.approx(max(6e9 * 256 / achieved, launch)) == pytest.approx(6.5e-3)
    assert t["training"] == pytest.approx(100 * 6.5e-3)
    assert t["eval"] == pytest.approx(2e9 * 1e6 / achieved)  # 5 s: compute-bound
    recording = 6e9 * 1e4 / achieved + 48 * 1e9 / 4e12 + 2e9 / 1e9
    assert t["recording"] == pytest.approx(recording)
    assert t["resume writes"] == pytest.approx(12.0)  # 3 writes of 4 GB at 1 GB/s
    compute = 0.65 + 5.0 + recording
    assert t["total"] == pytest.approx(12.0)  # the background writes outlast the compute
    assert compute < 12.0
    cpu = rates.Rate(flops=1e11, precision="fp32", kind="cpu", source="test", bandwidth=1e10)
    assert rates.time_estimate(work, cpu)["step"] == pytest.approx(
        6e9 * 256 / (1e11 * 0.30)
    )  # no launch floor


def test_rates_come_from_the_datasheet_of_the_planned_device(tmp_path):
    import torch

    cfg = tiny_config(tmp_path, **{"model.autocast": "bfloat16"})
    rate = rates.rate_for(cfg, torch.device("cpu"), "h200")
    assert (rate.flops, rate.precision, rate.kind, rate.bandwidth) == (989e12, "bf16", "cuda", 4.8e12)
    assert rate.describe() == "989 TFLOP/s bf16 (datasheet of NVIDIA H200 SXM 141 GB) at 40% MFU"
    with pytest.raises(
        UserError, match=r"^Unknown --plan-device 'tpu'; known: h100, h200, a100-40, a100-80, "
    ):
        rates.datasheet("tpu")


def test_the_precision_a_run_uses():
    from types import SimpleNamespace

    import torch

    def run(autocast="off", dtype="float32", tf32=True):
        return SimpleNamespace(model=SimpleNamespace(autocast=autocast, dtype=dtype, tf32=tf32))

    assert rates.precision(run(autocast="bfloat16"), "cuda") == "bf16"
    assert rates.precision(run(dtype="bfloat16"), "cpu") == "bf16"
    assert rates.precision(run(), "cuda") == "tf32"
    assert rates.precision(run(), "cpu") == "fp32"
    assert rates.precision(run(tf32=False), "cuda") == "fp32"
    assert rates.rate_for(run(tf32=False), torch.device("cpu"), "a100-80").flops == 19.5e12
    assert rates.rate_for(run(), torch.device("cpu"), "a100-80").flops == 156e12


def test_per_document_gradients_count_one_document_when_refusing(tiny):
    """The recorder halves its per-document chunk when the device is full: a run is refused only when
    one document at a time does not fit."""
    cfg, shape = tiny
    gv = 10**6  # a large recorded layer: one document's gradients outweigh the eval logits
    parts = device_memory(cfg, shape, grad_values=gv)
    one_doc = 4 * gv + activations(d, L, H, V, C)
    least = 16 * shape.n_params + one_doc
    assert peak_bytes(parts) == 16 * shape.n_params + T * one_doc > least
    assert fit_refusal(cfg, shape, parts, "cuda:0", least, gv) == ""  # in smaller chunks
    assert fit_refusal(cfg, shape, parts, "cuda:0", least - 1, gv) == (
        f"The run needs {human_bytes(least)} on cuda:0 with {human_bytes(least - 1)} free "
        f"({human_bytes(one_doc)} for per-document gradients); record a smaller layer's gradients "
        "(record.grads) or set record.grads_at never."
    )


def test_the_per_document_chunk_is_what_fits_beside_the_run(tiny):
    cfg, shape = tiny
    gv = 10**6
    one_doc = 4 * gv + activations(d, L, H, V, C)
    assert memory.document_grad_bytes(shape, C, gv) == one_doc
    assert memory.most_grad_chunk(cfg) == T  # a quarter of the eval batch (128), at most T = 5
    assert memory.grad_chunk_that_fits(cfg, shape, gv, 2 * one_doc + one_doc // 2) == 2
    assert memory.grad_chunk_that_fits(cfg, shape, gv, 10**15) == T
    assert (
        memory.grad_chunk_that_fits(cfg, shape, gv, 0) == 1
    )  # one at a time; the recorder halves no further
    parts = device_memory(cfg, shape, grad_values=gv, grad_chunk=2)
    assert parts["per-document gradients"] == (2 * one_doc, f"2 doc(s) at once x ({gv:,} gradient values + "
                                               "one step's activations)")  # fmt: skip


def test_the_dry_run_shows_the_chunk_the_free_memory_allows(tmp_path, monkeypatch):
    from arprobe.trainer.plan import plan

    cfg = tiny_config(tmp_path, grads=["blocks.1.attn"])
    shape = config_shape(cfg)
    gv = 3 * d * d + 3 * d + d * d + d  # blocks.1.attn: qkv and its output projection
    held = 16 * shape.n_params  # weights, gradients, Adam's two moments: float32
    one_doc = 4 * gv + activations(d, L, H, V, C)
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: held + 3 * one_doc)
    planned = plan(cfg)
    assert planned.device_memory["per-document gradients"][0] == 3 * one_doc
    assert "3 doc(s) at once" in planned.text
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: 10**15)
    assert plan(cfg).device_memory["per-document gradients"][0] == T * one_doc  # at most T


def test_the_runs_check_counts_one_document_of_the_recorded_gradients(tmp_path, monkeypatch):
    """Before anything is loaded, the recorded layer's size comes from the names table and the meta
    model: one document of its gradients must fit beside what the run holds."""
    from arprobe.models import naming
    from arprobe.models.tl_tables import GPT_NEOX
    from arprobe.trainer.plan import config_model, recorded_grad_values

    cfg = tiny_config(tmp_path, grads=["blocks.1"])
    shape = config_shape(cfg)
    # the table of this architecture, whatever library versions are installed
    monkeypatch.setattr(naming, "SHIPPED", {naming.architecture_key(config_model(cfg)): GPT_NEOX})
    block = 12 * d * d + 13 * d  # a whole block: attention, MLP and its two LayerNorms
    assert recorded_grad_values(cfg, config_model(cfg)) == block
    one_doc = 4 * block + activations(d, L, H, V, C)
    assert one_doc > 8 * T * C * V  # above the eval logits: one document sets the peak
    need = 16 * shape.n_params + one_doc
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: need)
    check_device_memory(cfg)
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: need - 1)
    with pytest.raises(UserError) as caught:
        check_device_memory(cfg)
    assert str(caught.value).startswith(f"The run needs {human_bytes(need)} on cpu with ")
    never = tiny_config(tmp_path, grads=["blocks.1"], **{"record.grads_at": "never"})
    assert recorded_grad_values(never, config_model(never)) == 0
