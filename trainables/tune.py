"""``python -m trainables.tune --space FILE``: a Ray Tune sweep of real GAN trainings (Optuna TPE + ASHA, MLflow).

Flow (docs/sweeps.md): validate the space (exit 2 on any problem, nothing written) -> prepare assets once (data
problems: exit 2) -> start/connect Ray -> create the MLflow store -> Tuner(TruthfulOptunaSearch + ASHA on steps)
-> summary. The work after validation lives in trainables.sweep.
"""
from __future__ import annotations

import argparse
import os
import sys

EXAMPLES = """examples:
  python -m trainables.tune --space search_spaces/cbgan.yaml                       # the default demo sweep
  python -m trainables.tune --space search_spaces/cbgan.yaml --dry-run             # validate, print the plan
  python -m trainables.tune --space search_spaces/smooth.yaml --num-samples 4 --max-steps 400
  python -m trainables.tune --space search_spaces/cbgan.yaml --budget-steps 6000   # trials until 6000 steps are spent
  python -m trainables.tune --space search_spaces/cbgan.yaml --confirm 3:5          # top 3 configs x 5 seeds, 95% CI
  python -m trainables.tune --space search_spaces/cbgan.yaml --resume              # continue an interrupted sweep
  python -m trainables.tune --space search_spaces/cbgan.yaml --address 10.0.0.1:6379 \\
      --storage-path /nfs/sweeps --gpus-per-trial 0.25 --mlflow-uri http://127.0.0.1:5000
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m trainables.tune", description=__doc__.split("\n")[0], allow_abbrev=False,
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", required=True, metavar="FILE",
                   help="search-space YAML, e.g. search_spaces/cbgan.yaml")
    p.add_argument("--num-samples", type=int, metavar="N", help="trials to run (overrides search.num_samples), e.g. 4")
    p.add_argument("--max-steps", type=int, metavar="N",
                   help="full training budget per trial (overrides run.train.steps; ASHA's max_t), e.g. 600")
    p.add_argument("--results", default="results", metavar="DIR",
                   help="results root; the sweep writes DIR/<sweep name>/ (default ./results)")
    p.add_argument("--mlflow-uri", metavar="URI",
                   help="MLflow tracking URI (default sqlite:///DIR/mlflow.db, no server needed), "
                        "e.g. http://127.0.0.1:5000")
    p.add_argument("--experiment", metavar="NAME", help="MLflow experiment name (default: the sweep name)")
    p.add_argument("--mlflow-parent", metavar="RUN_ID",
                   help="nest the sweep's MLflow run under this run of the same experiment (trainables.study does)")
    p.add_argument("--address", metavar="HOST:PORT",
                   help="connect to an existing Ray cluster instead of starting a local one, e.g. 10.0.0.1:6379")
    p.add_argument("--storage-path", metavar="PATH",
                   help="Ray storage for trial checkpoints; must be shared (NFS or s3://...) on a multi-node "
                        "cluster (default: the results root)")
    p.add_argument("--cpus-per-trial", type=float, metavar="C", help="CPUs per trial = torch threads, e.g. 1")
    p.add_argument("--gpus-per-trial", metavar="G",
                   help="GPU share per trial: a fraction packs trials on one GPU (0.25 = 4 per GPU); "
                        "'auto' = 0.25 when the cluster has GPUs, else 0")
    p.add_argument("--max-concurrent", type=int, metavar="N", help="at most N trials at once, e.g. 2")
    p.add_argument("--resume", action="store_true",
                   help="continue the latest sweep of this space in the results root (unfinished and errored "
                        "trials resume from their last checkpoint; MLflow runs are reused)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the space and print the resolved space and trial plan; start nothing")
    p.add_argument("--seed", type=int, metavar="S", help="searcher seed (overrides search.searcher.optuna.seed)")
    p.add_argument("--grace-period", type=int, metavar="N",
                   help="ASHA's first rung in training steps (overrides search.scheduler.asha.grace_period; the "
                        "space must use ASHA), e.g. 200")
    p.add_argument("--budget-steps", type=int, metavar="N",
                   help="stop the sweep when its trials have trained N steps in all (search.budget.steps): no new "
                        "trial starts, trials in flight stop at their next evaluation; without --num-samples, "
                        "trials keep coming until then")
    p.add_argument("--time-budget", metavar="DURATION",
                   help="the same for the sweep's wall time over all sessions (search.budget.time), e.g. 20m, 1h30m")
    p.add_argument("--confirm", metavar="K:S[:R]",
                   help="after the search, retrain the top K configurations with S fresh seeds each at the full "
                        "budget and rank them by mean with a 95%% t interval; R latent seeds (default 5) measure "
                        "the winner's evaluation noise; best.yaml comes from the confirmed winner, e.g. 3:5")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override into the space document, repeatable, e.g. --set run.train.lr_g=1e-3 "
                        "--set search.num_samples=4")
    return p


def space_overrides(args: argparse.Namespace) -> dict:
    """CLI flags as dotted overrides into the space document (validated together with the file): ``--set`` items
    first, the named flags over them."""
    searcher = "search.searcher.optuna"
    gpus = args.gpus_per_trial
    if gpus is not None and gpus != "auto":
        try:
            gpus = float(gpus)
        except ValueError:
            pass  # the space validation reports it with the key name
    from imbgan_core.config import parse_set

    pairs = {"search.scheduler.asha.grace_period": args.grace_period, "search.num_samples": args.num_samples,
             "run.train.steps": args.max_steps, f"{searcher}.seed": args.seed,
             "resources.cpus_per_trial": args.cpus_per_trial, "resources.gpus_per_trial": gpus,
             "resources.max_concurrent": args.max_concurrent, "search.budget.steps": args.budget_steps,
             "search.budget.time": args.time_budget}
    overrides = {**parse_set(args.set), **{k: v for k, v in pairs.items() if v is not None}}
    if (args.budget_steps is not None or args.time_budget is not None) and args.num_samples is None:
        overrides.setdefault("search.num_samples", None)  # a budget flag: trials until it is spent
    return overrides


def load_space_with_flags(args: argparse.Namespace):
    """The validated space with the CLI's overrides; ``--grace-period`` on a FIFO space is refused (the override
    would silently switch it to ASHA)."""
    from trainables.spaces import SpaceError, load_space

    overrides = space_overrides(args)
    if args.grace_period is not None:
        without = {k: v for k, v in overrides.items() if not k.startswith("search.scheduler.asha.grace_period")}
        if load_space(args.space, without).search.scheduler != "asha":
            raise SpaceError(args.space, [f"--grace-period {args.grace_period}: search.scheduler is not asha"])
    return load_space(args.space, overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the exact --resume command of an interruption
    if not args.dry_run:  # a local Ray binds 127.0.0.1 only (docs/cluster.md); Ray reads this when imported
        from trainables.compat import local_ray_environment
        os.environ.update(local_ray_environment(args.address))
    from imbgan_core.config import ConfigError
    from trainables.preflight import PreflightError, check_results_root, check_tracking_uri
    from trainables.spaces import SpaceError
    from trainables.confirm import ConfirmError, parse_confirm
    try:
        args.confirm_plan = parse_confirm(args.confirm) if args.confirm else None
        space = load_space_with_flags(args)
        check_results_root(args.results, space.name, args.storage_path)  # flags naming paths: before Ray starts
        if args.mlflow_uri:
            check_tracking_uri(args.mlflow_uri)
    except (SpaceError, ConfigError, PreflightError, ConfirmError) as exc:  # ConfigError: a malformed --set item
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(space.describe())
        if args.confirm_plan:
            plan = args.confirm_plan
            print(f"confirmation: the top {plan.k} configuration(s) retrained with {plan.s} fresh seeds "
                  f"{plan.seeds(space.run['train']['seed'])} at the full budget; evaluation noise from {plan.r} "
                  f"latent seeds")
        return 0
    from trainables.progress import quiet_libraries  # imports Ray: after validation, so bad input fails fast
    quiet_libraries()
    from trainables.compat import IncompatibleLibraryError, check_ray_internals
    try:
        check_ray_internals()  # the Ray / Optuna internals trainables relies on exist (pyproject pins the range)
    except IncompatibleLibraryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from trainables.sweep import SweepError, run_sweep
    try:
        return run_sweep(space, args)
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
