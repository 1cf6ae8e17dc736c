"""Step time of every method relative to ``cgan`` on the same backbone and batch (digits-LT, 1 torch thread).

    python bench/step_time.py [--width 0.25] [--batch 64] [--steps 40] [--rounds 3] [--arch sndcgan]

Rounds interleave the methods so that background load hits them alike; the median process CPU time per step
(one thread: equal to wall time on an idle machine, robust to other processes) is reported with its ratio to
cgan, next to the median wall time. Targets (issue #3): softlabel, smooth, oversample, mixup <= 1.05x;
cbgan <= 1.35x; contentstyle <= 1.25x. Classifier C is trained once into the cache (IMBGAN_CACHE).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from imbgan_core.assets import Assets
from imbgan_core.classifier import get_classifier, soft_labels
from imbgan_core.config import RunConfig, method_params
from imbgan_core.data import load_dataset
from imbgan_core.methods import METHODS
from imbgan_core.training import Run

TARGETS = {"cgan": 1.0, "smooth": 1.05, "softlabel": 1.05, "mixup": 1.05, "oversample": 1.05, "cbgan": 1.35,
           "contentstyle": 1.25}


def config(method: str, args) -> RunConfig:
    extra = {}
    if method == "contentstyle":
        extra = {"content_dim": args.z_dim // 2, "style_dim": args.z_dim - args.z_dim // 2}
    return RunConfig.from_dict({
        "method": {"name": method, **extra},
        "dataset": {"source": "digits", "resolution": args.resolution},
        "model": {"arch": args.arch, "width": args.width, "z_dim": args.z_dim},
        "train": {"batch_size": args.batch, "steps": 10**6, "eval_every": 1, "device": "cpu"},
    })


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="sndcgan")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--z-dim", type=int, default=128)
    p.add_argument("--resolution", type=int, default=16)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    base = config("cgan", args)
    data = load_dataset(base.dataset)
    classifier = get_classifier(data, base.classifier, "classifier", log=lambda m: None)
    runs = {}
    for name in method_params():
        assets = Assets(data=data, classifier=classifier if METHODS[name].needs_classifier else None,
                        soft_labels=soft_labels(classifier, data.train) if METHODS[name].needs_soft_labels else None)
        runs[name] = Run(config(name, args), assets)
        runs[name].train(3)  # warm-up
    times = {name: [] for name in runs}
    walls = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            cpu, wall = time.process_time(), time.perf_counter()
            run.train(args.steps)
            times[name].append((time.process_time() - cpu) / args.steps * 1000)
            walls[name].append((time.perf_counter() - wall) / args.steps * 1000)
    ref = statistics.median(times["cgan"])
    print(f"{args.arch} width {args.width} batch {args.batch} {args.resolution}px, {args.threads} thread(s), "
          f"median of {args.rounds} x {args.steps} steps")
    print(f"{'method':<14}{'cpu ms':>8}{'wall ms':>9}{'ratio':>7}{'target':>8}")
    for name, values in times.items():
        ms = statistics.median(values)
        ratio = ms / ref
        flag = "" if ratio <= TARGETS[name] else "  over target"
        print(f"{name:<14}{ms:8.1f}{statistics.median(walls[name]):9.1f}{ratio:7.2f}{TARGETS[name]:8.2f}{flag}")


if __name__ == "__main__":
    main()
