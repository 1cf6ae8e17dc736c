"""End-of-sweep report: the trial table (sorted by the metric), ``summary.json``, ``trials.csv`` and ``best.yaml``.

``best.yaml`` is the full run config of the best trial at the full budget, with the trial's own device and torch
thread count (they change float rounding), so ``python -m imbgan_core.train --config best.yaml`` retrains it
without Ray and reproduces its metrics on the same machine. Diverged, errored and interrupted trials sort last and
are never "best"; an interrupted sweep writes no best.yaml (its ranking is unfinished: ``--resume`` completes it).
``wall_seconds`` is the sum over the sweep's sessions (a fresh start and every ``--resume``), each listed under
``sessions``.
"""
from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import yaml

from imbgan_core.files import atomic_write_text
from imbgan_core.metrics.catalog import METRICS
from trainables import reporting
from trainables.confirm import mean_ci_text
from trainables.spaces import Space, searched, trial_run_config


def trial_rows(result_grid, space: Space) -> list[dict]:
    """One row per trial: id, state, steps, searched config, last metrics, sample grid path, sorted best first."""
    names = sorted(METRICS.keys_of(space.run["eval"]["metrics"]))
    rows = []
    for result in result_grid:
        last = result.metrics or {}
        errored = result.error is not None
        grid = None
        if result.checkpoint is not None and not errored:
            candidate = Path(result.checkpoint.path) / reporting.ARTIFACTS_DIR / reporting.SAMPLE_GRID
            grid = str(candidate) if candidate.exists() else None
        rows.append({
            "trial_id": last.get("trial_id") or Path(result.path).name,
            "state": reporting.final_state(last, errored=errored),
            "steps": int(last.get(reporting.STEP, 0)),
            # what the trial trained itself: less than steps when an ensemble reused another trial's members
            "steps_trained": int(last.get(reporting.STEPS_TRAINED, last.get(reporting.STEP, 0))),
            "config": searched(result.config or {}),
            "metrics": reporting.numeric_metrics(last, names),
            "train_seconds": float(last.get("time_total_s", 0.0)),
            "sample_grid": grid,
            "run_config": _reproducible(trial_run_config(result.config).to_dict(), last) if result.config else None,
        })
    rows.sort(key=lambda r: _sort_key(r, space.search.metric, space.search.mode))
    return rows


def _reproducible(run_config: dict, last: dict) -> dict:
    """The trial's run config with what else determined its numbers: the device and torch threads it ran with."""
    train = dict(run_config["train"])
    if last.get("torch_threads"):
        train["threads"] = int(last["torch_threads"])
    if last.get("device"):
        train["device"] = str(last["device"])
    return {**run_config, "train": train}


def _sort_key(row: dict, metric: str, mode: str) -> tuple:
    value = row["metrics"].get(metric)
    usable = row["state"] in (reporting.COMPLETED, *reporting.EARLY_STOPPED) and value is not None and math.isfinite(value)
    score = (value if mode == "min" else -value) if usable else math.inf
    return (not usable, row["state"] != reporting.COMPLETED, score)


