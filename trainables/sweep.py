"""Run one validated sweep: directories, MLflow store, Ray, assets, Tuner (fresh or restored), summary."""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path

import ray
from ray import tune

from imbgan_core.config import ConfigError
from imbgan_core.metrics.catalog import METRICS
from trainables import mlflow_logging, reporting
from trainables.assets import prepare_sweep_assets
from trainables.claim import ClaimError, SweepFolder, claim_sweep_dir
from trainables.budget import BudgetLedger, BudgetStopper
from trainables.confirm import (ConfirmPlan, confirmation_runs, evaluation_noise, format_confirmation, summarise,
                                top_configurations)
from trainables.durable import DurableFIFO, PersistentASHA
from trainables.progress import ReportLines, status_reporter, trial_dirname
from trainables.searcher import TruthfulOptunaSearch, park_interrupted
from trainables.spaces import RUN_KEY, SWEEP_KEY, Space, param_space, trial_run_config
from trainables.sweep_report import write_sweep_report
from trainables.stop_signals import StopSignals
from trainables.summary import format_table, trial_rows, write_summary

AUTO_GPU_SHARE = 0.25  # 'auto': 4 trials per GPU when the cluster has GPUs (issue #5)
RUN_MAP = "mlflow_runs.json"
CONFIRM_RUN_MAP = "mlflow_runs_confirm.json"  # the confirmation stage's trial runs (same parent run)
ASHA_STATE = "asha_state.json"  # trainables.durable.PersistentASHA
BUDGET_STATE = "budget_state.json"  # trainables.budget.BudgetLedger
MEMBER_CACHE = ".member_cache"  # under the storage path: ensemble members shared between trials
# A trial whose process dies (OOM kill, preempted node, lost worker) restarts from its last checkpoint up to this
# many times (issue #7); a deterministic error costs at most this many extra attempts.
TRIAL_RESTARTS = 2
MLFLOW_SYNC_ATTEMPTS, MLFLOW_SYNC_PAUSE_S = 4, 5.0  # the end-of-sweep MLflow sync waits up to ~50 s for a store
MLFLOW_FLUSH_S = 60.0  # after fit, the background MLflow writer gets this long to empty its queue


class SweepError(RuntimeError):
    """A problem with the sweep's surroundings (folders, cluster, trainable), found before training starts."""


def run_sweep(space: Space, args: argparse.Namespace) -> int:
    """The sweep from claiming its folder to its summary; returns the exit code (130 / 143 when interrupted)."""
    results = Path(args.results).resolve()
    with StopSignals() as signals:
        try:
            folder = claim_sweep_dir(results, args.storage_path, space.name, args.resume)
        except ClaimError as exc:
            raise SweepError(str(exc)) from None
        except OSError as exc:  # a results root we cannot create or lock: name it, before Ray starts
            raise SweepError(f"--results {results}: cannot claim a sweep folder there ({exc})") from None
        started_fit = False
        try:
            tuner, callback, context = start_sweep(space, args, results, folder)
            signals.reinstall()
            started_fit = True
            return finish_sweep(space, args, folder, tuner, callback, context, signals)
        except KeyboardInterrupt:  # a second signal, or one before Ray started: stop now, say how to go on
            print(f"\n{signals.name or 'SIGINT'}: sweep {folder.name} stopped", flush=True)
            if started_fit:
                print(f"resume: {resume_command(args)}", flush=True)
            return signals.exit_code or 130
        finally:
            folder.release(remove=not started_fit)


