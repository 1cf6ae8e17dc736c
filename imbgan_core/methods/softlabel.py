"""softlabel — Softlabel-GAN (Katsumata et al. Eq. 3): real images are labelled with the pretrained classifier's
softmax, computed once per training image before any augmentation (``classifier.soft_labels``, cached with the
classifier); fakes keep one-hot labels of their uniformly drawn class."""
from __future__ import annotations

import torch

from .base import Method


class Softlabel(Method):
    name = "softlabel"
    soft_labels = True
    needs_classifier = True
    needs_soft_labels = True

    def __init__(self, params, num_classes, assets=None, device="cpu"):
        super().__init__(params, num_classes, assets, device)
        table = getattr(assets, "soft_labels", None)
        n_train = len(assets.data.train) if assets is not None else None
        if table is None or table.dim() != 2 or table.shape != (n_train, num_classes):
            shape = None if table is None else tuple(table.shape)
            raise ValueError(f"method 'softlabel' needs assets.soft_labels of shape ({n_train}, {num_classes}), "
                             f"got {shape}")
        self.table = table.to(self.device, torch.float32)

    def real_batch(self, x, y, index, gen):
        return x, self.table[index.to(self.device)]
