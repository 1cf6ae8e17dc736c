"""Building blocks shared by every backbone: spectral norm, conditional BatchNorm, the discriminator class head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def scaled(channels: int, width: float) -> int:
    """Channel count of a paper layer under the ``model.width`` multiplier (at least 1)."""
    return max(1, int(round(channels * width)))


def maybe_sn(module: nn.Module, use_sn: bool) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) when ``use_sn``; one power iteration per training forward."""
    return spectral_norm(module) if use_sn else module


def num_upsamplings(resolution: int) -> int:
    """Backbones start at 4x4 and double the size per block: log2(resolution / 4) blocks."""
    n = (resolution // 4).bit_length() - 1
    if resolution < 8 or 4 * 2**n != resolution:
        raise ValueError(f"model resolution must be a power of two >= 8, got {resolution}")
    return n


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose gain/bias come from a class embedding (de Vries et al. 2017; Miyato & Koyama 2018).

    ``num_classes == 0`` gives plain affine BatchNorm (the unconditional generator); labels are then ignored.
    """

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.conditional = num_classes > 0
        self.bn = nn.BatchNorm2d(channels, affine=not self.conditional)
        if self.conditional:
            self.gain = nn.Embedding(num_classes, channels)
            self.bias = nn.Embedding(num_classes, channels)
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        out = self.bn(x)
        if not self.conditional:
            return out
        return out * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


class LinearConditionalBatchNorm2d(nn.Module):
    """BigGAN's conditional BatchNorm: gain 1 + W_g c and bias W_b c from a conditioning vector c
    (shared class embedding concatenated with a latent chunk; Brock et al. 2019, Sec. 3 / App. B)."""

    def __init__(self, channels: int, cond_dim: int, use_sn: bool = True):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = maybe_sn(nn.Linear(cond_dim, channels, bias=False), use_sn)
        self.bias = maybe_sn(nn.Linear(cond_dim, channels, bias=False), use_sn)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * (1 + self.gain(cond))[:, :, None, None] + self.bias(cond)[:, :, None, None]


class ProjectionHead(nn.Module):
    """Class term of a projection discriminator: ⟨φ(x), V y⟩ (Miyato & Koyama 2018).

    ``mode``: "none" (unconditional D: no class term), "hard" (class indices) or "soft" (probability vectors,
    Softlabel-GAN Sec. 4.3: a spectrally normalised bias-free linear layer replaces the embedding).
    Both conditional modes use the same sn-Linear(K, F, bias=False): on a one-hot vector it *is* the
    sn-embedding lookup (the spectral norm of Vᵀ equals that of V), so hard and soft heads differ only in the
    labels they accept — which makes "Smooth-GAN with α = 0 equals cgan" hold bit for bit.
    """

    MODES = ("none", "hard", "soft")

    def __init__(self, features: int, num_classes: int, mode: str):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"projection mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.num_classes = num_classes
        self.embed = spectral_norm(nn.Linear(num_classes, features, bias=False)) if mode != "none" else None

    def as_probabilities(self, y: torch.Tensor) -> torch.Tensor:
        """Class indices -> one-hot; probability rows pass through (soft mode only)."""
        if y.dtype in (torch.int64, torch.int32):
            return F.one_hot(y.long(), self.num_classes).float()
        if self.mode == "hard":
            raise TypeError("hard-label projection takes class indices (int64), got a float tensor; "
                            "use a soft-label discriminator for probability vectors")
        if y.dim() != 2 or y.shape[1] != self.num_classes:
            raise ValueError(f"soft labels must be N x {self.num_classes} probability vectors, got {tuple(y.shape)}")
        return y

    def forward(self, features: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if self.embed is None:
            return features.new_zeros(features.shape[0])
        if y is None:
            raise ValueError("a conditional discriminator needs labels")
        probs = self.as_probabilities(y).to(features.dtype)
        return (features * self.embed(probs)).sum(dim=1)


class AuxiliaryClassifierDiscriminator(nn.Module):
    """ACGAN's discriminator (Odena et al. 2017, Sec. 3): one trunk φ gives the source logit ψ(φ(x)) and K class
    logits W φ(x) + b, so D outputs P(S | X) and P(C | X) from the same features; there is no projection term.

    ``trunk``: any backbone discriminator built with projection "none" (it must offer ``features`` and ``fc``).
    The class head is a spectrally normalised linear layer with bias, like the source head (CBGAN Sec. 4, "GAN
    Architecture": all its GANs, ACGAN included, use spectral normalisation in D). ``forward(x, y=None)`` ->
    N x (1 + K): column 0 is the source logit, columns 1..K the class logits; ``y`` is accepted for the common
    signature and ignored.
    """

    def __init__(self, trunk: nn.Module, num_classes: int):
        super().__init__()
        if getattr(trunk, "head", None) is None or trunk.head.mode != "none":
            raise ValueError("the ACGAN discriminator wraps a trunk without projection (projection 'none')")
        if num_classes < 2:
            raise ValueError(f"an auxiliary classifier needs at least 2 classes, got {num_classes}")
        self.num_classes = num_classes
        self.trunk = trunk
        self.classifier = spectral_norm(nn.Linear(trunk.fc.in_features, num_classes))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        features = self.trunk.features(x)
        return torch.cat([self.trunk.fc(features), self.classifier(features)], dim=1)


def split_source_and_class(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N source logits, N x K class logits) of an ``AuxiliaryClassifierDiscriminator`` output."""
    if logits.dim() != 2 or logits.shape[1] < 3:
        raise ValueError(f"expected N x (1 + K) ACGAN discriminator logits, got shape {tuple(logits.shape)}")
    return logits[:, 0], logits[:, 1:]
