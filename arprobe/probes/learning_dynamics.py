"""learning_dynamics: how much of the pairwise recovery matrix do the per-document gradients explain?

The paper shows gradient similarity (Fig. 8a) beside pairwise recovery (Fig. 8b) and argues the
second follows from the first. This probe makes the link quantitative, first order, in the spirit of
Ren & Sutherland ("Learning dynamics of LLM fine-tuning", ICLR 2025): the loss drop of document j
after M steps on document i from a checkpoint is predicted as g_j·U_i, U_i the optimizer's move on
i's frozen gradient (``arprobe.science.learning_dynamics``: η·M·g_j·g_i for gradient descent; for
Adam its update rule from the checkpoint's optimizer state, or from a fresh one when the run resets
it every episode — then the sign of g_i), and compared with the matrix the run's own episode step
replays from the same checkpoint (what ``pairwise_recovery`` computes): rank and Pearson correlation
over off-diagonal pairs, with a bootstrap interval over documents and a Mantel permutation p, beside
the matched shuffled control's.

Two gradient sources. ``checkpoint``: exact gradients of every trainable parameter recomputed at
the checkpoint (one per document, through the run's loss on the clean document), the optimizer's
preconditioner applied exactly. ``sketch``: the run's recorded per-document gradients of one layer
(``grads/<layer>``, count-sketched when large: their inner products estimate the true ones within
about √(2/k)·|g_i||g_j|), which cover that layer only and, sketched, admit no elementwise
preconditioner, so they predict with the plain inner product.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arprobe.errors import MissingDataError, UserError
from arprobe.probes.base import Probe, missing_requirement, new_figure, pick_recording, save_figure
from arprobe.probes.nulls import NO_CONTROL, control_value, versus_control
from arprobe.probes.pairwise_recovery import default_checkpoint, replayed_rows
from arprobe.science.learning_dynamics import (
    adam_direction,
    agreement,
    offdiagonal,
    predicted_recovery,
    sgd_direction,
)

SOURCES = ("auto", "checkpoint", "sketch")
# Per-document gradients of this many bytes at most are held at once (T copies of a block of
# parameters); larger models take one gradient pass per block.
GRAD_BUDGET = 1 << 30


class LearningDynamics(Probe):
    name = "learning_dynamics"
    description = (
        "Predict the pairwise recovery matrix from per-document gradients (first order, through the "
        "optimizer) and compare it with the replayed one: how much of the structure gradients explain."
    )
    title = "Recovery predicted from gradients"
    look_for = (
        "Points along a rising line: the first-order prediction orders the pairs as the replay does. "
        "A rank correlation near 1 says the gradients explain the pairwise structure; compare it with "
        "the shuffled control's."
    )
    requires = ["checkpoints"]
    options = {
        "source": "auto",
        "episodes": "default",
        "layer": "",
        "steps": 0,
        "device": "auto",
        "seed": 0,
        "threads": 1,
        "batch": -1,
        "bootstrap": 1000,
        "permutations": 1000,
        "control": True,
    }
    option_help = {
        "source": "auto: exact gradients at the checkpoint (and the recorded ones beside them where the run "
        "has them there); checkpoint: exact only; sketch: the recorded per-document gradients of one layer",
        "episodes": "checkpoints compared: default (pairwise_recovery's: the latest before the last "
        "episode), all, or a comma-separated list of checkpoint episodes",
        "layer": "recorded gradient layer for the sketch source; empty: the first recorded",
        "steps": "gradient steps on each x_i; 0: the run's M (steps_per_doc)",
        "device": "torch device for the replay and the gradients: auto, cpu, cuda, ...",
        "seed": "0: the run's RNG state at the checkpoint; else a seed for the data randomness (shift, mask)",
        "threads": "CPU threads for torch while this probe trains (restored after); 0: torch's default",
        "batch": "replays trained at once (as pairwise_recovery): -1 as many as a GPU holds, 1 on CPU",
        "bootstrap": "resamples of the documents for the rank correlation's 95% interval (0: none)",
        "permutations": "relabellings of the documents for the Mantel p (0: none)",
        "control": "also compare on the matched shuffled control (same checkpoints), when the run has one",
    }
    headline_keys = [
        "source",
        "checkpoint_episode",
        "spearman",
        "spearman_interval",
        "r2",
        "interaction_pearson",
        "sketch_spearman",
        "control_spearman",
        "verdict",
    ]

    def run(self, store, out: Path, **options) -> dict:
        options = {**self.options, **options}
        # lazy: torch takes seconds to import; only this path needs it
        import torch

        # One thread: batch-size-1 steps gain little from more, and on shared cores torch's spinning
        # pool is far slower (pairwise_recovery measured 0.5 s per document against 6.5 s with two).
        previous = torch.get_num_threads()
        if options["threads"] > 0:
            torch.set_num_threads(options["threads"])
        try:
            return self._run(store, out, options)
        finally:
            torch.set_num_threads(previous)

    def _run(self, store, out: Path, options: dict) -> dict:
        source = options["source"]
        if source not in SOURCES:
            raise UserError(f"learning_dynamics.source must be one of {', '.join(SOURCES)}, not {source!r}.")
        missing_requirement(store, "checkpoints")
        episodes = self.pick_episodes(store, options["episodes"])
        layer = self.pick_layer(store, source, options["layer"], episodes)
        rows = [self.compare_at(store, e, source, layer, options) for e in episodes]
        control = None
        if options["control"]:
            control = control_value(
                store, lambda c: [self.compare_at(c, e, source, layer, options) for e in episodes]
            )
        head = rows[-1]  # the latest compared checkpoint (the default one when there is one)
        main = head["exact"] or head["sketch"]
        control_head = None if control is None else (control[-1]["exact"] or control[-1]["sketch"])
        control_rho = None if control_head is None else control_head["spearman"]
        verdict = versus_control(
            "rank correlation of predicted and replayed recovery", main["spearman"], control_rho
        )
        self.draw(out, head, None if control_head is None else control[-1])
        return {
            "source": "checkpoint" if head["exact"] else "sketch",
            "source_note": head["source_note"],
            "optimizer": head["optimizer"],
            "prediction": head["prediction"],
            "steps": head["steps"],
            "checkpoint_episode": head["episode"],
            "checkpoints": [r["episode"] for r in rows],
            "spearman": main["spearman"],
            "spearman_interval": main["spearman_interval"],
            "pearson": main["pearson"],
            "r2": main["r2"],
            "slope": main["slope"],
            "interaction_pearson": main["interaction_pearson"],
            "mantel_p": main["mantel_p"],
            "sketch_spearman": head["sketch"]["spearman"] if head["sketch"] else None,
            "sketch_r2": head["sketch"]["r2"] if head["sketch"] else None,
            "layer": layer,
            "layer_sketch": head["layer_sketch"],
            "per_checkpoint": rows,
            "control_spearman": control_rho,
            "control_r2": None if control_head is None else control_head["r2"],
            "control_per_checkpoint": control,
            "verdict": verdict,
            "null": {
                "reads": "a prediction unrelated to the replay reads a rank correlation about 0 (mantel_p: "
                "the share of relabellings of the documents reaching it); in the matched shuffled control "
                "the same first-order link holds, so compare how much each run's structure is explained",
                "control": control_rho,
                "verdict": verdict if control is not None else NO_CONTROL,
            },
        }

    # --- what is compared ---------------------------------------------------------------------

    @staticmethod
    def pick_episodes(store, chosen: str) -> list[int]:
        """The checkpoint episodes to compare, in order."""
        checkpoints = [int(e) for e in store.checkpoint_episodes()]
        if chosen == "default":
            return [default_checkpoint(np.asarray(checkpoints), store.completed_episodes)]
        if chosen == "all":
            return checkpoints
        try:
            wanted = [int(x) for x in str(chosen).split(",") if x.strip()]
        except ValueError:
            raise UserError(
                "learning_dynamics.episodes must be default, all or checkpoint episodes like 10,20; "
                f"not {chosen!r}."
            ) from None
        missing = [e for e in wanted if e not in checkpoints]
        if missing or not wanted:
            raise MissingDataError(
                f"Run '{store.path.parent.name}' has no checkpoint at episode {', '.join(map(str, missing))} "
                f"(have: {', '.join(map(str, checkpoints))}); pick one of those or set record.checkpoints."
            )
        return sorted(wanted)

    @staticmethod
    def pick_layer(store, source: str, layer: str, episodes: list[int]) -> str | None:
        """The recorded gradient layer read (None when the probe reads none); the sketch source
        needs it at every compared checkpoint."""
        if source == "checkpoint" or (source == "auto" and not store.recorded("grads")):
            return None
        layer = pick_recording(store, "grads", layer)
        missing_requirement(store, f"grads:{layer}")
        recorded = [int(e) for e in store.recording_episodes("grads", layer)]
        lacking = [e for e in episodes if e not in recorded]
        if source == "sketch" and lacking:
            raise MissingDataError(
                f"Run '{store.path.parent.name}' has no gradients of '{layer}' at checkpoint episode "
                f"{', '.join(map(str, lacking))} (recorded at: {', '.join(map(str, recorded)) or 'none'}); "
                "record.grads_at = epoch records them at every epoch end, where checkpoints are taken."
            )
        return layer

    def compare_at(self, store, episode: int, source: str, layer: str | None, options: dict) -> dict:
        """Predicted and replayed matrices at one checkpoint, and their agreement."""
        # lazy: pulls in torch and the trainer, which importing this module does not need
        from arprobe.trainer.api import Replay

        seed = options["seed"]
        replay = Replay(store, episode, device=options["device"], steps_per_doc=options["steps"] or None,
                        seed=seed if seed else None)  # fmt: skip
        M = replay.rules.steps_per_doc
        lrs = np.array([replay.rules.lr_at(episode * M + t) for t in range(M)])  # the episode after it
        optimizer, prediction = describe_optimizer(replay)
        replayed = self.replayed(replay, options["batch"])
        judged = {"bootstrap": options["bootstrap"], "permutations": options["permutations"]}
        exact = sketch = layer_sketch = None
        predicted_exact = predicted_sketch = None
        if source in ("auto", "checkpoint"):
            predicted_exact = exact_prediction(replay, lrs)
            exact = agreement(predicted_exact, replayed, **judged).as_dict()
        recorded = (  # a control may lack the run's recorded gradients: then only the exact source
            layer is not None
            and layer in store.recorded("grads")
            and episode in store.recording_episodes("grads", layer)
        )
        if source == "sketch" or (source == "auto" and recorded):
            episodes, grads = store.grads(layer)
            g = grads[int(np.flatnonzero(episodes == episode)[-1])].astype(np.float64)  # [T, D]
            layer_sketch = store.sketch_info("grads", layer)
            fresh_adam = optimizer == "adam" and (replay.rules.reset_optimizer or not replay._keep)
            if fresh_adam and layer_sketch is None:  # exact layer, fresh Adam: the sign rule applies
                predicted_sketch = predicted_recovery(adam_direction(g, lrs), g)
            else:
                predicted_sketch = predicted_recovery(sgd_direction(g, lrs), g)
            sketch = agreement(predicted_sketch, replayed, **judged).as_dict()
        note = source_note(exact is not None, layer, layer_sketch, optimizer)
        data = replay.cfg.data
        if getattr(data, "max_shift", 0) or getattr(data, "mask_prob", 0):
            note += (
                "; the run trains on shifted or masked windows, which the prediction (from the clean "
                "documents' gradients) does not model"
            )
        return {
            "episode": episode,
            "steps": M,
            "optimizer": optimizer,
            "prediction": prediction,
            "source_note": note,
            "lrs": lrs,
            "replayed": replayed,
            "predicted": predicted_exact,
            "predicted_sketch": predicted_sketch,
            "exact": exact,
            "sketch": sketch,
            "layer_sketch": layer_sketch,
        }

    def replayed(self, replay, batch: int) -> np.ndarray:
        """[T, T] the replayed recovery matrix: loss of x_j before − after M steps on x_i, by the
        run's episode step from the checkpoint (pairwise_recovery's machinery)."""
        replay.reset()
        before = replay.evaluate().astype(np.float64)  # [T]
        recovery, _ = replayed_rows(
            replay, before, batch, progress=self.progress, desc="learning dynamics replay"
        )
        replay.reset()
        return recovery

    @staticmethod
    def draw(out: Path, head: dict, control: dict | None) -> None:
        predicted = head["predicted"] if head["predicted"] is not None else head["predicted_sketch"]
        replayed = head["replayed"]
        T = replayed.shape[0]
        fig, (ax, ax_p, ax_r) = new_figure(3, width=5.0)
        x, y = offdiagonal(predicted), offdiagonal(replayed)
        main = head["exact"] or head["sketch"]
        ax.scatter(x, y, s=14, color="tab:blue", label=f"this run (Spearman {main['spearman']:.2f})")
        data = {"predicted": x, "replayed": y}
        if head["exact"] and head["sketch"]:
            xs = offdiagonal(head["predicted_sketch"])
            scale = (
                np.std(x) / np.std(xs) if np.std(xs) > 0 else 1.0
            )  # one layer's share: put it on x's scale
            label = f"recorded gradients, rescaled (Spearman {head['sketch']['spearman']:.2f})"
            ax.scatter(xs * scale, y, s=10, marker="x", color="tab:orange", label=label)
            data["predicted_recorded"] = offdiagonal(head["predicted_sketch"])
        if control is not None:
            c_pred = control["predicted"] if control["predicted"] is not None else control["predicted_sketch"]
            c_main = control["exact"] or control["sketch"]
            label = f"shuffled control (Spearman {c_main['spearman']:.2f})"
            c_x, c_y = offdiagonal(c_pred), offdiagonal(control["replayed"])
            ax.scatter(c_x, c_y, s=12, marker="s", color="tab:gray", alpha=0.6, label=label)
            data["control_predicted"] = offdiagonal(c_pred)
            data["control_replayed"] = offdiagonal(control["replayed"])
        ax.axhline(0, color="0.7", lw=0.8)
        ax.axvline(0, color="0.7", lw=0.8)
        ax.set_xlabel("predicted loss drop of x_j (first order, from gradients)")
        ax.set_ylabel("replayed loss drop of x_j")
        ax.set_title(f"Off-diagonal pairs, checkpoint at episode {head['episode']}")
        ax.legend(fontsize=7)
        for axis, matrix, what in ((ax_p, predicted, "predicted"), (ax_r, replayed, "replayed")):
            off = offdiagonal(matrix)
            lim = float(np.abs(off).max()) or 1.0  # the diagonal dwarfs the rest: scale by the off-diagonal
            im = axis.imshow(matrix, cmap="RdBu_r", vmin=-lim, vmax=lim, extent=(0.5, T + 0.5, T + 0.5, 0.5))
            fig.colorbar(im, ax=axis, label="loss drop of x_j (diagonal off the scale)")
            axis.set_xlabel("evaluated document j")
            axis.set_ylabel("trained document i")
            axis.set_title(f"{what.capitalize()} recovery, {head['steps']} steps")
        save_figure(fig, out / "learning_dynamics.png", data=data)


def describe_optimizer(replay) -> tuple[str, str]:
    """("adam" | "sgd", one sentence saying how the prediction goes through it)."""
    cfg = replay.cfg
    if cfg.optim.name == "sgd":
        return (
            "sgd",
            "gradient descent: A[i, j] = Σ_t η_t · g_j·(g_i + λθ), η_t the run's rates of the episode",
        )
    if replay.rules.reset_optimizer or not replay._keep:
        return "adam", (
            "Adam from a fresh state (the run resets it every episode, so the checkpoint keeps none): "
            "its update rule on the frozen gradient g_i gives every step η_t·g_i/(|g_i| + ε), so "
            "A[i, j] = Σ_t η_t · Σ_k g_jk g_ik/(|g_ik| + ε), the sign of g_i"
        )
    return "adam", (
        "Adam from the checkpoint's kept state (exp_avg m_0, exp_avg_sq v_0, step s): its update rule "
        "run for M steps on the frozen gradient g_i, m̂ and v̂ bias-corrected by s + t; to first order "
        "g_jᵀ D (a·m_0 + b·g_i) with D = diag(1/(√v̂ + ε))"
    )


def source_note(exact: bool, layer: str | None, layer_sketch: dict | None, optimizer: str) -> str:
    """One sentence on where the gradients of the headline (and the recorded ones beside) come from."""
    parts = []
    if exact:
        parts.append(
            "exact gradients of every trainable parameter recomputed at the checkpoint (the clean "
            "document's loss), the optimizer's update applied exactly"
        )
    if layer is not None:
        how = (
            f"a count-sketch of {layer_sketch['full_dim']:,} values into {layer_sketch['dim']:,}, whose "
            "inner products are unbiased estimates of the true ones"
            if layer_sketch
            else "stored exact"
        )
        plain = (
            "the plain inner product (no elementwise preconditioner survives a sketch)"
            if layer_sketch or optimizer == "sgd"
            else "Adam's fresh-state sign rule (the layer is stored exact)"
        )
        parts.append(f"the recorded gradients of '{layer}' only ({how}), predicting with {plain}")
    return "; beside them ".join(parts) if exact and layer else parts[0]


def exact_prediction(replay, lrs: np.ndarray) -> np.ndarray:
    """[T, T] first-order recovery from exact per-document gradients of every trainable parameter at
    the checkpoint, through the run's optimizer (its kind, betas, ε, weight decay per group, kept
    state unless the run resets it) and gradient clipping (each document's gradient scaled as
    ``clip_grad_norm_`` would scale it)."""
    # lazy: torch takes seconds to import; only this path needs it
    import torch

    replay.reset()
    model, optimizer, rules = replay.model, replay.optimizer, replay.rules
    names = {id(p): n for n, p in model.named_parameters()}
    fresh = rules.reset_optimizer or not replay._keep
    entries = []  # (name, param, group)
    for group in optimizer.param_groups:
        entries += [(names[id(p)], p, group) for p in group["params"]]
    T = replay.task.n_docs
    blocks, block, size = [], [], 0
    for entry in entries:  # blocks of parameters whose T gradients fit the budget
        n = entry[1].numel() * T * 8
        if block and size + n > GRAD_BUDGET:
            blocks.append(block)
            block, size = [], 0
        block.append(entry)
        size += n
    blocks.append(block)

    def gradients(block):
        params = {n: p for n, p, _ in block}
        chunk = max(1, getattr(replay.task, "eval_batch", 4) // 4)
        try:
            parts = list(replay.task.per_document_grads(model, params, chunk=chunk, method="vmap"))
        except (RuntimeError, NotImplementedError):  # architectures vmap cannot batch: one pass each
            parts = list(replay.task.per_document_grads(model, params, chunk=chunk, method="loop"))
        return [torch.cat([part[k] for part in parts]).reshape(T, -1).double().cpu().numpy()
                for k in range(len(block))]  # fmt: skip

    scale = np.ones(T)
    if rules.grad_clip:  # the run clips each step's global norm: a first pass for the norms
        sq = np.zeros(T)
        for block in blocks:
            sq += sum(np.sum(g * g, axis=1) for g in gradients(block))
        scale = np.minimum(1.0, rules.grad_clip / (np.sqrt(sq) + 1e-6))
    predicted = np.zeros((T, T))
    for block in blocks:
        for (_, p, group), g in zip(block, gradients(block)):
            theta = p.detach().double().cpu().numpy().reshape(-1)
            stepped = g * scale[:, None]
            decay = group.get("weight_decay", 0.0)
            if isinstance(optimizer, torch.optim.SGD):
                u = sgd_direction(stepped, lrs, decay, theta)
            else:
                state = {} if fresh else optimizer.state.get(p, {})
                u = adam_direction(
                    stepped,
                    lrs,
                    betas=tuple(group["betas"]),
                    eps=group["eps"],
                    exp_avg=state["exp_avg"].double().cpu().numpy().reshape(-1) if state else None,
                    exp_avg_sq=state["exp_avg_sq"].double().cpu().numpy().reshape(-1) if state else None,
                    step=int(state["step"]) if state else 0,
                    weight_decay=decay,
                    params=theta,
                )
            predicted += predicted_recovery(u, g)  # the loss of j: its own (unclipped) gradient
    return predicted
