"""The sweep at a glance, for its parent MLflow run and its folder (issue #16): one picture per question a user asks.

- ``metric_vs_params.png``: the metric against each searched parameter (marker = final state);
- ``parallel_coordinates.png``: every trial as a line over the searched parameters and the metric;
- ``anytime.png``: each trial's metric over steps with ASHA's rungs, and the best-so-far against steps spent;
- ``param_importances.png``: Optuna's parameter importances of the study (fANOVA), when two trials completed;
- ``class_counts.csv``: the long-tailed training split the sweep trained on.

Stopped (``stopped_by_asha``) and diverged trials are drawn apart from completed ones: their last values come from
fewer steps and must not read as final results.
"""
from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402

from trainables import reporting  # noqa: E402
from trainables.spaces import Space, asha_rungs  # noqa: E402

PLOTS_DIR = "plots"
MARKERS = {reporting.COMPLETED: ("o", "completed"), reporting.STOPPED: ("x", "stopped by ASHA"),
           reporting.STOPPED_BY_BUDGET: ("D", "stopped by budget"),
           reporting.DIVERGED: ("^", "diverged"), reporting.ERROR: ("s", "error"),
           reporting.INTERRUPTED: ("v", "interrupted")}


def trial_histories(result_grid, metric: str) -> list[dict]:
    """Per trial: its id, final state and every report as (time, step, metric value), in report order."""
    histories = []
    for result in result_grid:
        frame = result.metrics_dataframe
        rows = [] if frame is None else frame.to_dict("records")
        reports = [(float(r.get("timestamp", 0.0)), int(r[reporting.STEP]), float(r[metric])) for r in rows
                   if r.get(metric) is not None and r.get(reporting.STEP) is not None and _finite(r.get(metric))]
        histories.append({"trial_id": reporting.result_trial_id(result),
                          "state": reporting.final_state(result.metrics, errored=result.error is not None),
                          "reports": reports})
    return histories


def anytime_curve(histories: list[dict], mode: str) -> list[tuple[int, float]]:
    """Best metric so far against training steps spent by the whole sweep, reports taken in time order."""
    events = sorted((t, h["trial_id"], step, value) for h in histories for t, step, value in h["reports"])
    spent, done, best, curve = 0, {}, None, []
    for _, trial_id, step, value in events:
        spent += max(0, step - done.get(trial_id, 0))
        done[trial_id] = max(step, done.get(trial_id, 0))
        if best is None or (value < best if mode == "min" else value > best):
            best = value
        curve.append((spent, best))
    return curve


def write_sweep_report(result_grid, rows: list[dict], space: Space, sweep_dir: Path, data=None,
                       study_db: Path | None = None) -> list[Path]:
    """Write the plots (and class counts) into ``sweep_dir/plots``; return the files written."""
    folder = Path(sweep_dir) / PLOTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    metric, histories = space.search.metric, trial_histories(result_grid, space.search.metric)
    written = [plot_metric_vs_params(rows, space, folder / "metric_vs_params.png"),
               plot_parallel_coordinates(rows, space, folder / "parallel_coordinates.png"),
               plot_anytime(histories, space, folder / "anytime.png")]
    if study_db is not None and Path(study_db).exists():
        written.append(plot_param_importances(study_db, Path(sweep_dir).name, metric,
                                              folder / "param_importances.png"))
    if data is not None:
        written.append(write_class_counts(data, folder / "class_counts.csv"))
    return [p for p in written if p is not None]


def plot_metric_vs_params(rows: list[dict], space: Space, path: Path) -> Path | None:
    keys, metric = [d.key for d in space.params], space.search.metric
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys) + 1.2, 3.2), dpi=100, squeeze=False)
    for ax, dist in zip(axes[0], space.params):
        for state, (marker, label) in MARKERS.items():
            points = [(_axis_value(r["config"].get(dist.key)), r["metrics"][metric]) for r in rows
                      if r["state"] == state and metric in r["metrics"] and dist.key in r["config"]]
            if points:
                ax.scatter(*zip(*points), marker=marker, label=f"{label} ({len(points)})", s=28)
        if dist.kind == "loguniform":
            ax.set_xscale("log")
        ax.set_xlabel(dist.key, fontsize=8)
        ax.set_ylabel(f"last {metric}", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper right", fontsize=7)
    fig.suptitle(f"{space.name}: {metric} ({space.search.mode}) against each searched parameter", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.86, 0.93))
    return _save(fig, path)


