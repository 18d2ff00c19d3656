"""The plugin guide's example probe and its example test (docs/probes.md) run as written."""

import re
import sys
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "probes.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_guides_probe_passes_the_guides_test(tmp_path, monkeypatch):
    blocks = python_blocks(GUIDE.read_text())
    probe_src = next(b for b in blocks if "class FinalLoss(Probe)" in b)
    test_src = next(b for b in blocks if "def test_final_loss" in b)
    (tmp_path / "my_probes.py").write_text(probe_src)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_probes", raising=False)
    namespace: dict = {}
    exec(compile(test_src, str(GUIDE), "exec"), namespace)
    work = tmp_path / "work"
    work.mkdir()
    namespace["test_final_loss"](work)  # its asserts: the mean 4.0 worked by hand, the figure written
    assert (work / "out" / "final_loss.png").stat().st_size > 0


def test_the_guides_probe_declares_title_and_look_for():
    probe_src = next(b for b in python_blocks(GUIDE.read_text()) if "class FinalLoss(Probe)" in b)
    namespace: dict = {}
    exec(compile(probe_src, str(GUIDE), "exec"), namespace)
    probe = namespace["FinalLoss"]
    assert probe.title == "Final loss"
    assert probe.look_for.endswith(".")
