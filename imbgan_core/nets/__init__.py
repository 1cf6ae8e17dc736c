"""Backbone registry: ``model.arch`` -> (Generator, Discriminator) classes with one constructor signature.

Generator(z_dim, num_classes, resolution, channels, width): forward(z, y) -> images in [-1, 1];
num_classes = 0 builds an unconditional generator (plain BatchNorm, labels ignored).
Discriminator(num_classes, resolution, channels, width, projection): forward(x, y) -> one logit per image;
projection "none" | "hard" | "soft" (see ``layers.ProjectionHead``).
"""
from __future__ import annotations

from torch import nn

from . import biggan, resnet, sndcgan

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
                        projection: str) -> nn.Module:
    return _arch(arch)[1](num_classes, resolution, channels, width, projection)
