"""Backbone registry: ``model.arch`` -> (Generator, Discriminator) classes with one constructor signature.

Generator(z_dim, num_classes, resolution, channels, width): forward(z, y) -> images in [-1, 1];
num_classes = 0 builds an unconditional generator (plain BatchNorm, labels ignored).
Discriminator(num_classes, resolution, channels, width, projection): forward(x, y) -> one logit per image;
projection "none" | "hard" | "soft" (see ``layers.ProjectionHead``). ``aux_classifier=True`` (ACGAN, projection
"none" only) wraps it in ``layers.AuxiliaryClassifierDiscriminator``: forward(x, y) -> N x (1 + K), the source logit
then K class logits.
"""
from __future__ import annotations

from torch import nn

from . import biggan, resnet, sndcgan
from .layers import AuxiliaryClassifierDiscriminator

ARCHITECTURES = {
    "sndcgan": (sndcgan.Generator, sndcgan.Discriminator),
    "resnet": (resnet.Generator, resnet.Discriminator),
    "biggan": (biggan.Generator, biggan.Discriminator),
}


def _arch(name: str):
    if name not in ARCHITECTURES:
        raise ValueError(f"model.arch: unknown architecture {name!r} (valid: {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[name]


def build_generator(arch: str, z_dim: int, num_classes: int, resolution: int, channels: int,
                    width: float) -> nn.Module:
    return _arch(arch)[0](z_dim, num_classes, resolution, channels, width)


def build_discriminator(arch: str, num_classes: int, resolution: int, channels: int, width: float,
                        projection: str, aux_classifier: bool = False) -> nn.Module:
    if aux_classifier and projection != "none":
        raise ValueError(f"an auxiliary-classifier (ACGAN) discriminator has no projection head, got {projection!r}")
    net = _arch(arch)[1](num_classes, resolution, channels, width, projection)
    return AuxiliaryClassifierDiscriminator(net, num_classes) if aux_classifier else net
