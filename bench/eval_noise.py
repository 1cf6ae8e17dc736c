"""How much a metric moves from evaluation alone, against how much it moves from training (issue #15, item 2).

    python bench/eval_noise.py [--space search_spaces/cgan.yaml] [--train-seeds 3] [--eval-seeds 8]
                               [--samples 50,200] [--metrics intra_fid,fid_few,fid]
                               [--real-sets 3 --real-per-class 30] [--out DIR] [--set key=value ...]

For each training seed (``train.seed`` = 0..n-1) one generator is trained with the space's run block, then evaluated
with ``--eval-seeds`` latent seeds at each generated-samples-per-class count of ``--samples``.

Three sources of noise are measured, each with the other two held fixed:

- latent seed: the same generator and real set, other generated images (what a re-evaluation changes);
- real set (``--real-sets R > 1``): the same generator and the *same generated images*, scored against R disjoint
  balanced real reference sets of ``--real-per-class`` images each. Disjoint real sets need R x M held-out images per
  class, so the run's ``dataset.eval_per_class`` is set to R x M: the training split is drawn from what is left
  (digits: n_max ~90 in place of ~145). Every generator is also scored against the union of the R sets;
- training seed: the sd across generators of their mean score.

A rung compares trials against one fixed real set, so what matters there is how much the real set moves the *gap*
between two generators, not the scores themselves: the comparison table gives, for every pair of generators, the sd
of their gap across real sets and across latent seeds, and how often one evaluation orders the pair as the mean over
every real set and latent seed does; the cost line gives an evaluation's time against a training period's. One
torch thread. ``--out`` writes raw.json and eval_noise.png.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from imbgan_core.assets import prepare_assets  # noqa: E402
from imbgan_core.config import parse_set  # noqa: E402
from imbgan_core.data.types import ImageDataset  # noqa: E402
from imbgan_core.metrics.evaluator import Evaluator  # noqa: E402
from imbgan_core.training import Run  # noqa: E402
from trainables.spaces import build_run_config, load_space  # noqa: E402

LATENT_SEED_BASE = 10_000
REAL_SET_SEED = 1234  # the permutation that deals the eval split into disjoint real sets
UNION = "union"


def real_sets(eval_split: ImageDataset, per_class: int, count: int) -> dict[str, ImageDataset]:
    """``count`` disjoint balanced sets of ``per_class`` images of every class, dealt from ``eval_split``, and
    their union (``UNION``) when ``count`` > 1."""
    rng = np.random.default_rng(REAL_SET_SEED)
    labels = eval_split.labels.numpy()
    shuffled = [rng.permutation(np.flatnonzero(labels == k)) for k in range(eval_split.num_classes)]
    short = [k for k, members in enumerate(shuffled) if len(members) < per_class * count]
    if short:
        raise SystemExit(f"--real-sets {count} --real-per-class {per_class}: classes {short} have fewer than "
                         f"{per_class * count} evaluation images")
    sets = {}
    for j in range(count):
        idx = np.sort(np.concatenate([m[j * per_class:(j + 1) * per_class] for m in shuffled]))
        sets[f"set{j}"] = ImageDataset(eval_split.images[idx].contiguous(), eval_split.labels[idx].clone(),
                                       list(eval_split.class_names))
    if count > 1:
        idx = np.sort(np.concatenate([m[:per_class * count] for m in shuffled]))
        sets[UNION] = ImageDataset(eval_split.images[idx].contiguous(), eval_split.labels[idx].clone(),
                                   list(eval_split.class_names))
    return sets


def evaluators(run: Run, references: dict[str, ImageDataset], samples_per_class: int,
               metrics: list[str]) -> dict[str, Evaluator]:
    """One prepared evaluator per real reference set, at ``samples_per_class`` generated images per class."""
    cfg = dataclasses.replace(run.cfg.eval, samples_per_class=samples_per_class, metrics=metrics)
    return {name: Evaluator(dataclasses.replace(run.assets.data, eval=ref), cfg, run.assets.annotator, None,
                            str(run.device), conditional=run.cfg.model.g_conditional).prepare()
            for name, ref in references.items()}


def score(run: Run, evaluator: Evaluator, latent_seed: int) -> dict:
    """The run's generator scored by ``evaluator`` with latents from ``latent_seed`` (same seed: same images)."""
    gen = torch.Generator().manual_seed(latent_seed)
    return evaluator.evaluate(lambda labels, **kw: run.generate(labels, gen, **kw),
                              conditional=run.cfg.model.g_conditional).scalars


