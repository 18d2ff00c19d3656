"""docs/probes.md: its numbers come from benchmarks/probe_docs.py, which rewrites exactly its
marked blocks."""

import pytest

from tests.helpers import REPO


def test_probe_docs_rewrites_exactly_its_marked_blocks():
    from benchmarks.probe_docs import BLOCK, BLOCK_NAMES, replace_blocks

    text = (REPO / "docs" / "probes.md").read_text()
    assert tuple(m.group("name") for m in BLOCK.finditer(text)) == BLOCK_NAMES
    new = replace_blocks(text, {name: f"generated {name}" for name in BLOCK_NAMES})
    assert BLOCK.sub("", new) == BLOCK.sub("", text)  # nothing outside the blocks changes
    assert (
        "<!-- probe-docs:begin toy-model -->\ngenerated toy-model\n<!-- probe-docs:end toy-model -->" in new
    )
    assert replace_blocks(new, {name: "again" for name in BLOCK_NAMES}).count("\nagain\n") == 4
    with pytest.raises(ValueError, match=r"missing \['extra'\], not generated \[\]"):
        replace_blocks(text, {**{name: "" for name in BLOCK_NAMES}, "extra": ""})
    with pytest.raises(ValueError, match=r"missing \[\], not generated \['toy-model'\]"):
        replace_blocks(text, {name: "" for name in BLOCK_NAMES[:-1]})


def test_probe_docs_number_formats():
    from benchmarks.probe_docs import fmt, fmt_list, mean_std

    assert mean_std([1.0, 3.0, None]) == "2.000 ± 1.414 (1 undefined)"  # sample std of 1 and 3
    assert mean_std([0.5]) == "0.500" and mean_std([None, None]) == "not defined"
    assert fmt(None) == "undefined" and fmt(float("nan")) == "undefined" and fmt(3) == "3"
    assert fmt_list([0.12345, None], 2) == "0.12, undefined" and fmt_list(None) == "none"
