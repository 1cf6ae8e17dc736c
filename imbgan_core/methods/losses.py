"""Adversarial losses on discriminator logits: hinge (Miyato et al. 2018), relativistic (CBGAN Eq. 2-3 /
docs/reference.md#cbgan-loss: L_D = −mean log σ(D(x_r) − D(x_f)), L_G = −mean log σ(D(x_f) − D(x_r))) and non-saturating
(Goodfellow et al. 2014). Relativistic pairs the i-th real with the i-th fake logit (RSGAN)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("hinge", "relativistic", "nonsaturating")


def discriminator_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    if kind == "relativistic":
        return F.softplus(-(real - fake)).mean()
    if kind == "nonsaturating":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    raise ValueError(f"train.loss: unknown loss {kind!r} (valid: {', '.join(LOSSES)})")


def generator_loss(kind: str, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
    if kind == "hinge":
        return -fake.mean()
    if kind == "relativistic":
        return F.softplus(-(fake - real)).mean()
    if kind == "nonsaturating":
        return F.softplus(-fake).mean()
    raise ValueError(f"train.loss: unknown loss {kind!r} (valid: {', '.join(LOSSES)})")