def start_sweep(space: Space, args: argparse.Namespace, results: Path, folder: SweepFolder):
    """Everything before ``fit``: the MLflow store, assets, Ray, the Tuner (fresh or restored)."""
    sweep_dir = folder.path
    storage = args.storage_path or str(results)
    tracking_uri = args.mlflow_uri or mlflow_logging.default_tracking_uri(results)
    experiment = args.experiment or space.name
    try:
        mlflow_logging.check_reachable(tracking_uri)
    except ConnectionError as exc:
        raise SweepError(str(exc)) from None
    trainable_fn = pick_trainable(space)
    assets = prepare_or_explain(space)  # data problems surface here: before Ray starts or anything is written
    if not ray.is_initialized():
        connect_ray(args.address)
    gpus = resolve_gpus(space.resources.gpus_per_trial)
    experiment_id = mlflow_logging.prepare_store(tracking_uri, experiment, results / "mlartifacts")
    trials = space.search.num_samples if space.search.num_samples is not None else "budget-bound"
    print(f"sweep {sweep_dir.name}: {trials} trials, {space.resources.cpus_per_trial} CPU + "
          f"{gpus} GPU each; results in {sweep_dir}; MLflow {tracking_uri} (experiment {experiment!r})", flush=True)
    trainable = tune.with_resources(tune.with_parameters(trainable_fn, assets=assets, **trainable_extras(space,
                                                                                                           storage)),
                                    {"cpu": space.resources.cpus_per_trial, "gpu": gpus})
    run_map = sweep_dir / RUN_MAP
    # A fresh sweep logs through this callback; a resumed one through the callback restored with Ray's experiment
    # state (with the MLflow run map). Either way this one writes what an MLflow outage left out (sync_mlflow).
    callback = mlflow_logging.MlflowSweepCallback(
        tracking_uri, experiment_id, sweep_dir.name, run_map,
        sweep_tags={"space": space.path, "searcher": f"optuna-{space.search.sampler}",
                    "n_startup_trials": str(space.search.n_startup_trials if space.search.sampler == "tpe" else 0),
                    "scheduler": space.search.scheduler, "metric": space.search.metric,
                    **({"mlflow.parentRunId": args.mlflow_parent} if getattr(args, "mlflow_parent", None) else {})})
    experiment_path = f"{storage.rstrip('/')}/{sweep_dir.name}"
    if space.search.budget:  # this session's clock starts here: Ray is up, trials are about to start
        BudgetLedger(sweep_dir / BUDGET_STATE, space.search.budget).start_session()
    if args.resume:  # searcher and callbacks (with the MLflow run map) come back from the experiment state
        # param_space again: new trials after the resume must carry the constant `run` / `sweep` keys even when the
        # saved experiment state predates the first trial (a kill during Ray's first state sync).
        tuner = tune.Tuner.restore(experiment_path, trainable=trainable, param_space=param_space(space),
                                   resume_unfinished=True, resume_errored=True)
    else:
        tuner = build_tuner(space, trainable, sweep_dir, storage, [callback, ReportLines(space.search.metric)])
    context = {"tracking_uri": tracking_uri, "experiment": experiment, "run_map": run_map,
               "experiment_path": experiment_path, "data": assets.data, "experiment_id": experiment_id,
               "assets": assets, "trainable": trainable, "storage": storage, "gpus": gpus}
    return tuner, callback, context


def finish_sweep(space: Space, args: argparse.Namespace, folder: SweepFolder, tuner: tune.Tuner,
                 callback: mlflow_logging.MlflowSweepCallback, context: dict, signals: StopSignals) -> int:
    """``fit``, then the truthful record: MLflow, Optuna, summary files; an interrupted sweep says how to resume."""
    sweep_dir, tracking_uri, run_map = folder.path, context["tracking_uri"], context["run_map"]
    started, driver_cpu = time.time(), time.process_time()
    grid, mlflow_sync = fit_and_record(tuner, callback, signals, tracking_uri, run_map, space.search.metric)
    interrupted = signals.received is not None
    if interrupted:
        park_interrupted(sweep_dir / "optuna.db", sweep_dir.name)
    rows = trial_rows(grid, space)
    confirmation = None
    plan = getattr(args, "confirm_plan", None)
    if plan is not None and not interrupted:
        confirmation, confirm_sync = run_confirmation(space, args, folder, context, rows, plan, signals)
        interrupted = signals.received is not None
        mlflow_sync = {"complete": mlflow_sync.get("complete") and confirm_sync.get("complete"),
                       "records_written_late": mlflow_sync.get("records_written_late", 0)
                       + confirm_sync.get("records_written_late", 0)}
    wall, driver_cpu = time.time() - started, time.process_time() - driver_cpu
    session = {"outcome": "interrupted" if interrupted else "finished", "signal": signals.name or None,
               "wall_seconds": round(wall, 1), "driver_cpu_seconds": round(driver_cpu, 1)}  # CPU trials did not get
    summary = write_summary(rows, space, sweep_dir, session, {
        "results_dir": str(sweep_dir), "ray_storage": context["experiment_path"],
        "mlflow": {"tracking_uri": tracking_uri, "experiment": context["experiment"],
                   "experiment_id": context["experiment_id"],
                   "parent_run_id": mlflow_logging.load_run_map(run_map)["parent"], **mlflow_sync}},
        confirmation=confirmation)
    try:
        plots = write_sweep_report(grid, rows, space, sweep_dir, context.get("data"), sweep_dir / "optuna.db")
    except Exception as exc:  # a picture must not cost the sweep its record: the summary files are written
        print(f"warning: sweep plots not drawn ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})", flush=True)
        plots = []
    if mlflow_sync.get("complete"):
        record_parent_run(space, summary, sweep_dir, plots)
    print(format_table(rows, space.search.metric))
    if summary.get("confirmation"):
        print(format_confirmation(summary["confirmation"]))
    print(f"summary: {sweep_dir / 'summary.json'} (wall {summary['wall_seconds']:.1f} s over "
          f"{len(summary['sessions'])} session(s), {summary['total_steps_trained']} training steps)")
    if interrupted:
        unfinished = summary["states"][reporting.INTERRUPTED]
        print(f"{signals.name}: sweep {sweep_dir.name} interrupted with {unfinished} unfinished trial(s); no "
              f"best.yaml until it ends. Continue it with:", flush=True)
        print(f"resume: {resume_command(args)}", flush=True)
        return signals.exit_code
    best = summary["best"]
    if best:
        print(f"best trial {best['trial_id']}: {space.search.metric}={best['metrics'][space.search.metric]:.4g}; "
              f"samples {best['sample_grid']}; config {best['best_yaml']}")
    return 0 if best else 1


