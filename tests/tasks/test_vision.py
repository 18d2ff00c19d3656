"""Vision tasks (paper Sec. 3.4): image-lm and image-classification through the task seam — data,
palette, the tasks' batches and losses, tiny real runs and their stores, every probe on them,
replays from their checkpoints, hub-style models and datasets saved locally, and the errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from arprobe.errors import UserError
from arprobe.storage import RunStore
from tests.conftest import tiny_config

TINY_IMAGE = {
    "n_docs": 3,
    "steps_per_doc": 2,
    "epochs": 3,
    "image_size": 8,
    "images_per_doc": 4,
    "d_model": 32,
    "n_layers": 2,
    "n_heads": 2,
    "threads": 1,
}


def image_config(tmp_path, task, **overrides):
    return tiny_config(tmp_path, **{**TINY_IMAGE, "task": task, **overrides})


def run_tiny(tmp_path, task, **overrides):
    from arprobe.trainer.loop import run

    result = run(image_config(tmp_path, task, **overrides), progress=False)
    assert result.status == "complete"
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny finished runs: image-lm (1 image per document), vit-tiny and vgg-small classifiers."""
    out = tmp_path_factory.mktemp("vision")
    return {
        "lm": run_tiny(out / "lm", "image-lm", images_per_doc=1, n_colors=8),
        "vit": run_tiny(out / "vit", "image-classification", **{"model.name": "vit-tiny", "patch_size": 4}),
        "vgg": run_tiny(out / "vgg", "image-classification", **{"model.name": "vgg-small", "d_model": 4}),
    }


# --- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"task": "image-generation"},
            "Unknown task 'image-generation'. Did you mean 'image-classification'? "
            "Available: image-classification, image-lm, text-lm.",
        ),
        ({"task": "image-classification", "mask_prob": 0.1}, "data.mask_prob masks tokens"),
        ({"task": "image-lm", "max_shift": 2}, "data.max_shift shifts text windows"),
        ({"task": "image-lm", "crop_pad": 2}, "image.crop_pad is for image-classification"),
        ({"n_colors": 1}, "image.n_colors must be in [2, 4096], got 1."),
        ({"resize": 4, "image_size": 8}, "image.resize must be 0 or at least image.image_size, got 4."),
    ],
)
def test_config_refuses_options_a_task_cannot_use(tmp_path, overrides, message):
    with pytest.raises(UserError) as err:
        tiny_config(tmp_path, **overrides)
    assert message in str(err.value)


def test_image_keys_are_listed_and_named_in_run_names(tmp_path):
    from arprobe.trainer.config import describe_keys

    listed = describe_keys()
    for key in ("image.image_size", "image.n_colors", "image.images_per_doc", "image.crop_pad"):
        assert f"--{key}" in listed
    cfg = image_config(tmp_path, "image-lm", images_per_doc=1, name="")
    assert cfg.run_dir.name.endswith("-image_lm-s0") and "image_size8" in cfg.run_dir.name
    assert "image" not in tiny_config(tmp_path).run_dir.name  # the text default's name is unchanged


# --- data and palette ---------------------------------------------------------------------------


def test_resize_straight_or_shorter_side_then_centre_crop():
    from arprobe.tasks.image_data import to_size

    img = np.zeros((20, 40, 3), np.uint8)
    img[:, 18:22] = 255  # a white stripe in the middle column
    assert to_size(img, 8).shape == (8, 8, 3)
    cropped = to_size(img, 8, resize=10)  # 20x40 -> 10x20 -> centre 8x8 keeps the stripe centred
    assert cropped.shape == (8, 8, 3)
    assert cropped[:, 3:5].mean() > 200 and cropped[:, 0].max() == 0


def test_digits_are_sampled_reproducibly_with_labels(tmp_path):
    from arprobe.tasks.image_data import load_images

    cfg = image_config(tmp_path, "image-classification")
    a, b = load_images(cfg, 12), load_images(cfg, 12)
    assert a.pixels.shape == (12, 8, 8, 3) and a.pixels.dtype == np.uint8
    np.testing.assert_array_equal(a.indices, b.indices)
    assert len(set(a.indices.tolist())) == 12 and set(a.labels.tolist()) <= set(range(10))
    assert (a.pixels[..., 0] == a.pixels[..., 2]).all()  # grey digits as RGB


