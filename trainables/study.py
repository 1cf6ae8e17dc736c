"""Compare methods at equal cost: every space's sweep under one step budget, confirmed, in one report (issue #15).

    python -m trainables.study --spaces search_spaces/cgan.yaml search_spaces/cbgan.yaml \\
        search_spaces/softlabel.yaml --budget-steps 3000 --confirm 2:3 --max-steps 600

Each space runs as ``python -m trainables.tune`` (one after another: each sweep uses the whole machine or cluster)
with the same ``--budget-steps``, the same ``--confirm`` and the same evaluation: the spaces must agree on the
dataset and on every eval setting (checked before anything runs), and the study sets one metric list for all. The
sweeps write to ``<results>/<name>/sweeps/`` and log into one MLflow experiment, each sweep's run nested under the
study's run, which carries the report. ``<results>/<name>/report/`` gets report.md, table.csv and the plots
(trainables.study_report). ``--resume`` continues an interrupted study: finished sweeps are kept, the interrupted one
resumes (``tune --resume``), the rest run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from imbgan_core.config import flatten
from imbgan_core.files import atomic_write_text

STUDY_FILE = "study.json"
STUDY_METRICS = ["fid", "intra_fid", "kid", "prdc", "class_kl", "class_fill"]  # groups behind the report's table
SHARED = ("dataset.", "eval.")  # run-config sections every space of a study must agree on (eval.metrics is set)


class StudyError(ValueError):
    """Bad study input (flags, spaces that cannot be compared, a folder in the way), found before any sweep runs."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainables.study", description=__doc__.split("\n")[0],
                                allow_abbrev=False)
    p.add_argument("--spaces", nargs="+", required=True, metavar="FILE", help="one space file per method")
    p.add_argument("--budget-steps", type=int, required=True, metavar="N",
                   help="training steps each method's search may spend (trials until it is spent)")
    p.add_argument("--confirm", default="2:3", metavar="K:S[:R]",
                   help="confirm each method's top K configurations with S fresh seeds (default 2:3)")
    p.add_argument("--max-steps", type=int, metavar="N", help="per-trial budget for every space (run.train.steps)")
    p.add_argument("--metrics", nargs="+", default=STUDY_METRICS, metavar="GROUP",
                   help=f"run.eval.metrics for every sweep (default: {' '.join(STUDY_METRICS)})")
    p.add_argument("--name", default="study", help="the study's folder and MLflow experiment (default: study)")
    p.add_argument("--results", default="results", metavar="DIR", help="results root (default ./results)")
    p.add_argument("--mlflow-uri", metavar="URI", help="default: sqlite in <results>/<name>/sweeps/mlflow.db")
    p.add_argument("--seed", type=int, metavar="S", help="searcher seed for every sweep")
    p.add_argument("--resume", action="store_true", help="continue the interrupted study of this --name")
    return p


def sweep_flags(args: argparse.Namespace) -> list[str]:
    """The tune flags every sweep of the study shares."""
    flags = ["--budget-steps", str(args.budget_steps), "--confirm", args.confirm,
             "--set", f"run.eval.metrics={json.dumps(list(args.metrics))}"]
    if args.max_steps:
        flags += ["--max-steps", str(args.max_steps)]
    if args.seed is not None:
        flags += ["--seed", str(args.seed)]
    return flags


def study_reference(space) -> str:
    """The real reference set every method is scored against (the spaces agree on dataset.*), in words."""
    from imbgan_core.data import describe
    from imbgan_core.metrics.evaluator import real_reference
    from trainables.spaces import build_run_config

    return real_reference(describe(build_run_config(space.run, {}).dataset)["eval_counts"])


def check_spaces(args: argparse.Namespace) -> list:
    """Load every space as its sweep will (same flags); they must have distinct names and share dataset and eval."""
    from trainables.confirm import parse_confirm
    from trainables.spaces import SpaceError, load_space
    from trainables.tune import build_parser as tune_parser, load_space_with_flags

    try:
        parse_confirm(args.confirm)
    except ValueError as exc:
        raise StudyError(str(exc)) from None
    spaces, problems = [], []
    for path in args.spaces:
        try:
            spaces.append(load_space_with_flags(tune_parser().parse_args(["--space", path, *sweep_flags(args)])))
        except SpaceError as exc:
            problems.append(str(exc))
    if problems:
        raise StudyError("\n".join(problems))
    names = [s.name for s in spaces]
    if len(set(names)) != len(names):
        raise StudyError(f"--spaces: two spaces share a name ({', '.join(names)}); each names its sweep folder")
    first = {k: v for k, v in flatten(spaces[0].run).items() if k.startswith(SHARED)}
    for space in spaces[1:]:
        mine = {k: v for k, v in flatten(space.run).items() if k.startswith(SHARED)}
        differ = sorted(k for k in set(first) | set(mine) if first.get(k) != mine.get(k))
        if differ:
            raise StudyError(f"{space.path}: differs from {spaces[0].path} in {', '.join(differ)} (e.g. "
                             f"{differ[0]}: {mine.get(differ[0])!r} vs {first.get(differ[0])!r}); a study compares "
                             f"methods on the same data and evaluation")
    return spaces


