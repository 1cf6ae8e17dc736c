"""acgan — auxiliary classifier GAN (Odena et al. 2017, "Conditional Image Synthesis with Auxiliary Classifier
GANs", Sec. 3), the conditional baseline of CBGAN's Tables 1-2.

G is class-conditional (conditional BatchNorm, as CBGAN's conditional baselines); D has no projection term and
outputs a source logit plus K class logits from the same features (``nets.layers.AuxiliaryClassifierDiscriminator``).
With L_S = E log P(S = real | x_real) + E log P(S = fake | x_fake) (Eq. 2) and L_C = E log P(C = c | x_real) +
E log P(C = c | x_fake) (Eq. 3), D maximises L_S + w·L_C and G maximises w·L_C − L_S, with hard labels (the
real image's class, the class G was asked for) and w = ``aux_weight`` (1 in the paper). L_S is the standard GAN
loss (``train.loss: auto`` = "nonsaturating": G minimises −log D(G(z)) rather than log(1 − D(G(z))), the form
ACGAN was trained with); any ``train.loss`` may replace it, the class terms stay cross-entropies.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..nets import build_discriminator
from ..nets.layers import split_source_and_class
from ..config import Param
from .base import Method
from .losses import discriminator_loss, generator_loss


def class_loss(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """−E log P(C = c | x): mean cross-entropy of D's class logits with hard labels (one half of Eq. 3)."""
    return F.cross_entropy(class_logits.float(), labels)


class ACGAN(Method):
    name = "acgan"
    param_specs = {"aux_weight": Param(1.0, float, 0.0, None, ref="Odena et al. 2017 Eq. 2-3: L_S + L_C, weight 1")}
    default_loss = "nonsaturating"  # Odena et al. 2017 Eq. 2: log-likelihood of the correct source

    @classmethod
    def config_problems(cls, cfg):
        problems = super().config_problems(cfg)
        if not cfg.model.g_conditional:
            problems.append("model.g_conditional: method 'acgan' trains G on the class loss of the class it was "
                            "asked for (Odena et al. Eq. 3); set it to true")
        if cfg.model.d_conditional:
            problems.append("model.d_conditional: method 'acgan' has no projection discriminator; its D reads the "
                            "class through the auxiliary classifier head; set it to false")
        return problems

    def build_discriminator(self, cfg, resolution, channels):
        m = cfg.model
        return build_discriminator(m.arch, self.num_classes, resolution, channels, m.width, "none",
                                   aux_classifier=True)

    def discriminator_loss(self, kind, d_real, d_fake, y_real, y_fake):
        """−(L_S + w·L_C), Eq. 2-3: the source loss plus w·(CE on real + CE on generated images)."""
        s_real, c_real = split_source_and_class(d_real)
        s_fake, c_fake = split_source_and_class(d_fake)
        aux = class_loss(c_real, y_real) + class_loss(c_fake, y_fake)
        return discriminator_loss(kind, s_real, s_fake) + self.params["aux_weight"] * aux

    def generator_loss(self, kind, d_fake, d_real, y_fake):
        """−(w·L_C − L_S), Eq. 2-3 (non-saturating source term): G's source loss plus w·CE on its images."""
        s_fake, c_fake = split_source_and_class(d_fake)
        s_real = None if d_real is None else split_source_and_class(d_real)[0]
        return generator_loss(kind, s_fake, s_real) + self.params["aux_weight"] * class_loss(c_fake, y_fake)
