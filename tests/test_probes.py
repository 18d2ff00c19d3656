"""Built-in probes, the report and `arprobe analyze` / `arprobe probes`: numbers on hand-made
stores whose answers are known, every probe on one tiny real run, and the error paths."""

import json
from pathlib import Path

import numpy as np
import pytest

from arprobe.cli.main import main
from arprobe.errors import UserError
from arprobe.probes.base import Probe
from arprobe.probes.registry import Registry
from arprobe.probes.report import run_probe, write_report
from arprobe.storage import RunStore
from tests.store_factory import cyclic, helix, make_store

BUILTINS = [
    "activation_drift",
    "gradient_similarity",
    "loss_curves",
    "online_loss",
    "pairwise_recovery",
    "pca_weights",
    "recovery_score",
    "toy_model",
    "weight_residual_similarity",
]

# T = 3, E = 2, cyclic (same matrix as tests/test_recovery.py). Every document: right after its
# training 1, then 3 (the peak), then 2 just before the next: RS(1) = (3 − 2) / (3 − 1) = 0.5.
EVAL = np.array([[4.0, 4, 4], [1, 5, 5], [3, 1, 5], [2, 3, 1], [0.5, 2, 3], [1, 0.5, 2], [2, 1, 0.5]])


def probe(name: str) -> Probe:
    p = Registry().get(name)
    p.progress = False
    return p


def run_one(name: str, run_dir: Path, out: Path, **options) -> dict:
    """Run probe ``name`` on one store, return its result.json (asserting it ran)."""
    with RunStore(run_dir) as store:
        outcome = run_probe(probe(name), [store], out, options)
    record = json.loads((out / name / "result.json").read_text())
    assert outcome.status == "ok", outcome.reason
    assert record["status"] == "ok" and record["figures"] == outcome.figures
    for fig in record["figures"]:
        assert (out / name / fig).stat().st_size > 10_000  # a real PNG, not an empty canvas
    return record


# --- hand-made stores: numbers known by hand ----------------------------------------------------


def test_recovery_score_and_loss_curves_by_hand(tmp_path):
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "r", loss_eval=EVAL, schedule_doc=doc, schedule_epoch=epoch)
    rs = run_one("recovery_score", run, tmp_path / "report")
    assert rs["result"]["recovery_score"] == [0.5]
    assert (rs["result"]["l_max"], rs["result"]["l_before"], rs["result"]["l_after"]) == ([3.0], [2.0], [1.0])
    assert rs["headline"] == {"recovery_score": [0.5]}
    assert rs["figures"] == ["recovery_score.png"]

    lc = run_one("loss_curves", run, tmp_path / "report")["result"]
    assert lc["doc_trained_at_episodes"] == [1, 4]
    assert lc["doc_loss_before_training"] == [4.0, 2.0]  # rows 0 and 3: the red markers of Fig. 1a
    assert lc["doc_peak_position"] == [1] and lc["doc_recovered"] == [0.5]
    # shift-averaged: rows k_t − 1 .. of each column; offset 0 averages 4, 5, 5
    assert lc["shift_avg_mean"][0] == pytest.approx(14 / 3)
    assert lc["shift_avg_offset_epochs"][:2] == pytest.approx([0, 1 / 3])
    assert lc["shift_avg_recovered"] == [0.5]


def test_recovery_score_needs_two_epochs(tmp_path):
    run = make_store(tmp_path / "one", loss_eval=EVAL[:4], schedule_doc=[0, 1, 2], schedule_epoch=[1, 1, 1])
    with RunStore(run) as store:
        outcome = run_probe(probe("recovery_score"), [store], tmp_path / "report")
    assert outcome.status == "skipped"
    assert outcome.reason == (
        "Run 'one' trained no document twice, and the recovery score compares two trainings; "
        "run at least 2 epochs (schedule.epochs)."
    )


