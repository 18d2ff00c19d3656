"""The run store's schema after a tiny real run, and the reader's guarantees."""

import gzip
import json

import h5py
import numpy as np
import pytest

from arprobe.errors import MissingDataError, UserError
from arprobe.science.recovery import online_loss, recovery_scores
from arprobe.storage import RunStore
from arprobe.storage.schema import FORMAT_VERSION
from tests.helpers import FIXTURES

T, C, M, E = 5, 32, 3, 3
K = T * E


FIXTURES = FIXTURES / "stores"


def test_schema_of_a_tiny_run(tiny_run):
    with h5py.File(tiny_run / "run.h5", "r") as h5:
        attrs = dict(h5.attrs)
        assert attrs["format"] == "arprobe-run" and attrs["format_version"] == FORMAT_VERSION
        assert attrs["status"] == "complete" and attrs["completed_episodes"] == K and attrs["seed"] == 0
        config = json.loads(attrs["config"])
        assert config["data"]["n_docs"] == T and config["schedule"]["steps_per_doc"] == M
        shapes = {
            name: h5[name].shape
            for name in [
                "docs/tokens",
                "docs/lengths",
                "docs/text",
                "schedule/doc",
                "schedule/epoch",
                "loss/eval",
                "loss/train",
                "stats/grad_norm",
                "weights/unembed/values",
                "weights/unembed/episodes",
                "weights/all/values",
                "docs/window_start",
                "schedule/planned_doc",
                "grads/blocks.1.attn/values",
                "activations/ln_final.hook_normalized/values",
                "checkpoints/episodes",
            ]
        }
        L = len(json.loads(h5["stats/grad_norm"].attrs["layers"]))
        vocab = json.loads(h5["model"].attrs["info"])["vocab_size"]
        n_attn = h5["grads/blocks.1.attn/values"].shape[-1]
        for name in ("loss/eval", "loss/train", "schedule/doc"):
            assert h5[name].maxshape[0] is None and h5[name].chunks is not None
    assert shapes == {
        "docs/tokens": (T, C),
        "docs/lengths": (T,),
        "docs/text": (T,),
        "schedule/doc": (K,),
        "schedule/epoch": (K,),
        "loss/eval": (K + 1, T),
        "loss/train": (K, M),
        "stats/grad_norm": (K, M, L),
        "weights/unembed/values": (K + 1, vocab * 64),
        "weights/unembed/episodes": (K + 1,),
        "weights/all/values": (K + 1, 65536),  # every parameter, count-sketched
        "docs/window_start": (T,),
        "schedule/planned_doc": (K,),
        "grads/blocks.1.attn/values": (E, T, n_attn),  # middle block of 2 is blocks.1
        "activations/ln_final.hook_normalized/values": (K + 1, 1, C, 64),
        "checkpoints/episodes": (1,),  # the default: end of the next-to-last epoch
    }
    # attention of a d64 block: fused qkv (3*64*64 + 3*64) and the output projection (64*64 + 64)
    assert n_attn == 3 * 64 * 64 + 3 * 64 + 64 * 64 + 64


def test_reader_accessors_agree_with_the_schedule(tiny_run):
    with RunStore(tiny_run) as store:
        schedule = store.schedule()
        doc, epoch = schedule.doc, schedule.epoch
        np.testing.assert_array_equal(doc, np.tile(np.arange(T), E))
        np.testing.assert_array_equal(schedule.epoch_ends, [T, 2 * T, 3 * T])
        np.testing.assert_array_equal(store.planned_schedule().doc, doc)
        np.testing.assert_array_equal(epoch, np.repeat(np.arange(1, E + 1), T))
        loss = store.eval_matrix()
        assert loss.shape == (K + 1, T) and np.isfinite(loss).all()
        # the document trained in an episode is the one whose loss dropped most in it
        drops = loss[:-1] - loss[1:]
        assert (drops.argmax(axis=1) == doc).mean() >= 0.8
        np.testing.assert_array_equal(store.checkpoint_episodes(), [10])
        episodes, values = store.weights("unembed")
        np.testing.assert_array_equal(episodes, np.arange(K + 1))
        assert store.layer_names[0] == "embed" and "unembed" in store.layer_names
        assert np.all(store.grad_norm() > 0)
        assert len(recovery_scores(loss, doc)) == E - 1


