"""cbgan — the class-balancing regularizer of Rangwani et al. (UAI 2021), Eq. 5-7 and App. 6.4.1.

Effective class counts N̂_k start at ``init_count`` (50, the official code); during a cycle the pretrained
classifier's argmax on generated images (before DiffAugment) is counted as c_k; at the end of each cycle
N̂ ← (1 − α) N̂ + β c (Eq. 5, β = 1 or β = α), clamped to ≥ 1 (official code). The generator minimises
λ/K · Σ_k w_k p̄_k log p̄_k with p̄ the batch mean of C's softmax (Eq. 7, λ/K per App. 6.4.1). The weights are the
official code's w_k = (1/N̂_k) normalised to sum to K, not Eq. 6-7's 1/N_k with N_k = N̂_k / Σ_j N̂_j: Eq. 7's
weights are 1/N_k = c·w_k with c = (Σ_j N̂_j)(Σ_j 1/N̂_j) / K, a factor ≥ K (= K when all N̂ are equal) that
changes at every cycle end as N̂ does. The per-class ratios, and so the minimiser of Eq. 7 alone at fixed N̂
(Propositions 1-2), are the same; the strength against the GAN loss differs: the project's term is Eq. 7's L_reg
times λ/(K·c), not λ/K. The official code does the same (docs/reference.md#cbgan-weights; counts, clamp and
cycle update: #cbgan-counts; the λ/K weighting: #cbgan-reg).
"""
from __future__ import annotations

import torch

from imbgan_core.classifier import differentiable_copy

from ..config import Param
from .base import Method


def update_effective_counts(counts: torch.Tensor, cycle_counts: torch.Tensor, alpha: float, beta_mode: str
                            ) -> torch.Tensor:
    """Eq. 5: N̂ ← (1 − α) N̂ + β c with β = 1 ("one") or β = α ("alpha"); clamped to ≥ 1."""
    beta = 1.0 if beta_mode == "one" else alpha
    return ((1 - alpha) * counts + beta * cycle_counts).clamp_min(1.0)


def class_weights_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """w_k = (1/N̂_k) normalised to sum to K (official code; Eq. 7's 1/N_k divided by (ΣN̂)(Σ1/N̂)/K)."""
    inv = 1.0 / counts
    return inv * (counts.numel() / inv.sum())


def balance_regularizer(probs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ_k w_k p̄_k log p̄_k with p̄ the batch-mean softmax (Eq. 7); minimising it spreads mass to low-N̂ classes."""
    p_mean = probs.mean(dim=0)
    return (weights * p_mean * torch.log(p_mean.clamp_min(1e-12))).sum()


class CBGAN(Method):
    name = "cbgan"
    param_specs = {  # Rangwani et al. Eq. 5-7, App. 6.4.1: lambda/K * sum_k w_k pbar_k log pbar_k; N_k decays per cycle
        "lambda": Param(7.5, float, 0.0, None, ref="CBGAN Table 5 / App. 6.4.1; CIFAR-10 rho=10 -> 7.5"),
        "alpha": Param(0.5, float, 0.0, 1.0, low_open=True, ref="CBGAN Eq. 6, forgetting factor; default 0.5"),
        "beta": Param("one", str, choices=("one", "alpha"), ref="CBGAN Eq. 6: beta = 1 or beta = alpha"),
        "cycle": Param(2000, int, 1, None, ref="CBGAN Sec. 4 / Fig. 6, update_every = 2000"),
        "init_count": Param(50.0, float, 1.0, None, ref="docs/reference.md#cbgan-counts: N_k starts at 50"),
        "fake_labels": Param("uniform", str, choices=("uniform", "inverse_count"),
                             ref="docs/reference.md#cbgan-fake-labels: uniform or ∝ 1/N_k"),
    }
    default_loss = "relativistic"  # CBGAN Eq. 2-3 and 17 / docs/reference.md#cbgan-loss
    needs_classifier = True

    def __init__(self, params, num_classes, assets=None, device="cpu"):
        super().__init__(params, num_classes, assets, device)
        classifier = getattr(assets, "classifier", None)
        if classifier is None:
            raise ValueError("method 'cbgan' needs the pretrained classifier (assets.classifier), got None")
        self.classifier = differentiable_copy(classifier, self.device)
        self.counts = torch.full((num_classes,), float(params["init_count"]), dtype=torch.float64)
        self.cycle_counts = torch.zeros(num_classes, dtype=torch.float64)

    def fake_labels(self, n, gen):
        """Uniform classes, or ∝ 1/N̂_k with ``fake_labels: inverse_count`` (CBGAN App. 6.4.3, iNaturalist)."""
        if self.params["fake_labels"] == "uniform":
            return super().fake_labels(n, gen)
        return torch.multinomial(1.0 / self.counts, n, replacement=True, generator=gen).to(self.device)

    def generator_terms(self, generator, z, y, fake, gen):
        if fake.dim() == 4:  # the layout of differentiable_copy's weights
            fake = fake.contiguous(memory_format=torch.channels_last)
        probs = torch.softmax(self.classifier(fake).float(), dim=1)
        self.cycle_counts += torch.bincount(probs.argmax(dim=1), minlength=self.num_classes).double().cpu()
        weights = class_weights_from_counts(self.counts).to(probs)
        reg = balance_regularizer(probs, weights)
        return {"cbgan_reg": self.params["lambda"] / self.num_classes * reg}

    def after_step(self, step):
        if step % self.params["cycle"] == 0:
            self.counts = update_effective_counts(self.counts, self.cycle_counts, self.params["alpha"],
                                                  self.params["beta"])
            self.cycle_counts = torch.zeros_like(self.cycle_counts)

    def state_dict(self):
        return {"counts": self.counts.clone(), "cycle_counts": self.cycle_counts.clone()}

    def load_state_dict(self, state):
        self.counts = state["counts"].to(torch.float64).clone()
        self.cycle_counts = state["cycle_counts"].to(torch.float64).clone()