def test_kmeans_palette_and_quantisation():
    from arprobe.tasks.image_data import kmeans_palette, quantise

    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255], [255, 255, 255]], np.uint8)
    pixels = colours[np.random.default_rng(0).integers(0, 4, (6, 5, 5))]  # [6, 5, 5, 3]
    palette = kmeans_palette(pixels, 4, seed=0)
    assert palette.shape == (4, 3)
    np.testing.assert_allclose(palette[0], [0, 0, 0], atol=1e-6)  # sorted by brightness
    np.testing.assert_allclose(palette[-1], [1, 1, 1], atol=1e-6)
    ids = quantise(pixels, palette)
    assert ids.shape == (6, 5, 5)
    np.testing.assert_allclose(palette[ids] * 255, pixels, atol=1e-3)  # every colour found exactly
    with pytest.raises(UserError, match=r"image.n_colors \(5\) exceeds the 4 distinct colours"):
        kmeans_palette(pixels, 5, seed=0)


def test_missing_scikit_learn_names_the_extra(monkeypatch):
    import builtins

    from arprobe.tasks import image_data

    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(UserError) as err:
        image_data.require_sklearn()
    assert 'pip install -e ".[vision]"' in str(err.value) and str(err.value).count(".") >= 1


# --- the tasks ----------------------------------------------------------------------------------


def lm_task(**kwargs):
    from arprobe.tasks.image import ImageLM

    side, n = 2, 2
    pixels = torch.arange(2 * n * side * side).view(2, -1) % 7  # two documents, colours 0..6
    tokens = torch.cat([torch.full((2, 1), 7), pixels], 1)  # start token 7
    return ImageLM(tokens, images_per_doc=n, side=side, mask_id=7, **kwargs)


def test_image_lm_reads_the_start_token_and_predicts_every_pixel():
    t = lm_task()
    batch = t.training_batch(1, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(batch["input_ids"][0], t.tokens[1, :-1])
    np.testing.assert_array_equal(batch["labels"][0], t.tokens[1, 1:])  # all 8 pixels are targets
    assert batch["input_ids"][0, 0] == 7
    assert t.store_arrays()["lengths"].tolist() == [9, 9]


def test_image_lm_flip_mirrors_each_image_and_masking_spares_labels():
    t = lm_task(hflip_prob=1.0)
    batch = t.training_batch(0, torch.Generator().manual_seed(0))
    grid = t.tokens[0, 1:].view(2, 2, 2)  # [image, row, col]
    np.testing.assert_array_equal(batch["labels"][0], grid.flip(-1).reshape(-1))
    m = lm_task(mask_prob=0.5)
    masked = m.training_batch(0, torch.Generator().manual_seed(3))
    assert (masked["input_ids"] == 7).sum() > 1  # the start token plus masked pixels
    np.testing.assert_array_equal(masked["labels"][0], m.tokens[0, 1:])


def test_image_lm_eval_loss_is_the_training_loss_of_the_clean_document():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=8, n_positions=8, n_embd=16, n_layer=1, n_head=2, bos_token_id=7, eos_token_id=7
    )
    model = GPT2LMHeadModel(config).eval()  # dropout off, as in runs
    t = lm_task()
    row = t.eval_losses(model)
    for d in range(2):
        loss = t.batch_loss(model, t.training_batch(d, torch.Generator())).item()
        assert abs(loss - float(row[d])) < 1e-5


def cls_task(T=3, B=4, **kwargs):
    from arprobe.tasks.image import ImageClassification

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (T, B, 8, 8, 3), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 5, (T, B), generator=g)
    return ImageClassification(images, labels, **kwargs)


def tiny_vit(n_classes=5):
    from arprobe.models.vision import ViT

    torch.manual_seed(0)
    return ViT(image_size=8, patch_size=4, d_model=16, n_layers=1, n_heads=2, n_classes=n_classes)