def write_summary(rows: list[dict], space: Space, sweep_dir: Path, session: dict, extra: dict,
                  confirmation: dict | None = None) -> dict:
    """Write summary.json, trials.csv and best.yaml (+ best_samples.png); return the summary dict.

    ``session`` is this driver's {"outcome", "wall_seconds", "driver_cpu_seconds"}; an outcome other than
    ``finished`` (interrupted) writes no best.yaml. With a ``confirmation`` (trainables.confirm) best.yaml, the
    sample grid and ``best`` come from the confirmed winner (the search's own best stays as ``search_best``), and
    ``confirmation.csv`` lists every confirmed configuration."""
    sessions = [*previous_sessions(sweep_dir), session]
    finished = session["outcome"] == "finished"
    best = next((r for r in rows if r["state"] in (reporting.COMPLETED, *reporting.EARLY_STOPPED)
                 and space.search.metric in r["metrics"]), None) if finished else None
    summary = {
        "sweep": space.name, "space": space.path, "metric": space.search.metric, "mode": space.search.mode,
        "status": session["outcome"], "max_budget": space.max_budget, "total_steps": sum(r["steps"] for r in rows),
        "total_steps_trained": sum(r["steps_trained"] for r in rows),
        "budget": budget_record(space, sum(r["steps_trained"] for r in rows), sum(s["wall_seconds"] for s in sessions)),
        "states": {s: sum(r["state"] == s for r in rows) for s in reporting.FINAL_STATES},
        "best": None, "wall_seconds": round(sum(s["wall_seconds"] for s in sessions), 1),
        "driver_cpu_seconds": round(sum(s["driver_cpu_seconds"] for s in sessions), 1), "sessions": sessions,
        **extra, "trials": [{k: v for k, v in r.items() if k != "run_config"} for r in rows],
    }
    if best is not None:
        best_yaml = sweep_dir / "best.yaml"
        atomic_write_text(best_yaml, _best_yaml_text(best, space))
        grid = copy_best_files(best["sample_grid"], sweep_dir)
        summary["best"] = {"trial_id": best["trial_id"], "state": best["state"], "config": best["config"],
                           "metrics": best["metrics"], "steps": best["steps"], "sample_grid": grid,
                           "best_yaml": str(best_yaml)}
    if confirmation is not None:
        summary["confirmation"] = {**confirmation, "configs": [{k: v for k, v in c.items() if k != "rows"}
                                                               for c in confirmation["configs"]]}
        if best is not None and confirmation["configs"]:
            summary["search_best"] = summary["best"]
            summary["best"] = _confirmed_best(confirmation, space, sweep_dir)
        _write_confirmation_csv(summary["confirmation"], sweep_dir / "confirmation.csv")
    atomic_write_text(sweep_dir / "summary.json", json.dumps(summary, indent=1, default=str))
    _write_csv(rows, sweep_dir / "trials.csv")
    return summary


def _confirmed_best(confirmation: dict, space: Space, sweep_dir: Path) -> dict:
    """best.yaml and best_samples.png from the confirmed winner's first seed; its header carries mean ± CI."""
    winner, metric = confirmation["configs"][0], space.search.metric
    first = winner["rows"][0]
    stats = winner["metrics"][metric]
    header = (f"# Confirmed winner of sweep {space.name}: the configuration of trial {winner['origin_trial']}, "
              f"retrained with {stats['n']} fresh seeds {winner['seeds']}.\n"
              f"# {metric} = {mean_ci_text(stats['mean'], stats['ci95'])} (mean ± 95 % Student-t half-width, n = "
              f"{stats['n']}; sd {stats['sd']:.3g}); the sweep's single-seed value was {winner['sweep_value']:.4g}.\n"
              f"# This file is the seed-{first['run_config']['train']['seed']} run "
              f"({first['trial_id']}): python -m imbgan_core.train --config best.yaml --out DIR\n")
    best_yaml = sweep_dir / "best.yaml"
    atomic_write_text(best_yaml, header + yaml.safe_dump(first["run_config"], sort_keys=False))
    grid = copy_best_files(first["sample_grid"], sweep_dir)
    return {"trial_id": winner["origin_trial"], "state": reporting.COMPLETED, "config": winner["config"],
            "metrics": {k: v["mean"] for k, v in winner["metrics"].items()}, "steps": first["steps"],
            "sample_grid": grid, "best_yaml": str(best_yaml),
            "confirmed": {"seeds": winner["seeds"], "trials": winner["trials"], "n": stats["n"],
                          "mean": stats["mean"], "ci95": stats["ci95"], "sd": stats["sd"]}}


