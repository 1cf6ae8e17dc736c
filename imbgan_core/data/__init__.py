"""Long-tailed image data: ``load_dataset(cfg)`` -> ``LongTailData`` (train split, balanced eval split, groups).

Order of operations: the source yields a pool and a held-out balanced eval split; the imbalance profile fixes the
per-class training counts from the pool (``longtail.class_counts``); the chosen images form the training split and
the unused remainder stays available as ``LongTailData.pool``.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from imbgan_core.config import DatasetConfig
from imbgan_core.data.longtail import SOFTLABEL_PROFILES, class_counts, class_groups
from imbgan_core.data.sources import CENSUS, LOADERS, Census, check_source, load_imagefolder_source
from imbgan_core.data.types import ImageDataset, LongTailData

SPEC_VERSION = 1  # bump when the way images are produced changes, so cached artifacts are not reused

__all__ = ["ImageDataset", "LongTailData", "load_dataset", "describe", "class_counts", "class_groups",
           "training_counts"]


def training_counts(cfg: DatasetConfig, pool_counts: list[int], class_names: list[str]) -> list[int]:
    """Per-class training counts for a source whose pool holds ``pool_counts`` images per class.

    n_max is the smallest pool class, so every profile count exists in every class. Exception: ``imagefolder`` with
    profile ``none`` keeps the folder's own distribution (AnimeFace, Flowers, Cars are imbalanced as collected).
    """
    if cfg.source == "imagefolder" and cfg.imbalance.profile == "none":
        return list(pool_counts)
    return class_counts(cfg.imbalance, len(class_names), min(pool_counts), class_names)


def load_dataset(cfg: DatasetConfig, cache_dir=None) -> LongTailData:
    """Load ``cfg.source`` at ``cfg.resolution`` / ``cfg.channels`` as uint8 and apply the imbalance profile.

    ``cache_dir`` (default: ``cache.default_cache_dir()``) holds the decoded images of an image folder.
    """
    check_source(cfg)
    if cfg.source == "imagefolder":
        splits = load_imagefolder_source(cfg, cache_dir)
    else:
        splits = LOADERS[cfg.source](cfg)
    names = splits.pool.class_names
    counts = training_counts(cfg, splits.pool.counts(), names)
    train_idx, rest_idx = _choose(splits.pool.labels.numpy(), counts, cfg)
    spec = {
        "version": SPEC_VERSION,
        "source": cfg.source,
        **splits.identity,
        "resolution": cfg.resolution,
        "channels": cfg.channels,
        "eval_per_class": cfg.eval_per_class if cfg.source in ("digits", "imagefolder") else None,
        "imbalance": dataclasses.asdict(cfg.imbalance),
        "train_counts": counts,
    }
    return LongTailData(
        train=_subset(splits.pool, train_idx),
        eval=splits.eval,
        groups=class_groups(counts, cfg.groups),
        spec=spec,
        pool=_subset(splits.pool, rest_idx),
    )


def describe(cfg: DatasetConfig) -> dict:
    """Class names, train / eval counts and groups without decoding images (CIFAR needs no files at all)."""
    check_source(cfg, need_root=cfg.source == "imagefolder")
    census: Census = CENSUS[cfg.source](cfg)
    counts = training_counts(cfg, census.pool_counts, census.class_names)
    return {
        "source": cfg.source,
        "profile": cfg.imbalance.profile,
        "class_names": census.class_names,
        "train_counts": counts,
        "eval_counts": census.eval_counts,
        "groups": class_groups(counts, cfg.groups),
        "train_total": sum(counts),
        "eval_total": sum(census.eval_counts),
    }


def _choose(labels: np.ndarray, counts: list[int], cfg: DatasetConfig) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, remainder indices) into the pool, ``counts[k]`` images of class k.

    Exponential / step / none pick the images of a class with ``imbalance.seed`` (docs/reference.md#lt-sample-choice:
    "chosen with a fixed
    seed"); the Softlabel-GAN profiles take the first s images of each class in file order
    (docs/reference.md#lt-softlabel).
    """
    rng = np.random.default_rng(cfg.imbalance.seed)
    take_first = cfg.imbalance.profile in SOFTLABEL_PROFILES
    chosen = []
    for k, n in enumerate(counts):
        members = np.flatnonzero(labels == k)
        order = members if take_first else rng.permutation(members)
        chosen.append(order[:n])
    train_idx = np.sort(np.concatenate(chosen))
    return train_idx, np.setdiff1d(np.arange(len(labels)), train_idx)


def _subset(data: ImageDataset, idx: np.ndarray) -> ImageDataset:
    index = np.asarray(idx, dtype=np.int64)
    return ImageDataset(data.images[index].contiguous(), data.labels[index].clone(), list(data.class_names))
