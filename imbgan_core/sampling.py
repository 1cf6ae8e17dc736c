"""Seeded, checkpointable sampling of real-image batches from an in-memory training split.

Uniform: epochs of a random permutation (every image once per epoch). Weighted (``class_weights``, e.g.
oversampling, and/or per-image ``sample_weights``, e.g. ensemble reweighting): "epochs" of N draws with replacement,
image weight = its class's weight x its own weight. The position inside the
current epoch, the epoch's order and the generator state are all in ``state_dict()``, so a resumed run draws
exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import torch


class BatchSampler:
    def __init__(self, labels: torch.Tensor, batch_size: int, seed: int, class_weights: list[float] | None = None,
                 sample_weights: torch.Tensor | None = None):
        self.n = int(labels.shape[0])
        self.batch_size = batch_size
        self.gen = torch.Generator().manual_seed(seed)
        self.weights = None
        if class_weights is not None:
            if len(class_weights) <= int(labels.max()) or sum(class_weights) <= 0:
                raise ValueError(f"class sampling weights {class_weights} do not cover the labels")
            self.weights = torch.tensor(class_weights, dtype=torch.float64)[labels]
        if sample_weights is not None:  # per-image weights (ensemble reweighting, Slim 2020 Sec. 5.2), x class weights
            sample_weights = torch.as_tensor(sample_weights, dtype=torch.float64).cpu()
            if sample_weights.shape != (self.n,) or (sample_weights < 0).any() or sample_weights.sum() <= 0:
                raise ValueError(f"sample weights must be {self.n} values >= 0 with a positive sum, "
                                 f"got shape {tuple(sample_weights.shape)}")
            self.weights = sample_weights if self.weights is None else self.weights * sample_weights
        self.order = self._new_epoch()
        self.position = 0

    def _new_epoch(self) -> torch.Tensor:
        if self.weights is None:
            return torch.randperm(self.n, generator=self.gen)
        return torch.multinomial(self.weights, self.n, replacement=True, generator=self.gen)

    def next(self) -> torch.Tensor:
        """Indices of the next batch (an epoch boundary inside a batch continues in a fresh epoch)."""
        parts, need = [], self.batch_size
        while need > 0:
            if self.position >= self.n:
                self.order, self.position = self._new_epoch(), 0
            take = self.order[self.position:self.position + need]
            parts.append(take)
            self.position += take.numel()
            need -= take.numel()
        return torch.cat(parts)

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "order": self.order.clone(), "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
        self.order = state["order"].clone()
        self.position = int(state["position"])
