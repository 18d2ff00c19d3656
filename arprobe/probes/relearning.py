"""relearning: savings — after a document's turn, how many gradient steps on it, replayed from the
checkpoint before its next turn, bring its loss back to its post-training loss, against the steps
its learning took (the "spurious forgetting" measurement, Zheng et al., ICLR 2025).

From each checkpoint, for every document trained before it and again after it: restore the
checkpoint, take one gradient step at a time on the document through the run's own episode step
(its lr schedule position, clipping, optimizer-state policy, RNG), evaluate after each, and count
the steps until its loss is at or below the loss it had right after its previous turn (the eval
matrix). The savings ratio is that count over the first-learning steps (the M steps of that turn,
or steps measured from a checkpoint before its first turn).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from arprobe.errors import MissingDataError, UserError
from arprobe.probes.base import Probe, integer_axis, new_figure, save_data, save_figure
from arprobe.probes.nulls import control_value, versus_control
from arprobe.science.relearning import Turns, savings, steps_to_reach, turns_around

FIRST = ("turn", "replay")
PER_CHECKPOINT = (  # what ``by_checkpoint`` keeps of each checkpoint's measurement
    "checkpoint_episode",
    "checkpoint_epoch",
    "mean_savings_ratio",
    "savings_interval",
    "n_measured",
    "n_censored",
    "n_already_there",
)


def relearning_curve(replay, doc: int, target: float, cap: int, steps_per_doc: int) -> np.ndarray:
    """[n+1] loss of ``doc`` from the replay's checkpoint (entry 0) and after each of n gradient
    steps on it, stopping at the first at or below ``target`` or after ``cap`` steps.

    ``replay`` is a ``Replay`` built with steps_per_doc = 1, so one ``train_episode`` call is one
    step; each call is placed at the global step the run would have taken — step j after the
    checkpoint sits at (checkpoint · M + j) in the lr schedule — and the optimizer state is reset
    where the run resets it: at the start of every M steps (reset_per_doc), never in between."""
    rules = replay.rules  # the run's, with steps_per_doc = 1
    replay.reset()
    loss = [float(replay.evaluate()[doc])]
    try:
        for j in range(cap):
            if loss[-1] <= target:
                break
            reset = rules.reset_optimizer and j % steps_per_doc == 0
            replay.rules = dataclasses.replace(rules, reset_optimizer=reset)
            step = min(replay.episode * steps_per_doc + j + 1, rules.total_steps)  # 1-based, in the schedule
            replay.train_episode(doc, episode=step)
            loss.append(float(replay.evaluate()[doc]))
    finally:
        replay.rules = rules
    return np.array(loss)


class Relearning(Probe):
    name = "relearning"
    description = (
        "Savings (spurious forgetting, Zheng et al. 2025): steps of replayed training from a checkpoint "
        "that bring each document back to its post-training loss, over the steps its learning took."
    )
    title = "Relearning savings"
    look_for = (
        "A ratio well below 1 says the forgotten document is dormant, not lost; 0 steps says its loss "
        "had already come back before its turn (anticipatory recovery). Compare with the shuffled control."
    )
    requires = ["eval", "checkpoints"]
    options = {
        "episode": -1,
        "max_steps": 0,
        "first": "turn",
        "bootstrap": 1000,
        "seed": 0,
        "data_seed": 0,
        "device": "auto",
        "threads": 1,
    }
    option_help = {
        "episode": "checkpoint to replay from; -1: every checkpoint with a document trained before and after "
        "it (the headline is the latest)",
        "max_steps": "cap on relearning steps per document (censored beyond); 0: 4·M",
        "first": "first-learning steps: turn = M, the steps the previous turn took to reach the target; "
        "replay = steps from the latest checkpoint before the document's first turn to the same target "
        "(documents without one are left out of the ratio)",
        "bootstrap": "resamples of the documents for the mean ratio's 95% interval (0 = none)",
        "seed": "seed of the bootstrap",
        "data_seed": "0: the run's RNG state at the checkpoint; else a seed for the data randomness",
        "device": "torch device for the replays: auto, cpu, cuda, ...",
        "threads": "CPU threads for torch while this probe trains (restored after); 0: torch's default",
    }
    headline_keys = [
        "checkpoint_episode",
        "mean_savings_ratio",
        "savings_interval",
        "n_censored",
        "n_already_there",
        "control_mean_savings_ratio",
        "verdict",
    ]

    def run(
        self,
        store,
        out: Path,
        episode: int = -1,
        max_steps: int = 0,
        first: str = "turn",
        bootstrap: int = 1000,
        seed: int = 0,
        data_seed: int = 0,
        device: str = "auto",
        threads: int = 1,
    ) -> dict:
        # lazy: torch takes seconds to import; only this path needs it
        import torch

        if first not in FIRST:
            raise UserError(f"relearning.first must be one of {', '.join(FIRST)}, not {first!r}.")
        if max_steps < 0:
            raise UserError(f"relearning.max_steps must be 0 (4·M) or a positive number, not {max_steps}.")
        previous = torch.get_num_threads()
        if threads > 0:  # batch-size-1 steps on shared cores: see pairwise_recovery
            torch.set_num_threads(threads)
        try:
            return self._run(store, out, episode, max_steps, first, bootstrap, seed, data_seed, device)
        finally:
            torch.set_num_threads(previous)

    def _run(self, store, out, episode, max_steps, first, bootstrap, seed, data_seed, device) -> dict:
        M = store.steps_per_doc
        cap = max_steps or 4 * M
        checkpoints = self.checkpoints_to_measure(store, episode)
        kwargs = dict(
            cap=cap, first=first, bootstrap=bootstrap, seed=seed, data_seed=data_seed, device=device
        )
        measured = [self.measure(store, c, **kwargs) for c in checkpoints]
        head = measured[-1]
        control = control_value(store, lambda c: self.measure(c, head["checkpoint_episode"], **kwargs))
        control_mean = None if control is None else control["mean_savings_ratio"]
        verdict = versus_control("mean savings ratio", head["mean_savings_ratio"], control_mean)
        order = store.config.get("schedule", {}).get("order", "?")
        self.draw(out, head, control, order)
        return {
            **head,
            "steps_per_doc": M,
            "max_steps": cap,
            "first_learning": self.first_words(first, M),
            "by_checkpoint": [{k: m[k] for k in PER_CHECKPOINT} for m in measured],
            "control_docs": None if control is None else control["docs"],  # its own, in document order
            "control_savings_ratio": None if control is None else control["savings_ratio"],
            "control_relearn_steps": None if control is None else control["relearn_steps"],
            "control_censored": None if control is None else control["censored"],
            "control_mean_savings_ratio": control_mean,
            "control_savings_interval": None if control is None else control["savings_interval"],
            "verdict": verdict,
            "null": {
                "reads": "a document whose knowledge is lost, not dormant, relearns as slowly as it learned: "
                "ratio about 1 (more if the model has drifted away from it); the matched shuffled control "
                "gives the ratio under the same amount of training in a non-cyclic order",
                "control_mean_savings_ratio": control_mean,
                "verdict": verdict,
            },
            "replay": "the run's episode step from the checkpoint, one gradient step at a time at the run's "
            "lr-schedule position, optimizer state reset every M steps where the run resets it per "
            "document; loss after every step from the task's evaluation of all documents",
        }

    @staticmethod
    def first_words(first: str, M: int) -> str:
        if first == "turn":
            return f"M = {M}: the steps the document's previous turn took to reach the target loss"
        return (
            "steps replayed from the latest checkpoint before the document's first turn to the same "
            "target loss (capped like relearning)"
        )

    @staticmethod
    def checkpoints_to_measure(store, episode: int) -> list[int]:
        """The checkpoints replayed from, checked: the run has them and a document on both sides."""
        run = store.path.parent.name
        schedule = store.schedule()
        if schedule.n_epochs < 2:
            raise MissingDataError(
                f"Run '{run}' has trained only one epoch; relearning needs a document trained before a "
                "checkpoint and again after it, so at least 2 epochs (schedule.epochs)."
            )
        have = [int(c) for c in store.checkpoint_episodes()]
        if not have:
            raise MissingDataError(
                f"Run '{run}' has no checkpoints; relearning replays from one before a document's next turn: "
                "record them with record.checkpoints = probes (the default) or epoch."
            )
        loss_eval = store.eval_matrix()
        usable = [c for c in have if len(turns_around(loss_eval, schedule.doc, c).doc)]
        if episode == -1:
            if not usable:
                raise MissingDataError(
                    f"Run '{run}' has no checkpoint between two turns of a document (have: "
                    f"{', '.join(map(str, have))}); record one before the last epoch with "
                    "record.checkpoints = probes or epoch."
                )
            return usable
        if episode not in have:
            raise MissingDataError(
                f"Run '{run}' has no checkpoint at episode {episode} (have: {', '.join(map(str, have))}); "
                "pick one of those or set record.checkpoints."
            )
        if episode not in usable:
            raise UserError(
                f"No document of run '{run}' is trained both before and after the checkpoint at episode "
                f"{episode}; pick one of {', '.join(map(str, usable)) or 'none'}."
            )
        return [episode]

    def measure(self, store, checkpoint: int, *, cap, first, bootstrap, seed, data_seed, device) -> dict:
        """Savings of every document around the checkpoint after episode ``checkpoint``."""
        # lazy: tqdm takes seconds to import; only this path needs it
        from tqdm.auto import tqdm

        loss_eval, schedule = store.eval_matrix(), store.schedule()
        M = store.steps_per_doc
        turns = turns_around(loss_eval, schedule.doc, checkpoint)
        if not len(turns.doc):
            raise MissingDataError(f"no document is trained before and after episode {checkpoint}")
        replay = self.replay(store, checkpoint, data_seed, device)
        bar = tqdm(
            total=len(turns.doc), desc=f"relearning @{checkpoint}", unit="doc", disable=not self.progress,
            leave=False,
        )  # fmt: skip
        curves = []
        with bar:
            for d, target in zip(turns.doc, turns.target):
                curves.append(relearning_curve(replay, int(d), float(target), cap, M))
                bar.update(1)
        first_steps, first_censored = self.first_steps(store, turns, first, cap, data_seed, device)
        result = savings(curves, turns.target, first_steps, cap, bootstrap, seed)
        start = np.array([c[0] for c in curves])
        return {
            "checkpoint_episode": checkpoint,
            "checkpoint_epoch": int(schedule.epoch[checkpoint - 1]),
            "docs": turns.doc,  # 0-based
            "previous_turn": turns.previous,  # episode of the turn whose loss is the target
            "next_turn": turns.next,
            "target": turns.target,  # loss_eval[previous_turn, doc]
            "start_loss": start,  # the replay's loss at the checkpoint
            "replay_start_difference": float(np.max(np.abs(start - loss_eval[checkpoint, turns.doc]))),
            "loss_before_next_turn": loss_eval[turns.next - 1, turns.doc].astype(np.float64),
            "relearn_steps": result.steps,
            "censored": result.censored,
            "first_steps": first_steps,
            "first_censored": first_censored,
            "savings_ratio": result.ratio,
            "mean_savings_ratio": result.mean_ratio,
            "savings_interval": list(result.interval),
            "n_measured": int(np.isfinite(result.ratio).sum()),
            "n_censored": int(result.censored.sum()),
            "n_already_there": result.already_there,
            "curves": curves,
        }

    @staticmethod
    def replay(store, checkpoint: int, data_seed: int, device: str):
        # lazy: pulls in torch, which importing this module does not need
        from arprobe.trainer.api import Replay

        return Replay(store, checkpoint, device=device, steps_per_doc=1, seed=data_seed or None)

    def first_steps(self, store, turns: Turns, first: str, cap, data_seed, device):
        """([n] first-learning steps, [n] censored): M each, or replayed from the latest checkpoint
        before each document's first turn (NaN where there is none)."""
        M, n = store.steps_per_doc, len(turns.doc)
        if first == "turn":
            return np.full(n, float(M)), np.zeros(n, dtype=bool)
        schedule_doc = store.schedule().doc
        have = np.array(store.checkpoint_episodes(), dtype=int)
        steps, censored = np.full(n, np.nan), np.zeros(n, dtype=bool)
        replays = {}
        for i, (d, target) in enumerate(zip(turns.doc, turns.target)):
            first_turn = int(np.flatnonzero(schedule_doc == d)[0]) + 1
            before = have[have < first_turn]
            if not len(before):
                continue
            c = int(before.max())
            if c not in replays:
                replays[c] = self.replay(store, c, data_seed, device)
            curve = relearning_curve(replays[c], int(d), float(target), cap, M)
            s, censored[i] = steps_to_reach(curve, float(target), cap)
            steps[i] = s
        if not np.isfinite(steps).any():
            raise MissingDataError(
                f"Run '{store.path.parent.name}' has no checkpoint before any measured document's first "
                "turn; relearning.first = replay needs one (record.checkpoints = N with N below T), or use "
                "first = turn."
            )
        return steps, censored

    @staticmethod
    def draw(out: Path, head: dict, control: dict | None, order: str) -> None:
        from matplotlib import colormaps  # lazy: `arprobe --help` stays instant

        fig, (ax, ax2) = new_figure(2, width=5.6)
        colors = colormaps["tab10"]
        docs = head["docs"]
        for i, (d, curve, target) in enumerate(zip(docs, head["curves"], head["target"])):
            color = colors(i % 10)
            ax.plot(np.arange(len(curve)), curve, "o-", ms=3, color=color, label=f"x_{d + 1}")
            ax.axhline(target, color=color, lw=0.8, ls="--")
        integer_axis(ax, "relearning steps from the checkpoint")
        ax.set_ylabel("loss of the document (dashed: its post-training loss)")
        ax.set_title(f"Relearning from the checkpoint at episode {head['checkpoint_episode']}")
        ax.legend(fontsize=7, ncol=2)

        # the documents either run measured (each leaves out the one it trained at the checkpoint)
        both = sorted({int(d) for d in docs} | ({int(d) for d in control["docs"]} if control else set()))
        x = np.arange(len(both))

        def by_doc(result: dict, key: str) -> np.ndarray:
            values = dict(zip((int(d) for d in result["docs"]), np.asarray(result[key], dtype=float)))
            return np.array([values.get(d, np.nan) for d in both])

        width = 0.4 if control is not None else 0.8
        shift = width / 2 if control is not None else 0
        drawn = [(head, -shift, "tab:blue", f"this run ({order})")]
        if control is not None:
            drawn.append((control, shift, "tab:gray", "matched shuffled control"))
        data = {"doc": np.array(both) + 1}
        for result, dx, color, label in drawn:
            ratio, censored = by_doc(result, "savings_ratio"), by_doc(result, "censored")
            ax2.bar(x + dx, ratio, width, color=color, label=label)
            for i in np.flatnonzero(np.isfinite(ratio)):  # a 0 bar is invisible: say it; ≥: censored
                mark = "≥" if censored[i] == 1 else "0" if ratio[i] == 0 else ""
                ax2.annotate(mark, (x[i] + dx, ratio[i]), ha="center", va="bottom", fontsize=8)
            prefix = "" if result is head else "control_"
            data[f"{prefix}savings_ratio"], data[f"{prefix}censored"] = ratio, censored
        ax2.axhline(1, color="0.6", lw=0.8, ls=":")
        ax2.set_xticks(x, [f"x_{d + 1}" for d in both])
        ax2.set_ylabel("savings ratio: relearning / first-learning steps")
        ax2.set_title("Savings per document (≥: censored at the cap)")
        ax2.legend(fontsize=8)
        save_figure(fig, out / "relearning.png", data=data)
        curves = {f"x_{d + 1}": c for d, c in zip(docs, head["curves"])}
        curves["target"] = np.asarray(head["target"])
        # the curves have their own CSV: one column per document (rows: steps), the targets last
        save_data(out, "relearning_curves", {"step": np.arange(max(len(c) for c in head["curves"]))} | curves)
