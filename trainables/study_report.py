"""The study's report (issue #15 item 4), read only from the sweeps' own files, so its numbers are theirs.

From each method's ``summary.json``: the confirmed winner's mean ± 95 % t half-width and seed count per metric (the
paper-style table), and every search trial's score and steps for the expected-best-score curve. From the sweep
folder: ``best_per_class.csv`` (per-class FID against class size) and ``best_samples.png`` (the sample grids).

Expected best score vs budget (Dodge et al. 2019, "Show Your Work", Sec. 3): with the N usable trial scores of a
sweep sorted best first, v_1..v_N, the expected best of n trials drawn from them with replacement is
sum_i v_i [((N-i+1)/N)^n - ((N-i)/N)^n]. The x axis is n times the mean steps a trial trained, so methods are
compared at equal compute (an ASHA-stopped trial costs less); bands are the 2.5-97.5 % percentiles over bootstrap
resamples of the N scores. The scores are each trial's last report (an early-stopped trial's score at its stop):
what the search had to choose from.
"""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from trainables import reporting
from trainables.confirm import mean_ci_text

TABLE_METRICS = ("fid", "intra_fid", "fid_few", "class_kl", "kid", "recall", "coverage")
BOOTSTRAP = 500


def read_summary(sweep_dir: Path) -> dict:
    return json.loads((Path(sweep_dir) / "summary.json").read_text(encoding="utf-8"))


def method_row(summary: dict, metrics=TABLE_METRICS) -> dict:
    """Per metric: the confirmed winner's mean, 95 % half-width and n (None where the sweep lacks the metric)."""
    confirmed = (summary.get("confirmation") or {}).get("configs") or []
    winner = confirmed[0] if confirmed else None
    cells = {}
    for name in metrics:
        stats = winner["metrics"].get(name) if winner else None
        cells[name] = None if stats is None else {"mean": stats["mean"], "ci95": stats["ci95"], "n": stats["n"]}
    return {"sweep": summary["sweep"], "winner": winner["origin_trial"] if winner else None,
            "config": winner["config"] if winner else None, "seeds": winner["seeds"] if winner else [],
            "cells": cells, "steps_trained": summary["total_steps_trained"],
            "confirmation_steps": (summary.get("confirmation") or {}).get("steps_trained", 0),
            "trials": len(summary["trials"])}


def trial_scores(summary: dict) -> tuple[list[float], float]:
    """The usable trials' last scores of the sweep metric and the mean steps a trial trained."""
    metric = summary["metric"]
    usable = [t for t in summary["trials"] if t["state"] in (reporting.COMPLETED, *reporting.EARLY_STOPPED)
              and metric in t["metrics"]]
    steps = [t.get("steps_trained", t["steps"]) for t in summary["trials"]]
    return [t["metrics"][metric] for t in usable], (sum(steps) / len(steps) if steps else 0.0)


def expected_best(values: list[float], n: int, mode: str) -> float:
    """Dodge et al.'s expected best of ``n`` trials drawn with replacement from ``values`` (module docstring)."""
    ordered = sorted(values, reverse=(mode == "max"))
    big_n = len(ordered)
    return sum(v * (((big_n - i) / big_n) ** n - ((big_n - i - 1) / big_n) ** n) for i, v in enumerate(ordered))


def expected_best_curve(values: list[float], mode: str, max_trials: int, seed: int = 0):
    """n = 1..max_trials: (expected best, 2.5 % band, 97.5 % band) from bootstrap resamples of ``values``."""
    rng = random.Random(seed)
    resamples = [[rng.choice(values) for _ in values] for _ in range(BOOTSTRAP)]
    curve = []
    for n in range(1, max_trials + 1):
        boot = sorted(expected_best(r, n, mode) for r in resamples)
        curve.append((expected_best(values, n, mode), boot[int(0.025 * BOOTSTRAP)], boot[int(0.975 * BOOTSTRAP) - 1]))
    return curve


def cell_text(cell: dict | None) -> str:
    return "–" if cell is None else f"{mean_ci_text(cell['mean'], cell['ci95'])} (n={cell['n']})"


def write_table_csv(rows: list[dict], path: Path, metrics=TABLE_METRICS) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["method", "winner_trial", "seeds", *(f"{m}_{p}" for m in metrics for p in ("mean", "ci95",
                                                                                                 "n")),
                         "search_steps", "confirmation_steps", "config"])
        for r in rows:
            cells = []
            for m in metrics:
                c = r["cells"][m]
                cells += ["", "", ""] if c is None else [c["mean"], c["ci95"], c["n"]]
            writer.writerow([r["sweep"], r["winner"], " ".join(map(str, r["seeds"])), *cells, r["steps_trained"],
                             r["confirmation_steps"], json.dumps(r["config"], sort_keys=True, default=str)])
    return path