def test_missing_recording_names_the_option(tiny_run):
    with RunStore(tiny_run) as store:
        with pytest.raises(
            MissingDataError,
            match=r"no weight snapshots of 'blocks.0.mlp' \(recorded: all, unembed\); record it with",
        ):
            store.weights("blocks.0.mlp")
        with pytest.raises(
            MissingDataError,
            match=r"no checkpoint at episode 7 \(have: 10\); record it with record.checkpoints",
        ):
            store.checkpoint(7)


def test_reader_shows_only_committed_episodes(tiny_run, tmp_path):
    # Simulate a crash after episode 4: the counter says 4 while more rows exist.
    copy = tmp_path / "run.h5"
    copy.write_bytes((tiny_run / "run.h5").read_bytes())
    with h5py.File(copy, "r+") as h5:
        h5["progress"][0] = 4
        h5["state/status"][0] = b"running"  # the live status a crashed writer leaves
    with RunStore(copy) as store:
        assert store.completed_episodes == 4 and store.status == "running"
        assert store.eval_matrix().shape == (5, T) and store.train_loss().shape == (4, M)
        assert len(store.weights("unembed")[0]) == 5  # episodes 0..4
        assert store.recorded("grads") == []  # first gradients come at the end of epoch 1 (episode 5)


def test_refuses_files_that_are_not_stores(tmp_path):
    not_h5 = tmp_path / "run.h5"
    not_h5.write_bytes(b"not an hdf5 file")
    with pytest.raises(UserError, match="is not a readable run store: it is not an HDF5 file"):
        RunStore(not_h5)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5["x"] = 1
    with pytest.raises(UserError, match="not an arprobe run store"):
        RunStore(other)
    newer = tmp_path / "newer.h5"
    with h5py.File(newer, "w") as h5:
        h5.attrs.update({"format": "arprobe-run", "format_version": FORMAT_VERSION + 1})
    with pytest.raises(UserError, match="newer than this arprobe understands"):
        RunStore(newer)
    with pytest.raises(UserError, match="No run store at"):
        RunStore(tmp_path / "nowhere")


def test_recordings_say_what_and_when(tiny_run):
    with RunStore(tiny_run) as store:
        full = store.sketch_info("weights", "all")["full_dim"]
        assert store.recording_info("weights", "all") == {
            "what": f"every parameter of the model as one vector (count-sketch of {full:,})",
            "when": "every episode, and before training",
        }
        assert store.recording_info("grads", "blocks.1.attn")["when"] == "end of each epoch"
        assert store.recording_info("checkpoints", "model")["when"] == "end of the next-to-last epoch"


def test_format_1_store_is_read(tmp_path):
    # Written by arprobe before format 2 (T=5, C=32, M=3, E=3, cyclic, checkpoint at episode 15).
    path = tmp_path / "v1" / "run.h5"
    path.parent.mkdir()
    path.write_bytes(gzip.decompress((FIXTURES / "format1-tiny.h5.gz").read_bytes()))
    with RunStore(path) as store:
        assert store.format_version == 1 and store.status == "complete"
        schedule = store.schedule()
        np.testing.assert_array_equal(schedule.doc, np.tile(np.arange(5), 3))
        np.testing.assert_array_equal(store.planned_schedule().epoch_ends, [5, 10, 15])
        assert store.eval_matrix().shape == (16, 5)
        np.testing.assert_array_equal(store.doc_arrays()["window_start"], np.zeros(5))
        assert store.recording_info("weights", "unembed") == {}
        assert store.recorded("weights") == ["unembed"]
        # the online loss from the eval matrix equals format 1's first-step loss: nothing augmented
        np.testing.assert_allclose(
            online_loss(store.eval_matrix(), schedule.doc, schedule.epoch).per_episode,
            store.train_loss()[:, 0],
            rtol=1e-5,
        )
