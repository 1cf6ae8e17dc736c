"""Content-style generator (Timilsina et al., "Long-Tail Class Generation via Content-Style based Transfer").

The paper maps z_C through a content map e_C shared by all classes and z_S with a learned class embedding w_n
through a style map e_S, feeding both to a StyleGAN2-ADA synthesis network. Deliberate simplification for
small-data CPU use: e_C and e_S are two small MLPs (StyleGAN-style, LReLU 0.2) and the synthesis network is
any unconditional imbgan backbone whose latent is [e_C(z_C), e_S(z_S, w_y)] — class information enters only
through the style code, as in the paper; no per-layer style modulation.
"""
from __future__ import annotations

import torch
from torch import nn

MAPPING_LRELU_SLOPE = 0.2  # StyleGAN mapping network


def mapping_mlp(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.LeakyReLU(MAPPING_LRELU_SLOPE), nn.Linear(d_out, d_out))


class ContentStyleGenerator(nn.Module):
    def __init__(self, backbone: nn.Module, content_dim: int, style_dim: int, num_classes: int):
        super().__init__()
        if backbone.z_dim != content_dim + style_dim:
            raise ValueError(f"backbone latent {backbone.z_dim} != content_dim {content_dim} + style_dim {style_dim}")
        self.z_dim, self.content_dim, self.style_dim = backbone.z_dim, content_dim, style_dim
        self.backbone = backbone
        self.content_map = mapping_mlp(content_dim, content_dim)
        self.class_embedding = nn.Embedding(num_classes, style_dim)
        self.style_map = mapping_mlp(2 * style_dim, style_dim)

    def style(self, z_s: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """e_S(z_S, w): the style code of latent z_S for class embedding w."""
        return self.style_map(torch.cat([z_s, w], dim=1))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z_c, z_s = z.split([self.content_dim, self.style_dim], dim=1)
        latent = torch.cat([self.content_map(z_c), self.style(z_s, self.class_embedding(y))], dim=1)
        return self.backbone(latent)

    def style_jacobian_norm(self, z: torch.Tensor, y: torch.Tensor, epsilon: float,
                            delta: torch.Tensor) -> torch.Tensor:
        """Per-sample finite-difference estimate of ‖∂e_S/∂w‖_F: ‖e_S(z, w) − e_S(z, w + εδ)‖ / ε, δ ~ N(0, I).

        Deliberate departure from the project page's ‖·‖/‖εδ‖: dividing by ‖εδ‖ estimates ‖J δ̂‖ for a unit
        direction, i.e. ‖J‖_F / √dim on average, whereas E‖Jδ‖² = ‖J‖_F² (Hutchinson) for δ ~ N(0, I), so the
        /ε form is the one that estimates the Jacobian's Frobenius norm the regularizer 𝓡(e_S) names.
        ``methods.contentstyle`` multiplies it back by ε, so the applied penalty is the official code's λ·‖Δ‖.
        """
        z_s = z[:, self.content_dim:]
        w = self.class_embedding(y)
        diff = self.style(z_s, w) - self.style(z_s, w + epsilon * delta)
        return diff.norm(dim=1) / epsilon
