"""The pretrained classifier C (used by methods) and the balanced annotator (offline feature space for metrics).

Both are trained once per content hash of everything that determines them and cached on disk (``cache.cached``:
atomic write, file lock), with ``weights.pt`` (a state dict, loaded with ``weights_only=True``) and ``report.json``
(accuracy on the evaluation split, overall / per class / per group) next to each other.

Roles (our decisions, deliberate):
- ``classifier``: trained on the long-tailed training split with CE - entropy_bonus * H(softmax)
  (``classifier.entropy_bonus``, default 0: plain cross-entropy). Softlabel-GAN trains its classifier with this
  entropy term, weight 0.3 (Sec. 4.3); CBGAN's classifier has no entropy term: a ResNet-32 trained with
  cross-entropy on the long-tailed data (deferred re-weighting, DRW, in its CIFAR experiments, Sec. 4
  "Pre-Trained Classifier"; "usual cross entropy" for iNaturalist-2019, App. 6.5.2; docs/reference.md#cbgan-classifier).
  Class re-weighting (DRW) is not implemented here.
- ``annotator``: trained on every non-evaluation image (training split + unused pool: the full balanced CIFAR
  training set, all non-held-out digits) with class-balanced sampling and plain CE. Departure from the issue text,
  which says "the evaluation split plus the pool": training on the evaluation split would let the feature space
  memorise the very images whose statistics the metrics compare against (biased FID, inflated accuracy), so the
  evaluation split stays unseen and its accuracy is an honest held-out number. The union does not depend on the
  imbalance profile, so the annotator key omits it: one annotator per dataset serves every ratio and seed, keeping
  metrics comparable across imbalance settings. It never sees a generated image.

Both train on ``classifier.threads`` CPU threads (default 1), whatever the calling process uses, and the count is
part of the key: the backward pass's reductions depend on it, so a sweep driver on 2 threads and the train CLI on
``train.threads: 1`` used to cache different annotator weights under one key, and results carrying the same
``feature_weights`` were scored in different feature spaces.
"""
from __future__ import annotations

import contextlib
import copy
import json
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from imbgan_core.cache import cached, content_hash, tensor_digest
from imbgan_core.config import ClassifierConfig
from imbgan_core.data.types import ImageDataset, LongTailData
from imbgan_core.nets.classifier import build_classifier_net, resolve_arch

ROLES = ("classifier", "annotator")
TRAINING_VERSION = 2  # bump when the training recipe changes, so stale weights are not reused
# 2: trained on classifier.threads threads (1 left weights built under the caller's thread count)
TRANSLATE_RATIO = 1 / 8  # light augmentation: random shift within +-1/8 of the size (as DiffAugment's translation)
IMBALANCE_KEYS = ("imbalance", "train_counts")  # spec entries the annotator's data does not depend on


class Classifier(nn.Module):
    """A trained classifier: ``forward(x)`` -> logits, ``features(x)`` -> penultimate features; x in [-1, 1]."""

    def __init__(self, net: nn.Module, role: str, arch: str, channels: int, resolution: int, cache_key: str,
                 report: dict):
        super().__init__()
        self.net = net
        self.role, self.arch = role, arch
        self.channels, self.resolution = channels, resolution
        self.feature_dim: int = net.feature_dim
        self.num_classes: int = net.num_classes
        self.cache_key = cache_key
        self.report = report

    def train(self, mode: bool = True) -> "Classifier":
        """Frozen: stays in eval mode (BatchNorm running statistics) even inside a module switched to training."""
        return super().train(False)

    def _check(self, x: torch.Tensor) -> None:
        expected = (self.channels, self.resolution, self.resolution)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"{self.role} expects N x {' x '.join(map(str, expected))} images in [-1, 1], "
                             f"got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.net(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.net.features(x)


def differentiable_copy(classifier: nn.Module, device) -> nn.Module:
    """A frozen private copy of ``classifier`` for gradients through its input on every training step (CBGAN): each
    Conv2d followed by BatchNorm2d in a Sequential is fused into one conv (exact for frozen eval-mode BN, up to
    float rounding) and weights are channels-last; together they cut its forward + input-backward by ~40 % on CPU
    (bench/step_time.py). A copy, so the shared, cached classifier is untouched. Feed it channels-last images."""
    fast = copy.deepcopy(classifier).eval()
    for block in fast.modules():
        if isinstance(block, nn.Sequential):
            for i in range(len(block) - 1):
                if isinstance(block[i], nn.Conv2d) and isinstance(block[i + 1], nn.BatchNorm2d):
                    block[i] = fuse_conv_bn_eval(block[i], block[i + 1])
                    block[i + 1] = nn.Identity()
    return fast.to(device, memory_format=torch.channels_last).requires_grad_(False)


