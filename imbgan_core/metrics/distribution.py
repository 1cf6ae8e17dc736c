"""Class-distribution metrics from the annotator's labels of generated samples (CBGAN, Rangwani et al. Sec. 5).

``class_kl`` = KL(histogram of annotator argmax labels ‖ uniform): 0 when the generator covers every class equally
(given a balanced set of conditioning labels), log K when every sample lands in one class. ``class_accuracy`` = share
of samples whose annotator label equals their conditioning label, overall and per conditioning class.
"""
from __future__ import annotations

import math

import torch


def class_kl(predicted: torch.Tensor, num_classes: int) -> float:
    """KL(p̂ ‖ uniform) = Σ_k p̂_k log(K p̂_k), with 0 log 0 = 0 (CBGAN App. "KL Divergence w.r.t. Uniform")."""
    if predicted.numel() == 0:
        raise ValueError("class_kl needs at least one predicted label")
    histogram = torch.bincount(predicted.flatten().long(), minlength=num_classes).double()
    if histogram.numel() != num_classes:
        raise ValueError(f"predicted labels exceed num_classes = {num_classes}")
    p = histogram / histogram.sum()
    p = p[p > 0]
    return float((p * (p * num_classes).log()).sum())


def class_accuracy(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[float, list[float]]:
    """Share of samples the annotator assigns to their conditioning class: overall and per class (NaN if absent)."""
    if predicted.shape != labels.shape:
        raise ValueError(f"predicted {tuple(predicted.shape)} and labels {tuple(labels.shape)} differ in shape")
    correct = (predicted == labels).double()
    per_class = []
    for k in range(num_classes):
        in_class = labels == k
        per_class.append(float(correct[in_class].mean()) if in_class.any() else math.nan)
    return float(correct.mean()), per_class
