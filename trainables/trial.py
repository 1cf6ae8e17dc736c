"""The one trial loop every trainable runs: train to the next evaluation, evaluate, checkpoint, report.

A trial trains a ``Trainee``: a core ``Run`` (trainables.gan) or an ``Ensemble`` (trainables.ensemble). Each
report carries the evaluator's scalars, ``step`` and ``state`` (trainables.reporting) and a checkpoint holding the
trainee's state (exact resume through ``save``/``load``), ``artifacts/`` (sample grid, per-class CSV, per-class
FID plot) that the driver uploads to MLflow, and ``report.json``, the report itself. A diverged trainee reports
once with the penalty value and returns, so the sweep goes on.

A trial resumed from a checkpoint newer than the one Ray's saved experiment state points at (its report reached the
storage, but the driver was killed, or stopped by Ctrl-C, before it processed or saved it) reports that checkpoint's
``report.json`` again before it trains on, so ASHA, Optuna and MLflow see every evaluation; a trial restored at its
budget always reports its final result again. Nothing is lost, and no finished trial looks stopped early (#12).
"""
from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import ray
import torch
from ray import tune

from imbgan_core.metrics.report import plot_fid_vs_class_size, write_per_class_csv
from imbgan_core.training import CHECKPOINT_FILE, CheckpointError, DivergedError
from trainables import reporting
from trainables.progress import quiet_trial_logs
from trainables.spaces import SWEEP_KEY, trial_run_config

REPORT_FILE = "report.json"  # inside every reported checkpoint: the metrics reported with it
CHECKPOINT_DIR = re.compile(r"checkpoint_(\d+)$")  # Ray's per-report checkpoint folders in the trial folder


class Trainee(Protocol):
    """What the trial loop needs of the object it trains (``Run`` and ``Ensemble`` implement it)."""

    steps_done: int

    @property
    def total_steps(self) -> int: ...
    def train(self, n_steps: int) -> dict: ...
    def evaluate(self, latent_seed: int | None = None): ...
    def save(self, directory): ...
    def load(self, directory) -> None: ...
    def save_sample_grid(self, path, per_class: int = 8): ...
    def close(self) -> None: ...


# The per-trainable extras: keys added to every report, and files added to every checkpoint's artifacts.
Extras = Callable[[Trainee], dict]
ExtraArtifacts = Callable[[Trainee, Path], None]


def steps_to_next_evaluation(steps_done: int, member_steps: int, every: int) -> int:
    """Steps until the next evaluation: every ``every`` steps of the current member and at its last step (a single
    run is one member of ``train.steps``; an ensemble's members each train ``train.steps``)."""
    local = steps_done % member_steps
    return min(every - local % every, member_steps - local)


def run_trial(config: dict, assets, build: Callable[..., Trainee], extras: Extras = lambda t: {},
              extra_artifacts: ExtraArtifacts = lambda t, folder: None) -> None:
    """The body of every Ray Tune function trainable: ``build(cfg, device)`` the trainee, resume it, train it."""
    started = time.time()
    quiet_trial_logs()
    cfg = trial_run_config(config)
    device = trial_device(cfg.train.threads)
    trainee = build(cfg, device)
    try:
        train_and_report(trainee, config, cfg, assets, trial_facts(device, started), extras, extra_artifacts)
    finally:  # also when Ray stops the trial: it raises SystemExit inside tune.report
        trainee.close()


def train_and_report(trainee: Trainee, config: dict, cfg, assets, facts: dict, extras: Extras,
                     extra_artifacts: ExtraArtifacts) -> None:
    """Resume ``trainee`` if a checkpoint exists, then train it to its budget with a report at every evaluation."""
    report = Reporter(trainee, assets, facts, extras, extra_artifacts)
    restored = restore(trainee)
    at_budget = trainee.steps_done >= trainee.total_steps
    if restored is not None and (at_budget or not restored.known_to_ray):
        report.again(restored)
    if at_budget:
        return
    while trainee.steps_done < trainee.total_steps:
        try:
            trainee.train(steps_to_next_evaluation(trainee.steps_done, cfg.train.steps, cfg.train.eval_every))
        except DivergedError as exc:
            tune.report({**diverged_report(config, exc, facts["device"], facts["started_at"]), **facts,
                         **extras(trainee)})
            return
        report.evaluation()


class Reporter:
    """Evaluate, write the checkpoint (state, artifacts, report.json) and report it to Ray."""

    def __init__(self, trainee: Trainee, assets, facts: dict, extras: Extras, extra_artifacts: ExtraArtifacts):
        self.trainee, self.assets, self.facts = trainee, assets, facts
        self.extras, self.extra_artifacts = extras, extra_artifacts

    def evaluation(self) -> None:
        result = self.trainee.evaluate()
        final = self.trainee.steps_done >= self.trainee.total_steps
        evaluated = {k: result.meta[k] for k in reporting.EVAL_FACTS if k in result.meta}
        metrics = {**result.scalars, **self.facts, **evaluated, **self.extras(self.trainee),
                   reporting.STEP: self.trainee.steps_done,
                   reporting.STATE: reporting.COMPLETED if final else reporting.RUNNING}
        with tempfile.TemporaryDirectory(prefix="imbgan-ckpt-") as folder:
            self.trainee.save(folder)
            artifacts = Path(folder) / reporting.ARTIFACTS_DIR
            write_artifacts(self.trainee, result, self.assets.data, artifacts)
            self.extra_artifacts(self.trainee, artifacts)
            write_report(Path(folder), metrics)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    def again(self, restored: "Restored") -> None:
        """The report of the checkpoint a trainee was restored from, with its own artifacts (from a checkpoint
        without a report, written by an older version, a fresh evaluation of the same state)."""
        saved = restored.report
        if not saved:
            self.evaluation()
            return
        with tempfile.TemporaryDirectory(prefix="imbgan-ckpt-") as folder:
            restored.checkpoint.to_directory(folder)  # the state, artifacts and report of the final evaluation
            tune.report({**saved, **self.facts}, checkpoint=tune.Checkpoint.from_directory(folder))


