"""Vision through the task seam (paper Sec. 3.4): causal image modelling and image classification.

``ImageLM`` (``--task image-lm``, App. A.2): a document is ``image.images_per_doc`` images whose
pixels are mapped to the nearest colour of a K-colour palette (k-means on the run's images, or a
pretrained Image GPT's own clusters) and read in raster order after a start token (id K): the
row [SOS, p_1 .. p_L]. The model reads [SOS, p_1 .. p_(L-1)] and predicts p_1 .. p_L; the loss is
the mean cross-entropy over the L pixel tokens.

``ImageClassification`` (``--task image-classification``, App. A.3): a document is a batch of
``image.images_per_doc`` labelled images; one step is one Adam step on the whole batch; the loss
is the mean cross-entropy over its images.

Data randomness of a training step (off by default): a horizontal flip of each image with
probability ``image.hflip_prob``; for classification also a random translation by up to
``image.crop_pad`` pixels (a random crop of the zero-padded image); for image-lm, masking of
input pixel tokens with ``data.mask_prob`` (replaced by the start token).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from arprobe.errors import UserError
from arprobe.models.text import resolve_device
from arprobe.models.vision import (
    _loading_errors,
    _source,
    load_classifier,
    load_image_lm,
    vision_model_from_info,
)
from arprobe.tasks.base import Prepared, Task
from arprobe.tasks.image_data import kmeans_palette, load_images, quantise
from arprobe.tasks.text import batched_attention, eval_batch_size, token_nll

# Built-in classifiers see pixels in [-1, 1]; a hub classifier its own processor's mean/std.
DEFAULT_MEAN, DEFAULT_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


# --- causal image modelling ------------------------------------------------------------------


class ImageLM(Task):
    name = "image-lm"

    def __init__(
        self,
        tokens: torch.Tensor,  # int64 [T, L + 1]: start token, then L pixel tokens
        *,
        images_per_doc: int,  # n: the L pixels are n images of side ``side`` in raster order
        side: int,
        hflip_prob: float = 0.0,
        mask_prob: float = 0.0,
        mask_id: int = 0,
        eval_batch: int = 0,
    ):
        self.tokens = tokens
        self.n_docs, L1 = tokens.shape
        self.images_per_doc, self.side = images_per_doc, side
        assert L1 - 1 == images_per_doc * side * side, "tokens must be [SOS, n x side x side pixels]"
        self.hflip_prob, self.mask_prob, self.mask_id = hflip_prob, mask_prob, mask_id
        self.eval_batch = eval_batch_size(eval_batch, L1 - 1)
        self.eval_lengths = torch.full((self.n_docs,), L1, dtype=torch.long, device=tokens.device)
        if hflip_prob:
            grid = tokens[:, 1:].view(self.n_docs, images_per_doc, side, side)
            self.flipped = torch.cat([tokens[:, :1], grid.flip(-1).reshape(self.n_docs, -1)], 1)
        self.data_note = f"{self.n_docs} documents of {images_per_doc} image(s), {L1 - 1} pixel tokens each"
        self.kept: dict[str, np.ndarray] = {}  # more docs/* arrays (images, labels, palette)

    @classmethod
    def prepare(cls, cfg) -> Prepared:
        return prepare_image(cfg)

    @classmethod
    def from_store(cls, store, cfg, *, model: torch.nn.Module, device: torch.device) -> ImageLM:
        return cls.from_documents(store.doc_arrays(), cfg, device=device)

    @classmethod
    def model_from_info(cls, info: dict, cfg) -> torch.nn.Module:
        return vision_model_from_info(info, cfg, causal=True)

    @classmethod
    def validate_config(cls, cfg) -> None:
        _refuse_text_shift(cfg)
        if cfg.image.crop_pad:
            raise UserError("image.crop_pad is for image-classification; image-lm takes image.hflip_prob.")

    @classmethod
    def from_documents(cls, arrays, cfg, *, device) -> ImageLM:
        """From the arrays ``store_arrays`` wrote (``docs/*`` of a store) and a RunConfig."""
        tokens = torch.as_tensor(np.asarray(arrays["tokens"]), dtype=torch.long, device=device)
        images = np.asarray(arrays["images"])  # [T, n, H, W, 3]
        return cls(
            tokens,
            images_per_doc=images.shape[1],
            side=images.shape[2],
            hflip_prob=cfg.image.hflip_prob,
            mask_prob=cfg.data.mask_prob,
            mask_id=int(arrays["palette"].shape[0]),
            eval_batch=cfg.eval_batch_size,
        )

    def training_batch(self, doc: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """(input_ids [1, L], labels [1, L]): the document, each image flipped with probability
        hflip_prob, inputs masked with probability mask_prob (labels keep the real pixels)."""
        row = self.tokens[doc]
        if self.hflip_prob:
            flip = torch.rand(self.images_per_doc, generator=generator) < self.hflip_prob
            per_token = torch.cat([torch.zeros(1, dtype=torch.bool), flip.repeat_interleave(self.side**2)])
            row = torch.where(per_token.to(row.device), self.flipped[doc], row)
        inputs, labels = row[:-1], row[1:]
        if self.mask_prob:
            hit = torch.rand(inputs.shape, generator=generator) < self.mask_prob
            inputs = torch.where(hit.to(inputs.device), torch.full_like(inputs, self.mask_id), inputs)
        return {"input_ids": inputs[None], "labels": labels[None]}

    def batch_loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return token_nll(model(input_ids=batch["input_ids"]).logits, batch["labels"], reduction="mean")

    @torch.inference_mode()
    def eval_losses(
        self, model: torch.nn.Module, after_batch: Callable[[int, int], None] | None = None
    ) -> torch.Tensor:
        with _eval_mode(model):
            losses = []
            for lo in range(0, self.n_docs, self.eval_batch):
                rows = self.tokens[lo : lo + self.eval_batch]
                losses.append(_lm_losses(model(input_ids=rows[:, :-1]).logits, rows[:, 1:]))
                if after_batch is not None:
                    after_batch(lo, lo + len(rows))
            return torch.cat(losses)

    def forward_docs(self, model: torch.nn.Module, docs: list[int]) -> None:
        model(input_ids=self.tokens[torch.as_tensor(docs, device=self.tokens.device), :-1])

    def per_document_grads(
        self, model: torch.nn.Module, params: dict[str, torch.Tensor], *, chunk: int, method: str = "vmap"
    ) -> Iterator[list[torch.Tensor]]:
        def loss_of(call, row: torch.Tensor) -> torch.Tensor:
            return _lm_losses(call(input_ids=row[None, :-1]).logits, row[None, 1:])[0]

        return _per_document_grads(model, params, loss_of, (self.tokens,), chunk=chunk, method=method)

    def store_arrays(self) -> dict[str, np.ndarray]:
        return {
            "tokens": self.tokens.cpu().numpy().astype(np.int32),
            "lengths": self.eval_lengths.cpu().numpy().astype(np.int32),
            **self.kept,
        }


def _lm_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-document mean cross-entropy [B] of ``logits`` [B, L, V] against ``targets`` [B, L]."""
    return token_nll(logits, targets).view(targets.shape).mean(1)


# --- image classification --------------------------------------------------------------------


class ImageClassification(Task):
    name = "image-classification"

    def __init__(
        self,
        images: torch.Tensor,  # uint8 [T, B, H, W, 3]
        labels: torch.Tensor,  # int64 [T, B]
        *,
        mean: tuple[float, float, float] = DEFAULT_MEAN,
        std: tuple[float, float, float] = DEFAULT_STD,
        hflip_prob: float = 0.0,
        crop_pad: int = 0,
        eval_batch: int = 0,  # documents per eval forward (0: about 256 images)
        dtype: torch.dtype = torch.float32,
    ):
        self.images, self.labels = images, labels
        self.n_docs, self.batch_size = labels.shape
        mean_t = torch.tensor(mean, device=images.device).view(1, 1, 3, 1, 1)
        std_t = torch.tensor(std, device=images.device).view(1, 1, 3, 1, 1)
        # [T, B, 3, H, W], normalised once
        self.pixels = ((images.permute(0, 1, 4, 2, 3).float() / 255.0 - mean_t) / std_t).to(dtype)
        self.hflip_prob, self.crop_pad = hflip_prob, crop_pad
        self.eval_batch = eval_batch or max(1, 256 // self.batch_size)
        side = images.shape[2]
        self.data_note = f"{self.n_docs} batches of {self.batch_size} images ({side}x{side})"
        self.kept: dict[str, np.ndarray] = {}  # more docs/* arrays (images, labels)

    @classmethod
    def prepare(cls, cfg) -> Prepared:
        return prepare_image(cfg)

    @classmethod
    def from_store(cls, store, cfg, *, model: torch.nn.Module, device: torch.device) -> ImageClassification:
        """From the stored images and labels (``docs/labels``; stores written before labels had
        their own place keep them there too) and the normalisation the run used."""
        info = store.model_info
        return cls.from_documents(
            store.doc_arrays(),
            cfg,
            device=device,
            mean=info.get("pixel_mean", DEFAULT_MEAN),
            std=info.get("pixel_std", DEFAULT_STD),
            dtype=next(model.parameters()).dtype,
        )

    @classmethod
    def model_from_info(cls, info: dict, cfg) -> torch.nn.Module:
        return vision_model_from_info(info, cfg, causal=False)

    @classmethod
    def validate_config(cls, cfg) -> None:
        _refuse_text_shift(cfg)
        if cfg.data.mask_prob:
            raise UserError(
                "data.mask_prob masks tokens (text-lm, image-lm); "
                "image-classification takes image.crop_pad / image.hflip_prob."
            )

    @classmethod
    def from_documents(cls, arrays, cfg, *, device, mean=DEFAULT_MEAN, std=DEFAULT_STD, dtype=torch.float32):
        return cls(
            torch.as_tensor(np.asarray(arrays["images"]), device=device),
            torch.as_tensor(np.asarray(arrays["labels"]), dtype=torch.long, device=device),
            mean=tuple(mean),
            std=tuple(std),
            hflip_prob=cfg.image.hflip_prob,
            crop_pad=cfg.image.crop_pad,
            eval_batch=cfg.eval_batch_size,
            dtype=dtype,
        )

    def training_batch(self, doc: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """(pixel_values [B, 3, H, W], labels [B]), each image flipped and translated as configured."""
        x = self.pixels[doc]
        B = x.shape[0]
        if self.hflip_prob:
            flip = (torch.rand(B, generator=generator) < self.hflip_prob).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self.crop_pad:
            p, H, W = self.crop_pad, x.shape[2], x.shape[3]
            padded = F.pad(x, (p, p, p, p))
            dy, dx = torch.randint(0, 2 * p + 1, (2, B), generator=generator).tolist()
            x = torch.stack([padded[i, :, dy[i] : dy[i] + H, dx[i] : dx[i] + W] for i in range(B)])
        return {"pixel_values": x, "labels": self.labels[doc]}

    def batch_loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(logits_of(model(pixel_values=batch["pixel_values"])).float(), batch["labels"])

    @torch.inference_mode()
    def eval_losses(
        self, model: torch.nn.Module, after_batch: Callable[[int, int], None] | None = None
    ) -> torch.Tensor:
        """Mean cross-entropy of each batch [T]. Images go through the model image-major (the first
        image of every document, then the second, ...), so row ``j`` of a recorded activation is the
        first image of document ``start + j``: activations are recorded for each document's first image."""
        with _eval_mode(model):
            losses = []
            for lo in range(0, self.n_docs, self.eval_batch):
                x, y = self.pixels[lo : lo + self.eval_batch], self.labels[lo : lo + self.eval_batch]
                n, B = y.shape
                logits = logits_of(model(pixel_values=x.transpose(0, 1).reshape(n * B, *x.shape[2:])))
                nll = F.cross_entropy(logits.float(), y.t().reshape(-1), reduction="none")  # [B * n]
                losses.append(nll.view(B, n).mean(0))
                if after_batch is not None:
                    after_batch(lo, lo + n)
            return torch.cat(losses)

    def forward_docs(self, model: torch.nn.Module, docs: list[int]) -> None:
        model(pixel_values=self.pixels[torch.as_tensor(docs, device=self.pixels.device), 0])

    def per_document_grads(
        self, model: torch.nn.Module, params: dict[str, torch.Tensor], *, chunk: int, method: str = "vmap"
    ) -> Iterator[list[torch.Tensor]]:
        def loss_of(call, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(logits_of(call(pixel_values=x)).float(), y)

        return _per_document_grads(
            model, params, loss_of, (self.pixels, self.labels), chunk=chunk, method=method
        )

    def store_arrays(self) -> dict[str, np.ndarray]:
        """``images`` [T, B, H, W, 3] and ``labels`` [T, B] are the documents (and where they came
        from); there are no tokens and no padding."""
        return {"labels": self.labels.cpu().numpy().astype(np.int32), **self.kept}


def logits_of(out) -> torch.Tensor:
    """Logits of a built-in model (a tensor) or a Hugging Face one (``.logits``)."""
    return out if isinstance(out, torch.Tensor) else out.logits


# --- shared ----------------------------------------------------------------------------------


def _refuse_text_shift(cfg) -> None:
    if cfg.data.max_shift:
        raise UserError(
            "data.max_shift shifts text windows; image tasks take image.crop_pad / image.hflip_prob."
        )


class _eval_mode:
    """The model in eval mode for a pass (dropout is off in arprobe runs anyway)."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.was = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was)


def _per_document_grads(model, params, loss_of, data: tuple, *, chunk: int, method: str):
    """Gradient of each document's loss w.r.t. ``params``: ``loss_of(call, *doc_data)`` is the loss
    of one document, ``call`` the model's forward (the module itself, or a functional call).
    Yields one [n, *shape] tensor per parameter, ``chunk`` documents at a time; ``vmap`` vectorises,
    ``loop`` does one backward per document (for models vmap cannot batch)."""
    names, T = list(params), data[0].shape[0]
    if method == "loop":
        for lo in range(0, T, chunk):
            rows = []
            for t in range(lo, min(lo + chunk, T)):
                loss = loss_of(model, *(a[t] for a in data))
                grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
                rows.append(
                    [g if g is not None else torch.zeros_like(params[n]) for g, n in zip(grads, names)]
                )
            yield [torch.stack(column) for column in zip(*rows)]
        return
    assert method == "vmap", f"unknown per-document gradient method {method!r}"

    def one(p: dict[str, torch.Tensor], *doc) -> torch.Tensor:
        return loss_of(lambda **kw: functional_call(model, p, args=(), kwargs=kw), *doc)

    detached = {n: params[n].detach() for n in names}
    per_doc = vmap(grad(one), in_dims=(None,) + (0,) * len(data))
    for lo in range(0, T, chunk):
        with torch.no_grad(), batched_attention(data[0].device):  # CUDA: math SDPA, which vmap batches
            grads = per_doc(detached, *(a[lo : lo + chunk] for a in data))
        yield [grads[n] for n in names]


# --- setup -----------------------------------------------------------------------------------


def images_per_doc(cfg) -> int:
    """n: ``image.images_per_doc``, or the paper's (image-lm 1 image, classification 32 per batch)."""
    return cfg.image.images_per_doc or (1 if cfg.task == "image-lm" else 32)


def prepare_image_lm(cfg, images, grid: np.ndarray, device):
    """(loaded model, task, what the store keeps besides the images) of image-lm: pixels quantised to a
    palette (the model's clusters, or k-means on the run's images) and a start token."""
    d, im = cfg.data, cfg.image
    T, n = d.n_docs, images_per_doc(cfg)
    side = im.image_size
    if cfg.model.init == "pretrained":
        palette = pretrained_palette(cfg.model)
    else:
        palette = kmeans_palette(images.pixels, im.n_colors, cfg.seed)
    K = len(palette)
    pixels = quantise(grid, palette).reshape(T, -1)  # [T, L]
    tokens = np.concatenate([np.full((T, 1), K), pixels], 1)
    loaded = load_image_lm(cfg.model, seed=cfg.seed, n_colors=K, n_positions=tokens.shape[1] - 1)
    task = ImageLM(
        torch.as_tensor(tokens, dtype=torch.long, device=device),
        images_per_doc=n,
        side=side,
        hflip_prob=im.hflip_prob,
        mask_prob=d.mask_prob,
        mask_id=K,
        eval_batch=cfg.eval_batch_size,
    )
    extra = {"palette": palette.astype(np.float32)}
    origin = "the model's own clusters" if cfg.model.init == "pretrained" else "k-means on the run's images"
    loaded.info.update(mask_id=K, palette=f"{K} colours, {origin}")
    return loaded, task, extra


def prepare_classifier(cfg, images, grid: np.ndarray, kept_labels, device):
    """(loaded model, task, what the store keeps besides the images) of image-classification."""
    d, im = cfg.data, cfg.image
    if kept_labels is None:
        raise UserError(
            f"Data source '{d.source}' has no labels; image-classification needs labelled images "
            "(an image folder with one subfolder per class, or a dataset with a label column: "
            "image.label_field)."
        )
    if (kept_labels < 0).any():
        raise UserError(
            f"Data source '{d.source}' has unlabelled images (label -1, as some test splits do); "
            "choose a labelled split with data.split."
        )
    n_classes = len(images.class_names) if images.class_names else int(images.labels.max()) + 1
    loaded = load_classifier(
        cfg.model, seed=cfg.seed, image_size=im.image_size, patch_size=im.patch_size, n_classes=n_classes
    )
    mean, std = (
        processor_mean_std(cfg.model) if loaded.info["kind"] != "builtin" else (DEFAULT_MEAN, DEFAULT_STD)
    )
    task = ImageClassification(
        torch.as_tensor(grid, device=device),
        torch.as_tensor(kept_labels, dtype=torch.long, device=device),
        mean=mean,
        std=std,
        hflip_prob=im.hflip_prob,
        crop_pad=im.crop_pad,
        eval_batch=cfg.eval_batch_size,
        dtype=next(loaded.model.parameters()).dtype,
    )
    extra = {}
    loaded.info.update(
        pixel_mean=list(mean), pixel_std=list(std), n_classes=n_classes, class_names=images.class_names
    )
    return loaded, task, extra


def prepare_image(cfg) -> Prepared:
    """The image tasks' setup: images, palette (image-lm), model, names and the task."""
    # Here: the image sources and model builders load datasets and transformers.

    d, im = cfg.data, cfg.image
    T, n = d.n_docs, images_per_doc(cfg)
    device = resolve_device(cfg.model.device)
    images = load_images(cfg, T * n)
    grid = images.pixels.reshape(T, n, *images.pixels.shape[1:])  # [T, n, H, W, 3]
    kept_labels = images.labels.reshape(T, n) if images.labels is not None else None
    if cfg.task == "image-lm":
        loaded, task, extra = prepare_image_lm(cfg, images, grid, device)
    else:
        loaded, task, extra = prepare_classifier(cfg, images, grid, kept_labels, device)
    task.kept = {
        **extra,
        "images": grid,
        "labels": (kept_labels if kept_labels is not None else np.full((T, n), -1)).astype(np.int32),
        "source_index": images.indices.reshape(T, n).astype(np.int64),
    }
    info = dict(
        loaded.info, data=images.provenance, task=cfg.task, image_size=im.image_size, images_per_doc=n
    )
    return Prepared(
        model=loaded.model,
        names=loaded.names,
        task=task,
        texts=describe_documents(images.indices.reshape(T, n), kept_labels, images.class_names),
        model_info=info,
        device=device,
        data_provenance=images.provenance,
    )


def describe_documents(
    indices: np.ndarray, labels: np.ndarray | None, class_names: list[str] | None
) -> list[str]:
    """One line per document for people: "image 17 (label 3)", "8 images: 17 (label 3), ..."."""

    def one(i: int, label) -> str:
        if label is None:
            return f"{i}"
        name = class_names[label] if class_names and 0 <= label < len(class_names) else str(label)
        return f"{i} (label {name})"

    out = []
    for t, row in enumerate(indices):
        parts = [one(int(i), None if labels is None else int(labels[t, j])) for j, i in enumerate(row)]
        out.append(f"image {parts[0]}" if len(parts) == 1 else f"{len(parts)} images: " + ", ".join(parts))
    return out


def pretrained_palette(m) -> np.ndarray:
    """float32 [K, 3] in [0, 1]: the colour clusters of a pretrained Image GPT's image processor."""
    # lazy: transformers takes seconds to import; only this path needs it
    from transformers import AutoImageProcessor

    with _loading_errors(m.name, m.revision):
        processor = AutoImageProcessor.from_pretrained(_source(m.name), revision=m.revision or None)
    clusters = getattr(processor, "clusters", None)
    if clusters is None:
        raise UserError(
            f"Model '{m.name}' has no colour clusters in its image processor; "
            "pretrained image-lm needs Image GPT's."
        )
    return ((np.asarray(clusters, dtype=np.float32) + 1.0) / 2.0).clip(0, 1)  # Image GPT's are in [-1, 1]


def processor_mean_std(m) -> tuple[tuple, tuple]:
    """A hub classifier's normalisation from its image processor (defaults where it has none)."""
    # lazy: transformers takes seconds to import; only this path needs it
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(_source(m.name), revision=m.revision or None)
    except (OSError, ValueError):
        return DEFAULT_MEAN, DEFAULT_STD
    mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
    if mean is None or std is None:
        return DEFAULT_MEAN, DEFAULT_STD
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
