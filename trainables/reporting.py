"""The reporting contract between trainables (gan, ensemble) and the driver (searcher, MLflow, summary).

Every ``tune.report`` carries ``step`` (training steps done: ASHA's time attribute), ``state`` and the scalar
metrics; a report's checkpoint may hold an ``artifacts/`` folder the driver uploads to MLflow. The final state of
a trial is derived from its last report in one place, so searcher, MLflow tags and the summary always agree.
"""
from __future__ import annotations

import math
from pathlib import Path

STEP = "step"
STEPS_TRAINED = "steps_trained"  # an ensemble's own training steps (step counts members reused from other trials)
STATE = "state"
ARTIFACTS_DIR = "artifacts"  # inside a reported checkpoint: files to upload to MLflow
SAMPLE_GRID = "samples.png"
PER_CLASS_CSV = "per_class.csv"
FID_PLOT = "fid_vs_class_size.png"

# Facts about where a trial ran (every report carries them): tags in MLflow, not metrics.
FACTS = ("device", "gpu_share", "torch_threads", "started_at", "node_id")
# Facts about how it was evaluated (every report carries them, from the evaluator's meta): annotator FID is not
# Inception FID, per-class metrics of an unconditional G group images by the annotator's labels, and scores are
# comparable only against the same real reference set.
EVAL_FACTS = ("feature_space", "class_labels", "real_reference")
DIVERGED_REASON = "diverged_reason"  # a diverged trial's report says which loss became non-finite at which step
TAGS = (*FACTS, *EVAL_FACTS, DIVERGED_REASON)  # report keys recorded as MLflow tags

RUNNING, COMPLETED, STOPPED, DIVERGED, ERROR = "running", "completed", "stopped_by_asha", "diverged", "error"
INTERRUPTED = "interrupted"  # the sweep stopped (Ctrl-C, SIGTERM) before the trial ended; ``--resume`` continues it
STOPPED_BY_BUDGET = "stopped_by_budget"  # the sweep's step or time budget ran out (trainables.budget)
FINAL_STATES = (COMPLETED, STOPPED, STOPPED_BY_BUDGET, DIVERGED, ERROR, INTERRUPTED)
EARLY_STOPPED = (STOPPED, STOPPED_BY_BUDGET)  # ended below the full budget with a usable score
DONE = "done"  # Ray sets it on the last result of a trial that ended (scheduler stop or the trainable returned)

# A diverged trial reports this instead of inf/NaN: Optuna's ``tell`` rejects non-finite values, and a large
# finite penalty still teaches TPE that the region is bad (docs/sweeps.md, "Divergence").
DIVERGED_PENALTY = 1e6


def diverged_value(mode: str) -> float:
    """The metric a diverged trial reports: the worst finite value for the search direction."""
    return DIVERGED_PENALTY if mode == "min" else -DIVERGED_PENALTY


def final_state(last_result: dict | None, errored: bool = False) -> str:
    """completed / stopped_by_asha / stopped_by_budget / diverged / error / interrupted for a trial, from its last
    result.

    A trainable marks its last report ``completed`` (its own budget: an ensemble's is size x train.steps) or
    ``diverged``, and a restored trial already at its budget reports its final result again (trainables.trial), so a
    trial only ends on a ``running`` report when the scheduler stopped it: Ray then sets ``done`` on that result.
    The budget stopper relabels the report it stops a trial on (trainables.budget).
    A ``running`` report without ``done`` (or no report at all) means the trial never ended: the sweep was
    interrupted around it (issue #12: Ctrl-C used to be recorded as ASHA stops).
    """
    if errored:
        return ERROR
    if not last_result:
        return INTERRUPTED
    if last_result.get(STATE) in (COMPLETED, DIVERGED, STOPPED_BY_BUDGET):
        return last_result[STATE]
    return STOPPED if last_result.get(DONE) else INTERRUPTED


def numeric_metrics(result: dict, names) -> dict[str, float]:
    """The finite numbers among ``names`` in a result (what MLflow and the summary record)."""
    out = {}
    for name in names:
        value = result.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


def result_trial_id(result) -> str:
    """A Ray ``Result``'s trial id: from its metrics (ids may contain ``_``), else from its folder name
    (``trainables.progress.trial_dirname``) for a trial that never reported."""
    return str((result.metrics or {}).get("trial_id") or Path(result.path).name.rsplit("_", 1)[-1])
