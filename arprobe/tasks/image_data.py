"""Images for the cycle: read a source, sample the images a run uses, bring them to one size, and
(for causal image modelling) quantise them to a palette.

Sources (``data.source``; the text default ``pydoc`` means ``digits`` for image tasks):

- ``"digits"``: the 1,797 8x8 handwritten digits that ship with scikit-learn
  (``sklearn.datasets.load_digits``, no download), grey levels 0..16 scaled to 0..255, upsampled.
- a folder with one subfolder of images per class (torchvision's ``ImageFolder`` layout), or a flat
  folder of images (no labels: image-lm only).
- a ``save_to_disk`` folder or a hub dataset id (``uoft-cs/cifar10``), via ``datasets``; the image
  column is ``image.image_field`` (empty: the first column of images), the label column
  ``image.label_field`` (empty: the first class-label column, or ``label``/``labels``).

Every image becomes RGB uint8 [H, W, 3] of side ``image.image_size``: resized straight to it, or
(``image.resize`` > 0, paper App. A.3) its shorter side resized to ``resize`` then centre-cropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arprobe.errors import UserError
from arprobe.models.hub import looks_like_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class Images:
    pixels: np.ndarray  # uint8 [N, H, W, 3], in sampled order
    labels: np.ndarray | None  # int64 [N], None when the source has none
    indices: np.ndarray  # int64 [N]: index of each image in the source
    class_names: list[str] | None
    provenance: str


def require_sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise UserError(
            "scikit-learn is needed for the digits data and the k-means palette; "
            'install it with pip install -e ".[vision]".'
        ) from None


def load_images(cfg, n: int) -> Images:
    """``n`` images sampled without replacement (seeded by ``cfg.seed``) from ``cfg.data.source``."""
    d, im = cfg.data, cfg.image
    source = "digits" if d.source in ("pydoc", "digits") else d.source
    rng = np.random.default_rng(cfg.seed)
    if source == "digits":
        return _digits(n, rng, im)
    path = Path(source).expanduser()
    if path.is_dir() and not _is_saved_dataset(path):
        return _folder(path, n, rng, im)

    if not path.exists() and looks_like_path(source):
        raise UserError(f"Data source '{source}' does not exist.")
    return _dataset(source, path, n, rng, cfg)


def _sample(total: int, n: int, rng: np.random.Generator, where: str) -> np.ndarray:
    if total < n:
        raise UserError(
            f"{where} has {total} images but the run needs {n} (data.n_docs x image.images_per_doc); "
            "lower one of them or use more data."
        )
    return np.sort(rng.choice(total, size=n, replace=False)) if n < total else np.arange(total)


def _order(indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Sampled in sorted order (cheap reads), then shuffled so documents mix classes.
    return indices[rng.permutation(len(indices))]


def _digits(n: int, rng: np.random.Generator, im) -> Images:
    require_sklearn()
    # lazy: optional extra
    from sklearn.datasets import load_digits

    digits = load_digits()
    idx = _order(_sample(len(digits.images), n, rng, "scikit-learn's digits"), rng)
    grey = np.round(digits.images[idx] * (255 / 16)).astype(np.uint8)  # [n, 8, 8], 0..16 -> 0..255
    pixels = np.stack([to_size(np.repeat(g[:, :, None], 3, 2), im.image_size, im.resize) for g in grey])
    return Images(
        pixels=pixels,
        labels=digits.target[idx].astype(np.int64),
        indices=idx.astype(np.int64),
        class_names=[str(c) for c in range(10)],
        provenance=f"scikit-learn digits (8x8, {len(digits.images)} images) resized to "
        f"{im.image_size}x{im.image_size}",
    )


def _folder(path: Path, n: int, rng: np.random.Generator, im) -> Images:
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and _image_files(p))
    if classes:
        files, labels = [], []
        for c, name in enumerate(classes):
            found = _image_files(path / name)
            files += found
            labels += [c] * len(found)
    else:
        files, labels = _image_files(path), None
    if not files:
        raise UserError(f"Image folder '{path}' holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    idx = _order(_sample(len(files), n, rng, f"Image folder '{path}'"), rng)
    pixels = np.stack([to_size(_read_image(files[i]), im.image_size, im.resize) for i in idx])
    kind = f"{len(classes)} class folders" if classes else "no class folders"
    return Images(
        pixels=pixels,
        labels=np.asarray(labels, dtype=np.int64)[idx] if labels is not None else None,
        indices=idx.astype(np.int64),
        class_names=classes or None,
        provenance=f"image folder {path} ({len(files)} images, {kind})",
    )


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_image(path: Path) -> np.ndarray:
    # lazy: optional extra
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError):
        raise UserError(f"Image '{path}' could not be read.") from None


def _is_saved_dataset(path: Path) -> bool:
    return any((path / f).is_file() for f in ("dataset_dict.json", "state.json", "dataset_info.json"))


def _dataset(source: str, path: Path, n: int, rng: np.random.Generator, cfg) -> Images:
    # lazy: datasets takes seconds to import; only this path needs it
    import datasets

    d, im = cfg.data, cfg.image
    if path.exists():
        loaded = datasets.load_from_disk(str(path))
        where = f"dataset '{path}'"
        if isinstance(loaded, datasets.DatasetDict):
            if d.split not in loaded:
                raise UserError(
                    f"Split '{d.split}' is not in {where} (splits: {', '.join(loaded)}); "
                    "set data.split to one of them."
                )
            loaded = loaded[d.split]
        kind = "save_to_disk folder"
    else:
        try:
            loaded = datasets.load_dataset(source, d.hf_config or None, split=d.split)
        except OSError:
            raise UserError(
                f"Dataset '{source}' is neither a local folder nor in the local Hugging Face cache; "
                "a hub dataset id needs network access or a local copy written with Dataset.save_to_disk."
            ) from None
        except ValueError as exc:
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
            raise UserError(f"Could not load dataset '{source}' (split '{d.split}'): {detail}.") from None
        where, kind = f"dataset '{source}'", "hub dataset"
    image_col = im.image_field or next(
        (c for c, f in loaded.features.items() if isinstance(f, datasets.Image)), ""
    )
    if image_col not in loaded.column_names:
        raise UserError(
            f"{where} has no image column{f' {image_col!r}' if image_col else ''} (columns: "
            f"{', '.join(loaded.column_names)}); set image.image_field."
        )
    label_col = im.label_field or next(
        (c for c, f in loaded.features.items() if isinstance(f, datasets.ClassLabel)),
        next((c for c in ("label", "labels") if c in loaded.column_names), ""),
    )
    if im.label_field and label_col not in loaded.column_names:
        raise UserError(
            f"{where} has no column '{label_col}' (columns: {', '.join(loaded.column_names)}); "
            "set image.label_field."
        )
    idx = _order(_sample(len(loaded), n, rng, where.capitalize()), rng)
    rows = loaded.select(idx.tolist())
    pixels = np.stack(
        [to_size(np.asarray(img.convert("RGB")), im.image_size, im.resize) for img in rows[image_col]]
    )
    labels, names = None, None
    if label_col:
        labels = np.asarray(rows[label_col], dtype=np.int64)
        feature = loaded.features[label_col]
        names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    return Images(
        pixels=pixels,
        labels=labels,
        indices=idx.astype(np.int64),
        class_names=names,
        provenance=f"{kind} {source}, split '{d.split}', image column '{image_col}'"
        + (f", labels '{label_col}'" if label_col else ", no labels")
        + f" ({len(loaded)} images)",
    )


def to_size(rgb: np.ndarray, size: int, resize: int = 0) -> np.ndarray:
    """uint8 [H, W, 3] -> [size, size, 3]: bilinear resize straight to ``size``, or the shorter side
    to ``resize`` then a centre crop of ``size``."""
    # lazy: optional extra
    from PIL import Image

    img = Image.fromarray(rgb.astype(np.uint8))
    if not resize:
        return np.asarray(img.resize((size, size), Image.BILINEAR))
    w, h = img.size
    scale = resize / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)))


# --- palette ------------------------------------------------------------------------------


def kmeans_palette(pixels: np.ndarray, n_colors: int, seed: int, max_points: int = 100_000) -> np.ndarray:
    """float32 [K, 3] in [0, 1]: k-means colour clusters of ``pixels`` (uint8 [..., 3]), sorted by
    brightness — Image GPT's colour palette, computed on the run's own images."""
    require_sklearn()
    # lazy: optional extra
    from sklearn.cluster import KMeans

    points = pixels.reshape(-1, 3).astype(np.float32) / 255.0
    distinct = len(np.unique(points, axis=0))
    if distinct < n_colors:
        raise UserError(
            f"image.n_colors ({n_colors}) exceeds the {distinct} distinct colours of the chosen images; "
            "lower image.n_colors."
        )
    rng = np.random.default_rng(seed)
    if len(points) > max_points:
        points = points[rng.choice(len(points), max_points, replace=False)]
    km = KMeans(n_clusters=n_colors, n_init=4, random_state=seed).fit(points)
    centres = km.cluster_centers_.astype(np.float32)
    return centres[np.argsort(centres.sum(1), kind="stable")]


def quantise(pixels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """int64 [...] nearest palette colour of each pixel of uint8 [..., 3]."""
    points = pixels.reshape(-1, 3).astype(np.float32) / 255.0
    out = np.empty(len(points), dtype=np.int64)
    for lo in range(0, len(points), 65536):  # bounded memory: [chunk, K] distances
        chunk = points[lo : lo + 65536]
        out[lo : lo + len(chunk)] = ((chunk[:, None, :] - palette[None]) ** 2).sum(-1).argmin(1)
    return out.reshape(pixels.shape[:-1])