def test_classification_eval_is_each_batchs_mean_loss_and_activations_are_first_images():
    from arprobe.models.naming import capture
    from arprobe.models.vision import builtin_names

    t, model = cls_task(eval_batch=2), tiny_vit()
    model.eval()
    rows = {}
    with capture(model, builtin_names(model), ["ln_final.hook_normalized"]) as cache:

        def after_batch(start, stop):
            rows[start] = cache["ln_final.hook_normalized"][: stop - start].clone()

        losses = t.eval_losses(model, after_batch)
    for d in range(3):  # the eval row is the batch's training loss (no augmentation)
        loss = t.batch_loss(model, t.training_batch(d, torch.Generator())).item()
        assert abs(loss - float(losses[d])) < 1e-5
    with capture(model, builtin_names(model), ["ln_final.hook_normalized"]) as cache:
        t.forward_docs(model, [0, 1, 2])
        first_images = cache["ln_final.hook_normalized"]  # [3 docs, 1 + 4 patches, 16]
    assert first_images.shape == (3, 5, 16)
    torch.testing.assert_close(torch.cat([rows[0], rows[2]]), first_images)


def test_classification_augmentation_flips_and_shifts_within_the_pad():
    t = cls_task(hflip_prob=1.0)
    x = t.training_batch(0, torch.Generator())["pixel_values"]
    torch.testing.assert_close(x, t.pixels[0].flip(-1))
    s = cls_task(crop_pad=2)
    shifted = s.training_batch(0, torch.Generator().manual_seed(1))["pixel_values"]
    assert shifted.shape == (4, 3, 8, 8) and not torch.equal(shifted, s.pixels[0])


def test_per_document_gradients_vmap_equals_loop():
    t, model = cls_task(), tiny_vit()
    params = {n: p for n, p in model.named_parameters() if n.startswith("blocks.0.attn")}
    vmapped = [torch.cat(c) for c in zip(*t.per_document_grads(model, params, chunk=2, method="vmap"))]
    looped = [torch.cat(c) for c in zip(*t.per_document_grads(model, params, chunk=2, method="loop"))]
    for a, b in zip(vmapped, looped):
        assert a.shape[0] == 3
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


# --- tiny runs: stores, RS, probes, replays -----------------------------------------------------


def test_image_lm_store(runs):
    from arprobe.science.recovery import recovery_scores

    with RunStore(runs["lm"].path) as s:
        docs = s.doc_arrays()
        T, K = 3, 9
        assert docs["tokens"].shape == (T, 1 + 64) and (docs["tokens"][:, 0] == 8).all()  # SOS = n_colors
        assert docs["tokens"][:, 1:].max() < 8 and docs["palette"].shape == (8, 3)
        assert docs["images"].shape == (T, 1, 8, 8, 3) and docs["labels"].shape == (T, 1)
        _, _, texts = s.docs()
        assert texts[0].startswith("image ") and "(label " in texts[0]
        ev = s.eval_matrix()
        assert ev.shape == (K + 1, T)
        np.testing.assert_allclose(recovery_scores(ev, s.schedule().doc), runs["lm"].recovery_scores)
        info = s.model_info
        assert info["task"] == "image-lm" and info["hf_config"]["model_type"] == "gpt2"
        assert info["hf_config"]["vocab_size"] == 9  # 8 colours + the start token
        assert s.recorded("grads") == ["blocks.1.attn"]
        assert s.grads("blocks.1.attn")[1].shape[:2] == (3, T)  # [G (every epoch end), T, D]
        assert s.activations("ln_final.hook_normalized")[2].shape == (K + 1, 1, 64, 32)  # [A, n, L, d]
        assert s.h5["loss/train"].shape == (K, 2)


@pytest.mark.parametrize(
    "name, grads, hook, act_shape",
    [
        ("vit", "blocks.1.attn", "ln_final.hook_normalized", (1, 5, 32)),  # 1 + (8/4)^2 tokens, d 32
        ("vgg", "blocks.1", "blocks.1.hook_out", (1, 8, 2, 2)),  # a VGG's stand-ins: stage 1, last stage
    ],
)
def test_classification_store(runs, name, grads, hook, act_shape):
    with RunStore(runs[name].path) as s:
        docs = s.doc_arrays()
        assert docs["images"].shape == (3, 4, 8, 8, 3) and docs["labels"].shape == (3, 4)
        assert "tokens" not in docs and "lengths" not in docs  # labels are stored as labels, nothing else
        assert docs["labels"].dtype == np.int32 and docs["labels"].min() >= 0
        texts = s.doc_texts()
        assert texts[0].startswith("4 images: ") and texts[0].count("(label ") == 4
        assert s.eval_matrix().shape == (10, 3)
        assert s.recorded("grads") == [grads] and s.grads(grads)[1].shape[:2] == (3, 3)  # [G, T, D]
        assert s.activations(hook)[2].shape[1:] == act_shape
        assert s.model_info["kind"] == "builtin" and s.model_info["n_classes"] == 10
        # the first eval row is the untrained model: about ln(10) for 10 classes
        assert 1.5 < float(s.eval_matrix()[0].mean()) < 3.5


