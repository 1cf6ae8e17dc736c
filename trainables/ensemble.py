"""The ensemble trial: ``ensemble.size`` members trained one after another inside one trial (Slim 2020, Sec. 5).

Same loop and reporting contract as the GAN trial (trainables.trial): ``step`` counts over the whole ensemble
(member i's step s is i * train.steps + s), so ASHA compares and stops ensembles by the work done so far.
Evaluations follow each member's own ``eval_every`` schedule and always fall on a member's last step, so every
finished prefix of the ensemble is scored. Checkpoints hold every member trained so far (Ensemble.save); the
artifacts add per-class weight statistics of the reweighted members.
"""
from __future__ import annotations

from pathlib import Path

from imbgan_core.ensemble.ensemble import Ensemble
from trainables.trial import run_trial

WEIGHT_STATS_CSV = "weight_stats.csv"  # artifact: per-class mu_k, sigma_k, zero share of every reweighted member
MEMBERS = "members"  # reported beside step: members trained so far (the current one included)


def train_ensemble(config: dict, assets) -> None:
    """Ray Tune function trainable (``tune.with_parameters(train_ensemble, assets=...)``)."""
    run_trial(config, assets, lambda cfg, device: Ensemble(cfg, assets=assets, device=device),
              extras=lambda ensemble: {MEMBERS: len(ensemble.members)},
              extra_artifacts=lambda ensemble, folder: ensemble.write_weight_stats_csv(Path(folder) / WEIGHT_STATS_CSV))
