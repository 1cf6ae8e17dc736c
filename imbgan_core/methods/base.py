"""The method interface: a small object with explicit state that the training loop consults at fixed points.

The loop asks a method for (1) its networks (``build_generator``, ``build_discriminator``), (2) per-class sampling
weights of real images, (3) the labels D sees with each real batch (class indices, or probability vectors when
``soft_labels``), (4) the classes to generate, (5) D's and G's losses from D's outputs (``discriminator_loss``,
``generator_loss``: the ``train.loss`` function of ``losses`` unless the method adds terms that read D's outputs,
as ACGAN's class losses do) and (6) extra generator-loss terms, and tells it (7) when a step ended. Everything a
method remembers between steps is in ``state_dict()`` so that checkpoints resume it exactly.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import Param, RunConfig
from ..nets import build_discriminator, build_generator
from . import losses


class Method:
    name = ""
    param_specs: dict[str, Param] = {}  # this method's hyperparameters (``method.*`` keys), declared once
    default_loss = "hinge"  # what train.loss = "auto" means (Softlabel-GAN baselines use BigGAN's hinge loss)
    soft_labels = False  # D's projection takes probability vectors (Softlabel-GAN Sec. 4.3)
    needs_classifier = False  # uses the pretrained classifier C (role "classifier")
    needs_soft_labels = False  # uses C's softmax of every training image

    def __init__(self, params: dict, num_classes: int, assets=None, device: str | torch.device = "cpu"):
        self.params = dict(params)  # values, validated against param_specs by RunConfig
        self.num_classes = num_classes
        self.device = torch.device(device)

    @classmethod
    def config_problems(cls, cfg: RunConfig) -> list[str]:
        """Problems with ``cfg`` for this method (dotted keys), found before any data is loaded."""
        problems = []
        if cls.soft_labels and not cfg.model.d_conditional:
            problems.append(f"model.d_conditional: method {cls.name!r} feeds labels to D's projection; "
                            "set it to true")
        return problems

    def class_weights(self, counts: list[int]) -> list[float] | None:
        """Per-class sampling weight of real images; None = every image equally likely."""
        return None

    def build_generator(self, cfg: RunConfig, resolution: int, channels: int) -> nn.Module:
        m = cfg.model
        return build_generator(m.arch, m.z_dim, self.num_classes if m.g_conditional else 0, resolution,
                               channels, m.width)

    def build_discriminator(self, cfg: RunConfig, resolution: int, channels: int) -> nn.Module:
        """The backbone's D with the projection ``model.d_conditional`` asks for ("soft" when ``soft_labels``)."""
        m = cfg.model
        projection = ("soft" if self.soft_labels else "hard") if m.d_conditional else "none"
        return build_discriminator(m.arch, self.num_classes, resolution, channels, m.width, projection)

    def discriminator_loss(self, kind: str, d_real: torch.Tensor, d_fake: torch.Tensor, y_real: torch.Tensor,
                           y_fake: torch.Tensor) -> torch.Tensor:
        """D's loss from its outputs on the augmented real and fake batches and their labels (``y_real`` as
        ``real_batch`` gave them, ``y_fake`` class indices); by default the ``kind`` loss of ``losses``."""
        return losses.discriminator_loss(kind, d_real, d_fake)

    def generator_loss(self, kind: str, d_fake: torch.Tensor, d_real: torch.Tensor | None,
                       y_fake: torch.Tensor) -> torch.Tensor:
        """G's adversarial loss from D's outputs on the fakes (and, for "relativistic", the last real batch)."""
        return losses.generator_loss(kind, d_fake, d_real)

    def real_batch(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                   gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels for D) of a real batch, before DiffAugment. ``index``: positions in the train split."""
        return x, y

    def fake_labels(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """Classes to generate: uniform (Softlabel-GAN Sec. 4.2: y^f from the uniform distribution)."""
        return torch.randint(0, self.num_classes, (n,), generator=gen).to(self.device)

    def generator_terms(self, generator: nn.Module, z: torch.Tensor, y: torch.Tensor, fake: torch.Tensor,
                        gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Weighted extra terms of the generator loss, by name; ``fake`` is G's output before DiffAugment."""
        return {}

    def after_step(self, step: int) -> None:
        """Called after generator step ``step`` (1-based) finished."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def one_hot(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(y, num_classes).float()