def plot_parallel_coordinates(rows: list[dict], space: Space, path: Path) -> Path | None:
    """Each axis scaled to the values the trials took; lines coloured by the metric, dashed unless completed."""
    keys, metric = [d.key for d in space.params], space.search.metric
    scored = [r for r in rows if metric in r["metrics"] and _finite(r["metrics"][metric])]
    if not keys or not scored:
        return None
    columns = [[_axis_value(r["config"].get(k)) for r in scored] for k in keys]
    columns.append([r["metrics"][metric] for r in scored])
    scaled = [_unit(col) for col in columns]
    values = columns[-1]
    lo, hi = min(values), max(values)
    cmap = plt.get_cmap("viridis_r" if space.search.mode == "min" else "viridis")
    fig, ax = plt.subplots(figsize=(max(6.5, 1.6 * len(columns) + 4.0), 3.8), dpi=100)
    for i, row in enumerate(scored):
        colour = cmap((values[i] - lo) / (hi - lo) if hi > lo else 0.5)
        style = "-" if row["state"] == reporting.COMPLETED else "--"
        ax.plot(range(len(columns)), [col[i] for col in scaled], style, color=colour, alpha=0.8,
                label=f"{row['trial_id']} ({row['state']})")
    for j, col in enumerate(columns):
        ax.axvline(j, color="0.7", lw=0.6)
        for text, y, va in _axis_labels(col):
            ax.annotate(text, (j, y), ha="center", va=va, fontsize=6)
    ax.set_xticks(range(len(columns)), [*keys, metric], fontsize=7, rotation=15)
    ax.set_yticks([])
    ax.set_ylim(-0.12, 1.12)
    ax.set_title(f"{space.name}: one line per trial; colour: {metric} (bright = best); dashed: not completed",
                 fontsize=8)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return _save(fig, path)


def plot_anytime(histories: list[dict], space: Space, path: Path) -> Path | None:
    metric, s = space.search.metric, space.search
    if not any(h["reports"] for h in histories):
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.0, 3.6), dpi=100)
    for h in histories:
        if h["reports"]:
            steps, values = [r[1] for r in h["reports"]], [r[2] for r in h["reports"]]
            marker, _ = MARKERS.get(h["state"], ("o", h["state"]))
            left.plot(steps, values, marker=marker, ms=4, lw=1, label=f"{h['trial_id']} ({h['state']})")
    if s.scheduler == "asha" and s.grace_period:
        for rung in asha_rungs(s.grace_period, s.reduction_factor, space.max_budget):
            left.axvline(rung, color="0.5", ls=":", lw=1)
        left.set_title("each trial; dotted: ASHA's rungs", fontsize=9)
    else:
        left.set_title("each trial", fontsize=9)
    left.set_xlabel("training steps of the trial")
    left.set_ylabel(metric)
    left.legend(fontsize=6)
    curve = anytime_curve(histories, s.mode)
    right.step([c[0] for c in curve], [c[1] for c in curve], where="post")
    right.set_xlabel("training steps spent by the sweep")
    right.set_ylabel(f"best {metric} so far")
    right.set_title("anytime curve", fontsize=9)
    fig.suptitle(space.name, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_param_importances(study_db: Path, study_name: str, metric: str, path: Path) -> Path | None:
    """Optuna's importance of each parameter for the objective (fANOVA); None with a reason when it cannot say."""
    storage = f"sqlite:///{Path(study_db).resolve()}"
    try:
        with warnings.catch_warnings(record=True) as caught:  # "too few trials: importances will be equal"
            warnings.simplefilter("always")
            study = optuna.load_study(study_name=study_name, storage=storage)
            importances = optuna.importance.get_param_importances(study)
        meaningless = [w for w in caught if "importances will be equal" in str(w.message)]
        if meaningless:
            raise ValueError(str(meaningless[0].message))
    except (KeyError, ValueError, RuntimeError) as exc:  # fewer than two complete trials, one parameter value, ...
        print(f"note: no parameter importances for {study_name} ({str(exc).splitlines()[0][:200]})", flush=True)
        return None
    if not importances:
        return None
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(5.5, 0.5 * len(names) + 1.4), dpi=100)
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel(f"importance for {metric} (Optuna fANOVA, completed trials)")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return _save(fig, path)


def write_class_counts(data, path: Path) -> Path:
    counts, names = data.train.counts(), list(data.train.class_names)
    group = {k: g for g, members in data.groups.items() for k in members}
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["class", "name", "train_images", "group"])
        for k, (name, count) in enumerate(zip(names, counts)):
            writer.writerow([k, name, int(count), group.get(k, "")])
    return path


def _axis_value(value):
    """A parameter value on a numeric axis: numbers as they are, anything else by its text (a category)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return float(value)


def _axis_labels(column: list) -> list[tuple[str, float, str]]:
    """Where an axis says what its values are: every category at its place, or a number range's two ends."""
    if any(isinstance(v, str) for v in column):
        labels = sorted({str(v) for v in column})
        return [(label or "''", i / max(1, len(labels) - 1), "center") for i, label in enumerate(labels)]
    return [(f"{min(column):.3g}", -0.04, "top"), (f"{max(column):.3g}", 1.04, "bottom")]


def _unit(column: list) -> list[float]:
    if any(isinstance(v, str) for v in column):
        labels = sorted({str(v) for v in column})
        return [labels.index(str(v)) / max(1, len(labels) - 1) for v in column]
    lo, hi = min(column), max(column)
    return [0.5 if hi == lo else (v - lo) / (hi - lo) for v in column]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(float(value))


def _save(fig, path: Path) -> Path:
    fig.savefig(path)
    plt.close(fig)
    return path