def load_state(folder: Path, args: argparse.Namespace) -> dict:
    """study.json: the study's settings and each sweep's status; a fresh study refuses an existing one, a resumed
    one must have the same settings."""
    path = folder / STUDY_FILE
    settings = {"name": args.name, "spaces": list(args.spaces), "budget_steps": args.budget_steps,
                "confirm": args.confirm, "max_steps": args.max_steps, "metrics": list(args.metrics),
                "seed": args.seed}
    if path.exists():
        if not args.resume:
            raise StudyError(f"{folder}: a study named {args.name!r} exists; continue it with --resume or choose "
                             f"another --name")
        state = json.loads(path.read_text(encoding="utf-8"))
        before = state["settings"]
        changed = [k for k, v in settings.items() if before.get(k) != v]
        if changed:
            values = ", ".join(f"{k}={before.get(k)!r}" for k in changed)
            raise StudyError(f"--resume: the study in {folder} was started with other {', '.join(changed)} "
                             f"({values})")
        return state
    if args.resume:
        raise StudyError(f"--resume: no study in {folder}")
    return {"settings": settings, "sweeps": {}, "mlflow_run_id": None, "sessions": []}


def save_state(folder: Path, state: dict) -> None:
    atomic_write_text(folder / STUDY_FILE, json.dumps(state, indent=1))


def study_run(tracking_uri: str, experiment: str, state: dict, folder: Path) -> str:
    """The study's MLflow run (created once; its id is in study.json before any sweep starts)."""
    from trainables import mlflow_logging
    from mlflow.tracking import MlflowClient

    experiment_id = mlflow_logging.prepare_store(tracking_uri, experiment, folder / "sweeps" / "mlartifacts")
    client = MlflowClient(tracking_uri)
    if state["mlflow_run_id"] is None:
        run = client.create_run(experiment_id, run_name=f"study {state['settings']['name']}",
                                tags={**mlflow_logging.system_tags(), "kind": "study"})
        for key, value in state["settings"].items():
            client.log_param(run.info.run_id, key, str(value)[:6000])
        state["mlflow_run_id"] = run.info.run_id
        save_state(folder, state)
    else:
        client.update_run(state["mlflow_run_id"], status="RUNNING")
    return state["mlflow_run_id"]


def run_sweep(space, args: argparse.Namespace, folder: Path, state: dict, tracking_uri: str) -> int:
    """One method's sweep through the tune CLI; ``--resume`` when an earlier session of the study started it."""
    sweeps = folder / "sweeps"
    entry = state["sweeps"].setdefault(space.path, {"name": space.name, "status": "pending"})
    sweep_dir = sweeps / space.name
    if entry["status"] == "done" and (sweep_dir / "summary.json").is_file():
        print(f"study: {space.name} already finished ({sweep_dir})", flush=True)
        return 0
    command = [sys.executable, "-m", "trainables.tune", "--space", space.path, "--results", str(sweeps),
               "--mlflow-uri", tracking_uri, "--experiment", args.name, "--mlflow-parent", state["mlflow_run_id"],
               *sweep_flags(args)]
    if entry["status"] == "started" and (sweep_dir / "tuner.pkl").exists():
        command.append("--resume")
    entry["status"] = "started"
    save_state(folder, state)
    print(f"study: sweep {space.name} ({space.path}): {' '.join(command[1:])}", flush=True)
    code = subprocess.call(command)
    if code == 0:
        summary = json.loads((sweep_dir / "summary.json").read_text(encoding="utf-8"))
        if summary["status"] == "finished":
            entry.update(status="done", sweep_dir=str(sweep_dir))
            save_state(folder, state)
    return code


def record_study(tracking_uri: str, run_id: str, report: dict) -> None:
    """The report's files and each method's confirmed means on the study run; the run ends FINISHED."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    for path in report["files"]:
        client.log_artifact(run_id, str(path), artifact_path="report")
    for row in report["rows"]:
        for metric, cell in row["cells"].items():
            if cell is not None:
                client.log_metric(run_id, f"{row['sweep']}.{metric}_mean", cell["mean"])
                client.log_metric(run_id, f"{row['sweep']}.{metric}_ci95", cell["ci95"])
    client.set_terminated(run_id, "FINISHED")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    folder = Path(args.results).resolve() / args.name
    try:
        if args.budget_steps < 1:
            raise StudyError(f"--budget-steps {args.budget_steps}: must be at least 1")
        spaces = check_spaces(args)
        state = load_state(folder, args)
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from trainables import mlflow_logging
    from trainables.study_report import write_report

    folder.mkdir(parents=True, exist_ok=True)
    tracking_uri = args.mlflow_uri or mlflow_logging.default_tracking_uri(folder / "sweeps")
    started = time.time()
    save_state(folder, state)
    run_id = study_run(tracking_uri, args.name, state, folder)
    try:
        for space in spaces:
            code = run_sweep(space, args, folder, state, tracking_uri)
            if code != 0:
                given = " ".join(sys.argv[1:] if argv is None else argv)
                print(f"study: sweep {space.name} ended with exit code {code}; continue the study with:\n"
                      f"resume: {os.path.relpath(sys.executable)} -m trainables.study {given}"
                      f"{'' if args.resume else ' --resume'}", flush=True)
                return code
    finally:  # wall time adds up over the study's sessions (a killed driver's session is lost with it)
        state["sessions"].append({"wall_seconds": round(time.time() - started, 1)})
        save_state(folder, state)
    sweeps = [(s.name, folder / "sweeps" / s.name) for s in spaces]
    report = write_report({**state["settings"], "feature_space": spaces[0].run["eval"]["features"],
                           "real_reference": study_reference(spaces[0])}, sweeps, folder / "report")
    record_study(tracking_uri, run_id, report)
    print((folder / "report" / "report.md").read_text(encoding="utf-8"))
    wall = sum(s["wall_seconds"] for s in state["sessions"])
    print(f"study {args.name}: {len(spaces)} methods in {wall:.0f} s over {len(state['sessions'])} session(s); "
          f"report {folder / 'report' / 'report.md'}; MLflow {tracking_uri} (experiment {args.name!r}, run {run_id})",
          flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
