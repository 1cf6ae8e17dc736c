"""Classification Accuracy Score (Slim 2020, Sec. 3; Ravuri & Vinyals 2019): train on generated, test on real.

A classifier is trained on batches generated on the fly (Sec. 3.1: "on-the-fly generation"), each step a class-
balanced batch of labels, with optional flips + crops, filtering by a classifier's confidence p_t and latent
truncation psi; it is scored on the real, balanced evaluation split. The same architecture trained on the real
long-tailed training split with the same budget (steps x batch size, same transforms) is the reference ``cas_real``
(Sec. 3.2, "Baseline"); it depends only on data and settings, so it is computed once and cached.
"""
from __future__ import annotations

import json
from typing import Callable

import torch
import torch.nn.functional as F

from imbgan_core.cache import cached
from imbgan_core.classifier import evaluate_accuracy, random_translate
from imbgan_core.config import CASConfig
from imbgan_core.data.types import ImageDataset, LongTailData
from imbgan_core.nets.classifier import build_classifier_net
from imbgan_core.viz import to_uint8

MAX_FILTER_ROUNDS = 8  # generation rounds per step to fill a filtered batch; then train on what was kept
CACHE_VERSION = 1


def classification_accuracy_score(generate: Callable, data: LongTailData, cfg: CASConfig, filter_classifier=None,
                                  device="cpu", seed: int = 0, cache_dir=None) -> dict[str, float]:
    """{"cas": accuracy on data.eval of a classifier trained on ``generate``, "cas_real": the real-data reference}.

    ``generate(labels)`` returns images in [-1, 1] (or uint8); with ``cfg.truncation`` set it is called as
    ``generate(labels, truncation=psi)``. ``filter_classifier`` (the annotator) is required when
    ``cfg.filter_threshold`` is set.
    """
    if cfg.filter_threshold is not None and filter_classifier is None:
        raise ValueError("eval.cas.filter_threshold is set but no filter classifier (annotator) was given")
    batches = GeneratedBatches(generate, data.num_classes, cfg, filter_classifier, device)
    cas = train_and_score(batches, data, cfg, device, seed)
    return {"cas": cas, "cas_real": real_reference_accuracy(data, cfg, device, seed, cache_dir)}


def real_reference_accuracy(data: LongTailData, cfg: CASConfig, device="cpu", seed: int = 0, cache_dir=None) -> float:
    """Accuracy of the CAS classifier trained on the real long-tailed split with the same budget (cached)."""
    key = {"kind": "cas_real", "version": CACHE_VERSION, "data": data.spec, "seed": seed,
           "budget": {"steps": cfg.steps, "batch_size": cfg.batch_size, "flips": cfg.flips, "crops": cfg.crops}}

    def build(tmp_dir):
        acc = train_and_score(RealBatches(data.train, cfg.batch_size, device), data, cfg, device, seed)
        (tmp_dir / "score.json").write_text(json.dumps({"cas_real": acc}))

    path = cached("cas_real", key, build, cache_dir=cache_dir, filename="score.json")
    return float(json.loads(path.read_text())["cas_real"])


def quantise(images: torch.Tensor) -> torch.Tensor:
    """G output in [-1, 1] (or uint8) -> float in [-1, 1] on the uint8 grid, like real images
    (docs/reference.md#quantise)."""
    return to_uint8(images).float().div(127.5).sub(1.0)


def augment(x: torch.Tensor, flips: bool, crops: bool, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and random crops (Sec. 3.1 "data transformations").

    A crop is a random shift within +-1/8 of the size (the classifier module's ``random_translate``: 4 px at 32 px,
    the CIFAR recipe behind the paper), with replicated edges instead of zero padding.
    """
    if flips:
        flip = (torch.rand(x.shape[0], generator=gen) < 0.5).view(-1, 1, 1, 1)
        x = torch.where(flip.to(x.device), x.flip(3), x)
    if crops:
        x = random_translate(x.cpu(), gen).to(x.device)
    return x


class RealBatches:
    """Uniformly sampled batches of the real (long-tailed) training split: the reference classifier's data."""

    def __init__(self, dataset: ImageDataset, batch_size: int, device="cpu"):
        self.dataset, self.batch_size, self.device = dataset, batch_size, device

    def __call__(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, len(self.dataset), (self.batch_size,), generator=gen)
        return self.dataset.as_float(idx).to(self.device), self.dataset.labels[idx].to(self.device)


class GeneratedBatches:
    """Class-balanced label batches -> generated images, filtered by the filter classifier's confidence p_t."""

    def __init__(self, generate: Callable, num_classes: int, cfg: CASConfig, filter_classifier=None, device="cpu"):
        self.generate, self.num_classes, self.cfg = generate, num_classes, cfg
        self.filter_classifier, self.device = filter_classifier, device

    def balanced_labels(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """n labels with class counts differing by at most one, in random order."""
        offset = int(torch.randint(0, self.num_classes, (1,), generator=gen))
        labels = (torch.arange(n) + offset) % self.num_classes
        return labels[torch.randperm(n, generator=gen)]

    @torch.no_grad()
    def draw(self, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.to(self.device)
        if self.cfg.truncation is None:
            return quantise(self.generate(labels)).to(self.device)
        return quantise(self.generate(labels, truncation=self.cfg.truncation)).to(self.device)

    @torch.no_grad()
    def keep_mask(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sec. 3.1 filtering: argmax C(x) = y and C_y(x) >= p_t."""
        probs = torch.softmax(self.filter_classifier(x), dim=1)
        confident = probs.gather(1, y.view(-1, 1)).squeeze(1) >= self.cfg.filter_threshold
        return (probs.argmax(dim=1) == y) & confident

    def __call__(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys, have = [], [], 0
        for _ in range(MAX_FILTER_ROUNDS):
            y = self.balanced_labels(self.cfg.batch_size, gen).to(self.device)
            x = self.draw(y)
            if self.cfg.filter_threshold is not None:
                keep = self.keep_mask(x, y)
                x, y = x[keep], y[keep]
            xs.append(x)
            ys.append(y)
            have += len(y)
            if have >= self.cfg.batch_size:
                break
        return torch.cat(xs)[:self.cfg.batch_size], torch.cat(ys)[:self.cfg.batch_size]


def train_and_score(batches: Callable, data: LongTailData, cfg: CASConfig, device="cpu", seed: int = 0) -> float:
    """Train a fresh classifier for cfg.steps on ``batches`` and return its accuracy on the real eval split.

    Optimiser as in Slim 2020 App. A.1: SGD lr 0.1, momentum 0.9, weight decay 1e-4, lr / 10 at 100/180 and
    150/180 of training (there in epochs; here in steps). Global RNG state is restored afterwards.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        net = build_cas_network(data).to(device)
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        milestones = [round(cfg.steps * 100 / 180), round(cfg.steps * 150 / 180)]
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
        net.train()
        for _ in range(cfg.steps):
            x, y = batches(gen)
            if len(y) > 1:  # BatchNorm needs two samples; a step whose batch was filtered away is skipped
                loss = F.cross_entropy(net(augment(x, cfg.flips, cfg.crops, gen)), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sched.step()
        return evaluate_accuracy(net, data, device)["overall"]


def build_cas_network(data: LongTailData) -> torch.nn.Module:
    """The project's classifier for this data ("auto": small CNN below 32 px, ResNet-32 from 32 px; the paper used
    a ResNet-20 at 32 px, App. A.1)."""
    _, channels, resolution, _ = data.train.images.shape
    return build_classifier_net("auto", data.num_classes, int(channels), int(resolution))