def test_online_loss_groups_runs_by_config_without_seed(tmp_path):
    doc, epoch = cyclic(3, 2)
    eval_ = np.ones((7, 3))

    def online(values, name, seed, order):
        train = np.stack([values, np.zeros(6)], axis=1)  # [K, M=2], column 0 is the online loss
        return make_store(
            tmp_path / name,
            loss_eval=eval_,
            schedule_doc=doc,
            schedule_epoch=epoch,
            loss_train=train,
            seed=seed,
            config={"schedule": {"order": order}},
        )

    runs = [
        online([5, 5, 5, 1, 2, 3], "c0", 0, "cyclic"),
        online([5, 5, 5, 3, 4, 5], "c1", 1, "cyclic"),
        online([5, 5, 5, 6, 6, 6], "s0", 0, "shuffle"),
    ]
    stores = [RunStore(r) for r in runs]
    try:
        outcome = run_probe(probe("online_loss"), stores, tmp_path / "report")
    finally:
        for s in stores:
            s.close()
    assert outcome.status == "ok", outcome.reason
    result = json.loads((tmp_path / "report/online_loss/result.json").read_text())["result"]
    cyc, shuf = result["groups"]
    assert (cyc["label"], shuf["label"]) == ("cyclic", "shuffle")
    assert cyc["seeds"] == [0, 1] and len(shuf["runs"]) == 1
    # epochs 2..E means: run c0 2, run c1 4 -> 3 ± 1.414 (sample std); shuffle 6, no std from one run
    assert cyc["mean_after_first_epoch"] == pytest.approx(3.0)
    assert cyc["mean_after_first_epoch_std"] == pytest.approx(np.sqrt(2))
    assert cyc["per_episode_mean"] == pytest.approx([5, 5, 5, 2, 3, 4])
    assert shuf["mean_after_first_epoch"] == 6.0 and shuf["mean_after_first_epoch_std"] is None
    assert outcome.headline == {
        "cyclic: mean online loss, epochs 2..2": 3.0,
        "cyclic: std over 2 runs": pytest.approx(np.sqrt(2)),
        "shuffle: mean online loss, epochs 2..2": 6.0,
    }


def test_gradient_similarity_of_gradients_on_a_circle(tmp_path):
    # document i's gradient points at angle 2πi/T: cos(i, j) = cos(2π(i − j)/T)
    T = 6
    angle = 2 * np.pi * np.arange(T) / T
    rng = np.random.default_rng(0)
    plane = np.linalg.qr(rng.normal(size=(20, 2)))[0].T  # [2, D] orthonormal
    g = (np.stack([np.cos(angle), np.sin(angle)], axis=1) @ plane)[None]  # [G=1, T, D]
    doc, epoch = cyclic(T, 2)
    run = make_store(
        tmp_path / "g",
        loss_eval=np.ones((13, T)),
        schedule_doc=doc,
        schedule_epoch=epoch,
        grads={"blocks.1.attn": (np.array([12]), g.astype(np.float32))},
    )
    r = run_one("gradient_similarity", run, tmp_path / "report")["result"]
    assert r["layer"] == "blocks.1.attn" and r["episode"] == 12 and r["epoch"] == 2
    assert np.array(r["similarity"]).shape == (T, T)
    np.testing.assert_allclose(r["by_distance"], [0.5, -0.5, -1.0], atol=1e-6)
    np.testing.assert_allclose(r["by_forward_offset"], [0.5, -0.5, -1.0, -0.5, 0.5], atol=1e-6)
    assert r["most_similar_distance"] == 1
    assert r["last_trained_doc"] == 5
    assert r["mean_offdiagonal"] == pytest.approx(-0.2, abs=1e-6)  # (2·0.5 + 2·(−0.5) − 1) / 5
    assert r["sketch"] is None


def test_weight_residual_stripes_repeat_every_T(tmp_path):
    T, E = 8, 4
    doc, epoch = cyclic(T, E)
    w = helix(T, E, drift=20.0).astype(np.float32)
    run = make_store(
        tmp_path / "w",
        loss_eval=np.ones((T * E + 1, T)),
        schedule_doc=doc,
        schedule_epoch=epoch,
        weights={"unembed": (np.arange(T * E + 1), w)},
    )
    r = run_one("weight_residual_similarity", run, tmp_path / "report")["result"]
    assert r["residual"] == "window" and r["window_episodes"] == 8
    assert r["stripe_period_episodes"] == T and r["stripe_period_epochs"] == 1.0
    assert r["similarity_at_lag_T"] == pytest.approx(1.0, abs=1e-3)  # the same point of the circle
    assert r["similarity_at_lag_half_T"] == pytest.approx(-1.0, abs=1e-3)  # the opposite point
    assert r["episodes"][0] == T + 1  # from_epoch 2: residuals of epoch 2 on

    initial = run_one("weight_residual_similarity", run, tmp_path / "report2", residual="initial")["result"]
    assert initial["residual"] == "initial" and initial["window_episodes"] is None


