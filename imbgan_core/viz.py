"""Images for people: quantisation of G output and the per-class sample grid (one row per class, name at left)."""
from __future__ import annotations

from pathlib import Path

import torch


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 0..255, the inverse of ``ImageDataset.as_float`` (round to nearest)."""
    if images.dtype == torch.uint8:
        return images
    return images.float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def save_sample_grid(images: torch.Tensor, class_names: list[str], per_class: int, path) -> Path:
    """Write a PNG grid: row k holds images[k*per_class:(k+1)*per_class] of class ``class_names[k]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = to_uint8(images)
    n, c, h, w = images.shape
    if n != len(class_names) * per_class:
        raise ValueError(f"sample grid needs {len(class_names)} x {per_class} images, got {n}")
    pad = 1
    rows = images.view(len(class_names), per_class, c, h, w)
    canvas = torch.full((c, len(class_names) * (h + pad), per_class * (w + pad)), 255, dtype=torch.uint8)
    for k in range(len(class_names)):
        for j in range(per_class):
            canvas[:, k * (h + pad):k * (h + pad) + h, j * (w + pad):j * (w + pad) + w] = rows[k, j]
    picture = canvas.permute(1, 2, 0).numpy()
    scale = max(1.0, 48 / h)  # small images get a readable figure
    fig, ax = plt.subplots(figsize=(0.25 + per_class * (w + pad) * scale / 100 + 1.0,
                                    0.25 + len(class_names) * (h + pad) * scale / 100), dpi=100)
    ax.imshow(picture[..., 0] if c == 1 else picture, cmap="gray" if c == 1 else None, vmin=0, vmax=255,
              interpolation="nearest")
    ax.set_yticks([k * (h + pad) + h / 2 for k in range(len(class_names))], labels=class_names, fontsize=7)
    ax.set_xticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