def _line_plot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6.5, 4))


def _save_line_plot(fig, ax, path: Path) -> Path:
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_expected_best(summaries: list[dict], path: Path) -> Path:
    fig, ax = _line_plot()
    for summary in summaries:
        values, per_trial = trial_scores(summary)
        if not values:
            continue
        curve = expected_best_curve(values, summary["mode"], max(len(summary["trials"]), 1))
        x = [n * per_trial for n in range(1, len(curve) + 1)]
        line, = ax.plot(x, [c[0] for c in curve], marker="o", ms=3, label=f"{summary['sweep']} ({len(values)} "
                                                                            f"trials)")
        ax.fill_between(x, [c[1] for c in curve], [c[2] for c in curve], color=line.get_color(), alpha=0.15)
    metric = summaries[0]["metric"] if summaries else "metric"
    ax.set_xlabel("search budget: trials x mean training steps per trial")
    ax.set_ylabel(f"expected best {metric}")
    ax.set_title("Expected best vs budget (Dodge et al. 2019)\n95 % bootstrap bands", fontsize=10)
    return _save_line_plot(fig, ax, path)


def per_class_fid(sweep_dir: Path) -> list[tuple[int, float]]:
    """(training images, per-class FID) of the sweep's best (confirmed) generator, from best_per_class.csv."""
    path = Path(sweep_dir) / "best_per_class.csv"
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as fh:
        return [(int(r["train_count"]), float(r["fid"])) for r in csv.DictReader(fh) if r.get("fid")]


def plot_per_class(sweeps: list[tuple[str, Path]], path: Path) -> Path:
    fig, ax = _line_plot()
    for name, folder in sweeps:
        points = sorted(per_class_fid(folder))
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class (long-tailed split)")
    ax.set_ylabel("per-class FID of the winner")
    ax.set_title("Per-class FID against class size")
    return _save_line_plot(fig, ax, path)


def plot_sample_grids(sweeps: list[tuple[str, Path]], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    grids = [(name, Path(folder) / "best_samples.png") for name, folder in sweeps]
    grids = [(n, g) for n, g in grids if g.is_file()]
    fig, axes = plt.subplots(1, max(1, len(grids)), figsize=(4 * max(1, len(grids)), 4.6), squeeze=False)
    for ax, (name, grid) in zip(axes[0], grids):
        ax.imshow(mpimg.imread(grid), cmap="gray")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(study: dict, sweeps: list[tuple[str, Path]], folder: Path) -> dict:
    """report.md, table.csv and the three plots in ``folder``; returns {"rows", "files"}."""
    folder.mkdir(parents=True, exist_ok=True)
    summaries = [read_summary(d) for _, d in sweeps]
    rows = [method_row(s) for s in summaries]
    files = [write_table_csv(rows, folder / "table.csv"), plot_expected_best(summaries, folder / "expected_best.png"),
             plot_per_class(sweeps, folder / "per_class_fid.png"), plot_sample_grids(sweeps, folder / "samples.png")]
    lines = [f"# Study {study['name']}", "",
             f"Spaces: {', '.join(study['spaces'])}. Search budget per method: {study['budget_steps']} training steps;"
             f" confirmation (K:S[:R]) {study['confirm']}. Each cell: the confirmed winner's mean ± 95 % Student-t "
             f"half-width over S fresh training seeds (n = seeds). Features: {study.get('feature_space', 'see sweeps')}"
             ".", "",
             f"Real reference: {study.get('real_reference', 'see the sweeps')}, held out from G and the annotator and "
             "shared by every method. The intervals cover training seeds and latent draws, not the choice of real "
             "set: against another real set of the same size every score shifts, mostly together "
             "(docs/metrics.md#the-real-reference-set).", "",
             "| method | " + " | ".join(TABLE_METRICS) + " | search steps | confirmation steps | winner |",
             "|---" * (len(TABLE_METRICS) + 4) + "|"]
    for r in rows:
        lines.append(f"| {r['sweep']} | " + " | ".join(cell_text(r["cells"][m]) for m in TABLE_METRICS)
                     + f" | {r['steps_trained']} | {r['confirmation_steps']} | {r['winner']} |")
    lines += ["", "Winner configurations:", ""]
    lines += [f"- {r['sweep']}: `{json.dumps(r['config'], sort_keys=True, default=str)}` (seeds {r['seeds']})"
              for r in rows]
    lines += ["", "## Expected best score vs budget", "", "![expected best](expected_best.png)", "",
              "## Per-class FID against class size", "", "![per-class FID](per_class_fid.png)", "",
              "## Samples of each winner", "", "![samples](samples.png)", "",
              f"Numbers: [table.csv](table.csv); sweeps: {', '.join(str(d) for _, d in sweeps)}."]
    report = folder / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"rows": rows, "files": [report, *files]}
