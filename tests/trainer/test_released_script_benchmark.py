"""benchmarks/released_script.py: the inputs both tools read, and the same setting in both commands
(the released script itself is not in this repository, so its timing runs only by hand)."""

import json
import shutil

import pytest
from transformers import AutoConfig

from arprobe.tasks.tokenizer import load_tokenizer
from benchmarks.released_script import PYTHIA_VOCAB, SETTING, commands, main, pad_vocabulary, write_inputs


def value(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_both_tools_read_the_same_local_documents_model_and_setting(tmp_path):
    data, model = write_inputs(tmp_path)
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    assert len(rows) > 50 and all(r["article"].strip() and r["highlights"] for r in rows)
    config = AutoConfig.from_pretrained(model)
    assert (config.model_type, config.hidden_size, config.num_hidden_layers) == ("gpt_neox", 128, 4)
    tokenizer = load_tokenizer(str(model))
    assert len(tokenizer) == config.vocab_size == 4096 and tokenizer.pad_token_id is not None
    cmds = commands(tmp_path / "train_interleave.py", data, model, tmp_path)
    released, ours, off = cmds["released_script"], cmds["arprobe"], cmds["arprobe_recording_off"]
    s = SETTING
    assert [value(released, f) for f in ("--num-data-samples", "--block_size", "--num-grad-steps")] == [
        str(s["T"]), str(s["C"]), str(s["M"])
    ]  # fmt: skip
    for cmd in (ours, off):
        assert [value(cmd, f) for f in ("--n_docs", "--context_length", "--steps_per_doc", "--epochs")] == [
            str(s["T"]), str(s["C"]), str(s["M"]), str(s["E"])
        ]  # fmt: skip
        assert value(cmd, "--compat") == "authors" and value(cmd, "--optim.name") == "sgd"
        assert value(cmd, "--optim.lr") == value(released, "--learning_rate") == str(s["lr"])
        assert value(cmd, "--seed") == value(released, "--seed") == str(s["seed"])
    assert value(off, "--all_weights_dim") == "0" and "--all_weights_dim" not in ours


def test_pythias_vocabulary_size_leaves_the_texts_tokens_as_they_were(tmp_path):
    _, model = write_inputs(tmp_path)
    padded = tmp_path / "padded"
    shutil.copytree(model, padded)
    pad_vocabulary(padded, PYTHIA_VOCAB)
    small, large = load_tokenizer(str(model)), load_tokenizer(str(padded))
    assert (len(small), len(large)) == (4096, 50277)
    text = "def cycle(documents):\n    return [d for d in documents if d.strip()]  # anticipation"
    assert large.encode(text) == small.encode(text)
    assert large.convert_ids_to_tokens(50276) == "<|unused50276|>"


def test_a_missing_script_is_one_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--script", str(tmp_path / "nowhere.py"), "--out", str(tmp_path / "out.json")])
    assert exit_.value.code == 2 and f"no file at {tmp_path / 'nowhere.py'}" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()
    with pytest.raises(SystemExit) as exit_:
        main(["--script", __file__, "--vocab", "100", "--out", str(tmp_path / "out.json")])
    assert (
        exit_.value.code == 2 and "--vocab must be at least the BPE's 4096 entries" in capsys.readouterr().err
    )