def metric_groups(metrics: list[str]) -> list[str]:
    """The evaluator's metric groups that produce ``metrics`` (fid_few comes with intra_fid's group)."""
    return sorted({"intra_fid" if m in ("fid_few", "fid_many", "fid_medium") else m for m in metrics})


def sd(values) -> float:
    values = list(values)
    return statistics.stdev(values) if len(values) > 1 else float("nan")


def noise_table(raw: dict, metrics: list[str], counts: list[int], set_names: list[str]) -> list[str]:
    """Mean and the three sds per metric and sample count, against the single-size real sets."""
    lines = ["| metric | samples/class | mean | latent-seed sd | real-set sd | training-seed sd |",
             "| --- | --- | --- | --- | --- | --- |"]
    for m, n in itertools.product(metrics, counts):
        v = np.array([[raw[g][str(n)][s][m] for s in set_names] for g in raw])  # generator x set x latent seed
        latent = float(np.mean(v.std(axis=2, ddof=1)))
        real = float(np.mean(v.std(axis=1, ddof=1))) if len(set_names) > 1 else float("nan")
        training = sd(v.mean(axis=(1, 2)))
        lines.append(f"| {m} | {n} | {v.mean():.4g} | {latent:.3g} | {real:.3g} | {training:.3g} |")
    return lines


def union_table(raw: dict, metrics: list[str], counts: list[int], per_class: int, union_size: int) -> list[str]:
    """The same generators against one real set against the union of all of them: the bias and the latent noise."""
    lines = [f"| metric | samples/class | mean, {per_class} real/class | mean, {union_size} real/class | "
             f"latent-seed sd, {union_size} real/class | training-seed sd, {union_size} real/class |",
             "| --- | --- | --- | --- | --- | --- |"]
    for m, n in itertools.product(metrics, counts):
        single = np.array([[raw[g][str(n)][s][m] for s in raw[g][str(n)] if s != UNION] for g in raw])
        union = np.array([raw[g][str(n)][UNION][m] for g in raw])  # generator x latent seed
        lines.append(f"| {m} | {n} | {single.mean():.4g} | {union.mean():.4g} | "
                     f"{float(np.mean(union.std(axis=1, ddof=1))):.3g} | {sd(union.mean(axis=1)):.3g} |")
    return lines


def comparison_table(raw: dict, metrics: list[str], counts: list[int], set_names: list[str]) -> list[str]:
    """Per pair of generators: their mean gap, its sd across real sets and latent seeds, and how often a single
    evaluation (one real set, one latent seed) orders the pair as the mean over all of them does."""
    lines = ["| metric | samples/class | pair | mean gap | gap sd, real sets | gap sd, latent seeds | "
             "one evaluation orders the pair right |", "| --- | --- | --- | --- | --- | --- | --- |"]
    gens = list(raw)
    for m, n, (a, b) in itertools.product(metrics, counts, itertools.combinations(gens, 2)):
        gap = (np.array([raw[a][str(n)][s][m] for s in set_names])
               - np.array([raw[b][str(n)][s][m] for s in set_names]))  # set x latent seed, same images per seed
        mean = float(gap.mean())
        agree = float(np.mean(np.sign(gap) == np.sign(mean)))
        real = float(np.mean(gap.std(axis=0, ddof=1))) if len(set_names) > 1 else float("nan")
        lines.append(f"| {m} | {n} | {a} - {b} | {mean:+.3g} | {real:.3g} | "
                     f"{float(np.mean(gap.std(axis=1, ddof=1))):.3g} | {agree:.0%} |")
    return lines


