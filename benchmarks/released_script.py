"""arprobe against the authors' released training script, end to end, side by side (issue 23).

    python -m benchmarks.released_script --script PATH/TO/train_interleave.py [--pairs 3]

The script is not part of this repository: give the path of ``llm-experiments/training/
train_interleave.py`` from the authors' public repository, unmodified (it needs ``accelerate`` and
``datasets``). This module writes what both read into a temporary folder, with nothing from a hub:

- the documents: a JSON-lines file of the Python documentation topics (``article``; its first line
  as ``highlights``, which the script also evaluates every episode), in a folder the script loads
  with ``load_dataset``;
- a local GPT-NeoX "pythia-small" folder (d_model 128, 4 blocks, 4 heads; config and arprobe's
  4096-token BPE), which both start from at random init. ``--vocab 50277`` gives the tokenizer
  Pythia's vocabulary size (its BPE padded with entries no merge produces, so the texts tokenise
  as before): both tools size the embedding and the logits by the tokenizer, so every forward
  pass then costs what it costs with Pythia's own tokenizer.

Both train issue 23's side-by-side setting (T = 10, C = 128, M = 5, E = 2, SGD lr 1e-3, batch 1,
seed 0) on the same documents in the same order (``--compat authors`` draws them as the script
does), and evaluate every document after every episode. The pairs alternate: script, arprobe with
its default recording, arprobe with recording off. Each command is timed as a whole process, as a
user runs it. Writes the result under ``vocab_<size>`` in ``benchmarks/results/released_script.json``
(``--out``; other sizes' results are kept) with the load average, since only a quiet machine gives
comparable numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.startup import RECORDING_OFF

SETTING = {"T": 10, "C": 128, "M": 5, "E": 2, "lr": 0.001, "seed": 0}
BPE_VOCAB = 4096  # the BPE both tools tokenise with
PYTHIA_VOCAB = 50277  # len() of Pythia's tokenizer, which both tools size the embedding by


def pad_vocabulary(model: Path, size: int) -> None:
    """Grow the BPE tokenizer saved in ``model`` to ``size`` entries with tokens no merge produces:
    the texts tokenise exactly as before, and a model sized by this tokenizer has ``size`` rows of
    embedding and of logits."""
    path = model / "tokenizer.json"
    spec = json.loads(path.read_text())
    vocab = spec["model"]["vocab"]
    next_id = max(vocab.values()) + 1
    while next_id < size:
        vocab[f"<|unused{next_id}|>"] = next_id
        next_id += 1
    path.write_text(json.dumps(spec))


def write_inputs(folder: Path, vocab: int = BPE_VOCAB) -> tuple[Path, Path]:
    """(dataset folder, model folder) in ``folder``: the documents and the local pythia-small, its
    tokenizer (and so its embedding) ``vocab`` entries long."""
    from transformers import GPTNeoXConfig

    from arprobe.tasks.text_data import load_texts
    from arprobe.tasks.tokenizer import load_tokenizer, train_bpe_tokenizer
    from arprobe.trainer.config import DataConfig

    data, model = folder / "docs", folder / "pythia-small"  # the script takes GPT-NeoX by "pythia"
    data.mkdir()
    texts, _ = load_texts(DataConfig(source="pydoc"))  # the embedded default's documents
    rows = [json.dumps({"article": t, "highlights": t.splitlines()[0][:200]}) for t in texts]
    (data / "train.jsonl").write_text("\n".join(rows) + "\n")
    tokenizer = train_bpe_tokenizer(texts, BPE_VOCAB, cache_dir=folder / "tokenizers")
    tokenizer.save_pretrained(model)
    if vocab > len(tokenizer):
        pad_vocabulary(model, vocab)
        tokenizer = load_tokenizer(str(model))
    GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=2048,
        rotary_pct=0.25,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    ).save_pretrained(model)
    return data, model


def commands(script: Path, data: Path, model: Path, folder: Path) -> dict[str, list[str]]:
    s = SETTING
    released = [sys.executable, str(script), "--dataset_name", str(data), "--model_name_or_path", str(model)]
    released += ["--no-use_pretrained_weights", "--per_device_train_batch_size", "1"]
    released += ["--per_device_eval_batch_size", "1", "--num_train_epochs", str(s["E"])]
    released += [
        "--num-grad-steps",
        str(s["M"]),
        "--num-data-samples",
        str(s["T"]),
        "--block_size",
        str(s["C"]),
    ]
    released += ["--learning_rate", str(s["lr"]), "--seed", str(s["seed"]), "--overwrite_cache"]
    released += ["--output_dir", str(folder / "released")]
    arprobe = [sys.executable, "-m", "arprobe.cli.main", "run", "--data.source", str(data / "train.jsonl")]
    arprobe += ["--data.field", "article", "--compat", "authors", "--model.name", str(model)]
    arprobe += ["--model.init", "pythia", "--n_docs", str(s["T"]), "--context_length", str(s["C"])]
    arprobe += ["--steps_per_doc", str(s["M"]), "--epochs", str(s["E"]), "--optim.name", "sgd"]
    arprobe += ["--optim.lr", str(s["lr"]), "--seed", str(s["seed"]), "--no-progress", "--overwrite"]
    return {
        "released_script": released,
        "arprobe": [*arprobe, "--out", str(folder / "runs-on")],
        "arprobe_recording_off": [*arprobe, *RECORDING_OFF, "--out", str(folder / "runs-off")],
    }


def wall_seconds(cmd: list[str], env: dict, cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{cmd[1]} failed:\n{done.stderr[-3000:]}")
    return seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.released_script", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--script", required=True, help="path of the released train_interleave.py")
    parser.add_argument("--pairs", type=int, default=3, help="alternating timed rounds (one untimed first)")
    parser.add_argument(
        "--vocab",
        type=int,
        default=BPE_VOCAB,
        help=f"tokenizer and embedding size ({BPE_VOCAB}: the BPE's own; {PYTHIA_VOCAB}: Pythia's)",
    )
    parser.add_argument("--out", default="benchmarks/results/released_script.json")
    args = parser.parse_args(argv)
    script = Path(args.script).resolve()
    if not script.is_file():
        parser.error(f"no file at {script}")
    if args.vocab < BPE_VOCAB:
        parser.error(f"--vocab must be at least the BPE's {BPE_VOCAB} entries")
    with tempfile.TemporaryDirectory(prefix="arprobe-side-by-side-") as tmp:
        folder = Path(tmp)
        data, model = write_inputs(folder, args.vocab)
        env = dict(
            os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", ARPROBE_CACHE=str(folder / "cache")
        )
        cmds = commands(script, data, model, folder)
        for cmd in cmds.values():  # warm-up: caches, the first import from disk
            wall_seconds(cmd, env, folder)
        times: dict[str, list[float]] = {name: [] for name in cmds}
        loads = []
        for i in range(args.pairs):
            for name, cmd in cmds.items():
                times[name].append(round(wall_seconds(cmd, env, folder), 2))
            loads.append(os.getloadavg()[0])
            print(f"round {i + 1}: " + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items()), flush=True)
    script_median = statistics.median(times["released_script"])
    result = {
        "setting": SETTING | {"d_model": 128, "n_layers": 4, "vocab": args.vocab},
        "wall_seconds": times,
        "speedup_vs_released_script": {
            name: round(script_median / statistics.median(t), 3)
            for name, t in times.items()
            if name != "released_script"
        },
        "load_average_1min": [round(x, 2) for x in loads],
        "cores": os.cpu_count(),
        "note": "whole processes, end to end; the released script unmodified, from outside this repository",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = json.loads(out.read_text()) if out.exists() else {}
    kept = {k: v for k, v in kept.items() if k.startswith("vocab_")}  # older files held one result
    kept[f"vocab_{args.vocab}"] = result
    out.write_text(json.dumps(dict(sorted(kept.items(), key=lambda kv: int(kv[0][6:]))), indent=2) + "\n")
    print(json.dumps(result["speedup_vs_released_script"]))
    return result


if __name__ == "__main__":
    main()