# The probes the issue names must run; any other probe may skip, with its one sentence, but not fail.
PAPER_PROBES = {"recovery_score", "loss_curves", "online_loss", "pca_weights", "pairwise_recovery",
                "gradient_similarity", "activation_drift"}  # fmt: skip


def test_every_probe_runs_on_the_vision_runs(runs, tmp_path):
    from arprobe.probes.registry import Registry
    from arprobe.probes.runner import write_report

    registry = Registry()
    # every probe on the CNN (the run least like text); on image-lm those that read more than losses
    lm_probes = {"recovery_score", "pairwise_recovery", "gradient_similarity", "activation_drift"}
    for name, names in (("vgg", registry.names()), ("lm", sorted(lm_probes))):
        probes = [registry.get(n) for n in names]
        for p in probes:
            p.progress = False
        with RunStore(runs[name].path) as store:
            outcomes = {o.probe: o for o in write_report([store], tmp_path / name, probes, isolate=False)}
        assert PAPER_PROBES <= set(outcomes) if name == "vgg" else set(outcomes) == lm_probes
        assert {n: o.reason for n, o in outcomes.items() if n in PAPER_PROBES and o.status != "ok"} == {}
        others = {n: o for n, o in outcomes.items() if n not in PAPER_PROBES}
        assert {n: o.reason for n, o in others.items() if o.status not in ("ok", "skipped")} == {}
        assert all(
            o.reason.strip() and "\n" not in o.reason.strip()
            for o in others.values()
            if o.status == "skipped"
        )
        rs = json.loads((tmp_path / name / "recovery_score" / "result.json").read_text())["result"]
        from_probe = [np.nan if v is None else v for v in rs["recovery_score"]]  # JSON: undefined is null
        np.testing.assert_allclose(from_probe, runs[name].recovery_scores)
        pairwise = json.loads((tmp_path / name / "pairwise_recovery" / "result.json").read_text())["result"]
        assert np.asarray(pairwise["recovery"], dtype=float).shape == (3, 3)  # [trained doc, measured doc]


@pytest.mark.parametrize("name", ["lm", "vit", "vgg"])
def test_replay_from_a_checkpoint_retrains_the_next_episode(runs, name):
    from arprobe.trainer.api import Replay

    with RunStore(runs[name].path) as s:
        ev, doc = s.eval_matrix(), s.schedule().doc
        (k,) = s.checkpoint_episodes()  # the default: the end of the next-to-last epoch
        assert k < len(doc)
        replay = Replay(s, int(k), device="cpu")
        np.testing.assert_allclose(replay.evaluate(), ev[k], rtol=1e-5, atol=1e-6)
        replay.train_episode(int(doc[k]))
        np.testing.assert_allclose(replay.evaluate(), ev[k + 1], rtol=1e-4, atol=1e-5)


def test_an_image_run_is_deterministic_and_refuses_a_second_resume(tmp_path, runs):
    from arprobe.trainer.loop import resume, run

    again = run(image_config(tmp_path, "image-classification", **{"model.name": "vgg-small", "d_model": 4}),
                progress=False)  # fmt: skip
    with RunStore(again.path) as s, RunStore(runs["vgg"].path) as first:
        np.testing.assert_array_equal(s.eval_matrix(), first.eval_matrix())
        np.testing.assert_array_equal(s.doc_arrays()["images"], first.doc_arrays()["images"])
    with pytest.raises(UserError, match="already complete"):
        resume(again.path, progress=False)


def test_an_interrupted_image_lm_run_resumes_bit_for_bit(tmp_path, runs, monkeypatch):
    """Resuming rebuilds the images and the k-means palette from the config: the same store."""
    from arprobe.trainer import loop

    real = loop.train_episode

    def crash_at_5(*args, episode, **kwargs):
        if episode == 5:
            raise RuntimeError("power cut")
        return real(*args, episode=episode, **kwargs)

    monkeypatch.setattr(loop, "train_episode", crash_at_5)
    with pytest.raises(RuntimeError, match="power cut"):
        loop.run(image_config(tmp_path, "image-lm", images_per_doc=1, n_colors=8), progress=False)
    monkeypatch.setattr(loop, "train_episode", real)
    resumed = loop.resume(tmp_path / "tiny", progress=False)
    assert resumed.status == "complete"
    with RunStore(resumed.path) as s, RunStore(runs["lm"].path) as whole:
        np.testing.assert_array_equal(s.eval_matrix(), whole.eval_matrix())
        np.testing.assert_array_equal(s.doc_arrays()["palette"], whole.doc_arrays()["palette"])