def plot(raw: dict, metric: str, counts: list[int], set_names: list[str], path: Path) -> None:
    """Every evaluation of every generator: x = generator, colour = real set, the spread within a colour = latent
    seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(counts), figsize=(4.2 * len(counts), 3.6), sharey=True, squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, n in zip(axes[0], counts, strict=True):
        for gi, g in enumerate(raw):
            for si, s in enumerate(set_names):
                values = raw[g][str(n)][s][metric]
                x = gi + (si - (len(set_names) - 1) / 2) * 0.18 + np.linspace(-0.05, 0.05, len(values))
                ax.scatter(x, values, s=12, color=colours(si), label=s if gi == 0 else None)
        ax.set_xticks(range(len(raw)), list(raw))
        ax.set_title(f"{n} generated / class")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(metric)
    axes[0][-1].legend(title="real set", fontsize=8)
    fig.suptitle(f"{metric}: generator (training seed) vs real set vs latent seed", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--space", default="search_spaces/cgan.yaml")
    p.add_argument("--train-seeds", type=int, default=3)
    p.add_argument("--eval-seeds", type=int, default=8)
    p.add_argument("--samples", default="50,200", help="generated samples per class, comma-separated")
    p.add_argument("--metrics", default="intra_fid,fid_few,fid")
    p.add_argument("--real-sets", type=int, default=1, help="disjoint real reference sets (> 1 measures real-set "
                                                            "noise; sets dataset.eval_per_class to R x M)")
    p.add_argument("--real-per-class", type=int, default=None,
                   help="real images per class in each set (default: the space's dataset.eval_per_class)")
    p.add_argument("--out", type=Path, default=None, help="folder for raw.json and eval_noise.png")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    if args.train_seeds < 2 or args.eval_seeds < 2 or args.real_sets < 1:
        p.error("--train-seeds and --eval-seeds need >= 2 (an sd needs two values), --real-sets >= 1")
    torch.set_num_threads(1)
    metrics, counts = args.metrics.split(","), [int(n) for n in args.samples.split(",")]
    space = load_space(str(REPO / args.space))
    overrides = parse_set(args.set)
    per_class = args.real_per_class or build_run_config(space.run, overrides).dataset.eval_per_class
    if args.real_sets > 1:
        overrides["dataset.eval_per_class"] = per_class * args.real_sets
    raw: dict[str, dict[str, dict[str, dict[str, list[float]]]]] = {}
    eval_s: dict[int, list[float]] = {n: [] for n in counts}  # seconds per evaluation (real statistics cached)
    period_s: list[float] = []  # training seconds per eval_every steps, one per generator
    for seed in range(args.train_seeds):
        cfg = build_run_config(space.run, {**overrides, "train.seed": seed})
        assets = prepare_assets(cfg, log=lambda message: None)
        references = real_sets(assets.data.eval, per_class, args.real_sets)
        run = Run(cfg, assets)
        started = time.perf_counter()
        run.train(cfg.train.steps)
        print(f"training seed {seed}: {cfg.train.steps} steps in {time.perf_counter() - started:.0f} s "
              f"(train split {assets.data.train.counts()})", flush=True)
        period_s.append((time.perf_counter() - started) * cfg.train.eval_every / cfg.train.steps)
        raw[f"G{seed}"] = per_count = {}
        for n in counts:
            per_count[str(n)] = per_set = {name: {m: [] for m in metrics} for name in references}
            for name, evaluator in evaluators(run, references, n, metric_groups(metrics)).items():
                for r in range(args.eval_seeds):
                    clock = time.perf_counter()
                    scalars = score(run, evaluator, LATENT_SEED_BASE + r)
                    eval_s[n].append(time.perf_counter() - clock)
                    for m in metrics:
                        per_set[name][m].append(float(scalars[m]))
            print(f"  {n} samples/class: " + ", ".join(
                f"{m} {statistics.mean(per_set['set0'][m]):.4g}" for m in metrics), flush=True)
    set_names = [f"set{j}" for j in range(args.real_sets)]
    print(f"\n{args.space} run block, {cfg.train.steps} steps, dataset.eval_per_class "
          f"{cfg.dataset.eval_per_class}; {args.train_seeds} training seeds x {args.real_sets} real sets of "
          f"{per_class}/class x {args.eval_seeds} latent seeds\n")
    print("\n".join(noise_table(raw, metrics, counts, set_names)))
    if args.real_sets > 1:
        print()
        print("\n".join(union_table(raw, metrics, counts, per_class, per_class * args.real_sets)))
    print()
    print("\n".join(comparison_table(raw, metrics, counts, set_names)))
    period = statistics.mean(period_s)
    print(f"\ncost: {cfg.train.eval_every} training steps take {period:.2f} s; one evaluation "
          f"({', '.join(metric_groups(metrics))}) takes " + ", ".join(
              f"{statistics.mean(eval_s[n]):.3f} ± {sd(eval_s[n]):.3f} s at {n}/class "
              f"({statistics.mean(eval_s[n]) / period:.1%} of that)" for n in counts))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "raw.json").write_text(json.dumps({"space": args.space, "steps": cfg.train.steps,
                                                       "eval_per_class": cfg.dataset.eval_per_class,
                                                       "real_per_class": per_class, "scores": raw}, indent=1))
        plot(raw, metrics[0], counts, set_names, args.out / "eval_noise.png")
        print(f"\nwrote {args.out / 'raw.json'} and {args.out / 'eval_noise.png'}")


if __name__ == "__main__":
    main()
