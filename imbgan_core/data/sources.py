"""Image sources: each returns its balanced training pool and a class-balanced evaluation split as uint8 images.

digits (scikit-learn's embedded 8x8 digits, the default), cifar10 / cifar100 (a local torchvision-format folder),
imagefolder (class subfolders of image files). The long tail is applied on top of the pool by ``load_dataset``.
All resizing goes through ``resize_images`` (one fixed filter) and all channel changes through ``to_channels``.
"""
from __future__ import annotations

import io
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from imbgan_core.cache import cached, content_hash
from imbgan_core.config import DatasetConfig
from imbgan_core.data.types import ImageDataset

EVAL_SPLIT_SEED = 0  # fixed on purpose: the held-out evaluation split never changes with the imbalance seed
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2, the weights PIL uses for "L"

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_CLASSES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest",
    "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard",
    "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum",
    "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper",
    "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf",
    "woman", "worm",
]


@dataclass(frozen=True)
class CifarLayout:
    """Where torchvision puts one CIFAR variant, and the sizes of its splits."""

    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    names_key: str
    class_names: tuple[str, ...]
    train_per_class: int
    test_per_class: int


CIFAR = {
    "cifar10": CifarLayout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                           "batches.meta", "labels", "label_names", tuple(CIFAR10_CLASSES), 5000, 1000),
    "cifar100": CifarLayout("cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names",
                            tuple(CIFAR100_CLASSES), 500, 100),
}


@dataclass
class SourceSplits:
    """What a source yields before the long tail: a balanced-as-available pool, the eval split, its identity."""

    pool: ImageDataset
    eval: ImageDataset
    identity: dict  # resolved root and a file fingerprint: enters LongTailData.spec


@dataclass
class Census:
    """Class names and per-class sizes of a source, known without decoding images (used by the CLI)."""

    class_names: list[str]
    pool_counts: list[int]
    eval_counts: list[int]


