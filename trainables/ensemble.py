"""The ensemble trial: ``ensemble.size`` members trained one after another inside one trial (Slim 2020, Sec. 5).

Same reporting contract as the GAN trial (trainables.reporting, trainables.gan): a report after every evaluation,
with ``step`` counting over the whole ensemble (member i's step s is i * train.steps + s), so ASHA compares and
stops ensembles by the work done so far. Evaluations follow each member's own ``eval_every`` schedule and always
fall on a member's last step, so every finished prefix of the ensemble is scored. Checkpoints hold every member
trained so far (Ensemble.save) and artifacts (sample grid of the ensemble, per-class metrics, per-class weight
statistics of the reweighted members); a resume takes the newest readable one, like the GAN trial
(trainables.gan.restore).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from ray import tune

from imbgan_core.ensemble.ensemble import Ensemble
from imbgan_core.training import DivergedError
from trainables import reporting
from trainables.gan import diverged_report, start_trial, write_artifacts

WEIGHT_STATS_CSV = "weight_stats.csv"  # artifact: per-class mu_k, sigma_k, zero share of every reweighted member
MEMBERS = "members"  # reported beside step: members trained so far (the current one included)


def train_ensemble(config: dict, assets) -> None:
    """Ray Tune function trainable (``tune.with_parameters(train_ensemble, assets=...)``)."""
    cfg, device, facts, started, ensemble = start_trial(
        config, lambda cfg, device: Ensemble(cfg, assets=assets, device=device))
    steps, every = cfg.train.steps, cfg.train.eval_every
    while ensemble.steps_done < ensemble.total_steps:
        local = ensemble.steps_done % steps  # the current member's own step count
        try:
            ensemble.train(min(every - local % every, steps - local))
        except DivergedError as exc:
            tune.report({**diverged_report(config, exc, device, started), **facts, MEMBERS: len(ensemble.members)})
            return
        report_evaluation(ensemble, assets, facts)


def report_evaluation(ensemble: Ensemble, assets, facts: dict) -> None:
    """Evaluate the ensemble so far, write the checkpoint (all members + artifacts), report."""
    result = ensemble.evaluate()
    final = ensemble.steps_done >= ensemble.total_steps
    metrics = {**result.scalars, **facts, reporting.STEP: ensemble.steps_done, MEMBERS: len(ensemble.members),
               reporting.STATE: reporting.COMPLETED if final else reporting.RUNNING}
    with tempfile.TemporaryDirectory(prefix="imbgan-ens-ckpt-") as folder:
        ensemble.save(folder)
        artifacts = Path(folder) / reporting.ARTIFACTS_DIR
        write_artifacts(ensemble, result, assets.data, artifacts)
        ensemble.write_weight_stats_csv(artifacts / WEIGHT_STATS_CSV)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
