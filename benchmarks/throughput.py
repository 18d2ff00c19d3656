"""How close the training step and the eval matrix come to the machine's matmul peak.

FLOPs are counted the usual way (Kaplan et al. 2020): 6·N per token for a training step
(forward + backward) and 2·N per token for an evaluation forward, where N is every parameter
except the input embedding (a table lookup, no FLOPs): the transformer blocks, the final layer
norm and the unembedding. Attention's score and value products (about 12·L·C·d per token more
for a training step: 8% of 6N at width 512, C = 256) and the optimizer are not counted, so MFU is
a slight underestimate of the work done. Tokens are all C positions of every sequence fed, padding
included (the forward computes them).
"""

from __future__ import annotations

import dataclasses
import statistics

import torch

from arprobe.tasks import text
from arprobe.trainer.episode import TrainingRules, train_episode
from arprobe.trainer.members import Single
from benchmarks.timing import median_seconds, sync


def measure_peak(device: torch.device, *, size: int, repeats: int) -> dict:
    """FLOP/s of a square float32 matmul: the best of ``repeats`` is the peak MFU divides by."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    median, times = median_seconds(lambda: a @ b, device, repeats=repeats, warmup=2)
    flops = 2 * size**3
    return {"size": size, "gflops": flops / min(times) / 1e9, "median_gflops": flops / median / 1e9}


def model_flop_params(model: torch.nn.Module) -> int:
    """N: parameters that cost FLOPs per token (all but the input embedding)."""
    embedding = model.get_input_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p is not embedding)


def recorder_of(setup):
    """The recorder the loop builds for ``setup`` (its gradient norms, recordings and chunk size)."""
    from arprobe.trainer.recorders import Recorder

    return Recorder(setup.model, setup.names, setup.task, setup.cfg, setup.schedule, setup.device)


def fresh_members(setup) -> Single:
    """The loop's members strategy for ``setup``'s model, with a fresh optimizer."""
    return Single(setup.model, setup.cfg)


def training_rules(setup) -> TrainingRules:
    return TrainingRules.from_config(setup.cfg, len(setup.schedule))


def train_step_fn(setup, recorder, members, doc: int):
    """One training step exactly as the loop takes it: ``train_episode`` with M = 1 on document
    ``doc``. The optimizer state is kept between the timed steps (no reset), so every step after
    the first is an Adam update on allocated moments, as steps 2..M of an episode are."""
    rules = dataclasses.replace(training_rules(setup), steps_per_doc=1, reset_optimizer=False)
    generator = torch.Generator().manual_seed(setup.cfg.seed)
    norms = members.grad_norms(setup.names.parameter_groups(setup.model), setup.device)

    def step():
        return train_episode(
            members,
            [setup.task],
            [doc],
            episode=1,
            rules=rules,
            generators=[generator],
            grad_norms=norms,
        )

    return step


def eval_fn(setup, n_docs: int, batch: int):
    """The eval-matrix row of ``n_docs`` documents; beyond the setup's T they repeat (same work)."""
    task = setup.task
    reps = -(-n_docs // task.n_docs)
    tokens = task.eval_tokens.repeat(reps, 1)[:n_docs]  # [n_docs, C]
    lengths = task.eval_lengths.repeat(reps)[:n_docs]  # [n_docs]
    return lambda: text.evaluate_docs(setup.model, tokens, lengths, batch)


def mfu_of(setup, peak_gflops: float, *, train_repeats: int, eval_repeats: int) -> dict:
    """Train-step and eval-matrix MFU of one prepared run setup."""
    cfg, model = setup.cfg, setup.model
    C, T = cfg.data.context_length, cfg.data.n_docs
    N = model_flop_params(model)
    recorder = recorder_of(setup)
    doc = int(torch.argmax(setup.task.lengths))  # a full-length document (FLOPs are the same either way)
    train_s, _ = median_seconds(
        train_step_fn(setup, recorder, fresh_members(setup), doc),
        setup.device,
        repeats=train_repeats,
        warmup=2,
    )
    batch = setup.task.eval_batch
    eval_s, _ = median_seconds(eval_fn(setup, T, batch), setup.device, repeats=eval_repeats)
    train_gflops = 6 * N * C / train_s / 1e9
    eval_gflops = 2 * N * C * T / eval_s / 1e9
    return {
        "width": model.config.hidden_size,
        "depth": model.config.num_hidden_layers,
        "C": C,
        "T": T,
        "vocab": model.config.vocab_size,
        "N": N,
        "eval_batch": batch,
        "train_step_s": train_s,
        "train_gflops": train_gflops,
        "train_mfu": train_gflops / peak_gflops,
        "eval_matrix_row_s": eval_s,
        "eval_gflops": eval_gflops,
        "eval_mfu": eval_gflops / peak_gflops,
    }


def eval_batch_sweep(setup, peak_gflops: float, batches: list[int], *, repeats: int) -> list[dict]:
    """Eval-matrix row time per documents-per-forward, interleaved so drift hits every size alike."""
    C, T = setup.cfg.data.context_length, setup.cfg.data.n_docs
    N = model_flop_params(setup.model)
    times: dict[int, list[float]] = {b: [] for b in batches}
    for b in batches:  # warm-up
        eval_fn(setup, T, b)()
    for _ in range(repeats):
        for b in batches:
            _, t = median_seconds(eval_fn(setup, T, b), setup.device, repeats=1, warmup=0)
            times[b] += t
    out = []
    for b in batches:
        s = statistics.median(times[b])
        out.append(
            {"batch": b, "tokens_per_forward": b * C, "s": s, "mfu": 2 * N * C * T / s / 1e9 / peak_gflops}
        )
    return out


def recorded_grad_params(recorder) -> tuple[str, dict[str, torch.Tensor]]:
    """(name, {HF parameter name: parameter}) of the first per-document gradient recording."""
    recording = next(r for r in recorder.table if r.kind == "grads")
    return recording.name, recorder._component_params(recording.name)


def per_document_grads_methods(setup, n_docs: int, *, repeats: int) -> dict:
    """Seconds for the per-document gradients of the recorded layer: vmap vs one backward per document."""
    import warnings

    C = setup.cfg.data.context_length
    recorder = recorder_of(setup)
    name, params = recorded_grad_params(recorder)
    tokens, lengths = setup.task.eval_tokens[:n_docs], setup.task.eval_lengths[:n_docs]

    def run(method):
        def go():
            for _grads in text.per_document_grads(
                setup.model, params, tokens, lengths, chunk=recorder._grad_chunk, method=method
            ):
                sync(setup.device)  # one chunk's gradients finished, as the recorder takes them

        return go

    times: dict[str, list[float]] = {"loop": [], "vmap": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # vmap's "no batching rule, falling back" notes
        for method in times:
            run(method)()
        for _ in range(repeats):
            for method in times:
                times[method] += median_seconds(run(method), setup.device, repeats=1, warmup=0)[1]
    loop_s, vmap_s = statistics.median(times["loop"]), statistics.median(times["vmap"])
    return {
        "layer": name,
        "D": sum(p.numel() for p in params.values()),
        "T": n_docs,
        "C": C,
        "width": setup.model.config.hidden_size,
        "loop_s": loop_s,
        "vmap_s": vmap_s,
        "vmap_speedup": loop_s / vmap_s,
    }


def train_eval_split(setup, doc_counts: list[int], *, episodes: int) -> list[dict]:
    """Per-episode seconds of the M training steps and of the eval-matrix row, as T grows.

    Each "episode" is the loop's episode step (``train_episode``: M steps on one document, the
    optimizer reset as configured) followed by the eval of T documents (per-document gradients,
    at epoch ends, are left out). The embedded pydoc source has 79 documents, so for larger T
    they repeat: the work is the same.
    """
    cfg = setup.cfg
    M = cfg.schedule.steps_per_doc
    recorder = recorder_of(setup)
    members = fresh_members(setup)
    norms = members.grad_norms(setup.names.parameter_groups(setup.model), setup.device)
    rules = training_rules(setup)
    generator = torch.Generator().manual_seed(cfg.seed)
    batch = setup.task.eval_batch

    def episode_fn(k: int, doc: int):
        return lambda: train_episode(
            members,
            [setup.task],
            [doc],
            episode=k,
            rules=rules,
            generators=[generator],
            grad_norms=norms,
        )

    out = []
    for T in doc_counts:
        train, evaluate = [], []
        docs = range(min(T, episodes + 1, setup.task.n_docs))
        train_step_fn(setup, recorder, members, docs[0])()  # warm-up: one step
        for k in range(episodes):
            train.append(
                median_seconds(episode_fn(k + 1, docs[k % len(docs)]), setup.device, repeats=1, warmup=0)[0]
            )
            evaluate.append(median_seconds(eval_fn(setup, T, batch), setup.device, repeats=1, warmup=0)[0])
        tr, ev = statistics.median(train), statistics.median(evaluate)
        out.append(
            {
                "T": T,
                "M": M,
                "C": cfg.data.context_length,
                "train_s_per_episode": tr,
                "eval_s_per_episode": ev,
                "eval_fraction": ev / (tr + ev),
            }
        )
    return out
