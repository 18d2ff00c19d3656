"""Without network: a hub id is one sentence in seconds, and an unreachable hub is named."""

import os
import time

import pytest

from arprobe.errors import UserError
from tests.helpers import (
    cli,
    one_line_error,
)


def test_an_offline_hub_id_is_one_sentence_in_seconds(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    line = one_line_error(
        cli(
            "run", "--out", tmp_path, "--model.name", "EleutherAI/pythia-14m", "--init", "pretrained", env=env
        )
    )
    assert time.monotonic() - started < 15
    assert (
        "Model 'EleutherAI/pythia-14m' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
        in line
    )


def test_unreachable_hub_is_named(monkeypatch):
    from arprobe.models import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_reachable", lambda endpoint, timeout=3.0: False)
    with pytest.raises(
        UserError, match=r"Model 'org/model' is not in the local Hugging Face cache and the hub"
    ):
        hub.check_hub_model("org/model")