def classifier_key(data: LongTailData, cfg: ClassifierConfig, role: str) -> dict:
    """Everything that determines the weights of ``role`` for ``data`` (see the module docstring for the annotator)."""
    if role not in ROLES:
        raise ValueError(f"classifier role must be one of {list(ROLES)}, got {role!r}")
    if not data.spec:
        raise ValueError("LongTailData.spec is empty: a classifier cache needs the spec that identifies the data")
    resolution = int(data.train.images.shape[-1])
    spec = data.spec if role == "classifier" else {k: v for k, v in data.spec.items() if k not in IMBALANCE_KEYS}
    return {
        "version": TRAINING_VERSION,
        "role": role,
        "data": spec,
        "arch": resolve_arch(cfg.arch, resolution),
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "entropy_bonus": cfg.entropy_bonus if role == "classifier" else 0.0,
        "seed": cfg.seed,
        "threads": cfg.threads,
    }


def get_classifier(data: LongTailData, cfg: ClassifierConfig, role: str, cache_dir=None, device="cpu",
                   log: Callable[[str], None] = print) -> Classifier:
    """Load ``role`` from the cache, training it first if this exact key was never built (frozen, eval mode)."""
    key = classifier_key(data, cfg, role)
    channels, resolution = int(data.train.images.shape[1]), int(data.train.images.shape[-1])
    built = []

    def build(tmp: Path) -> None:
        net, report = train_classifier(data, cfg, role, key["arch"], device, log)
        torch.save(net.state_dict(), tmp / "weights.pt")
        (tmp / "report.json").write_text(json.dumps({**report, "key": key}, indent=1), encoding="utf-8")
        built.append(True)

    folder = cached("classifier", key, build, cache_dir=cache_dir)
    if not built:
        log(f"[{role}] cache hit: {folder}")
    net = build_classifier_net(key["arch"], data.num_classes, channels, resolution)
    net.load_state_dict(torch.load(folder / "weights.pt", map_location="cpu", weights_only=True))
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    report["groups"] = group_accuracy(report["per_class"], data.groups)  # groups are not part of the weights' key
    clf = Classifier(net, role, key["arch"], channels, resolution, content_hash(key), report)
    clf.requires_grad_(False)
    return clf.eval().to(device)


def training_set(data: LongTailData, role: str) -> ImageDataset:
    """The long-tailed split for C; for the annotator every non-eval image, in a split-independent order."""
    if role == "classifier":
        return data.train
    parts = [data.train] if data.pool is None else [data.train, data.pool]
    images = torch.cat([p.images for p in parts])
    labels = torch.cat([p.labels for p in parts])
    # Canonical order (label, then an exact integer projection of the pixels): the same images in the same order
    # whatever the imbalance profile split them into, so the annotator is identical across profiles.
    index = torch.sort(labels * 2 ** 40 + pixel_keys(images), stable=True).indices
    return ImageDataset(images[index], labels[index], list(data.class_names))