def test_pca_weights_finds_one_revolution_per_epoch_and_the_shrinking_radius(tmp_path):
    T, E = 10, 4
    doc, epoch = cyclic(T, E)
    w = helix(T, E, drift=30.0, radii=[4.0, 3.0, 2.0, 1.0]).astype(np.float32)
    run = make_store(
        tmp_path / "h",
        loss_eval=np.ones((T * E + 1, T)),
        schedule_doc=doc,
        schedule_epoch=epoch,
        weights={"unembed": (np.arange(T * E + 1), w)},
    )
    r = run_one("pca_weights", run, tmp_path / "report")["result"]
    assert r["detrend"] == "window"
    assert r["explained_variance"][0] > 0.9  # the drift dominates the raw PCs, as in small models
    assert r["pc_period_episodes"][1:] == [pytest.approx(10.0, abs=0.5)] * 2  # PC2, PC3 rotate once per epoch
    assert r["winding_epochs"] == [2, 3]  # the centred window leaves half of epochs 1 and 4 out
    np.testing.assert_allclose(np.abs(r["winding_revolutions"]), 1.0, atol=0.03)
    assert r["radius_per_epoch"][1] < r["radius_per_epoch"][0]
    assert r["radius_last_over_first"] < 0.8

    # Without the drift the raw PC1–PC2 plane is the circle: every epoch is complete.
    flat = helix(T, E, drift=0.0, radii=[4.0, 3.0, 2.0, 1.0]).astype(np.float32)
    run2 = make_store(
        tmp_path / "h2",
        loss_eval=np.ones((T * E + 1, T)),
        schedule_doc=doc,
        schedule_epoch=epoch,
        weights={"unembed": (np.arange(T * E + 1), flat)},
    )
    r2 = run_one("pca_weights", run2, tmp_path / "report", detrend="none")["result"]
    assert r2["winding_epochs"] == [1, 2, 3, 4]
    np.testing.assert_allclose(np.abs(r2["winding_revolutions"]), 1.0, atol=0.01)
    np.testing.assert_allclose(r2["radius_per_epoch"], [4, 3, 2, 1], rtol=0.02)
    assert r2["radius_last_over_first"] == pytest.approx(0.25, rel=0.02)


def test_activation_drift_by_hand(tmp_path):
    # document 0's activations rotate by θ_k: cos(a_i, a_j) = cos(θ_i − θ_j) and
    # ‖a_k − a_{k−1}‖ = 2 sin(|Δθ| / 2); weights move 1, 2, 3, ... along one axis
    T, E, C, d = 2, 2, 3, 2
    doc, epoch = cyclic(T, E)
    theta = np.array([0.0, 0.4, 0.5, 0.9, 1.0])  # big steps when document 0 is trained (episodes 1, 3)
    u, v = np.eye(C * d)[0], np.eye(C * d)[1]
    acts = (np.cos(theta)[:, None] * u + np.sin(theta)[:, None] * v).reshape(5, 1, C, d).astype(np.float32)
    weights = np.cumsum(np.arange(5.0))[:, None] * np.array([[1.0, 0.0]])  # steps 1, 2, 3, 4
    run = make_store(
        tmp_path / "a",
        loss_eval=np.ones((5, T)),
        schedule_doc=doc,
        schedule_epoch=epoch,
        context_length=C,
        activations={"ln_final.hook_normalized": (np.arange(5), acts)},
        weights={"unembed": (np.arange(5), weights.astype(np.float32))},
    )
    r = run_one("activation_drift", run, tmp_path / "report")["result"]
    assert r["hook"] == "ln_final.hook_normalized" and r["doc"] == 0 and r["tokens_compared"] == C
    np.testing.assert_allclose(r["similarity"], np.cos(theta[:, None] - theta[None, :]), atol=1e-6)
    np.testing.assert_allclose(r["activation_change"], 2 * np.sin(np.abs(np.diff(theta)) / 2), atol=1e-6)
    assert r["doc_training_change_ratio"] == pytest.approx(np.sin(0.2) / np.sin(0.05), rel=1e-4)
    assert r["within_epoch_similarity"] == pytest.approx([np.cos(0.1)] * 2, abs=1e-6)
    assert r["weights"] == "unembed" and r["weight_change"] == pytest.approx([1, 2, 3, 4])
    assert r["weight_change_per_epoch"] == pytest.approx([1.5, 3.5])


# --- skipping, failing, unknown names -----------------------------------------------------------


class Boom(Probe):
    name = "boom"
    description = "Always fails."

    def run(self, store, out):
        raise RuntimeError("boom went the probe")


