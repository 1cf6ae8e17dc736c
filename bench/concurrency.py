"""Concurrency: 2 concurrent 1-CPU trials vs 1 trial at a time on 2 cores. Target throughput ratio >= 1.7.

Two measurements, each a ratio of two runs made one after the other in this process:
- sweep: the same FIFO sweep (no early stopping, so both runs train the same steps) runs with --max-concurrent 1
  and 2; throughput = training steps / Tuner.fit wall time (summary.json ``wall_seconds``). Each trial sets torch
  threads to its 1-CPU share, so two trials must not oversubscribe the cores.
- ceiling: the same training steps in plain processes without Ray (1 torch thread each), 1 alone vs 2 side by side;
  what the hardware allows (shared caches and memory bandwidth), so the gap between the two ratios is what the
  orchestration costs (driver, raylet, MLflow logging, evaluations and checkpoints).
The driver's CPU seconds (summary.json ``driver_cpu_seconds``) are printed beside each sweep: with 2 trials on 2
cores every driver CPU second is taken from a trial.
Usage: python bench/concurrency.py [--space FILE] [--trials 4] [--max-steps 600] [--part sweep|ceiling|both]
       [--rounds 3]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time

from sweeps import DEFAULT_SPACE, run_sweep, scratch_dir, variant


def train_alone(space_path: str, steps: int, barrier, out) -> None:
    """One process: build the space's base run (1 torch thread), warm up, then time ``steps`` training steps."""
    import torch

    from imbgan_core.training import Run
    from trainables.assets import prepare_sweep_assets
    from trainables.spaces import load_space

    torch.set_num_threads(1)
    space = load_space(space_path)
    run = Run(space.run_config({}), assets=prepare_sweep_assets(space, log=lambda m: None), device="cpu")
    run.train(5)
    barrier.wait()
    started = time.perf_counter()
    run.train(steps)
    out.put(time.perf_counter() - started)


def ceiling(space_path: str, steps: int, rounds: int) -> dict[int, float]:
    """Median steps per second of 1 and of 2 side-by-side plain processes over ``rounds`` interleaved rounds."""
    ctx = mp.get_context("spawn")
    measured: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(rounds):
        for n in (1, 2):
            barrier, out = ctx.Barrier(n), ctx.Queue()
            procs = [ctx.Process(target=train_alone, args=(space_path, steps, barrier, out)) for _ in range(n)]
            for p in procs:
                p.start()
            seconds = [out.get() for _ in procs]
            for p in procs:
                p.join()
            measured[n].append(n * steps / max(seconds))
            print(f"plain processes x{n}: {n * steps} steps in {max(seconds):.1f} s = {measured[n][-1]:.1f} steps/s")
    return {n: statistics.median(v) for n, v in measured.items()}


def sweep(space_path, folder, trials: int, max_steps: int) -> dict[int, float]:
    space = variant(space_path, {"search.scheduler": "fifo"}, "concurrency", folder)
    throughput = {}
    for concurrent in (1, 2):
        summary, _, _ = run_sweep(space, folder / f"c{concurrent}", "--num-samples", str(trials), "--max-steps",
                                  str(max_steps), "--max-concurrent", str(concurrent), "--cpus-per-trial", "1")
        throughput[concurrent] = summary["total_steps"] / summary["wall_seconds"]
        print(f"\nmax concurrent {concurrent}: {summary['total_steps']} steps in {summary['wall_seconds']:.1f} s "
              f"= {throughput[concurrent]:.1f} steps/s; driver CPU {summary.get('driver_cpu_seconds')} s")
    return throughput


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    parser.add_argument("--space", default=str(DEFAULT_SPACE))
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=600)
    parser.add_argument("--part", choices=("sweep", "ceiling", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=3, help="ceiling: interleaved rounds of 1 and 2 processes")
    args = parser.parse_args()
    lines = []
    if args.part in ("ceiling", "both"):
        plain = ceiling(args.space, args.max_steps, args.rounds)
        lines.append(f"hardware ceiling, plain processes 2 vs 1 (medians of {args.rounds} rounds): "
                     f"{plain[2] / plain[1]:.2f}")
    if args.part in ("sweep", "both"):
        swept = sweep(args.space, scratch_dir("imbgan-concurrency-"), args.trials, args.max_steps)
        lines.append(f"sweep throughput ratio 2 vs 1: {swept[2] / swept[1]:.2f}  (target >= 1.7)")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
