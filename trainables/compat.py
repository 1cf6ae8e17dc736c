"""What trainables relies on inside Ray and Optuna beyond their public API, checked at start-up (issue #12 item 7).

``trainables.durable`` and ``trainables.searcher`` subclass Ray's ``AsyncHyperBandScheduler`` and ``OptunaSearch``
and read or write their private state; ``searcher`` also moves Optuna trials between states through the study's
storage. pyproject.toml pins Ray and Optuna to the minor versions the tests ran on; ``check_ray_internals()``
verifies, before a sweep starts (no Ray cluster needed, about a millisecond after the imports), that every private
name used is still there, and raises ``IncompatibleLibraryError`` naming the library, its version and the missing
name otherwise, instead of an AttributeError in the middle of a sweep (or, for ``_tune_controller``, a silent
fall-back).

Also here: ``LOOPBACK_ENV``, the environment that makes a local Ray started by ``ray.init()`` listen on 127.0.0.1
only (docs/cluster.md, "What listens where").
"""
from __future__ import annotations

import logging
import os

# Ray 2.60 (ray/_private/services.py get_node_ip_address): with this variable false, a node started by ray.init()
# takes 127.0.0.1 as its IP, and the GCS, raylet, object manager, runtime-env agent and every worker bind to it
# (checked with ss -ltnp). ray.init(_node_ip_address="127.0.0.1") alone does not do it: Ray resolves a loopback
# address to the machine's routable IP on Linux (resolve_ip_for_localhost). Ray reads it when it is imported, so it
# must be in the environment before the first ``import ray``; only for a local cluster (never with --address).
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

# (where it is used, what must exist): the private names trainables uses.
RAY_NAMES = (
    ("trainables/durable.py PersistentASHA", "AsyncHyperBandScheduler._brackets"),
    ("trainables/durable.py PersistentASHA", "AsyncHyperBandScheduler._num_stopped"),
    ("trainables/durable.py PersistentASHA", "AsyncHyperBandScheduler._time_attr"),
    ("trainables/durable.py PersistentASHA", "_Bracket._rungs"),
    ("trainables/durable.py DurableStateMixin", "TrialRunnerWrapper._tune_controller"),
    ("trainables/durable.py DurableStateMixin", "TuneController.checkpoint"),
    ("trainables/searcher.py TruthfulOptunaSearch", "OptunaSearch._setup_study"),
    ("trainables/searcher.py TruthfulOptunaSearch", "OptunaSearch._ot_study"),
    ("trainables/searcher.py TruthfulOptunaSearch", "OptunaSearch._ot_trials"),
    ("trainables/searcher.py TruthfulOptunaSearch", "OptunaSearch._completed_trials"),
)
OPTUNA_NAMES = (
    ("trainables/searcher.py revive", "Study._storage"),
    ("trainables/searcher.py revive", "Trial._trial_id"),
    ("trainables/searcher.py park_interrupted", "FrozenTrial._trial_id"),
    ("trainables/searcher.py park_interrupted", "TrialState.WAITING"),
)


class IncompatibleLibraryError(RuntimeError):
    """An installed Ray or Optuna lacks something trainables relies on; the message names it."""


def local_ray_environment(address: str | None, environ=os.environ) -> dict[str, str]:
    """The variables to set before ``import ray`` so that a local Ray binds 127.0.0.1: LOOPBACK_ENV for a local
    cluster (no ``--address`` and no ``RAY_ADDRESS``), nothing when joining a cluster. Variables the user set win."""
    if address or environ.get("RAY_ADDRESS"):
        return {}
    return {k: v for k, v in LOOPBACK_ENV.items() if k not in environ}


def check_ray_internals() -> None:
    """Raise IncompatibleLibraryError unless every private Ray / Optuna name in RAY_NAMES / OPTUNA_NAMES exists."""
    import optuna
    import ray
    from optuna.trial import TrialState
    from ray.tune.execution.tune_controller import TrialRunnerWrapper, TuneController
    from ray.tune.schedulers import AsyncHyperBandScheduler
    from ray.tune.search.optuna import OptunaSearch

    found: dict[str, bool] = {}
    asha = AsyncHyperBandScheduler(time_attr="step", metric="m", mode="min", max_t=9, grace_period=1)
    for attr in ("_brackets", "_num_stopped", "_time_attr"):
        found[f"AsyncHyperBandScheduler.{attr}"] = hasattr(asha, attr)
    brackets = getattr(asha, "_brackets", None)
    found["_Bracket._rungs"] = bool(brackets) and all(_rungs_ok(b) for b in brackets)
    found["TrialRunnerWrapper._tune_controller"] = hasattr(TrialRunnerWrapper(object(), None), "_tune_controller")
    found["TuneController.checkpoint"] = callable(getattr(TuneController, "checkpoint", None))
    optuna_logger = logging.getLogger("optuna")
    level = optuna_logger.level
    optuna_logger.setLevel(logging.WARNING)  # "A new study created in memory" is not start-up news
    try:
        search = OptunaSearch(space=lambda trial: {"x": trial.suggest_float("x", 0.0, 1.0)}, metric="m", mode="min")
        study = optuna.create_study()
        trial = study.ask()
    finally:
        optuna_logger.setLevel(level)
    found["OptunaSearch._setup_study"] = callable(getattr(OptunaSearch, "_setup_study", None))
    for attr in ("_ot_study", "_ot_trials", "_completed_trials"):
        found[f"OptunaSearch.{attr}"] = hasattr(search, attr)
    found["Study._storage"] = hasattr(study, "_storage")
    found["Trial._trial_id"] = hasattr(trial, "_trial_id")
    found["FrozenTrial._trial_id"] = all(hasattr(t, "_trial_id") for t in study.get_trials(deepcopy=False))
    found["TrialState.WAITING"] = hasattr(TrialState, "WAITING")
    missing = [f"{lib} {version}: {name} (used by {where})"
               for lib, version, names in (("ray", ray.__version__, RAY_NAMES),
                                           ("optuna", optuna.__version__, OPTUNA_NAMES))
               for where, name in names if not found.get(name)]
    if missing:
        raise IncompatibleLibraryError(
            "the installed libraries lack what imbgan's sweep relies on:\n  " + "\n  ".join(missing)
            + "\nimbgan is tested with the versions pinned in pyproject.toml (ray[tune] 2.60.x, optuna 5.1.x): "
              "pip install -e . installs them")


def _rungs_ok(bracket) -> bool:
    """``_Bracket._rungs`` is a list of (milestone, {trial id: value}) pairs (what PersistentASHA saves)."""
    rungs = getattr(bracket, "_rungs", None)
    return isinstance(rungs, list) and all(isinstance(r, tuple) and len(r) == 2 and isinstance(r[1], dict)
                                           for r in rungs)
