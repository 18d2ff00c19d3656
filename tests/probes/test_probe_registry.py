"""The probe registry: built-ins from the entry-point group, lazy loading, unknown names, and options
from flags and files coerced to each probe's types."""

import pytest

from arprobe.errors import UserError
from arprobe.probes.registry import Registry
from tests.helpers import BUILTINS, probe


def test_unknown_probe_lists_the_available_ones():
    registry = Registry(discover=False)
    registry.register("pca_weights", "arprobe.probes.pca_weights:PcaWeights")
    registry.register("loss_curves", "arprobe.probes.loss_curves:LossCurves")
    with pytest.raises(UserError) as err:
        registry.load("pca_weight")
    assert (
        str(err.value)
        == "Unknown probe 'pca_weight'. Did you mean 'pca_weights'? Available: loss_curves, pca_weights."
    )


def test_registry_is_lazy_and_checks_the_base_class():
    registry = Registry(discover=False)
    registry.register("ghost", "arprobe_no_such_module_xyz:Ghost", source="ghost-dist")
    registry.register("notaprobe", "json:JSONDecoder", source="some-dist")
    registry.register("ok", "arprobe.probes.recovery_score:RecoveryScore")
    assert registry.names() == ["ghost", "notaprobe", "ok"]  # listing names imports nothing
    with pytest.raises(
        UserError,
        match=r"^Could not load probe plugin 'ghost' \(arprobe_no_such_module_xyz:Ghost, "
        r"from ghost-dist\): ModuleNotFoundError",
    ):
        registry.load("ghost")
    with pytest.raises(UserError, match="it is not a subclass of arprobe.probes.base.Probe"):
        registry.load("notaprobe")
    rows = {r["name"]: r for r in registry.describe()}  # the broken ones do not hide the good one
    assert rows["ok"]["error"] == "" and rows["ok"]["requires"] == ["eval"]
    assert "ModuleNotFoundError" in rows["ghost"]["error"] and rows["notaprobe"]["error"]


def test_builtins_come_from_the_entry_point_group():
    registry = Registry()
    assert set(BUILTINS) <= set(registry.names())
    assert registry.source("pca_weights") == "arprobe"


def test_option_parsing_and_coercion(tmp_path):
    from arprobe.cli.analyze import merge_options, parse_option_flags, read_option_file

    flags = parse_option_flags(
        ["pairwise_recovery.episode=20", "pca_weights.detrend=none", "toy_model.lr_target=0.02"]
    )
    assert flags == {
        "pairwise_recovery": {"episode": "20"},
        "pca_weights": {"detrend": "none"},
        "toy_model": {"lr_target": "0.02"},
    }
    assert probe("pairwise_recovery").resolve_options(flags["pairwise_recovery"])["episode"] == 20
    assert probe("toy_model").resolve_options({"lr_target": "0.02", "epochs": 4})["lr_target"] == 0.02
    config = tmp_path / "probes.toml"
    config.write_text(
        '[pca_weights]\ndetrend = "window"\nweights = "blocks.0.attn"\n[toy_model]\nepochs = 3\n'
    )
    merged = merge_options(read_option_file(str(config)), flags, Registry())
    assert merged["pca_weights"] == {"detrend": "none", "weights": "blocks.0.attn"}  # the flag wins
    assert merged["toy_model"]["epochs"] == 3

    with pytest.raises(UserError, match=r"^Option 'pca_weights' is not PROBE.KEY=VALUE"):
        parse_option_flags(["pca_weights"])
    with pytest.raises(
        UserError,
        match=r"^Probe 'pca_weights' has no option 'detrnd'. Did you mean 'detrend'\? "
        r"Its options: weights, detrend, null_walks.$",
    ):
        probe("pca_weights").resolve_options({"detrnd": "none"})
    with pytest.raises(UserError, match=r"^Option 'pairwise_recovery.episode' expects int, got 'last'.$"):
        probe("pairwise_recovery").resolve_options({"episode": "last"})
    with pytest.raises(UserError, match=r"^Unknown probe 'pca'"):
        merge_options({}, {"pca": {"x": "1"}}, Registry())
    config.write_text("detrend = 1\n")
    with pytest.raises(UserError, match="put 'detrend' under the section of its probe"):
        read_option_file(str(config))