@dataclass
class Restored:
    """The checkpoint a trainee was resumed from, the report made with it (None: older checkpoint), and whether
    Ray's saved experiment state already points at it (then Ray has processed that report)."""

    checkpoint: tune.Checkpoint
    report: dict | None
    known_to_ray: bool


def write_report(folder: Path, metrics: dict) -> None:
    (folder / REPORT_FILE).write_text(json.dumps(metrics, default=str), encoding="utf-8")


def read_report(folder: Path) -> dict | None:
    path = Path(folder) / REPORT_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None


def trial_resources() -> dict[str, float]:
    """What Ray reserved for this trial, e.g. {"CPU": 1.0, "GPU": 0.25}."""
    return tune.get_context().get_trial_resources().required_resources


def trial_device(threads: int = 0) -> str:
    """Match torch to the trial's Ray resources: threads = ``train.threads`` or else the CPU share; on a real GPU,
    memory fraction = GPU share.

    Ray packs fractional GPUs without memory isolation (docs/reference.md#ray-fractional-gpus), so
    ``set_per_process_memory_fraction`` is the only guard against one trial taking a shared GPU's memory. A logical
    GPU without CUDA falls back to CPU.
    """
    resources = trial_resources()
    torch.set_num_threads(threads or max(1, int(resources.get("CPU", 1))))
    gpu_share = float(resources.get("GPU", 0))
    if gpu_share > 0 and ray.get_gpu_ids() and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(gpu_share, 0)
        return "cuda"
    return "cpu"


def trial_facts(device: str, started: float) -> dict:
    """Where and how a trial runs, reported with every result (tags in MLflow; best.yaml records device/threads)."""
    return {"device": device, "gpu_share": float(trial_resources().get("GPU", 0)),
            "torch_threads": torch.get_num_threads(), "started_at": started,
            "node_id": ray.get_runtime_context().get_node_id()}


def restore(trainee: Trainee) -> Restored | None:
    """Resume ``trainee`` (``load`` is all or nothing, raising ``CheckpointError``) from the newest readable
    checkpoint in the trial's folder on the storage path, if there is one; returns that checkpoint and its report.

    Ray's own pointer (``tune.get_checkpoint()``) can be older than that folder: Ray saves its experiment state
    between events, so a driver killed just after a report resumes the trial one checkpoint early, or from scratch
    (tests/test_faults.py). A checkpoint whose file is unreadable (truncated copy, full disk) is skipped for the
    next older one (``CheckpointConfig(num_to_keep=2)`` keeps one), with a warning; with none readable the
    ``CheckpointError`` names every file tried, as storage paths (also on cloud storage).
    """
    storage = tune.get_context().get_storage()
    candidates = trial_checkpoints(storage.storage_filesystem, storage.trial_fs_path)
    given = tune.get_checkpoint()
    if given is not None and given.path not in [c.path for c in candidates]:
        candidates.append(given)
    problems = []
    for candidate in candidates:
        try:
            with candidate.as_directory() as folder:
                trainee.load(folder)
                saved = read_report(Path(folder))
        except CheckpointError as exc:
            problems.append(f"{candidate.path}/{CHECKPOINT_FILE}: {str(exc).split(': ', 1)[-1]}")
            continue
        if problems:
            print(f"warning: resumed from {candidate.path} (step {trainee.steps_done}); skipped "
                  f"{'; '.join(problems)}", flush=True)
        return Restored(candidate, saved, known_to_ray=given is not None and given.path == candidate.path)
    if problems:
        raise CheckpointError("no readable checkpoint for this trial: " + "; ".join(problems))
    return None


def trial_checkpoints(filesystem, trial_path: str) -> list[tune.Checkpoint]:
    """The trial's ``checkpoint_NNNNNN`` folders on storage (any pyarrow filesystem), newest first."""
    import pyarrow.fs

    selector = pyarrow.fs.FileSelector(trial_path, allow_not_found=True)
    found = [(int(m.group(1)), entry.path) for entry in filesystem.get_file_info(selector)
             if entry.type == pyarrow.fs.FileType.Directory and (m := CHECKPOINT_DIR.search(entry.path))]
    return [tune.Checkpoint(path, filesystem=filesystem) for _, path in sorted(found, reverse=True)]


def write_artifacts(trainee: Trainee, result, data, folder: Path) -> None:
    """The per-evaluation files MLflow shows: sample grid, per-class metric table, per-class FID vs class size."""
    folder.mkdir(parents=True, exist_ok=True)
    trainee.save_sample_grid(folder / reporting.SAMPLE_GRID, per_class=8)
    write_per_class_csv(result, data, folder / reporting.PER_CLASS_CSV)
    if "fid" in result.per_class:
        plot_fid_vs_class_size(result, data, folder / reporting.FID_PLOT)


def diverged_report(config: dict, exc: DivergedError, device: str, started: float) -> dict:
    """The one report of a diverged trial: the penalty as the sweep metric (trainables.reporting) and the cause."""
    sweep = config[SWEEP_KEY]
    return {sweep["metric"]: reporting.diverged_value(sweep["mode"]), reporting.STEP: int(exc.step),
            reporting.STATE: reporting.DIVERGED, "diverged_loss": str(exc.loss_name),
            reporting.DIVERGED_REASON: str(exc), "device": device, "started_at": started}