def test_missing_data_skips_with_the_readers_sentence_and_a_failure_stops_nothing(tmp_path):
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "bare", loss_eval=EVAL, schedule_doc=doc, schedule_epoch=epoch)
    registry = Registry()
    registry.register("boom", Boom)
    names = [
        "boom",
        "gradient_similarity",
        "pca_weights",
        "pairwise_recovery",
        "activation_drift",
        "recovery_score",
    ]
    report = tmp_path / "report"
    with RunStore(run) as store:
        outcomes = {o.probe: o for o in write_report([store], report, [registry.get(n) for n in names])}
    assert outcomes["recovery_score"].status == "ok"  # ran after the failure
    assert (
        outcomes["boom"].status == "failed" and outcomes["boom"].reason == "RuntimeError: boom went the probe"
    )
    assert outcomes["gradient_similarity"].reason == (
        "Run 'bare' recorded no grads; record them with record.grads (with record.grads_at = epoch or end)."
    )
    assert outcomes["pca_weights"].reason == (
        "Run 'bare' has no weight snapshots of 'unembed' (recorded: none); "
        "record it with record.weights (with record.weights_every > 0)."
    )
    assert outcomes["pairwise_recovery"].reason.startswith(
        "Run 'bare' has no checkpoints; record them with record.checkpoints"
    )
    assert outcomes["activation_drift"].status == "skipped"
    boom = json.loads((report / "boom/result.json").read_text())
    assert boom["status"] == "failed" and "Traceback" in boom["traceback"] and boom["result"] is None
    index = (report / "index.html").read_text()
    for name in names:
        assert f"id='{name}'" in index
    assert "record.grads (with record.grads_at = epoch or end)" in index
    assert "recovery_score/recovery_score.png" in index


def test_a_probe_needing_a_missing_recording_by_option_names_it(tmp_path):
    doc, epoch = cyclic(3, 2)
    run = make_store(
        tmp_path / "w",
        loss_eval=EVAL,
        schedule_doc=doc,
        schedule_epoch=epoch,
        weights={"unembed": (np.arange(7), np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32))},
    )
    with RunStore(run) as store:
        outcome = run_probe(probe("pca_weights"), [store], tmp_path / "report", {"weights": "blocks.0.attn"})
    assert outcome.status == "skipped"
    assert outcome.reason.startswith("Run 'w' has no weight snapshots of 'blocks.0.attn' (recorded: unembed)")


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
        r"Its options: weights, detrend.$",
    ):
        probe("pca_weights").resolve_options({"detrnd": "none"})
    with pytest.raises(UserError, match=r"^Option 'pairwise_recovery.episode' expects int, got 'last'.$"):
        probe("pairwise_recovery").resolve_options({"episode": "last"})
    with pytest.raises(UserError, match=r"^Unknown probe 'pca'"):
        merge_options({}, {"pca": {"x": "1"}}, Registry())
    config.write_text("detrend = 1\n")
    with pytest.raises(UserError, match="put 'detrend' under the section of its probe"):
        read_option_file(str(config))


# --- the CLI on hand-made stores ------------------------------------------------------------------