def fit_and_record(tuner: tune.Tuner, callback: mlflow_logging.MlflowSweepCallback, signals: StopSignals,
                   tracking_uri: str, run_map: Path, metric: str):
    """``fit`` one stage (the search, or the confirmation), then its MLflow record made complete; returns the result
    grid and the MLflow sync's outcome. A stage that did not finish closes its MLflow runs as KILLED / FAILED."""
    status = "FAILED"
    try:
        with signals.during_fit():
            grid = tuner.fit()
        status = "KILLED" if signals.received else "FINISHED"
    finally:
        if status != "FINISHED":
            try:
                mlflow_logging.close_sweep_runs(tracking_uri, run_map, status)
            except Exception as exc:  # keep the original error; an unreachable store must not mask it
                print(f"warning: could not close the MLflow runs of this sweep ({exc})", flush=True)
    if not callback.flush(MLFLOW_FLUSH_S):
        print(f"MLflow: {callback.pending} write(s) still queued after {MLFLOW_FLUSH_S:.0f} s; the sync below "
              f"writes them from Ray's record", flush=True)
    try:
        return grid, sync_mlflow(callback, grid, metric, "KILLED" if signals.received else "FINISHED")
    finally:
        callback.close()


def run_confirmation(space: Space, args: argparse.Namespace, folder: SweepFolder, context: dict, rows: list[dict],
                     plan: ConfirmPlan, signals: StopSignals) -> tuple[dict | None, dict]:
    """The confirmation stage (trainables.confirm): the top-K configurations x S fresh seeds, FIFO, as a second Ray
    experiment ``<sweep>-confirm`` beside the search (``--resume`` restores it); its MLflow runs nest under the
    sweep's run with ``stage=confirm``. Returns the confirmation record (None: nothing to confirm) and the sync."""
    sweep_dir, metric = folder.path, space.search.metric
    candidates = top_configurations(rows, plan.k)
    if not candidates:
        print("confirmation: no trial with a score to confirm", flush=True)
        return None, {"complete": True}
    runs = confirmation_runs(rows, plan, space.run)
    name = f"{sweep_dir.name}-confirm"
    experiment_path = f"{context['storage'].rstrip('/')}/{name}"
    confirm_map = sweep_dir / CONFIRM_RUN_MAP
    if not confirm_map.exists():  # the confirmation runs nest under the sweep's own run
        mlflow_logging.RunMap(confirm_map, {"parent": mlflow_logging.load_run_map(context["run_map"])["parent"]}).save()
    callback = mlflow_logging.MlflowSweepCallback(
        context["tracking_uri"], context["experiment_id"], f"{sweep_dir.name} confirm", confirm_map,
        sweep_tags={"stage": "confirm", "metric": metric})
    print(f"confirmation: top {len(candidates)} configuration(s) x {plan.s} seeds {plan.seeds(space.run['train']['seed'])}"
          f" = {len(runs)} runs at the full budget", flush=True)
    if tune.Tuner.can_restore(experiment_path):
        tuner = tune.Tuner.restore(experiment_path, trainable=context["trainable"], resume_unfinished=True,
                                   resume_errored=True)
    else:
        tuner = tune.Tuner(
            context["trainable"],
            param_space={RUN_KEY: tune.grid_search(runs), SWEEP_KEY: param_space(space)[SWEEP_KEY]},
            tune_config=tune.TuneConfig(scheduler=DurableFIFO(), num_samples=1, reuse_actors=True,
                                        max_concurrent_trials=space.resources.max_concurrent,
                                        trial_dirname_creator=trial_dirname),
            run_config=stage_run_config(name, context["storage"], [callback, ReportLines(metric)],
                                        status_reporter(metric, [], sweep_dir, space.max_budget)))
    grid, sync = fit_and_record(tuner, callback, signals, context["tracking_uri"], confirm_map, metric)
    if signals.received:
        return None, sync
    confirm_rows = trial_rows(grid, space)
    names = sorted(METRICS.keys_of(space.run["eval"]["metrics"]))
    confirmation = summarise(confirm_rows, candidates, space.run, metric, space.search.mode, plan, names)
    confirmation["steps_trained"] = sum(r["steps_trained"] for r in confirm_rows)
    confirmation["evaluation_noise"] = winner_evaluation_noise(space, grid, confirmation, context["assets"], names)
    return confirmation, sync


