"""Each paper's qualitative claim, measured on digits-LT over several training seeds (mean ± std, n seeds).

    python bench/paper_claims.py [--claims cbgan,softlabel,contentstyle,ensemble] [--seeds 3] [--out FILE.md]
                                 [--set key=value ...]

Every arm is the run block of the method's own space file (search_spaces/*.yaml) with the overrides listed in
``CLAIMS``; seeds are ``train.seed`` = 0..n-1 (the classifier and annotator are shared and cached). A verdict compares
means: "holds" when the claimed direction holds and the gap exceeds the larger std, "holds within noise" when only the
sign does, "does not hold" otherwise; "no worse" holds when the mean is at most the other's mean plus its std.
One torch thread per run. The table goes to stdout and, with --out, to a markdown file (docs/paper_claims.md).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from imbgan_core.assets import prepare_assets  # noqa: E402
from imbgan_core.config import parse_set  # noqa: E402
from imbgan_core.ensemble.ensemble import Ensemble  # noqa: E402
from imbgan_core.metrics.catalog import METRICS  # noqa: E402
from imbgan_core.training import Run  # noqa: E402
from trainables.spaces import build_run_config, load_space  # noqa: E402


@dataclass(frozen=True)
class Check:
    """``metric`` of arm ``a`` is better than (``better``) or no worse than (``no_worse``) that of arm ``b``."""

    metric: str
    a: str
    b: str
    kind: str = "better"


@dataclass(frozen=True)
class Claim:
    paper: str
    space: str
    arms: dict[str, dict]
    checks: tuple[Check, ...]


CLAIMS = {
    "cbgan": Claim(
        "CBGAN Tables 1-2: on an unconditional GAN the regularizer lowers KL(annotator histogram || uniform), FID no "
        "worse", "search_spaces/cbgan.yaml",
        {"cbgan": {}, "lambda=0": {"method.lambda": 0.0}},
        (Check("class_kl", "cbgan", "lambda=0"), Check("fid", "cbgan", "lambda=0", "no_worse"),
         Check("intra_fid", "cbgan", "lambda=0"))),
    "softlabel": Claim(
        "Softlabel-GAN Tables 2-4: soft labels improve the minority classes over cGAN and label smoothing",
        "search_spaces/softlabel.yaml",
        {"softlabel": {}, "cgan": {"method.name": "cgan"}, "smooth": {"method.name": "smooth"}},
        (Check("fid_few", "softlabel", "cgan"), Check("fid_few", "softlabel", "smooth"),
         Check("intra_fid", "softlabel", "cgan"))),
    "contentstyle": Claim(
        "Content-style (Timilsina et al.): transferring style from the head classes improves the tail (FID-few)",
        "search_spaces/contentstyle.yaml",
        {"contentstyle": {}, "cgan": {"method.name": "cgan"}},
        (Check("fid_few", "contentstyle", "cgan"), Check("intra_fid", "contentstyle", "cgan"))),
    "ensemble": Claim(
        "Slim 2020 Sec. 5: an ensemble with real-sample reweighting beats one generator (CAS, FID-few)",
        "search_spaces/ensemble.yaml",
        {"A_mu x3": {"ensemble.size": 3, "ensemble.reweighting": "A_mu"}, "size 1": {"ensemble.size": 1}},
        (Check("cas", "A_mu x3", "size 1"), Check("fid_few", "A_mu x3", "size 1"))),
}


def train_and_evaluate(cfg) -> tuple[dict, float]:
    assets = prepare_assets(cfg, log=lambda message: None)
    trainee = Ensemble(cfg, assets=assets) if cfg.ensemble.size > 1 else Run(cfg, assets)
    started = time.perf_counter()
    trainee.train(trainee.total_steps - trainee.steps_done)
    return trainee.evaluate().scalars, time.perf_counter() - started


def measure(claim: Claim, seeds: int, extra: dict, log) -> dict[str, dict[str, list[float]]]:
    """arm -> metric -> one value per seed."""
    space = load_space(str(REPO / claim.space))
    wanted = sorted({c.metric for c in claim.checks})
    out: dict[str, dict[str, list[float]]] = {}
    for arm, overrides in claim.arms.items():
        for seed in range(seeds):
            cfg = build_run_config(space.run, {**overrides, **extra, "train.seed": seed})
            missing = set(wanted) - METRICS.keys_of(cfg.eval.metrics)
            if missing:
                raise SystemExit(f"{claim.space}: run.eval.metrics does not produce {sorted(missing)}")
            scalars, seconds = train_and_evaluate(cfg)
            for metric in wanted:
                out.setdefault(arm, {}).setdefault(metric, []).append(float(scalars[metric]))
            log(f"  {arm:<14} seed {seed}: " + ", ".join(f"{m} {scalars[m]:.4g}" for m in wanted)
                + f" ({seconds:.0f} s)")
    return out


def verdict(check: Check, values: dict[str, dict[str, list[float]]]) -> str:
    a, b = values[check.a][check.metric], values[check.b][check.metric]
    mean_a, mean_b, sd_a, sd_b = statistics.mean(a), statistics.mean(b), _sd(a), _sd(b)
    sign = 1.0 if METRICS.direction(check.metric) == "min" else -1.0
    gap = sign * (mean_b - mean_a)  # > 0: a is better
    if check.kind == "no_worse":
        return "holds" if gap >= -sd_b else "does not hold"
    if gap > max(sd_a, sd_b):
        return "holds"
    return "holds within noise" if gap > 0 else "does not hold"


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _arrow(metric: str) -> str:
    return "↓" if METRICS.direction(metric) == "min" else "↑"


def table(name: str, claim: Claim, values: dict, seeds: int) -> list[str]:
    metrics = sorted({c.metric for c in claim.checks})
    lines = [f"### {name}", "", claim.paper, "",
             "| arm | " + " | ".join(f"{m} ({_arrow(m)})" for m in metrics) + " |",
             "| --- |" + " --- |" * len(metrics)]
    for arm in claim.arms:
        cells = [f"{statistics.mean(values[arm][m]):.4g} ± {_sd(values[arm][m]):.2g}" for m in metrics]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", f"n = {seeds} training seeds (mean ± sample std).", ""]
    for check in claim.checks:
        relation = "no worse than" if check.kind == "no_worse" else "better than"
        lines.append(f"- {check.metric}: {check.a} {relation} {check.b}: **{verdict(check, values)}**")
    return lines + [""]


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--claims", default=",".join(CLAIMS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", type=Path)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override every arm's run config")
    args = p.parse_args()
    unknown = [c for c in args.claims.split(",") if c not in CLAIMS]
    if unknown or args.seeds < 1:
        p.error(f"--claims: unknown {unknown} (valid: {', '.join(CLAIMS)})" if unknown else "--seeds: at least 1")
    torch.set_num_threads(1)
    extra = parse_set(args.set)
    command = "python bench/paper_claims.py " + " ".join(sys.argv[1:])
    lines = ["## Paper claims on digits-LT", "", f"Command: `{command.strip()}`", ""]
    started = time.perf_counter()
    for name in args.claims.split(","):
        print(f"[{name}] {CLAIMS[name].paper}", flush=True)
        values = measure(CLAIMS[name], args.seeds, extra, lambda line: print(line, flush=True))
        lines += table(name, CLAIMS[name], values, args.seeds)
    lines.append(f"Wall time {time.perf_counter() - started:.0f} s, one torch thread per run.")
    text = "\n".join(lines)
    print("\n" + text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
