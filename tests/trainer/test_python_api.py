"""The Python API (arprobe.api): cheap import, configs by the CLI's names, a run's numbers equal to
its store's, analyze in memory or into a report folder, sweeps and their rows."""

import subprocess
import sys
import tomllib

import numpy as np
import pytest

import arprobe
from arprobe.api import Analysis, Figure, Run, make_config, to_toml
from arprobe.errors import UserError
from arprobe.science.recovery import online_loss, recovery_scores
from arprobe.storage import RunStore
from arprobe.trainer.config import RunConfig, resolve_key
from arprobe.values import flatten
from tests.conftest import TINY, tiny_config

SMALL = {**TINY, "n_docs": 3, "steps_per_doc": 2, "epochs": 3, "threads": 1}


def test_import_arprobe_and_its_api_names_load_no_torch():
    code = (
        "import sys, arprobe\n"
        "api = [arprobe.run, arprobe.open, arprobe.analyze, arprobe.sweep, arprobe.load_sweep, arprobe.Run]\n"
        "heavy = ('torch', 'h5py', 'numpy', 'matplotlib', 'arprobe.trainer')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert "run" in dir(arprobe) and "sweep" in arprobe.__all__


def test_attribute_errors_name_the_missing_attribute():
    with pytest.raises(AttributeError, match="module 'arprobe' has no attribute 'trian'"):
        arprobe.trian  # noqa: B018


def test_config_by_the_cli_names_leaf_nested_dotted_file_and_object(tmp_path):
    by_leaf = make_config(n_docs=4, lr=2e-4, model={"name": "tiny", "d_model": 32})
    assert (by_leaf.data.n_docs, by_leaf.optim.lr, by_leaf.model.d_model) == (4, 2e-4, 32)
    by_dict = make_config({"data": {"n_docs": 4}, "optim.lr": 2e-4}, model={"d_model": 32})
    assert by_dict.to_dict() == by_leaf.to_dict()
    toml = tmp_path / "run.toml"
    toml.write_text("[data]\nn_docs = 4\n[optim]\nlr = 1e-3\n")
    from_file = make_config(str(toml), lr=2e-4, d_model=32)
    assert from_file.to_dict() == by_leaf.to_dict()
    from_object = make_config(RunConfig(), n_docs=4, lr=2e-4, d_model=32)
    assert from_object.to_dict() == by_leaf.to_dict()


def test_an_unknown_key_is_the_cli_sentence(tmp_path):
    with pytest.raises(UserError) as cli_error:
        resolve_key("n_dcos")
    with pytest.raises(UserError) as api_error:
        arprobe.run(n_dcos=5, out=str(tmp_path))
    assert str(api_error.value) == str(cli_error.value)
    assert "Did you mean 'n_docs'?" in str(api_error.value)
    with pytest.raises(UserError, match=r"data\.n_docs \(T\) must be at least 2, got 1\."):
        make_config(n_docs=1)
    with pytest.raises(UserError, match="config must be a TOML file, a dict or a RunConfig, got int"):
        make_config(3)
    assert not any(tmp_path.iterdir())


def test_to_toml_reads_back_to_the_same_table():
    table = {
        "name": "s-1",
        "seeds": [0, 1],
        "model": {"name": "tiny", "d_model": 64},
        "record.weights": ["unembed", "blocks.0.attn"],
        "lr": 1e-5,
        "reset_per_doc": False,
        "data": {"source": 'a "quoted" path\\x'},
        "grid": {"order": ["cyclic", "shuffle"], "optim": [{"name": "adam", "lr": 1e-5}, {"name": "sgd"}]},
    }
    assert flatten(tomllib.loads(to_toml(table))) == flatten(table)


def test_run_returns_the_numbers_of_its_store(tmp_path):
    run = arprobe.run(**SMALL, out=str(tmp_path), name="api", progress=False)
    assert isinstance(run, Run) and run.path == tmp_path / "api" and run.status == "complete"
    with run.store as store:
        matrix, schedule = store.eval_matrix(), store.schedule()
        assert (
            repr(store)
            == f"<RunStore {tmp_path / 'api' / 'run.h5'}: complete, 9 of 9 episodes, T=3 C=32 M=2 E=3>"
        )
    assert np.array_equal(run.recovery_scores, recovery_scores(matrix, schedule.doc), equal_nan=True)
    assert run.online_loss == online_loss(matrix, schedule.doc, schedule.epoch).mean_after_first_epoch
    assert run.episodes == 9 and run.control is None
    assert repr(run).startswith(f"Run('{tmp_path / 'api'}', complete, 9 episodes, RS(1)=")
    assert "mean online loss, epochs 2..E" in run._repr_html_()
    store = arprobe.open(tmp_path / "api" / "run.h5")
    assert repr(store).startswith(f"<RunStore {tmp_path / 'api' / 'run.h5'}: complete")
    store.close()
    assert repr(store) == f"<RunStore {tmp_path / 'api' / 'run.h5'} (closed)>"
    with pytest.raises(UserError, match="already exists"):
        arprobe.run(**SMALL, out=str(tmp_path), name="api", progress=False)


def test_analyze_in_memory_leaves_no_file_and_out_writes_the_report(tiny_run, tmp_path):
    before = sorted(p.relative_to(tiny_run) for p in tiny_run.rglob("*"))
    result = arprobe.analyze(tiny_run, probes=["recovery_score", "loss_curves"])
    assert isinstance(result, Analysis) and result.path is None
    assert sorted(p.relative_to(tiny_run) for p in tiny_run.rglob("*")) == before
    assert set(result.probes) == {"recovery_score", "loss_curves"}
    rs = result.recovery_score
    assert rs is result["recovery_score"] and rs.status == "ok"
    with RunStore(tiny_run) as store:
        expected = recovery_scores(store.eval_matrix(), store.schedule().doc)
    got = [np.nan if v is None else v for v in rs.headline["recovery_score"]]
    assert np.allclose(got, expected, equal_nan=True)
    figure = rs.figures["recovery_score.png"]
    assert isinstance(figure, Figure) and figure._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
    html = result._repr_html_()
    assert html.count("<img src='data:image/png;base64,") >= 2 and "Finding:" in html
    key = result.key_numbers["online_loss"]
    assert key["low"] <= key["value"] <= key["high"]
    assert result.finding and result.headlines["recovery_score"] == rs.headline

    kept = arprobe.analyze(tiny_run, probes="recovery_score", out=tmp_path / "report")
    assert kept.path == tmp_path / "report"
    assert (tmp_path / "report" / "index.html").is_file()
    assert (tmp_path / "report" / "recovery_score" / "recovery_score.png").read_bytes() == (
        kept.recovery_score.figure.png
    )


def test_analyze_errors_are_the_cli_sentences(tiny_run):
    with pytest.raises(UserError, match="Unknown probe 'recovery_scor'"):
        arprobe.analyze(tiny_run, probes="recovery_scor")
    with pytest.raises(UserError, match="must be a dict of that probe's options"):
        arprobe.analyze(tiny_run, probes="pca_weights", pca_weights="none")
    with pytest.raises(UserError, match="pca_weights"):
        arprobe.analyze(tiny_run, probes="pca_weights", pca_weights={"detrnd": "none"})


def test_sweep_from_a_dict_and_its_rows(tmp_path, monkeypatch):
    spec = {"name": "api-sweep", "seeds": [0, 1], **{k: v for k, v in SMALL.items() if k != "epochs"}}
    spec["grid"] = {"epochs": [2]}
    rows = arprobe.sweep(spec, out=tmp_path, progress=False, workers=1)
    folder = tmp_path / "api-sweep"
    assert (folder / "sweep.toml").is_file()
    assert list(rows["seed"]) == [0, 1] and list(rows["status"]) == ["complete", "complete"]
    assert list(rows["schedule.epochs"]) == [2, 2] and list(rows["episodes"]) == [6, 6]
    for _, row in rows.iterrows():
        with RunStore(row["path"]) as store:
            matrix, schedule = store.eval_matrix(), store.schedule()
        assert row["online_loss"] == online_loss(matrix, schedule.doc, schedule.epoch).mean_after_first_epoch
        assert np.array_equal([row["rs_1"]], recovery_scores(matrix, schedule.doc), equal_nan=True)
    aggregate = arprobe.analyze(folder)
    assert [p["n"] for p in aggregate.sweep["points"]] == [2]
    assert aggregate.figures and all(f.png[:4] == b"\x89PNG" for f in aggregate.figures.values())
    assert f"finding: {aggregate.finding}\n" in aggregate.log  # the sentence the command printed
    assert not (folder / "report").exists()  # in memory
    monkeypatch.setitem(sys.modules, "pandas", None)  # without pandas: a list of dicts
    plain = arprobe.load_sweep(folder)
    assert [r["name"] for r in plain] == list(rows["name"])
    assert [r["online_loss"] for r in plain] == list(rows["online_loss"])


def test_sweep_option_errors_are_one_sentence(tmp_path):
    spec = {"name": "bad", "seeds": [0], **SMALL}
    with pytest.raises(UserError, match="--workers: invalid int value: 'many'"):
        arprobe.sweep(spec, out=tmp_path, workers="many")
    with pytest.raises(UserError, match="spec must be a sweep file or a dict, got int"):
        arprobe.sweep(3)
    with pytest.raises(UserError, match="does not exist"):
        arprobe.sweep(tmp_path / "missing.toml")
    assert not any(tmp_path.iterdir())
    with pytest.raises(UserError, match="is not a sweep folder"):
        arprobe.load_sweep(tmp_path)


def test_run_accepts_a_config_from_the_trainer(tmp_path):
    cfg = tiny_config(tmp_path, **{k: v for k, v in SMALL.items() if k not in TINY}, n_docs=3, epochs=2)
    run = arprobe.run(cfg, name="from-object", progress=False)
    assert run.path == tmp_path / "from-object" and run.episodes == 6
    assert cfg.name == "tiny"  # the caller's config is not changed


def test_sweep_dry_run_passes_repeated_backend_flags(tmp_path, capsys):
    spec = {"name": "dry", "seeds": [0, 1], **SMALL}
    assert (
        arprobe.sweep(spec, out=tmp_path, backend="slurm", slurm=["partition=gpu", "time=60"], dry_run=True)
        is None
    )
    printed = capsys.readouterr().out
    assert "#SBATCH --partition=gpu\n" in printed and "#SBATCH --time=60\n" in printed
    assert "#SBATCH --array=0-1" in printed
    assert not (tmp_path / "dry").exists()
