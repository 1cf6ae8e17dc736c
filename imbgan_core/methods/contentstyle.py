"""contentstyle — content-style generator with the Jacobian smoothness regularizer of Timilsina et al.:
λ_J · E‖∂e_S(z_S, w)/∂w‖_F estimated by a finite difference along δ ~ N(0, I) with step ε (official code:
perturbation std 0.5, weight 0.1 — the METHOD_PARAMS defaults). See ``nets.contentstyle`` for the generator."""
from __future__ import annotations

import torch

from ..nets import build_generator
from ..nets.contentstyle import ContentStyleGenerator
from .base import Method


class ContentStyle(Method):
    name = "contentstyle"

    @classmethod
    def config_problems(cls, cfg):
        problems = super().config_problems(cfg)
        if not cfg.model.g_conditional:
            problems.append("model.g_conditional: method 'contentstyle' conditions G through its class-embedded "
                            "style map; set it to true")
        return problems

    def build_generator(self, cfg, resolution, channels):
        m, p = cfg.model, self.params
        backbone = build_generator(m.arch, m.z_dim, 0, resolution, channels, m.width)
        return ContentStyleGenerator(backbone, p["content_dim"], p["style_dim"], self.num_classes)

    def generator_terms(self, generator, z, y, fake, gen):
        delta = torch.randn(z.shape[0], self.params["style_dim"], generator=gen).to(z)
        estimate = generator.style_jacobian_norm(z, y, self.params["epsilon"], delta)
        return {"jacobian_reg": self.params["lambda_j"] * estimate.mean()}