# --- data sources, hub-style models saved locally, errors ----------------------------------------


def write_images(folder: Path, n: int, colour) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = np.full((10, 12, 3), colour, np.uint8)
        arr[i % 10, :, :] = 255 - np.asarray(colour, np.uint8)
        Image.fromarray(arr).save(folder / f"{i:03d}.png")


def test_flat_image_folder_has_no_labels_for_classification(tmp_path):
    write_images(tmp_path / "flat", 12, (10, 120, 200))
    with pytest.raises(UserError) as err:
        run_tiny(tmp_path / "runs", "image-classification", source=str(tmp_path / "flat"))
    message = str(err.value)
    assert message.startswith(f"Data source '{tmp_path / 'flat'}' has no labels; image-classification needs")
    assert "\n" not in message
    # the same folder is fine for causal image modelling (no labels needed)
    result = run_tiny(
        tmp_path / "runs", "image-lm", source=str(tmp_path / "flat"), images_per_doc=1, n_colors=2, epochs=2
    )
    with RunStore(result.path) as s:
        assert s.doc_arrays()["labels"].tolist() == [[-1]] * 3


def test_class_folders_give_labels(tmp_path):
    from arprobe.tasks.image_data import load_images

    write_images(tmp_path / "folder" / "cat", 5, (200, 30, 30))
    write_images(tmp_path / "folder" / "dog", 5, (30, 30, 200))
    cfg = image_config(tmp_path, "image-classification", source=str(tmp_path / "folder"))
    images = load_images(cfg, 8)
    assert images.class_names == ["cat", "dog"] and images.pixels.shape == (8, 8, 8, 3)
    reds = images.pixels[..., 0].mean((1, 2)) > images.pixels[..., 2].mean((1, 2))
    np.testing.assert_array_equal(reds, images.labels == 0)
    with pytest.raises(UserError, match=r"has 10 images but the run needs 12"):
        load_images(cfg, 12)


def saved_dataset(tmp_path, with_labels=True):
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)) for _ in range(16)]
    columns = {"img": imgs}
    features = {"img": datasets.Image()}
    if with_labels:
        columns["label"] = [i % 4 for i in range(16)]
        features["label"] = datasets.ClassLabel(names=["a", "b", "c", "d"])
    path = tmp_path / ("labelled" if with_labels else "unlabelled")
    datasets.Dataset.from_dict(columns, features=datasets.Features(features)).save_to_disk(str(path))
    return path


def test_hub_classifier_and_dataset_saved_locally(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, num_labels=4,
    )  # fmt: skip
    ViTForImageClassification(config).save_pretrained(tmp_path / "vit")
    data = saved_dataset(tmp_path)
    result = run_tiny(
        tmp_path / "runs",
        "image-classification",
        source=str(data),
        init="pretrained",
        epochs=2,
        **{"model.name": str(tmp_path / "vit"), "d_model": 0, "n_layers": 0, "n_heads": 0},
    )
    with RunStore(result.path) as s:
        assert s.model_info["kind"] == "pretrained" and s.model_info["class_names"] == ["a", "b", "c", "d"]
        assert s.recorded("grads") == ["blocks.1.attention"]  # blocks.mid.attn: the middle layer's attention
        assert s.recorded("activations") == ["blocks.1.hook_out"]  # no ln_final: the last block's output
        assert s.eval_matrix().shape == (7, 3)
    with pytest.raises(UserError, match=r"has no labels; image-classification needs labelled images"):
        run_tiny(tmp_path / "runs2", "image-classification", source=str(saved_dataset(tmp_path, False)))


