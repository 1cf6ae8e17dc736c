"""The GAN trial: a core ``Run`` built from the trial config, trained by the one trial loop (trainables.trial)."""
from __future__ import annotations

from imbgan_core.training import Run
from trainables.trial import run_trial


def train_gan(config: dict, assets) -> None:
    """Ray Tune function trainable (``tune.with_parameters(train_gan, assets=...)``)."""
    run_trial(config, assets, lambda cfg, device: Run(cfg, assets=assets, device=device))
