"""`arprobe info RUN`: status, config, episodes done and what was recorded."""

from __future__ import annotations

import argparse
import json


def command_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("info", help="what a run store holds, its status and config")
    p.add_argument("run", help="run folder (runs/<name>) or its run.h5")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=info_command)
    return p


def summarize(store) -> dict:
    """What a person wants to know about a store, as plain data."""
    cfg = store.config
    schedule = store.schedule()
    doc, epoch = schedule.doc, schedule.epoch
    recordings = {}
    for kind in ("weights", "grads", "activations"):
        for name in store.recorded(kind):
            episodes = store.recording_episodes(kind, name)
            shape = store.h5[kind][name]["values"].shape[1:]
            sketch = store.sketch_info(kind, name)
            recordings[f"{kind}/{name}"] = {
                "snapshots": int(len(episodes)),
                "episodes": _span(episodes),
                "shape": list(shape),
                **({"sketch": sketch} if sketch else {}),
            }
    checkpoints = store.checkpoint_episodes()
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
        "config": cfg,
    }


def _span(episodes) -> str:
    if not len(episodes):
        return "-"
    return f"{int(episodes[0])}..{int(episodes[-1])}" if len(episodes) > 1 else str(int(episodes[0]))


def info_command(args, extra) -> int:
    from arprobe.storage import RunStore

    with RunStore(args.run) as store:
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
    print(
        f"episodes:   {summary['completed_episodes']} done, {summary['epochs_done']} epoch(s) reached "
        f"(T={summary['n_docs']}, M={summary['steps_per_doc']}, E={cfg['schedule']['epochs']}, order={cfg['schedule']['order']})"
    )
    model = summary["model"]
    print(
        f"model:      {model.get('kind', '?')} {model.get('name', '')} "
        f"({model.get('n_params', 0) / 1e6:.2f}M params, init {model.get('init', '?')}), data: {model.get('data', '?')}"
    )
    print(f"seed:       {summary['seed']}    created: {summary['created']}")
    print("recorded:")
    print(f"  loss/eval, loss/train, stats/grad_norm over {len(summary['layers'])} layer groups")
    for name, rec in summary["recorded"].items():
        extra_note = f", sketch of {rec['sketch']['full_dim']}" if "sketch" in rec else ""
        print(
            f"  {name}: {rec['snapshots']} snapshot(s) at episodes {rec['episodes']}, shape {rec['shape']}{extra_note}"
        )
    print(f"  checkpoints at episodes: {', '.join(map(str, summary['checkpoints'])) or 'none'}")
    print("config:")
    for section, values in cfg.items():
        if isinstance(values, dict):
            print(f"  [{section}] " + ", ".join(f"{k}={v}" for k, v in values.items()))
        else:
            print(f"  {section} = {values}")
    return 0