def test_unlabelled_split_is_refused_in_one_sentence(tmp_path):
    import datasets
    from PIL import Image

    imgs = [Image.fromarray(np.full((8, 8, 3), i * 10, np.uint8)) for i in range(8)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict({"image": imgs, "label": [-1] * 8}, features=features).save_to_disk(
        tmp_path / "d"
    )
    with pytest.raises(UserError) as err:
        run_tiny(tmp_path / "runs", "image-classification", source=str(tmp_path / "d"), images_per_doc=2)
    assert str(err.value) == (
        f"Data source '{tmp_path / 'd'}' has unlabelled images (label -1, as some test splits do); "
        "choose a labelled split with data.split."
    )


def test_pretrained_image_gpt_uses_its_own_colour_clusters(tmp_path):
    from transformers import ImageGPTConfig, ImageGPTForCausalImageModeling, ImageGPTImageProcessor

    clusters = np.random.default_rng(0).uniform(-1, 1, (6, 3)).astype(np.float32)
    config = ImageGPTConfig(vocab_size=7, n_positions=64, n_embd=16, n_layer=2, n_head=2)
    ImageGPTForCausalImageModeling(config).save_pretrained(tmp_path / "igpt")
    ImageGPTImageProcessor(clusters=clusters, size={"height": 8, "width": 8}).save_pretrained(
        tmp_path / "igpt"
    )
    result = run_tiny(
        tmp_path / "runs",
        "image-lm",
        init="pretrained",
        images_per_doc=1,
        epochs=2,
        **{"model.name": str(tmp_path / "igpt"), "d_model": 0, "n_layers": 0, "n_heads": 0},
    )
    with RunStore(result.path) as s:
        np.testing.assert_allclose(s.doc_arrays()["palette"], (clusters + 1) / 2, atol=1e-6)
        assert (s.doc_arrays()["tokens"][:, 0] == 6).all()  # Image GPT's start token: vocab_size - 1
        assert s.model_info["hf_config"]["model_type"] == "imagegpt"
    with pytest.raises(UserError, match=r"has 64 positions but a document is 256 tokens"):
        big = {"model.name": str(tmp_path / "igpt"), "d_model": 0, "n_layers": 0, "n_heads": 0}
        run_tiny(tmp_path / "runs2", "image-lm", init="pretrained", image_size=16, images_per_doc=1, **big)


def test_models_of_the_other_task_and_missing_hub_ids_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        UserError, match=r"^'vgg-small' is an image-classification model; image-lm takes a preset"
    ):
        run_tiny(tmp_path, "image-lm", **{"model.name": "vgg-small"})
    with pytest.raises(
        UserError, match=r"^'imagegpt-small' is an image-lm preset; image-classification takes"
    ):
        run_tiny(tmp_path, "image-classification", **{"model.name": "imagegpt-small"})
    with pytest.raises(
        UserError, match=r"^Model 'nobody/no-such-vit' is not in the local Hugging Face cache"
    ):
        run_tiny(tmp_path, "image-classification", init="pretrained", **{"model.name": "nobody/no-such-vit"})


def test_cli_errors_are_one_line(tmp_path, capsys):
    from arprobe.cli.main import main

    args = "--task image-classification --model.name vgg-small --image_size 4 --n_docs 2 --images_per_doc 2"
    code = main(["run", *args.split(), "--out", str(tmp_path), "--threads", "1"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1
    assert "image.image_size (4) is too small for 3 VGG stages" in err


def test_a_classification_store_of_the_old_layout_stays_readable(runs, tmp_path):
    """Stores written before labels had their own place also kept them as docs/tokens, with a
    made-up docs/lengths: replays and the probes' masks read them as before."""
    import shutil

    import h5py

    from arprobe.tasks.registry import document_masks
    from arprobe.trainer.api import Replay

    old = tmp_path / "old" / "run.h5"
    old.parent.mkdir()
    shutil.copy(runs["vgg"].path, old)
    with h5py.File(old, "a") as f:
        f["docs/tokens"] = f["docs/labels"][:]
        f["docs/lengths"] = np.full(3, 8 * 8 + 1, np.int32)
    with RunStore(old) as s, RunStore(runs["vgg"].path) as new:
        masks = document_masks(s, 5)
        assert masks.shape == (3, 5) and masks.all()  # images have no padding
        (k,) = s.checkpoint_episodes()
        # The same task and model rebuilt from either layout: the same computation, bit for bit.
        np.testing.assert_array_equal(Replay(s, int(k), device="cpu").evaluate(),
                                      Replay(new, int(k), device="cpu").evaluate())  # fmt: skip
