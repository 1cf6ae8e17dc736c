"""``python -m imbgan_core.train --config run.yaml [--set key=value ...] --out DIR [--resume] [--steps N]``

Trains one run without Ray. Every ``train.eval_every`` steps it evaluates, prints a progress line and writes
``checkpoint.pt`` and ``metrics.json`` (latest scalars, per-class vectors, history) into DIR; at the end it writes
``samples.png`` (one row per class). Between evaluations a line ``training: step N/T | R steps/s | ... | ETA ...``
comes at most every ``--progress-every`` seconds (30; a long ``eval_every`` used to be silent for minutes). A bad
config prints every problem with its dotted key and exits with 2
before any data is loaded or any file is written. ``--resume`` continues from DIR's checkpoint (the config
defaults to the checkpoint's own; only ``train.steps`` may differ).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from .assets import prepare_assets
from .config import ConfigError, RunConfig, apply_overrides, load_yaml, parse_set
from .files import atomic_write_text
from .paths import folder_problems
from .training import (CHECKPOINT_FILE, CheckpointError, DivergedError, Run, config_differences,
                       run_config_problems)

METRICS_FILE, SAMPLES_FILE = "metrics.json", "samples.png"
PROGRESS_METRICS = ("intra_fid", "class_accuracy")
PROGRESS_EVERY_S = 30.0  # the longest silence between two console lines while training


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m imbgan_core.train", description=__doc__.split("\n\n")[1],
                                allow_abbrev=False)
    p.add_argument("--config", help="run config YAML (optional with --resume: the checkpoint's config is used)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override, repeatable")
    p.add_argument("--steps", type=int, help="shorthand for --set train.steps=N")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--progress-every", type=float, default=PROGRESS_EVERY_S, metavar="S",
                   help=f"a progress line at most every S seconds between evaluations (default {PROGRESS_EVERY_S:g})")
    return p.parse_args(argv)


def load_config(args: argparse.Namespace) -> RunConfig:
    """The run config from --config (or the checkpoint on --resume) with --set / --steps applied and validated."""
    checkpoint = Path(args.out) / CHECKPOINT_FILE
    if args.config:
        data = load_yaml(args.config)
    elif args.resume and checkpoint.is_file():
        data = saved_config(checkpoint)
    else:
        raise ConfigError(["--config: required (or --resume with an existing checkpoint in --out)"])
    overrides = parse_set(args.set)
    if args.steps is not None:
        overrides["train.steps"] = args.steps
    cfg = RunConfig.from_dict(apply_overrides(data, overrides))
    problems = run_config_problems(cfg)
    if args.resume and not checkpoint.is_file():
        problems.append(f"--resume: {checkpoint} does not exist")
    elif args.resume:
        differences = config_differences(saved_config(checkpoint), cfg.to_dict())
        problems += [f"--resume: the checkpoint's config differs in {d}" for d in differences]
    if not args.resume and checkpoint.is_file():
        problems.append(f"--out: {checkpoint} already exists; pass --resume to continue it or choose a new folder")
    problems += folder_problems(args.out, "--out", None)  # a file, an unwritable folder: now, not after training
    if problems:
        raise ConfigError(problems)
    return cfg


def saved_config(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["config"]
    except Exception as exc:
        raise ConfigError([f"--resume: {path}: unreadable checkpoint ({type(exc).__name__})"]) from None


def jsonable(value):
    """Non-finite floats -> None (strict JSON), recursively through dicts and lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def write_json(path: Path, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=1, default=str, allow_nan=False))


def progress_line(step: int, total: int, losses: dict, scalars: dict) -> str:
    parts = [f"step {step}/{total}"] + [f"{k} {v:.4f}" for k, v in losses.items()]
    parts += [f"{k} {scalars[k]:.4f}" for k in PROGRESS_METRICS if k in scalars]
    return " | ".join(parts)


def format_duration(seconds: float | None) -> str:
    """``1h02m``, ``3m07s``, ``42s``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class ProgressTicker:
    """Steps/s and ETA while training, printed at most every ``every_s`` seconds: only reads the clock, so the
    training itself (every step, RNG draw and result) is the same with or without it."""

    def __init__(self, total: int, done: int, every_s: float = PROGRESS_EVERY_S):
        self.total, self.first_step, self.every_s = total, done, every_s
        self.start = self.last = time.monotonic()

    def tick(self, step: int, next_eval: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.last = now
        rate = (step - self.first_step) / max(now - self.start, 1e-9)  # evaluations included: an honest ETA
        eta = (self.total - step) / rate if rate > 0 else None
        print(f"training: step {step}/{self.total} | {rate:.2f} steps/s | next evaluation at step {next_eval} | "
              f"ETA {format_duration(eta)}", flush=True)

    def printed(self) -> None:
        """An evaluation line just went out: the next tick waits ``every_s`` again."""
        self.last = time.monotonic()


def train_steps(run: Run, n: int, ticker: ProgressTicker) -> dict:
    """``run.train(n)``, one step at a time so that the ticker can speak between steps; the last step's losses."""
    losses, next_eval = {}, run.steps_done + n
    for _ in range(n):
        losses = run.train(1)
        ticker.tick(run.steps_done, next_eval)
    return losses


def train(cfg: RunConfig, assets, out: Path, resume: bool, progress_every_s: float = PROGRESS_EVERY_S) -> dict:
    """Train to ``cfg.train.steps`` with evaluation, checkpoint and metrics every ``eval_every`` steps.

    ``out`` is created only here, after the assets exist, so a run that cannot start leaves nothing behind.
    """
    out.mkdir(parents=True, exist_ok=True)
    run = Run(cfg, assets)
    history = []
    if resume:
        run.load(out)
        if (out / METRICS_FILE).is_file():
            history = json.loads((out / METRICS_FILE).read_text(encoding="utf-8")).get("history", [])
    t = cfg.train
    payload = {}
    ticker = ProgressTicker(t.steps, run.steps_done, progress_every_s)
    while run.steps_done < t.steps or not payload:
        n = min(t.eval_every - run.steps_done % t.eval_every, t.steps - run.steps_done)
        losses = train_steps(run, max(n, 0), ticker)
        result = run.evaluate()
        print(progress_line(run.steps_done, t.steps, losses, result.scalars), flush=True)
        ticker.printed()
        history.append(jsonable({"step": run.steps_done, "losses": losses, "scalars": result.scalars}))
        run.save(out)
        payload = jsonable({"name": cfg.name, "step": run.steps_done, "losses": losses, "scalars": result.scalars,
                            "per_class": result.per_class, "meta": result.meta, "history": history})
        write_json(out / METRICS_FILE, payload)
    run.save_sample_grid(out / SAMPLES_FILE)
    return payload


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if cfg.train.threads:  # the thread count changes float rounding: a retrained sweep trial uses the trial's own
        torch.set_num_threads(cfg.train.threads)
    try:
        assets = prepare_assets(cfg)
    except (ValueError, OSError) as exc:  # bad data folder, unreadable image, missing weight file
        print(f"error: preparing data, classifiers and metrics: {exc}", file=sys.stderr)
        return 2
    try:
        train(cfg, assets, Path(args.out), args.resume, args.progress_every)
    except (DivergedError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
