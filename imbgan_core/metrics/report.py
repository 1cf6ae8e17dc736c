"""Per-class artifacts of one evaluation: a CSV table and a plot of per-class FID against training-set class size."""
from __future__ import annotations

import csv
from pathlib import Path

from imbgan_core.data.types import LongTailData

FIXED_COLUMNS = ("class", "name", "group", "train_count", "eval_count")


def _group_of(data: LongTailData) -> list[str]:
    names = [""] * data.num_classes
    for group, members in data.groups.items():
        for k in members:
            names[k] = group
    return names


def write_per_class_csv(result, data: LongTailData, path) -> Path:
    """One row per class: index, name, group, train / eval counts, then every per-class metric of ``result``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = sorted(result.per_class)
    for name in metrics:
        if len(result.per_class[name]) != data.num_classes:
            raise ValueError(f"per-class metric {name!r} has {len(result.per_class[name])} values for "
                             f"{data.num_classes} classes")
    groups, train, evaluation = _group_of(data), data.train.counts(), data.eval.counts()
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([*FIXED_COLUMNS, *metrics])
        for k in range(data.num_classes):
            writer.writerow([k, data.class_names[k], groups[k], train[k], evaluation[k],
                             *(repr(float(result.per_class[name][k])) for name in metrics)])
    return path


def plot_fid_vs_class_size(result, data: LongTailData, path) -> Path:
    """Scatter of per-class FID against the class's training images (log x), coloured by group (PNG, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "fid" not in result.per_class:
        raise ValueError("the result has no per-class FID: evaluate with 'intra_fid' in eval.metrics")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    counts, fids, groups = data.train.counts(), result.per_class["fid"], _group_of(data)
    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=100)  # room for the legend at the right
    for group in sorted(set(groups)):
        members = [k for k in range(data.num_classes) if groups[k] == group]
        ax.scatter([counts[k] for k in members], [fids[k] for k in members], label=group or "ungrouped", s=18)
    if data.num_classes <= 20:
        for k in range(data.num_classes):
            ax.annotate(data.class_names[k], (counts[k], fids[k]), fontsize=7, xytext=(3, 2),
                        textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("training images in class")
    space = result.meta.get("feature_space", "?")
    ax.set_ylabel(f"per-class FID ({space} features)")
    ax.set_title(f"per-class FID vs class size, {result.meta.get('samples_per_class', '?')} samples per class",
                 fontsize=9)
    # A fixed place, outside the points: loc="best" searches the plot and warns ("Creating legend with loc='best'
    # can be slow") whenever the search takes over a second, as it does on a busy machine (issue #16).
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