def test_analyze_cli_unknown_probe_is_one_line_exit_2(tmp_path, capsys):
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "r", loss_eval=EVAL, schedule_doc=doc, schedule_epoch=epoch)
    assert main(["analyze", str(run), "--probe", "pca_weight"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "arprobe analyze: error: Unknown probe 'pca_weight'. Did you mean 'pca_weights'? Available: "
    )
    assert len(err.splitlines()) == 1


def test_analyze_cli_bad_run_path_is_one_line_exit_2(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith(f"arprobe analyze: error: No run store at '{tmp_path / 'nowhere'}'")
        and "\n" not in err
    )


def test_analyze_cli_explicit_probe_lacking_data_exits_1(tmp_path, capsys):
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "r", loss_eval=EVAL, schedule_doc=doc, schedule_epoch=epoch)
    assert main(["analyze", str(run), "--probe", "recovery_score,gradient_similarity", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "recovery_score" in out and "recovery_score: [0.5]" in out
    assert "gradient_similarity          skipped  Run 'r' recorded no grads" in out
    assert (run / "report/index.html").exists()
    # all probes by default: skipping what a run lacks is normal, exit 0
    assert (
        main(["analyze", str(run), "--no-progress", "--probe", "recovery_score,loss_curves,online_loss"]) == 0
    )


def test_analyze_cli_several_runs_compares_and_reports_each(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc, epoch = cyclic(3, 2)
    runs = [
        make_store(tmp_path / f"c{s}", loss_eval=EVAL, schedule_doc=doc, schedule_epoch=epoch, seed=s)
        for s in (0, 1)
    ]
    assert main(["analyze", *map(str, runs), "--probe", "online_loss,recovery_score", "--no-progress"]) == 0
    result = json.loads((tmp_path / "report/online_loss/result.json").read_text())
    assert [len(g["runs"]) for g in result["result"]["groups"]] == [2]  # two seeds, one group
    for run in runs:
        assert json.loads((run / "report/recovery_score/result.json").read_text())["status"] == "ok"
        assert not (run / "report/online_loss").exists()


def test_toy_model_runs_without_a_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["analyze", "--probe", "toy_model", "--option", "toy_model.epochs=6"]) == 0
    record = json.loads((tmp_path / "report/toy_model/result.json").read_text())
    r = record["result"]
    assert record["options"]["epochs"] == 6 and record["runs"] == []
    assert len(r["identity"]["recovery_score"]) == 5 and len(r["target"]["recovery_score"]) == 5
    assert (
        r["identity"]["dim"] == 1000
        and r["target"]["dim"] == 100
        and r["lr"] == {"identity": 0.001, "target": 0.01}
    )
    assert sorted(record["figures"]) == ["toy_circle_identity.png", "toy_circle_target.png", "toy_loss.png"]
    assert "identity_rs_last" in capsys.readouterr().out
    # a probe that reads a run, asked for without one
    assert main(["analyze", "--probe", "pca_weights"]) == 2
    assert "Probe 'pca_weights' reads a run; give one" in capsys.readouterr().err


def test_probes_cli_lists_every_builtin(capsys):
    assert main(["probes"]) == 0
    out = capsys.readouterr().out
    for name in BUILTINS:
        assert f"\n{name} " in out
    assert "weights:unembed" in out and "grads:*" in out and "nothing (no run needed)" in out
    assert main(["probes", "pca_weights"]) == 0
    assert "detrend" in capsys.readouterr().out


# --- one tiny real run, every probe --------------------------------------------------------------


@pytest.fixture(scope="module")
def real_report(tiny_run, tmp_path_factory):
    """`arprobe analyze` of the session's tiny run (T=5, E=3, M=3), report written beside it."""
    out = tmp_path_factory.mktemp("real-report")
    code = main(["analyze", str(tiny_run), "--out", str(out), "--no-progress"])
    return code, out


def result_of(report: Path, name: str) -> dict:
    record = json.loads((report / name / "result.json").read_text())
    assert record["status"] == "ok", record.get("reason")
    return record["result"]


def test_real_run_every_probe_ok(real_report):
    code, out = real_report
    assert code == 0
    index = (out / "index.html").read_text()
    for name in BUILTINS:
        record = json.loads((out / name / "result.json").read_text())
        assert record["status"] == "ok", (name, record.get("reason"))
        assert record["figures"], name
        for fig in record["figures"]:
            assert f"{name}/{fig}" in index


def test_real_run_numbers(real_report, tiny_run):
    _, out = real_report
    T, E = 5, 3
    assert len(result_of(out, "recovery_score")["recovery_score"]) == E - 1
    assert len(result_of(out, "loss_curves")["doc_loss_before_training"]) == E

    grads = result_of(out, "gradient_similarity")
    assert np.array(grads["similarity"]).shape == (T, T) and grads["episode"] == T * E
    np.testing.assert_allclose(np.diag(grads["similarity"]), 1.0, atol=1e-6)
    assert len(grads["by_distance"]) == T // 2

    pair = result_of(out, "pairwise_recovery")
    assert pair["checkpoint_episode"] == T * (E - 1)  # end of the second-to-last epoch
    recovery = np.array(pair["recovery"])
    assert recovery.shape == (T, T)
    assert np.all(np.diag(recovery) > 0)  # training on x_i lowers the loss on x_i
    assert -1 <= pair["symmetry"] <= 1 and 0 <= pair["b_since_trained"] < T

    pca = result_of(out, "pca_weights")
    assert len(pca["explained_variance"]) == 3 and sum(pca["explained_variance"]) <= 1 + 1e-9
    assert pca["winding_epochs"] == [2]

    wrs = result_of(out, "weight_residual_similarity")
    assert np.array(wrs["similarity"]).shape[0] == len(wrs["episodes"])

    drift = result_of(out, "activation_drift")
    assert np.array(drift["similarity"]).shape == (T * E + 1, T * E + 1)
    assert len(drift["activation_change"]) == T * E and drift["weights"] == "unembed"

    toy = result_of(out, "toy_model")
    assert toy["run"] == str(tiny_run) and len(toy["run_rs"]) == E - 1
    assert "toy_vs_run.png" in json.loads((out / "toy_model/result.json").read_text())["figures"]

    online = result_of(out, "online_loss")
    assert online["groups"][0]["label"] == "cyclic" and len(online["groups"][0]["per_episode_mean"]) == T * E