def winner_evaluation_noise(space: Space, grid, confirmation: dict, assets, names: list[str]) -> dict:
    """Evaluation noise of the confirmed winner's first generator (its final checkpoint, R latent seeds, CPU)."""
    if not confirmation["configs"]:
        return {}
    first = confirmation["configs"][0]["trials"][0]
    result = next((r for r in grid if reporting.result_trial_id(r) == first and r.checkpoint is not None), None)
    if result is None:
        return {}
    cfg = trial_run_config(result.config)
    if is_ensemble(space):
        from imbgan_core.ensemble.ensemble import Ensemble
        trainee = Ensemble(cfg, assets=assets, device="cpu")
    else:
        from imbgan_core.training import Run
        trainee = Run(cfg, assets=assets, device="cpu")
    with result.checkpoint.as_directory() as checkpoint:
        trainee.load(checkpoint)
    print(f"confirmation: evaluating trial {first}'s generator with {confirmation['r']} latent seeds", flush=True)
    return {**evaluation_noise(trainee, names, confirmation["r"]), "trial": first}


def record_parent_run(space: Space, summary: dict, sweep_dir: Path, plots: list[Path]) -> None:
    """The sweep's files and plots on its MLflow parent run; a store that fails now costs a warning, not the sweep
    (``--resume`` of a finished sweep writes it again)."""
    files = [Path(space.path), sweep_dir / "summary.json", sweep_dir / "trials.csv", sweep_dir / "best.yaml",
             sweep_dir / "best_samples.png", sweep_dir / "confirmation.csv", *plots]
    mlflow = summary["mlflow"]
    try:
        logged = mlflow_logging.record_sweep(mlflow["tracking_uri"], mlflow["parent_run_id"], space, summary, files)
    except Exception as exc:  # the store went away after the sync: the sweep's own files are complete
        print(f"warning: the sweep run in MLflow lacks its files and plots ({str(exc).splitlines()[0][:200]}); "
              f"--resume writes them", flush=True)
        return
    print(f"MLflow: sweep run {mlflow['parent_run_id']} carries the base config, the best trial and {logged} "
          f"file(s) (plots in {sweep_dir / 'plots'})", flush=True)
    serve = "" if mlflow["tracking_uri"].startswith(("http://", "https://")) else \
        f"`mlflow ui --backend-store-uri {mlflow['tracking_uri']} --host 127.0.0.1` (make mlflow-ui), then "
    print(f"MLflow UI: {serve}open {mlflow_logging.ui_link(mlflow['tracking_uri'], mlflow['experiment_id'])}",
          flush=True)


def resume_command(args: argparse.Namespace) -> str:
    """The exact command that continues this sweep: the driver's own command line plus ``--resume``."""
    argv = list(getattr(args, "argv", None) or sys.argv[1:])
    if "--resume" not in argv:
        argv.append("--resume")
    python = os.path.relpath(sys.executable) if not os.path.relpath(sys.executable).startswith("..") \
        else sys.executable
    return shlex.join([python, "-m", "trainables.tune", *argv])


def sync_mlflow(callback: mlflow_logging.MlflowSweepCallback, grid, metric: str, parent_status: str) -> dict:
    """Fill any MLflow gap left by an outage mid-sweep (issue #7), retrying a store that is still down; a gap that
    remains is reported on the console and in summary.json (``mlflow.complete``), never left silent."""
    error = None
    for attempt in range(MLFLOW_SYNC_ATTEMPTS):
        try:
            written = callback.sync(grid, metric, parent_status)
        except Exception as exc:  # the store is still unreachable (or refuses a record): retry, then report
            error = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            time.sleep(MLFLOW_SYNC_PAUSE_S * (attempt + 1))
            continue
        if written:
            print(f"MLflow: wrote {written} records missing from {callback.tracking_uri} (an outage mid-sweep, or a "
                  f"driver stopped before they were logged)", flush=True)
        return {"complete": True, "records_written_late": written}
    print(f"WARNING: could not complete the MLflow record of this sweep in {callback.tracking_uri} ({error}); run "
          f"the same command with --resume once the store is back to write what is missing", flush=True)
    return {"complete": False, "error": error}


