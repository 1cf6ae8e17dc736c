"""Confirmation (issue #15 item 3): the sweep's top-K configurations retrained with S fresh seeds at the full budget.

A sweep picks its best trial on one training seed, and its margin over the runner-up may be noise (docs/metrics.md:
intra-FID's training-seed sd is several times its evaluation-seed sd). ``--confirm K:S[:R]`` retrains each of the K
best distinct configurations with S new training seeds (FIFO: every run trains the full budget; packed like any
trial), ranks the configurations by their mean, and reports each mean with a 95 % confidence interval. R evaluation
seeds of the winner's first generator (default 5) measure evaluation noise apart from training-seed noise.

Why Student's t and not the bootstrap: S is small (3-5 seeds). A percentile bootstrap interval can never be wider than
the sample's range and covers the mean of normal draws only ~75 % of the time at n = 3 (~88 % at n = 5); the t
interval has its nominal coverage when seed-to-seed variation is roughly normal, and widens honestly as n shrinks
(tests/test_confirm.py measures both on synthetic draws).

Seeds: confirmation run j of a configuration trains with ``train.seed + CONFIRM_SEED_OFFSET + j``: never a seed of
the sweep (its trials share ``train.seed``; an ensemble's members use the next few), recorded in summary.json, in the
MLflow runs' params and in best.yaml's header.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass

from imbgan_core.config import apply_overrides, flatten
from trainables import reporting
from trainables.spaces import build_run_config

CONFIRM_SEED_OFFSET = 10_000
DEFAULT_EVAL_SEEDS = 5
EVAL_SEED_OFFSET = 20_000  # latent seeds of the evaluation-noise measurement (never a training or sampling seed)
LEVEL = 0.95
# Keys that differ between a confirmation run and the trial it retrains without making it another configuration.
NOT_CONFIGURATION = ("name", "train.seed", "train.device", "train.threads")


class ConfirmError(ValueError):
    """A ``--confirm`` value that cannot be used."""


@dataclass(frozen=True)
class ConfirmPlan:
    k: int
    s: int
    r: int = DEFAULT_EVAL_SEEDS

    def seeds(self, base_seed: int) -> list[int]:
        return [base_seed + CONFIRM_SEED_OFFSET + j for j in range(self.s)]


def parse_confirm(text: str) -> ConfirmPlan:
    """``K:S`` or ``K:S:R`` -> ConfirmPlan; K >= 1 configurations, S >= 2 seeds (one seed has no interval), R >= 2."""
    parts = str(text).split(":")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (2, 3):
        raise ConfirmError(f"--confirm {text!r}: expected K:S or K:S:R (e.g. 3:5: the top 3 configurations, 5 seeds "
                           f"each; R evaluation seeds, default {DEFAULT_EVAL_SEEDS})")
    plan = ConfirmPlan(*numbers)
    if plan.k < 1 or plan.s < 2 or plan.r < 2:
        raise ConfirmError(f"--confirm {text!r}: need K >= 1, S >= 2 (an interval needs two seeds), R >= 2")
    return plan


def t_interval(values: list[float], level: float = LEVEL) -> tuple[float, float]:
    """(mean, half-width) of the Student-t confidence interval for the mean of ``values`` (n >= 2)."""
    from scipy.stats import t

    n = len(values)
    if n < 2:
        return (float(values[0]) if values else math.nan), math.nan
    mean, sd = statistics.mean(values), statistics.stdev(values)
    return mean, float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)


def mean_ci_text(mean: float, half: float) -> str:
    """``mean ± half`` as papers print it: the half-width to 2 significant figures, the mean to the same decimal."""
    if not (math.isfinite(mean) and math.isfinite(half)) or half <= 0:
        return f"{mean:.4g} ± {half:.2g}"
    decimals = max(0, 1 - math.floor(math.log10(half)))
    if round(half, decimals) >= 10 ** (2 - decimals):  # 9.96 rounds up to 10.0: one digit fewer
        decimals = max(0, decimals - 1)
    return f"{mean:.{decimals}f} ± {half:.{decimals}f}"


def bootstrap_interval(values: list[float], level: float = LEVEL, resamples: int = 2000, seed: int = 0):
    """(low, high) percentile-bootstrap interval for the mean: kept to show why it is not used (module docstring)."""
    import random

    rng = random.Random(seed)
    n = len(values)
    means = sorted(statistics.mean(rng.choices(values, k=n)) for _ in range(resamples))
    lo = means[int((1 - level) / 2 * resamples)]
    hi = means[min(resamples - 1, int((1 + level) / 2 * resamples))]
    return lo, hi


def top_configurations(rows: list[dict], k: int) -> list[dict]:
    """The K best distinct configurations of the sweep (``summary.trial_rows`` order: completed first, then by the
    metric); trials without a usable score never qualify."""
    chosen, seen = [], set()
    for row in rows:
        if row["state"] not in (reporting.COMPLETED, *reporting.EARLY_STOPPED) or row["run_config"] is None:
            continue
        key = json.dumps(row["config"], sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        chosen.append(row)
        if len(chosen) == k:
            break
    return chosen


def trained_run(base_run: dict, row: dict) -> dict:
    """The run dict a sweep trial trained (its searched values over the space's run block)."""
    return build_run_config(base_run, row["config"]).to_dict()


def confirmation_runs(rows: list[dict], plan: ConfirmPlan, base_run: dict) -> list[dict]:
    """One run dict per (configuration, seed): the trial's trained config with a fresh ``train.seed``."""
    runs = []
    for row in top_configurations(rows, plan.k):
        for seed in plan.seeds(int(base_run["train"]["seed"])):
            runs.append(apply_overrides(trained_run(base_run, row), {"train.seed": seed}))
    return runs


def configuration(run: dict) -> dict:
    """A run dict without what does not make it another configuration (NOT_CONFIGURATION)."""
    return {k: v for k, v in flatten(run).items() if k not in NOT_CONFIGURATION}


def origin_of(run: dict, candidates: list[dict], base_run: dict) -> dict | None:
    """The top configuration a confirmation run retrains."""
    mine = configuration(run)
    for row in candidates:
        if configuration(trained_run(base_run, row)) == mine:
            return row
    return None


def summarise(confirm_rows: list[dict], candidates: list[dict], base_run: dict, metric: str, mode: str,
              plan: ConfirmPlan, metric_names: list[str]) -> dict:
    """Per configuration: seeds, per-seed values, mean, sd and 95 % t half-width of every metric; ranked by the
    sweep metric's mean (the confirmed winner first). Only completed confirmation runs count."""
    per_origin: dict[str, dict] = {}
    seed_order = sorted(confirm_rows, key=lambda r: (r["run_config"] or {}).get("train", {}).get("seed", 0))
    for row in seed_order:
        origin = origin_of(row["run_config"] or {}, candidates, base_run) if row["run_config"] else None
        if origin is None or row["state"] != reporting.COMPLETED:
            continue
        entry = per_origin.setdefault(origin["trial_id"], {
            "origin_trial": origin["trial_id"], "config": origin["config"],
            "sweep_value": origin["metrics"].get(metric), "seeds": [], "trials": [], "values": {}, "rows": []})
        entry["seeds"].append(int(row["run_config"]["train"]["seed"]))
        entry["trials"].append(row["trial_id"])
        entry["rows"].append(row)
        for name in metric_names:
            if name in row["metrics"]:
                entry["values"].setdefault(name, []).append(row["metrics"][name])
    configs = []
    for entry in per_origin.values():
        stats = {}
        for name, values in entry.pop("values").items():
            mean, half = t_interval(values)
            stats[name] = {"mean": mean, "ci95": half, "sd": statistics.stdev(values) if len(values) > 1 else math.nan,
                           "n": len(values), "values": values}
        entry["metrics"] = stats
        configs.append(entry)
    sign = 1 if mode == "min" else -1
    configs.sort(key=lambda c: sign * c["metrics"].get(metric, {"mean": math.inf * sign})["mean"])
    return {"k": plan.k, "s": plan.s, "r": plan.r, "seeds": plan.seeds(int(base_run["train"]["seed"])),
            "interval": "95 % Student t over training seeds (trainables/confirm.py)", "metric": metric,
            "configs": configs}


def evaluation_noise(trainee, metric_names: list[str], seeds: int) -> dict:
    """One trained generator (the winner's first confirmation run) evaluated with ``seeds`` latent seeds: the sd of
    each metric from evaluation alone."""
    per_seed = [trainee.evaluate(latent_seed=EVAL_SEED_OFFSET + r).scalars for r in range(seeds)]
    out = {}
    for name in metric_names:
        values = [s[name] for s in per_seed if name in s]
        if len(values) > 1:
            out[name] = {"mean": statistics.mean(values), "sd": statistics.stdev(values), "n": len(values)}
    return out


def format_confirmation(confirmation: dict) -> str:
    """The confirmation table printed at the end of a sweep."""
    metric = confirmation["metric"]
    lines = [f"confirmation: top {confirmation['k']} configurations x {confirmation['s']} seeds "
             f"{confirmation['seeds']} ({confirmation['interval']})"]
    for rank, c in enumerate(confirmation["configs"], 1):
        m = c["metrics"].get(metric)
        text = f"{mean_ci_text(m['mean'], m['ci95'])} (n={m['n']}, sd {m['sd']:.3g})" if m else "-"
        lines.append(f"  {rank}. trial {c['origin_trial']} (sweep {metric} {c['sweep_value']:.4g}): {metric} "
                     f"{text}; {json.dumps(c['config'], sort_keys=True, default=str)}")
    noise = confirmation.get("evaluation_noise", {}).get(metric)
    if noise:
        train_sd = confirmation["configs"][0]["metrics"].get(metric, {}).get("sd", math.nan)
        lines.append(f"  noise of {metric}: evaluation sd {noise['sd']:.3g} ({noise['n']} latent seeds of one "
                     f"generator), training-seed sd {train_sd:.3g} (the winner's {confirmation['s']} seeds)")
    return "\n".join(lines)
