"""The GAN trial: a core ``Run`` from the trial config; train, evaluate and report every ``eval_every`` steps.

Each report carries the evaluator's scalars, ``step`` and ``state`` (trainables.reporting) and a checkpoint holding
the run state (exact resume via ``Run.save``/``Run.load``) plus ``artifacts/`` (sample grid, per-class CSV, per-class
FID plot) that the driver uploads to MLflow. A diverged run reports once with the penalty value and returns, so the
sweep goes on.
"""
from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

import ray
import torch
from ray import tune

from imbgan_core.metrics.report import plot_fid_vs_class_size, write_per_class_csv
from imbgan_core.training import CHECKPOINT_FILE, CheckpointError, DivergedError, Run
from trainables import reporting
from trainables.progress import quiet_trial_logs
from trainables.spaces import SWEEP_KEY, trial_run_config

CHECKPOINT_DIR = re.compile(r"checkpoint_(\d+)$")  # Ray's per-report checkpoint folders in the trial folder


def trial_resources() -> dict[str, float]:
    """What Ray reserved for this trial, e.g. {"CPU": 1.0, "GPU": 0.25}."""
    return tune.get_context().get_trial_resources().required_resources


def trial_device() -> str:
    """Match torch to the trial's Ray resources: threads = CPU share; on a real GPU, memory fraction = GPU share.

    Ray packs fractional GPUs without memory isolation (REFERENCE.md), so ``set_per_process_memory_fraction`` is the
    only guard against one trial taking a shared GPU's memory. A logical GPU without CUDA falls back to CPU.
    """
    resources = trial_resources()
    torch.set_num_threads(max(1, int(resources.get("CPU", 1))))
    gpu_share = float(resources.get("GPU", 0))
    if gpu_share > 0 and ray.get_gpu_ids() and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(gpu_share, 0)
        return "cuda"
    return "cpu"


def trial_facts(device: str, started: float) -> dict:
    """Where and how a trial runs, reported with every result (shared by the GAN and ensemble trainables)."""
    return {"device": device, "gpu_share": float(trial_resources().get("GPU", 0)),
            "torch_threads": torch.get_num_threads(), "started_at": started,
            "node_id": ray.get_runtime_context().get_node_id()}


def start_trial(config: dict, build):
    """The start every trial shares: quiet logs, the run config, device and threads, the facts reported with every
    result, then ``build(cfg, device)`` (a ``Run`` or an ``Ensemble``) resumed by ``restore``.
    Returns (cfg, device, facts, started, built)."""
    started = time.time()
    quiet_trial_logs()
    cfg = trial_run_config(config)
    device = trial_device()
    built = build(cfg, device)
    restore(built)
    return cfg, device, trial_facts(device, started), started, built


def train_gan(config: dict, assets) -> None:
    """Ray Tune function trainable (``tune.with_parameters(train_gan, assets=...)``)."""
    cfg, device, facts, started, run = start_trial(config, lambda cfg, device: Run(cfg, assets=assets, device=device))
    steps, every = cfg.train.steps, cfg.train.eval_every
    while run.steps_done < steps:
        n = min(every - run.steps_done % every, steps - run.steps_done)
        try:
            run.train(n)
        except DivergedError as exc:
            tune.report({**diverged_report(config, exc, device, started), **facts})
            return
        report_evaluation(run, assets, facts, final=run.steps_done >= steps)


def restore(run) -> None:
    """Resume ``run`` (a ``Run`` or an ``Ensemble``: both ``load`` all or nothing, raising ``CheckpointError``) from
    the newest readable checkpoint in the trial's folder on the storage path, if there is one.

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
                run.load(folder)
        except CheckpointError as exc:
            problems.append(f"{candidate.path}/{CHECKPOINT_FILE}: {str(exc).split(': ', 1)[-1]}")
            continue
        if problems:
            print(f"warning: resumed from {candidate.path} (step {run.steps_done}); skipped {'; '.join(problems)}",
                  flush=True)
        return
    if problems:
        raise CheckpointError("no readable checkpoint for this trial: " + "; ".join(problems))


def trial_checkpoints(filesystem, trial_path: str) -> list[tune.Checkpoint]:
    """The trial's ``checkpoint_NNNNNN`` folders on storage (any pyarrow filesystem), newest first."""
    import pyarrow.fs

    selector = pyarrow.fs.FileSelector(trial_path, allow_not_found=True)
    found = [(int(m.group(1)), entry.path) for entry in filesystem.get_file_info(selector)
             if entry.type == pyarrow.fs.FileType.Directory and (m := CHECKPOINT_DIR.search(entry.path))]
    return [tune.Checkpoint(path, filesystem=filesystem) for _, path in sorted(found, reverse=True)]


def report_evaluation(run: Run, assets, facts: dict, final: bool) -> None:
    """Evaluate, write the checkpoint (run state + artifacts), report."""
    result = run.evaluate()
    metrics = {**result.scalars, **facts, reporting.STEP: run.steps_done,
               reporting.STATE: reporting.COMPLETED if final else reporting.RUNNING}
    with tempfile.TemporaryDirectory(prefix="imbgan-ckpt-") as folder:
        run.save(folder)
        write_artifacts(run, result, assets.data, Path(folder) / reporting.ARTIFACTS_DIR)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def write_artifacts(run: Run, result, data, folder: Path) -> None:
    """The per-evaluation files MLflow shows: sample grid, per-class metric table, per-class FID vs class size."""
    folder.mkdir(parents=True, exist_ok=True)
    run.save_sample_grid(folder / reporting.SAMPLE_GRID, per_class=8)
    write_per_class_csv(result, data, folder / reporting.PER_CLASS_CSV)
    if "fid" in result.per_class:
        plot_fid_vs_class_size(result, data, folder / reporting.FID_PLOT)


def diverged_report(config: dict, exc: DivergedError, device: str, started: float) -> dict:
    """The one report of a diverged trial: the penalty as the sweep metric (trainables.reporting) and the cause."""
    sweep = config[SWEEP_KEY]
    return {sweep["metric"]: reporting.diverged_value(sweep["mode"]), reporting.STEP: int(exc.step),
            reporting.STATE: reporting.DIVERGED, "diverged_loss": str(exc.loss_name),
            reporting.DIVERGED_REASON: str(exc), "device": device,
            "started_at": started}