def connect_ray(address: str | None) -> None:
    """Start a local Ray, or join the cluster at ``address``; a cluster that refuses us is a SweepError."""
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    except ConnectionError as exc:
        raise SweepError(f"--address {address}: cannot connect to the Ray cluster ({exc}). Is it running, and does "
                         f"this shell have RAY_AUTH_MODE=token and the cluster's token (docs/cluster.md)?") from None


def prepare_or_explain(space: Space):
    """Assets for the sweep; a bad dataset (missing folder, empty class, unreadable image) becomes a SweepError."""
    try:
        return prepare_sweep_assets(space)
    except (ConfigError, ValueError, OSError) as exc:
        raise SweepError(f"preparing data and classifiers for {space.path}: {exc}") from None


def build_tuner(space: Space, trainable, sweep_dir: Path, storage: str, callbacks: list) -> tune.Tuner:
    s = space.search
    if s.scheduler == "asha":
        scheduler = PersistentASHA(sweep_dir / ASHA_STATE, time_attr="step", metric=s.metric, mode=s.mode,
                                   max_t=space.max_budget, grace_period=s.grace_period,
                                   reduction_factor=s.reduction_factor)
    else:
        scheduler = DurableFIFO()
    budget = s.budget or None
    searcher = TruthfulOptunaSearch(space, sweep_dir / "optuna.db", study_name=sweep_dir.name,
                                    budget=budget and BudgetLedger(sweep_dir / BUDGET_STATE, s.budget))
    return tune.Tuner(
        trainable,
        param_space=param_space(space),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=s.ray_num_samples,
                                    max_concurrent_trials=space.resources.max_concurrent, reuse_actors=True,
                                    trial_dirname_creator=trial_dirname),
        run_config=stage_run_config(
            sweep_dir.name, storage, callbacks,
            status_reporter(s.metric, [d.key for d in space.params], sweep_dir, space.max_budget,
                            early_stopping=s.scheduler == "asha", step_budget=s.budget.steps),
            stop=budget and BudgetStopper(BudgetLedger(sweep_dir / BUDGET_STATE, s.budget))),
    )


def stage_run_config(name: str, storage: str, callbacks: list, reporter, stop=None) -> tune.RunConfig:
    """Ray's run settings of a sweep stage (the search, the confirmation): the last 2 checkpoints per trial and
    TRIAL_RESTARTS restarts of a trial whose process dies."""
    return tune.RunConfig(name=name, storage_path=storage, callbacks=callbacks, verbose=1, stop=stop,
                          progress_reporter=reporter, checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                          failure_config=tune.FailureConfig(max_failures=TRIAL_RESTARTS))


def resolve_gpus(value) -> float:
    """'auto' -> 0.25 when the Ray cluster has GPUs (logical ones included), else 0."""
    if value != "auto":
        return float(value)
    return AUTO_GPU_SHARE if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def trainable_extras(space: Space, storage: str) -> dict:
    """The ensemble trainable's member cache: under a POSIX storage path, where every node sees it (a shared mount
    on a cluster); with a cloud URI each node keeps its own in its imbgan cache (imbgan_core.ensemble.member_cache).
    Cached members are content-hashed, so sweeps sharing a storage path share them too."""
    if not is_ensemble(space):
        return {}
    return {"member_cache": None if "://" in storage else str(Path(storage) / MEMBER_CACHE)}


def is_ensemble(space: Space) -> bool:
    return space.run["ensemble"]["size"] > 1 or any(d.key.startswith("ensemble.") for d in space.params)


def pick_trainable(space: Space):
    """The ensemble trainable when the run or the space involves an ensemble, else the single-GAN trainable."""
    if not is_ensemble(space):
        from trainables.gan import train_gan
        return train_gan
    try:
        from trainables.ensemble import train_ensemble
    except ImportError as exc:
        raise SweepError(f"space {space.path} needs the ensemble trainable (trainables.ensemble.train_ensemble): "
                         f"{exc}") from None
    return train_ensemble