def copy_best_files(sample_grid: str | None, sweep_dir: Path) -> str | None:
    """The best trial's sample grid and per-class table (from its final checkpoint's artifacts) beside summary.json:
    ``best_samples.png`` and ``best_per_class.csv`` (trainables.study reads them). Returns the grid's new path."""
    if not sample_grid:
        return None
    grid = sweep_dir / "best_samples.png"
    shutil.copyfile(sample_grid, grid)
    per_class = Path(sample_grid).with_name(reporting.PER_CLASS_CSV)
    if per_class.is_file():
        shutil.copyfile(per_class, sweep_dir / "best_per_class.csv")
    return str(grid)


def _write_confirmation_csv(confirmation: dict, path: Path) -> None:
    """rank, origin trial, config, n, then mean / ci95 / sd of every metric."""
    names = sorted({k for c in confirmation["configs"] for k in c["metrics"]})
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["rank", "origin_trial", "config", "n", "seeds",
                         *(f"{n}_{part}" for n in names for part in ("mean", "ci95", "sd"))])
        for rank, c in enumerate(confirmation["configs"], 1):
            cells = []
            for name in names:
                m = c["metrics"].get(name, {})
                cells += [m.get("mean", ""), m.get("ci95", ""), m.get("sd", "")]
            writer.writerow([rank, c["origin_trial"], json.dumps(c["config"], sort_keys=True, default=str),
                             len(c["seeds"]), " ".join(map(str, c["seeds"])), *cells])


def budget_record(space: Space, steps_spent: int, seconds_spent: float) -> dict:
    """The sweep's budget (None: no limit of that kind), what it spent, and whether that was all of it."""
    budget = space.search.budget
    exhausted = (budget.steps is not None and steps_spent >= budget.steps) or (
        budget.seconds is not None and seconds_spent >= budget.seconds)
    return {**budget.to_dict(), "steps_spent": steps_spent, "seconds_spent": round(seconds_spent, 1),
            "exhausted": bool(exhausted)}


def previous_sessions(sweep_dir: Path) -> list[dict]:
    """The sessions recorded by earlier drivers of this sweep (summary.json), so wall time adds up over resumes."""
    try:
        return list(json.loads((sweep_dir / "summary.json").read_text(encoding="utf-8")).get("sessions", []))
    except (OSError, ValueError):
        return []


def _best_yaml_text(best: dict, space: Space) -> str:
    header = (f"# Best trial {best['trial_id']} of sweep {space.name} ({space.search.metric} = "
              f"{best['metrics'][space.search.metric]:.4g} at step {best['steps']}, {best['state']}).\n"
              f"# Retrain at the full budget: python -m imbgan_core.train --config best.yaml --out DIR\n")
    return header + yaml.safe_dump(best["run_config"], sort_keys=False)


def _write_csv(rows: list[dict], path: Path) -> None:
    config_keys = sorted({k for r in rows for k in r["config"]})
    metric_names = sorted({k for r in rows for k in r["metrics"]})
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["trial_id", "state", "steps", "steps_trained", *config_keys, *metric_names, "train_seconds"])
        for r in rows:
            writer.writerow([r["trial_id"], r["state"], r["steps"], r["steps_trained"],
                             *(r["config"].get(k, "") for k in config_keys),
                             *(r["metrics"].get(k, "") for k in metric_names), f"{r['train_seconds']:.1f}"])


def format_table(rows: list[dict], metric: str) -> str:
    """The trial table printed at the end of a sweep."""
    config_keys = sorted({k for r in rows for k in r["config"]})
    others = sorted({k for r in rows for k in r["metrics"]} - {metric})
    header = ["trial", "state", "steps", metric, *others, *config_keys]
    lines = [header]
    for r in rows:
        lines.append([r["trial_id"], r["state"], str(r["steps"]), _fmt(r["metrics"].get(metric)),
                      *(_fmt(r["metrics"].get(k)) for k in others), *(_fmt(r["config"].get(k)) for k in config_keys)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in lines)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
