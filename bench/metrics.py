"""Evaluation speed: intra-FID vs one global FID vs torch-fidelity per class, and a full digits-LT evaluation.

    .venv/bin/python bench/metrics.py                      # both parts, threads = torch default
    .venv/bin/python bench/metrics.py --part fid --classes 10 100 --reference-classes 1 --threads 1

Part "fid" (synthetic 2048-d features, 100 generated per class; real per class 1000 at K = 10 and 100 at K = 100,
the CIFAR-10 / CIFAR-100 test splits): real statistics are prepared first, as the evaluator caches them. Timed:
(a) intra-FID over K classes with imbgan's exact forms, (b) one global FID over the same samples, (c) torch-fidelity's
``fid_features_to_statistics`` + ``fid_statistics_to_metric`` per class on the same features (real statistics
precomputed too). A 2048 x 2048 non-symmetric eigendecomposition costs seconds per class, so (c) is timed on
``--reference-classes`` classes and extrapolated linearly to K (printed as such). Targets: (a)/(b) <= 1.5,
(c)/(a) >= 20 at K = 100.

Part "run": a digits-LT run at the default RunConfig (cgan, 16 px, eval defaults) trained for ``--steps`` steps, then
evaluated ``--repeats`` times; prints wall time and the share spent generating, extracting features and computing
statistics (from ``EvalResult.meta["timings"]``). Uses the default cache ($IMBGAN_CACHE or ~/.cache/imbgan): the
first call trains the annotator.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from threadpoolctl import threadpool_limits
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

from imbgan_core.metrics.frechet import GaussianStats, frechet_distance_stats

DIM = 2048
GENERATED_PER_CLASS = 100
REAL_PER_CLASS = {10: 1000, 100: 100}


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def real_statistics(features: torch.Tensor) -> GaussianStats:
    """Real statistics as the evaluator caches them (√Σ precomputed when n >= d)."""
    stats = GaussianStats.from_features(features)
    if stats.cov is not None:
        stats.root()
    return stats


def bench_fid(num_classes: int, reference_classes: int, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    real_n = REAL_PER_CLASS.get(num_classes, 100)
    centres = torch.randn(num_classes, DIM, generator=generator, dtype=torch.float64)
    real = [centres[k] + torch.randn(real_n, DIM, generator=generator, dtype=torch.float64)
            for k in range(num_classes)]
    fake = [centres[k] * 0.9 + 1.1 * torch.randn(GENERATED_PER_CLASS, DIM, generator=generator, dtype=torch.float64)
            for k in range(num_classes)]
    (real_classes, real_all), prepare_s = timed(lambda: ([real_statistics(x) for x in real],
                                                         real_statistics(torch.cat(real))))

    def intra_fid():
        return [frechet_distance_stats(GaussianStats.from_features(x), r) for x, r in zip(fake, real_classes)]

    def global_fid():
        return frechet_distance_stats(GaussianStats.from_features(torch.cat(fake)), real_all)

    per_class, intra_s = timed(intra_fid)
    _, global_s = timed(global_fid)
    reference_stats = [fid_features_to_statistics(x) for x in real[:reference_classes]]  # float64, precomputed

    def fidelity_loop():
        return [fid_statistics_to_metric(fid_features_to_statistics(x), real_stats, verbose=False)[KEY_METRIC_FID]
                for x, real_stats in zip(fake[:reference_classes], reference_stats)]

    reference, reference_s = timed(fidelity_loop)
    fidelity_s = reference_s / reference_classes * num_classes
    worst = max(abs(a - b) / b for a, b in zip(per_class, reference))
    print(f"K={num_classes:>3}: {GENERATED_PER_CLASS} generated / {real_n} real per class, d={DIM}; real stats "
          f"prepared once in {prepare_s:.2f} s")
    print(f"  intra-FID (imbgan, exact)           {intra_s:8.3f} s   mean {statistics.mean(per_class):.2f}")
    print(f"  one global FID, same samples        {global_s:8.3f} s   -> intra / global = {intra_s / global_s:.2f} "
          f"(target <= 1.5)")
    print(f"  torch-fidelity per class            {fidelity_s:8.1f} s   (timed {reference_classes} classes, "
          f"{reference_s / reference_classes:.2f} s each, x {num_classes}) -> speed-up {fidelity_s / intra_s:.0f}x "
          f"(target >= 20 at K = 100); max relative difference {worst:.1e}")


def bench_run(steps: int, repeats: int) -> None:
    from imbgan_core.config import RunConfig
    from imbgan_core.training import Run

    cfg = RunConfig()
    (run, setup_s) = timed(lambda: Run(cfg))
    run.train(steps)
    results = [run.evaluate() for _ in range(repeats)]
    timings = [r.meta["timings"] for r in results]
    total = statistics.median(t["total_s"] for t in timings)
    print(f"digits-LT run, default config ({cfg.method.name}, {cfg.dataset.resolution} px, eval.metrics "
          f"{cfg.eval.metrics}, {cfg.eval.samples_per_class} samples per class, {results[0].meta['feature_space']} "
          f"features); assets ready in {setup_s:.1f} s, {steps} training steps")
    print(f"  full evaluation: median {total:.3f} s over {repeats}")
    for key, label in (("generate_s", "generating"), ("features_s", "extracting features"),
                       ("metrics_s", "computing statistics")):
        part = statistics.median(t[key] for t in timings)
        print(f"    {label:<22} {part:7.3f} s  {100 * part / total:5.1f} %")
    print("  scalars: " + ", ".join(f"{k} {v:.4g}" for k, v in results[-1].scalars.items()))


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("fid", "run", "all"), default="all")
    p.add_argument("--classes", type=int, nargs="+", default=[10, 100])
    p.add_argument("--reference-classes", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # numpy's BLAS (torch-fidelity's reference) gets the same thread budget
    print(f"threads: {args.threads} (torch and BLAS)")
    if args.part in ("fid", "all"):
        for k in args.classes:
            bench_fid(k, min(args.reference_classes, k))
    if args.part in ("run", "all"):
        bench_run(args.steps, args.repeats)


if __name__ == "__main__":
    main()
