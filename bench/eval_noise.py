"""How much a metric moves from evaluation alone, against how much it moves from training (issue #15, item 2).

    python bench/eval_noise.py [--space search_spaces/cgan.yaml] [--train-seeds 3] [--eval-seeds 8]
                               [--samples 50,200] [--metrics intra_fid,fid_few,fid] [--set key=value ...]

For each training seed (``train.seed`` = 0..n-1) one generator is trained with the space's run block, then evaluated
with ``--eval-seeds`` latent seeds at each generated-samples-per-class count of ``--samples``. Printed per metric and
sample count: the evaluation-seed sd (the mean over generators of the sd across latent seeds: what a re-evaluation
of the same generator changes) and the training-seed sd (the sd across generators of their mean over latent seeds).
A rung's comparison of two trials means something only when their gap exceeds both. One torch thread.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from imbgan_core.assets import prepare_assets  # noqa: E402
from imbgan_core.config import parse_set  # noqa: E402
from imbgan_core.metrics.evaluator import Evaluator  # noqa: E402
from imbgan_core.training import Run  # noqa: E402
from trainables.spaces import build_run_config, load_space  # noqa: E402


def evaluate_with(run: Run, samples_per_class: int, latent_seed: int) -> dict:
    """The run's generator evaluated at ``samples_per_class`` with its latents drawn from ``latent_seed``."""
    cfg = run.cfg.eval
    evaluator = Evaluator(run.assets.data, dataclasses.replace(cfg, samples_per_class=samples_per_class),
                          run.assets.annotator, None, str(run.device), conditional=run.cfg.model.g_conditional)
    evaluator.prepare()
    gen = torch.Generator().manual_seed(latent_seed)
    return evaluator.evaluate(lambda labels, **kw: run.generate(labels, gen, **kw),
                              conditional=run.cfg.model.g_conditional).scalars


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--space", default="search_spaces/cgan.yaml")
    p.add_argument("--train-seeds", type=int, default=3)
    p.add_argument("--eval-seeds", type=int, default=8)
    p.add_argument("--samples", default="50,200", help="generated samples per class, comma-separated")
    p.add_argument("--metrics", default="intra_fid,fid_few,fid")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    torch.set_num_threads(1)
    metrics, counts = args.metrics.split(","), [int(n) for n in args.samples.split(",")]
    space = load_space(str(REPO / args.space))
    values: dict[tuple[str, int], list[list[float]]] = {(m, n): [] for m in metrics for n in counts}
    for seed in range(args.train_seeds):
        cfg = build_run_config(space.run, {**parse_set(args.set), "train.seed": seed})
        assets = prepare_assets(cfg, log=lambda message: None)
        run = Run(cfg, assets)
        started = time.perf_counter()
        run.train(cfg.train.steps)
        print(f"training seed {seed}: {cfg.train.steps} steps in {time.perf_counter() - started:.0f} s", flush=True)
        for n in counts:
            per_seed = [evaluate_with(run, n, 10_000 + r) for r in range(args.eval_seeds)]
            for m in metrics:
                values[(m, n)].append([s[m] for s in per_seed])
            print(f"  {n} samples/class: " + ", ".join(
                f"{m} {statistics.mean(s[m] for s in per_seed):.4g}" for m in metrics), flush=True)
    print(f"\n{args.space} run block, {cfg.train.steps} steps; {args.train_seeds} training seeds x "
          f"{args.eval_seeds} latent seeds\n")
    print("| metric | samples/class | mean | evaluation-seed sd | training-seed sd |")
    print("| --- | --- | --- | --- | --- |")
    for (m, n), per_gen in values.items():
        means = [statistics.mean(v) for v in per_gen]
        eval_sd = statistics.mean(statistics.stdev(v) for v in per_gen)
        train_sd = statistics.stdev(means) if len(means) > 1 else float("nan")
        print(f"| {m} | {n} | {statistics.mean(means):.4g} | {eval_sd:.3g} | {train_sd:.3g} |")


if __name__ == "__main__":
    main()
