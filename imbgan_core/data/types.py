"""The one dataset type every source returns."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ImageDataset:
    """Images as uint8 tensors N x C x H x W (0..255) with int64 labels in [0, K)."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def as_float(self, idx=None) -> torch.Tensor:
        """Images scaled to [-1, 1] float32 (the range G outputs and every network consumes)."""
        x = self.images if idx is None else self.images[idx]
        return x.float().div(127.5).sub(1.0)


@dataclass
class LongTailData:
    """A long-tailed training split, a class-balanced evaluation split, and class groups for tail metrics.

    ``spec`` is a plain dict of everything that determined the data (source, imbalance, resolution, ...):
    caches key on its content hash so that a changed spec never reuses stale files.
    """

    train: ImageDataset
    eval: ImageDataset
    groups: dict[str, list[int]]  # {"many": [...], "medium": [...], "few": [...]} class indices
    spec: dict = field(default_factory=dict)
    pool: ImageDataset | None = None  # balanced pool not used for training (digits): extra annotator data

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def class_names(self) -> list[str]:
        return self.train.class_names