# ------------------------------------------------------------------------------------------------------------------
# Shared image helpers
# ------------------------------------------------------------------------------------------------------------------
def resize_images(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 N x C x H x W -> uint8 N x C x R x R with one fixed filter: bilinear, antialiased, no corner alignment."""
    if images.shape[-2:] == (resolution, resolution):
        return images
    x = F.interpolate(images.float(), size=(resolution, resolution), mode="bilinear", align_corners=False,
                      antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8)


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 N x C x H x W with C in {1, 3} -> ``channels``: grey is repeated, colour is reduced with luma weights."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        weights = torch.tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
        return (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise ValueError(f"cannot convert {have}-channel images to {channels} channels")


def split_eval(labels: np.ndarray, per_class: int, num_classes: int, class_names: list[str]
               ) -> tuple[np.ndarray, np.ndarray]:
    """(eval indices, pool indices): ``per_class`` held-out images per class, chosen with ``EVAL_SPLIT_SEED``.

    The pool keeps file order (Softlabel-GAN takes "the first s images" of a class from it).
    """
    rng = np.random.default_rng(EVAL_SPLIT_SEED)
    eval_idx = []
    for k in range(num_classes):
        members = np.flatnonzero(labels == k)
        if len(members) <= per_class:
            raise ValueError(f"dataset.eval_per_class: class {k} ({class_names[k]!r}) has {len(members)} images, "
                             f"need more than eval_per_class={per_class} to leave any for training")
        eval_idx.append(rng.permutation(members)[:per_class])
    eval_idx = np.sort(np.concatenate(eval_idx))
    pool_idx = np.setdiff1d(np.arange(len(labels)), eval_idx)
    return eval_idx, pool_idx


def _dataset(images: torch.Tensor, labels, class_names: list[str]) -> ImageDataset:
    return ImageDataset(images.contiguous(), torch.as_tensor(np.asarray(labels), dtype=torch.int64),
                        list(class_names))


# ------------------------------------------------------------------------------------------------------------------
# digits
# ------------------------------------------------------------------------------------------------------------------
def _digits_raw():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target.astype(np.int64), [str(k) for k in range(10)]


def load_digits_source(cfg: DatasetConfig) -> SourceSplits:
    """scikit-learn's digits (8x8, values 0..16), scaled to 0..255 and resized from the 8x8 original."""
    images, labels, names = _digits_raw()
    x = torch.from_numpy(images).float().mul(255.0 / 16.0).round().to(torch.uint8).unsqueeze(1)
    x = to_channels(resize_images(x, cfg.resolution), cfg.channels)
    eval_idx, pool_idx = split_eval(labels, cfg.eval_per_class, len(names), names)
    return SourceSplits(_dataset(x[pool_idx], labels[pool_idx], names), _dataset(x[eval_idx], labels[eval_idx], names),
                        {"root": None, "files": None})


def digits_census(cfg: DatasetConfig) -> Census:
    _, labels, names = _digits_raw()
    eval_idx, pool_idx = split_eval(labels, cfg.eval_per_class, len(names), names)
    return Census(names, np.bincount(labels[pool_idx], minlength=10).tolist(),
                  np.bincount(labels[eval_idx], minlength=10).tolist())


# ------------------------------------------------------------------------------------------------------------------
# cifar10 / cifar100
# ------------------------------------------------------------------------------------------------------------------
class _CifarUnpickler(pickle.Unpickler):
    """Only what the CIFAR batch files need (numpy arrays, bytes): a pickle cannot run arbitrary code here."""

    ALLOWED = {
        ("_codecs", "encode"), ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR file")
        return super().find_class(module, name)


def _read_cifar_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            data = _CifarUnpickler(io.BytesIO(fh.read()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable CIFAR batch file ({exc})") from None
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in data.items()}


def cifar_folder(cfg: DatasetConfig) -> Path:
    """The torchvision folder for the source; downloads only when ``download: true``, else a clear error."""
    layout = CIFAR[cfg.source]
    root = Path(cfg.root).expanduser().resolve()
    folder = root / layout.folder
    needed = [*layout.train_files, layout.test_file, layout.meta_file]
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing and cfg.download:
        from torchvision import datasets

        cls = datasets.CIFAR10 if cfg.source == "cifar10" else datasets.CIFAR100
        cls(str(root), train=True, download=True)
        missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"dataset.root: {cfg.source} files not found: expected {folder} with {', '.join(missing)} "
            f"(torchvision layout); set dataset.download: true to fetch them, or point dataset.root at the "
            f"folder that contains {layout.folder}/")
    return folder


def _cifar_split(folder: Path, files, layout: CifarLayout, cfg: DatasetConfig, names: list[str]) -> ImageDataset:
    parts, labels = [], []
    for name in files:
        batch = _read_cifar_pickle(folder / name)
        if "data" not in batch or layout.label_key not in batch:
            raise ValueError(f"{folder / name}: missing 'data' or {layout.label_key!r} in the CIFAR batch")
        parts.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(int(v) for v in batch[layout.label_key])
    x = torch.from_numpy(np.concatenate(parts))
    bad = [v for v in labels if not 0 <= v < len(names)]
    if bad:
        raise ValueError(f"{folder}: label {bad[0]} outside [0, {len(names)}) in the CIFAR files")
    return _dataset(to_channels(resize_images(x, cfg.resolution), cfg.channels), labels, names)


def load_cifar_source(cfg: DatasetConfig) -> SourceSplits:
    """CIFAR-10/100 from ``cfg.root``: the training set is the pool, the (balanced) test set the eval split."""
    layout = CIFAR[cfg.source]
    folder = cifar_folder(cfg)
    meta = _read_cifar_pickle(folder / layout.meta_file)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(layout.names_key, [])]
    if not names:
        raise ValueError(f"{folder / layout.meta_file}: no {layout.names_key!r} entry")
    pool = _cifar_split(folder, layout.train_files, layout, cfg, names)
    evaluation = _cifar_split(folder, (layout.test_file,), layout, cfg, names)
    return SourceSplits(pool, evaluation, {"root": str(folder), "files": _fingerprint(
        [folder / f for f in (*layout.train_files, layout.test_file, layout.meta_file)], folder)})


def cifar_census(cfg: DatasetConfig) -> Census:
    """Known sizes of the standard CIFAR files: no files needed."""
    layout = CIFAR[cfg.source]
    k = len(layout.class_names)
    return Census(list(layout.class_names), [layout.train_per_class] * k, [layout.test_per_class] * k)


# ------------------------------------------------------------------------------------------------------------------
# imagefolder
# ------------------------------------------------------------------------------------------------------------------
def scan_image_folder(root: str | Path) -> tuple[list[str], list[list[Path]]]:
    """(class names, image files per class) of ``root/<class>/<image>``; classes in sorted name order."""
    root_path = Path(root).expanduser().resolve()
    if not root_path.is_dir():
        state = "is a file, not a folder" if root_path.exists() else "does not exist"
        raise FileNotFoundError(f"dataset.root: image folder {root_path} {state}")
    class_dirs = sorted(p for p in root_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ValueError(f"dataset.root: {root_path} has no class subfolders (expected root/<class>/<image>)")
    files = []
    for class_dir in class_dirs:
        images = sorted(p for p in class_dir.iterdir()
                        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise ValueError(f"dataset.root: class folder {class_dir} has no images "
                             f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
        files.append(images)
    return [p.name for p in class_dirs], files


def _decode(path: Path) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)


def load_imagefolder_source(cfg: DatasetConfig, cache_dir=None) -> SourceSplits:
    """Every image as RGB resized to R x R (plain resize, aspect not kept), then ``cfg.channels``.

    Decoding is the slow part, so the resized RGB images are cached under the folder's fingerprint and the
    resolution (``cache.cached``, kind "imagefolder"). Mixed source sizes are fine (one warning when decoding); the
    eval split is ``eval_per_class`` held-out images per class.
    """
    names, files = scan_image_folder(cfg.root)
    _check_eval_room(names, files, cfg.eval_per_class)
    root = Path(cfg.root).expanduser().resolve()
    identity = {"root": str(root), "files": _fingerprint([p for fs in files for p in fs], root)}

    def build(tmp: Path) -> None:
        torch.save(_decode_all(files, cfg.resolution, root), tmp / "images.pt")

    path = cached("imagefolder", {"version": 1, **identity, "resolution": cfg.resolution}, build,
                  cache_dir=cache_dir, filename="images.pt")
    x = to_channels(torch.load(path, map_location="cpu", weights_only=True), cfg.channels)
    labels = np.repeat(np.arange(len(files)), [len(fs) for fs in files])
    eval_idx, pool_idx = split_eval(labels, cfg.eval_per_class, len(names), names)
    return SourceSplits(_dataset(x[pool_idx], labels[pool_idx], names),
                        _dataset(x[eval_idx], labels[eval_idx], names), identity)


def _decode_all(files: list[list[Path]], resolution: int, root: Path) -> torch.Tensor:
    """uint8 N x 3 x R x R in class-then-file order; warns once when the source sizes differ."""
    images, sizes = [], set()
    for class_files in files:
        for path in class_files:
            rgb = _decode(path)
            sizes.add(tuple(rgb.shape[1:]))
            images.append(resize_images(rgb.unsqueeze(0), resolution))
    if len(sizes) > 1:
        shown = ", ".join(f"{w}x{h}" for h, w in sorted(sizes)[:3])
        warnings.warn(f"{root}: images have {len(sizes)} different sizes ({shown}, ...); all are resized to "
                      f"{resolution}x{resolution}", stacklevel=2)
    return torch.cat(images)


def _check_eval_room(names: list[str], files: list[list[Path]], eval_per_class: int) -> None:
    """Every class needs more than eval_per_class images (checked before any image is decoded)."""
    too_small = [f"{n!r} ({len(fs)})" for n, fs in zip(names, files, strict=True) if len(fs) <= eval_per_class]
    if too_small:
        raise ValueError(f"dataset.eval_per_class: classes {', '.join(too_small)} need more than "
                         f"eval_per_class={eval_per_class} images to leave any for training")


def imagefolder_census(cfg: DatasetConfig) -> Census:
    names, files = scan_image_folder(cfg.root)
    _check_eval_room(names, files, cfg.eval_per_class)
    return Census(names, [len(fs) - cfg.eval_per_class for fs in files], [cfg.eval_per_class] * len(names))


def _fingerprint(paths: list[Path], root: Path) -> str:
    """Hash of relative names, sizes and modification times: a changed folder gives a new data spec."""
    entries = []
    for p in paths:
        st = os.stat(p)
        entries.append([str(p.relative_to(root)), st.st_size, st.st_mtime_ns])
    return content_hash(entries)


LOADERS = {"digits": load_digits_source, "cifar10": load_cifar_source, "cifar100": load_cifar_source,
           "imagefolder": load_imagefolder_source}
CENSUS = {"digits": digits_census, "cifar10": cifar_census, "cifar100": cifar_census,
          "imagefolder": imagefolder_census}


EMBEDDED = ("digits",)  # sources that ship with the code: every other one reads dataset.root


def root_problem(cfg: DatasetConfig) -> str | None:
    """The one check that a source which reads local files was given its folder (config validation uses it)."""
    if cfg.source in LOADERS and cfg.source not in EMBEDDED and not cfg.root:
        return f"dataset.root: required for source {cfg.source!r} (a local folder)"
    return None


def check_source(cfg: DatasetConfig, need_root: bool = True) -> None:
    """Unknown source or a missing root: a clear error before any work (CIFAR counts alone need no root)."""
    if cfg.source not in LOADERS:
        raise ValueError(f"dataset.source: unknown source {cfg.source!r} (valid: {', '.join(LOADERS)})")
    problem = root_problem(cfg) if need_root else None
    if problem:
        raise ValueError(problem)
