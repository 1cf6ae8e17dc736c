"""cgan — the DiffAug-GAN baseline: projection discriminator with hard labels (Softlabel-GAN Sec. 5.1, Table 4)."""
from .base import Method


class CGAN(Method):
    name = "cgan"
