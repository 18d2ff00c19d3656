"""RunConfig: defaults < TOML < flags, key resolution and range checks."""

import pytest

from arprobe.errors import UserError
from arprobe.trainer.config import load_config, resolve_key
from tests.helpers import REPO


def test_precedence_defaults_then_toml_then_flags(tmp_path):
    toml = tmp_path / "exp.toml"
    toml.write_text('seed = 3\n[optim]\nlr = 0.01\nname = "sgd"\n[schedule]\nepochs = 7\n')
    cfg = load_config(toml, {"lr": "0.002"})
    assert (cfg.seed, cfg.optim.name, cfg.optim.lr, cfg.schedule.epochs) == (3, "sgd", 0.002, 7)
    assert cfg.data.n_docs == 10  # untouched default


def test_keys_resolve_by_path_leaf_or_dashes():
    assert resolve_key("optim.lr") == "optim.lr"
    assert resolve_key("lr") == "optim.lr"
    assert resolve_key("n-docs") == "data.n_docs"


def test_unknown_key_names_the_closest():
    with pytest.raises(UserError, match="Unknown option 'n_doc'. Did you mean 'n_docs'?"):
        load_config(None, {"n_doc": 5})


def test_toml_unknown_key_and_bad_toml(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim]\nlearning_rate = 0.1\n")
    with pytest.raises(UserError, match="Unknown option 'optim.learning_rate'"):
        load_config(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("[optim\n")
    with pytest.raises(UserError, match="is not valid TOML"):
        load_config(broken)
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("n_docs", 1, r"data.n_docs \(T\) must be at least 2, got 1"),
        ("context_length", 1, r"data.context_length \(C\) must be at least 2, got 1"),
        ("steps_per_doc", 0, r"schedule.steps_per_doc \(M\) must be at least 1"),
        ("lr", 0, "optim.lr must be positive"),
        ("mask_prob", 1.0, r"data.mask_prob \(p\) must be in \[0, 1\)"),
        ("order", "random", "schedule.order must be one of"),
        ("n_docs", "ten", "Option 'data.n_docs' expects int, got 'ten'"),
    ],
)
def test_out_of_range_values_are_one_sentence(key, value, message):
    with pytest.raises(UserError, match=message):
        load_config(None, {key: value})


def test_lists_and_bools_parse_from_flags():
    cfg = load_config(None, {"record.weights": "unembed,blocks.0.attn", "reset_per_doc": "false"})
    assert cfg.record.weights == ["unembed", "blocks.0.attn"]
    assert cfg.optim.reset_per_doc is False


def test_every_shipped_config_loads():
    import tomllib

    from arprobe.sweep.spec import load_sweep

    configs = sorted(REPO.joinpath("configs").rglob("*.toml"))
    assert len(configs) >= 10
    sweeps = 0
    for path in configs:
        table = tomllib.loads(path.read_text())
        if "grid" in table or "seeds" in table:
            assert load_sweep(path).points, path  # every point validated like a run config
            sweeps += 1
        else:
            load_config(path)  # raises on an unknown key or an out-of-range value
    assert sweeps >= 10


def test_trust_remote_code_is_off_unless_asked():
    from arprobe.cli.run import parse_overrides

    assert load_config(None).model.trust_remote_code is False
    assert load_config(None, parse_overrides(["--trust-remote-code"])).model.trust_remote_code is True