def pixel_keys(images: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """An exact integer (< 2^40) per uint8 image: a fixed random projection, computed in float64 chunks.

    Each term is below 255 * 2^16 and there are at most 3 * 128 * 128 of them, so float64 sums stay exact.
    """
    weights = torch.randint(0, 2 ** 16, (images[0].numel(),), generator=torch.Generator().manual_seed(0)).double()
    keys = [images[i:i + chunk].flatten(1).double() @ weights for i in range(0, len(images), chunk)]
    return torch.cat(keys).long() if keys else torch.zeros(0, dtype=torch.int64)


def train_classifier(data: LongTailData, cfg: ClassifierConfig, role: str, arch: str, device="cpu",
                     log: Callable[[str], None] = print) -> tuple[nn.Module, dict]:
    """Adam(lr), cosine decay to 0, ``cfg.epochs`` epochs; deterministic under ``cfg.seed``; a log line per epoch.

    The cosine decay is our choice: the last epoch's weights are kept (choosing an epoch by eval accuracy would
    leak the evaluation split), and a decayed learning rate makes them stable.

    Global RNG state is restored afterwards. Light augmentation (random translation, ``TRANSLATE_RATIO``) is our
    choice: tail classes of the long-tailed split have a handful of images.
    """
    dataset = training_set(data, role)
    balanced = role == "annotator"
    bonus = cfg.entropy_bonus if role == "classifier" else 0.0
    channels, resolution = int(dataset.images.shape[1]), int(dataset.images.shape[-1])
    log(f"[{role}] training {arch} on {len(dataset)} images ({'class-balanced sampling' if balanced else 'uniform'}"
        f", entropy bonus {bonus}) for {cfg.epochs} epochs")
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]), torch_threads(cfg.threads):
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        net = build_classifier_net(arch, data.num_classes, channels, resolution).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        steps_per_epoch = len(dataset) // cfg.batch_size + (len(dataset) % cfg.batch_size > 1)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
        for epoch in range(cfg.epochs):
            net.train()
            total_loss, correct, seen = 0.0, 0, 0
            for idx in epoch_batches(dataset.labels, cfg.batch_size, balanced, gen):
                x = random_translate(dataset.as_float(idx), gen).to(device)
                y = dataset.labels[idx].to(device)
                logits = net(x)
                loss = entropy_bonus_loss(logits, y, bonus)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                schedule.step()
                total_loss += float(loss.detach()) * len(idx)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(idx)
            log(f"[{role}] epoch {epoch + 1}/{cfg.epochs} loss {total_loss / seen:.4f} "
                f"train acc {correct / seen:.3f}")
    report = evaluate_accuracy(net, data, device)
    report.update(role=role, arch=arch, epochs=cfg.epochs, train_images=len(dataset),
                  seconds=round(time.perf_counter() - start, 2))
    groups = ", ".join(f"{g} {a:.3f}" for g, a in report["groups"].items())
    log(f"[{role}] eval accuracy {report['overall']:.4f} ({groups}) in {report['seconds']} s")
    return net.cpu(), report


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block on ``n`` torch CPU threads, then give the caller its own count back."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def entropy_bonus_loss(logits: torch.Tensor, labels: torch.Tensor, bonus: float) -> torch.Tensor:
    """CE - bonus * H(softmax(logits)) (Softlabel-GAN Sec. 4.3, "entropy regularization term", weight 0.3)."""
    loss = F.cross_entropy(logits, labels)
    if bonus:
        log_p = F.log_softmax(logits, dim=1)
        entropy = -(log_p.exp() * log_p).sum(1).mean()
        loss = loss - bonus * entropy
    return loss


def epoch_batches(labels: torch.Tensor, batch_size: int, balanced: bool, gen: torch.Generator):
    """Index batches of one epoch (len(labels) draws): a permutation, or class-balanced draws with replacement."""
    n = len(labels)
    if balanced:
        counts = torch.bincount(labels).double()
        order = torch.multinomial(1.0 / counts[labels], n, replacement=True, generator=gen)
    else:
        order = torch.randperm(n, generator=gen)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        if len(idx) > 1:  # BatchNorm needs more than one sample
            yield idx


def random_translate(x: torch.Tensor, gen: torch.Generator, ratio: float = TRANSLATE_RATIO) -> torch.Tensor:
    """Shift each image by an integer offset within +-ratio * size; edges are replicated (digits: background)."""
    n, c, h, w = x.shape
    pad = max(1, int(h * ratio + 0.5))
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None].expand(n, c, h, w + 2 * pad)
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :].expand(n, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


@torch.no_grad()
def evaluate_accuracy(net: nn.Module, data: LongTailData, device="cpu", batch_size: int = 512) -> dict:
    """Overall, per-class and per-group top-1 accuracy on the (balanced) evaluation split."""
    net.eval()
    preds = []
    for start in range(0, len(data.eval), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(data.eval)))
        preds.append(net(data.eval.as_float(idx).to(device)).argmax(1).cpu())
    correct = (torch.cat(preds) == data.eval.labels).double()
    per_class = [float(correct[data.eval.labels == k].mean()) for k in range(data.num_classes)]
    return {"overall": float(correct.mean()), "per_class": per_class,
            "groups": group_accuracy(per_class, data.groups)}


def group_accuracy(per_class: list[float], groups: dict[str, list[int]]) -> dict[str, float]:
    """Mean per-class accuracy in each group (equals the image-level accuracy: the eval split is balanced)."""
    return {name: (sum(per_class[k] for k in members) / len(members) if members else float("nan"))
            for name, members in groups.items()}


def soft_labels(classifier: Classifier, images: ImageDataset, cache_dir=None, batch_size: int = 512) -> torch.Tensor:
    """softmax(C(x)) for every image, N x K float32 on the CPU; cached by the classifier's key and the images' bytes."""
    key = {"classifier": classifier.cache_key, "images": tensor_digest(images.images, images.labels)}
    device = next(classifier.parameters()).device

    def build(tmp: Path) -> None:
        probs = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                idx = torch.arange(start, min(start + batch_size, len(images)))
                probs.append(torch.softmax(classifier(images.as_float(idx).to(device)), dim=1).float().cpu())
        empty = torch.zeros(0, classifier.num_classes)
        torch.save(torch.cat(probs) if probs else empty, tmp / "soft_labels.pt")

    path = cached("soft_labels", key, build, cache_dir=cache_dir, filename="soft_labels.pt")
    return torch.load(path, map_location="cpu", weights_only=True)
