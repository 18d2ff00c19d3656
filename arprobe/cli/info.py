"""`arprobe info RUN`: status, config, episodes done and what was recorded."""

from __future__ import annotations

import argparse
import json

import numpy as np


def command_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("info", help="what a run store holds, its status and config")
    p.add_argument("run", help="run folder (runs/<name>) or its run.h5")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=info_command)
    return p


def summarize(store) -> dict:
    """What a person wants to know about a store, as plain data."""
    # lazy: keeps `arprobe --help` fast
    from arprobe.science.recovery import online_loss, recovery_score_notes, recovery_scores
    from arprobe.storage.recordings import snapshot_kinds

    cfg = store.config
    schedule = store.schedule()
    doc, epoch = schedule.doc, schedule.epoch
    recordings = {}
    for kind in snapshot_kinds():  # every kind of the recording table stored as snapshots
        for name in store.recorded(kind):
            episodes = store.recording_episodes(kind, name)
            shape = store.h5[kind][name]["values"].shape[1:]
            sketch = store.sketch_info(kind, name)
            recordings[f"{kind}/{name}"] = {
                "snapshots": int(len(episodes)),
                "episodes": _span(episodes),
                "shape": list(shape),
                **store.recording_info(kind, name),  # what and when (format 2)
                **({"sketch": sketch} if sketch else {}),
            }
    checkpoints = store.checkpoint_episodes()
    loss_eval = store.eval_matrix()
    scores = recovery_scores(loss_eval, doc)
    return {
        "path": str(store.path),
        "status": store.status,
        "stop_reason": store.stop_reason,
        "completed_episodes": store.completed_episodes,
        "epochs_done": int(epoch.max()) if len(epoch) else 0,
        "n_docs": store.n_docs,
        "steps_per_doc": store.steps_per_doc,
        "seed": store.seed,
        "created": str(store.h5.attrs.get("created", "")),
        "model": {k: v for k, v in store.model_info.items() if k not in ("config",)},
        "layers": store.layer_names,
        "recorded": recordings,
        "checkpoints": [int(e) for e in checkpoints],
        "recovery_scores": [None if np.isnan(x) else float(x) for x in scores],
        "recovery_notes": [n for n in recovery_score_notes(loss_eval, doc) if n],
        "online_loss": online_loss(loss_eval, doc, epoch).mean_after_first_epoch if len(doc) else None,
        "config": cfg,
    }


def _span(episodes) -> str:
    if not len(episodes):
        return "-"
    return f"{int(episodes[0])}..{int(episodes[-1])}" if len(episodes) > 1 else str(int(episodes[0]))


def info_command(args, extra) -> int:
    # lazy: keeps `arprobe --help` fast
    from arprobe.storage import RunStore
    from arprobe.trainer.plan import parameter_split

    with RunStore(args.run) as store, store.reading("its contents"):
        summary = summarize(store)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    cfg = summary["config"]
    print(f"run:        {summary['path']}")
    print(
        f"status:     {summary['status']}"
        + (f" ({summary['stop_reason']})" if summary["stop_reason"] else "")
    )
    schedule = cfg["schedule"]
    print(
        f"episodes:   {summary['completed_episodes']} done, {summary['epochs_done']} epoch(s) reached "
        f"(T={summary['n_docs']}, M={summary['steps_per_doc']}, E={schedule['epochs']}, "
        f"order={schedule['order']})"
    )
    model = summary["model"]
    print(f"model:      {model.get('kind', '?')} {model.get('name', '')} ({parameter_split(model)}, "
          f"init {model.get('init', '?')})")  # fmt: skip
    print(f"data:       {model.get('data', '?')}")
    print(f"seed:       {summary['seed']}    created: {summary['created']}")
    scores = summary["recovery_scores"]
    if scores:
        shown = "  ".join(
            f"RS({n})={'undefined' if s is None else f'{s:.3f}'}" for n, s in enumerate(scores, 1)
        )
        print(f"recovery:   {shown}")
        for note in summary["recovery_notes"]:
            if "no document was trained" not in note:
                print(f"            {note}")
    if summary["online_loss"] is not None and not np.isnan(summary["online_loss"]):
        print(f"online:     mean online loss, epochs 2..E: {summary['online_loss']:.4f}")
    print("recorded:")
    print(f"  loss/eval, loss/train, stats/grad_norm over {len(summary['layers'])} layer groups")
    for name, rec in summary["recorded"].items():
        sketch = f", count-sketch of {rec['sketch']['full_dim']:,}" if "sketch" in rec else ""
        when = f" ({rec['when']})" if "when" in rec else ""
        print(f"  {name}: {rec['snapshots']} snapshot(s) at episodes {rec['episodes']}{when}, "
              f"shape {rec['shape']}{sketch}")  # fmt: skip
    print(f"  checkpoints at episodes: {', '.join(map(str, summary['checkpoints'])) or 'none'}")
    print("config:")
    for section, values in cfg.items():
        if isinstance(values, dict):
            print(f"  [{section}] " + ", ".join(f"{k}={v}" for k, v in values.items()))
        else:
            print(f"  {section} = {values}")
    return 0
