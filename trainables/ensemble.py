"""The ensemble trial: ``ensemble.size`` members trained one after another inside one trial (Slim 2020, Sec. 5).

Same loop and reporting contract as the GAN trial (trainables.trial): ``step`` counts over the whole ensemble
(member i's step s is i * train.steps + s), so ASHA compares and stops ensembles by the work done so far.
Evaluations follow each member's own ``eval_every`` schedule and always fall on a member's last step, so every
finished prefix of the ensemble is scored. Checkpoints hold every member trained so far (Ensemble.save); the
artifacts add per-class weight statistics of the reweighted members.

Members are shared between the sweep's trials through a member cache (imbgan_core.ensemble.member_cache) under the
storage path: a trial whose first members match another trial's loads them and reports once at each loaded
member's end (its intermediate evaluations are the other trial's). ``steps_trained`` is what the trial trained
itself, ``step`` where it stands.
"""
from __future__ import annotations

from pathlib import Path

from imbgan_core.cache import default_cache_dir
from imbgan_core.ensemble.ensemble import Ensemble
from imbgan_core.ensemble.member_cache import MemberCache
from trainables import reporting
from trainables.trial import run_trial

WEIGHT_STATS_CSV = "weight_stats.csv"  # artifact: per-class mu_k, sigma_k, zero share of every reweighted member
MEMBERS = "members"  # reported beside step: members trained so far (the current one included)
MEMBERS_REUSED = "members_reused"  # of those, loaded from the member cache


def train_ensemble(config: dict, assets, member_cache: str | None = None) -> None:
    """Ray Tune function trainable (``tune.with_parameters(train_ensemble, assets=..., member_cache=folder)``);
    ``member_cache`` None: this node's imbgan cache (trainables.sweep.trainable_extras)."""
    cache = MemberCache(member_cache or default_cache_dir())
    run_trial(config, assets, lambda cfg, device: Ensemble(cfg, assets=assets, device=device, member_cache=cache),
              extras=lambda ensemble: {MEMBERS: len(ensemble.members), MEMBERS_REUSED: ensemble.members_reused,
                                       reporting.STEPS_TRAINED: ensemble.steps_trained},
              extra_artifacts=lambda ensemble, folder: ensemble.write_weight_stats_csv(Path(folder) / WEIGHT_STATS_CSV))
