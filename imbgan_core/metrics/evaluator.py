"""The evaluator: one generation pass with known labels and one feature pass produce every requested metric.

Real statistics of the balanced evaluation split (per class, as in docs/reference.md#softlabel-eval)
are computed once per content hash of dataset spec + eval images + groups + feature extractor + its weights and
cached on disk (``imbgan_core.cache.cached``): features, per-class and per-group means with centred features (n < d)
or covariance and √Σ (n >= d), the real KID term of every class and group, real diversity references, and (when PRDC
is asked for) k-NN radii under a second key that adds k. A second sweep on the same data recomputes none of it.

Generation asks ``generate(labels)`` for ``eval.samples_per_class`` samples of every class, class-major, in calls of
at most ``GENERATE_BATCH`` labels; float output in [-1, 1] is quantised to uint8 exactly like real images
(``viz.to_uint8``: round((x + 1) * 127.5), clamped to 0..255), then both go through the same feature pass.

Metric groups, the scalar keys each reports and what each needs are their records in ``catalog.METRICS``; per-class
vectors go to ``EvalResult.per_class``, sample counts, the feature-space name, the class labels used (``class_labels``:
conditioning or annotator) and timings to ``EvalResult.meta``. For an unconditional G (``conditional=False``) each
image's class is the annotator's argmax, and a class with fewer than ``eval.min_class_samples`` images is scored on
the whole generated pool (``Evaluator._filled``). In the annotator
feature space ``fid``/``intra_fid``/``kid``/... are *domain* metrics (a classifier trained on the dataset itself), not
Inception FID: ``meta["feature_space"]`` travels with every result so they are never compared with each other.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from imbgan_core.cache import cached, tensor_digest
from imbgan_core.config import EvalConfig
from imbgan_core.data.types import LongTailData
from imbgan_core.metrics.catalog import METRICS, SEED
from imbgan_core.metrics.diversity import LPIPSDistance, alexnet_weights, mean_pairwise_distance
from imbgan_core.metrics.features import AnnotatorFeatures, build_extractor, extract
from imbgan_core.metrics.frechet import GaussianStats
from imbgan_core.metrics.kid import within_set_term
from imbgan_core.metrics.prdc import nearest_neighbour_radii
from imbgan_core.metrics.registry import ANNOTATOR, CLASS, LPIPS_WEIGHTS, PRDC_RADII, EvalSizes
from imbgan_core.viz import to_uint8

GENERATE_BATCH = 500  # labels per generate() call
STATS_VERSION = 1  # bump when the content of the real-statistics artifact changes
CONDITIONING_LABELS, ANNOTATOR_LABELS = "conditioning", "annotator"  # meta["class_labels"]: who grouped the images


@dataclass
class EvalResult:
    """Scalars keyed as the metric records say (``catalog.METRICS``); per-class vectors; sample counts, feature space,
    the class labels used and timings."""

    scalars: dict[str, float] = field(default_factory=dict)
    per_class: dict[str, list[float]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


@dataclass
class Generated:
    """One evaluation's generated samples: uint8 images, the class of each image (the conditioning label, or the
    annotator's for an unconditional G), features, logits, annotator labels."""

    images: torch.Tensor
    labels: torch.Tensor
    features: torch.Tensor
    logits: torch.Tensor
    annotator_labels: torch.Tensor | None
    class_labels: str = CONDITIONING_LABELS


class Evaluator:
    """Every metric of ``cfg.metrics`` for a generator on ``data`` (see the module docstring). ``conditional``:
    whether G follows the label it is asked for; when it does not, per-class metrics group by the annotator."""

    def __init__(self, data: LongTailData, cfg: EvalConfig, annotator=None, cache_dir=None, device="cpu",
                 conditional: bool = True):
        self.data, self.cfg, self.annotator = data, cfg, annotator
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.device = device
        self.num_classes = data.num_classes
        self.real_counts = data.eval.counts()
        self.conditional = conditional
        validate(data, cfg, annotator, conditional)
        if METRICS.need(cfg.metrics, LPIPS_WEIGHTS):
            alexnet_weights()  # fail on a missing weight file now, before anything expensive
        self.extractor = build_extractor(cfg.features, annotator, cfg.weights_path, device)
        self.labeller = None
        if needs_annotator(cfg, conditional):
            self.labeller = self.extractor if cfg.features == "annotator" else AnnotatorFeatures(annotator, device)
        self.real: dict | None = None
        self.real_sets: dict[str, torch.Tensor] = {}
        self.radii: dict | None = None
        self.lpips: LPIPSDistance | None = None
        self.real_stats_built = False  # True when this evaluator's prepare() computed the statistics (cache miss)

    # ------------------------------------------------------------------------------------------ real statistics
    def stats_key(self) -> dict:
        """Everything the real statistics depend on."""
        return {
            "version": STATS_VERSION,
            "data": self.data.spec,
            "eval_images": tensor_digest(self.data.eval.images, self.data.eval.labels),
            "groups": self.data.groups,
            "extractor": self.extractor.name,
            "weights": self.extractor.cache_key,
            "image_shape": list(self.data.eval.images.shape[1:]),
            "quantisation": "uint8",
        }

    def prepare(self) -> "Evaluator":
        """Load (or compute once and cache) the real statistics; idempotent."""
        if self.real is None:
            path = cached("real_stats", self.stats_key(), self._build_real_stats, self.cache_dir,
                          filename="real_stats.pt")
            self.real = torch.load(path, map_location="cpu", weights_only=True)
            self.real_sets = self._real_feature_sets(self.real["features"].double(), self.real["labels"])
        if self.radii is None and METRICS.need(self.cfg.metrics, PRDC_RADII):
            key = {**self.stats_key(), "prdc_k": self.cfg.prdc_k}
            path = cached("real_prdc_radii", key, self._build_radii, self.cache_dir, filename="radii.pt")
            self.radii = torch.load(path, map_location="cpu", weights_only=True)
        if self.lpips is None and METRICS.need(self.cfg.metrics, LPIPS_WEIGHTS):
            self.lpips = LPIPSDistance(self.device)
        return self

    def _real_feature_sets(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Real features of every class ("0".."K-1"), every non-empty group and "all"."""
        sets = {str(k): features[labels == k] for k in range(self.num_classes)}
        for group, members in self.data.groups.items():
            if members:
                sets[group] = features[torch.isin(labels, torch.tensor(members))]
        sets["all"] = features
        return sets

    def _build_real_stats(self, folder: Path) -> None:
        started = time.perf_counter()
        features, _ = extract(self.extractor, self.data.eval.images)
        labels = self.data.eval.labels
        sets = self._real_feature_sets(features, labels)
        gaussians = {}
        for name, x in sets.items():
            stats = GaussianStats.from_features(x, f"real features of {name}")
            if stats.cov is not None:
                stats.root()  # √Σ, the expensive reusable part of the eigen form
            gaussians[name] = stats.state()
        torch.save({
            "features": features, "labels": labels,
            "gaussians": gaussians,
            "kid_terms": {name: torch.tensor(within_set_term(x.double())) for name, x in sets.items()},
            "diversity": {name: torch.tensor(mean_pairwise_distance(x, SEED)) for name, x in sets.items()},
            "seconds": torch.tensor(time.perf_counter() - started),
        }, folder / "real_stats.pt")
        self.real_stats_built = True

    def _build_radii(self, folder: Path) -> None:
        names = [*map(str, range(self.num_classes)), "all"]
        torch.save({name: nearest_neighbour_radii(self.real_sets[name], self.cfg.prdc_k) for name in names},
                   folder / "radii.pt")

    # ------------------------------------------------------------------------------------------ evaluation
    def evaluate(self, generate: Callable[[torch.Tensor], torch.Tensor], conditional: bool | None = None
                 ) -> EvalResult:
        """Generate, extract features once, compute every group of ``cfg.metrics``; ``conditional`` (default: the
        constructor's) says whether ``generate`` follows the labels it is given."""
        conditional = self.conditional if conditional is None else conditional
        if not conditional and self.labeller is None and needs_annotator(self.cfg, False):
            raise ValueError("an unconditional generator's per-class metrics need the annotator's labels; build the "
                             "Evaluator with conditional=False and the annotator")
        self.prepare()
        started = time.perf_counter()
        labels = torch.arange(self.num_classes).repeat_interleave(self.cfg.samples_per_class)
        images = self._generate(generate, labels)
        generated_at = time.perf_counter()
        features, logits = extract(self.extractor, images)
        annotator_labels = None
        if self.labeller is self.extractor:
            annotator_labels = logits.argmax(1)
        elif self.labeller is not None:
            annotator_labels = extract(self.labeller, images)[1].argmax(1)
        extracted_at = time.perf_counter()
        if conditional:
            sample = Generated(images, labels, features.double(), logits, annotator_labels)
        else:  # G ignored the labels: each image belongs to the class the annotator sees in it
            sample = Generated(images, annotator_labels, features.double(), logits, annotator_labels, ANNOTATOR_LABELS)
        result = EvalResult(meta={**self._base_meta(labels), **self._class_meta(sample)})
        for group in self.cfg.metrics:
            record = METRICS[group]
            scalars, per_class, meta = record.compute(self, sample, generate)
            if set(scalars) != set(record.keys):
                raise RuntimeError(f"metric group {group!r} produced {sorted(scalars)}, its record lists "
                                   f"{sorted(record.keys)}")
            result.scalars.update(scalars)
            result.per_class.update(per_class)
            result.meta.update(meta)  # sample counts shared by all groups are in _base_meta
        finished = time.perf_counter()
        result.meta["timings"] = {"generate_s": generated_at - started, "features_s": extracted_at - generated_at,
                                  "metrics_s": finished - extracted_at, "total_s": finished - started}
        return result

    def _generate(self, generate: Callable, labels: torch.Tensor) -> torch.Tensor:
        expected = tuple(self.data.eval.images.shape[1:])
        out = []
        for chunk in labels.split(GENERATE_BATCH):
            images = generate(chunk)
            if not isinstance(images, torch.Tensor) or tuple(images.shape) != (len(chunk), *expected):
                shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
                raise ValueError(f"generate(labels) must return {len(chunk)} x {' x '.join(map(str, expected))} "
                                 f"images for {len(chunk)} labels, got {shape}")
            if images.dtype != torch.uint8 and not images.is_floating_point():
                raise ValueError(f"generate(labels) must return float images in [-1, 1] or uint8, got {images.dtype}")
            if images.is_floating_point() and not torch.isfinite(images).all():
                raise ValueError("generate(labels) returned NaN or inf pixel values")
            out.append(to_uint8(images.detach().cpu()))
        return torch.cat(out)

    def _base_meta(self, labels: torch.Tensor) -> dict:
        return {
            "feature_space": self.extractor.name,
            "feature_dim": int(self.extractor.dim),
            "feature_weights": self.extractor.cache_key,
            "samples_per_class": self.cfg.samples_per_class,
            "generated_total": int(labels.numel()),
            "real_per_class": list(self.real_counts),
            "real_total": int(sum(self.real_counts)),
            "real_reference": real_reference(self.real_counts),
            "groups": {g: list(m) for g, m in self.data.groups.items()},
            "real_stats": "built" if self.real_stats_built else "cached",
            "real_stats_build_s": float(self.real["seconds"]),
            "metrics": list(self.cfg.metrics),
        }

    # ------------------------------------------------------------------------------------------ helpers
    def gaussian(self, name: str) -> GaussianStats:
        return GaussianStats.from_state(self.real["gaussians"][name])

    def _filled(self, x: torch.Tensor, sample: Generated) -> torch.Tensor:
        """``x``, or the whole generated pool when ``x`` has fewer than ``eval.min_class_samples`` images: a class an
        unconditional G (nearly) dropped is scored on everything G makes instead, which lies far from that class, so
        dropping it worsens the score; it is never skipped (docs/metrics.md#unconditional-generators)."""
        return x if len(x) >= self.cfg.min_class_samples else sample.features

    def class_sets(self, sample: Generated):
        """(class name, its generated features) for every class; the name keys the real statistics."""
        return [(str(k), self._filled(sample.features[sample.labels == k], sample)) for k in range(self.num_classes)]

    def group_sets(self, sample: Generated):
        """(group, generated features of its classes) for every group; empty groups give None."""
        out = {}
        for group, members in self.data.groups.items():
            out[group] = (self._filled(sample.features[torch.isin(sample.labels, torch.tensor(members))], sample)
                          if members else None)
        return out

    def _class_meta(self, sample: Generated) -> dict:
        """Which labels grouped the images, and which classes had too few of them (per-class metrics only)."""
        counts = torch.bincount(sample.labels, minlength=self.num_classes).tolist() \
            if sample.labels is not None else []
        reads_classes = any(METRICS[g].labels == CLASS for g in self.cfg.metrics)
        return {"class_labels": sample.class_labels if reads_classes else "none",
                "underfilled": [k for k, c in enumerate(counts) if c < self.cfg.min_class_samples]}


def real_reference(counts: list[int]) -> str:
    """The real reference set in words, e.g. "eval split, 30/class (300)": scores are comparable only against the
    same set (its size moves FID; docs/metrics.md#the-real-reference-set)."""
    low, high = min(counts), max(counts)
    per_class = f"{low}/class" if low == high else f"{low}-{high}/class"
    return f"eval split, {per_class} ({sum(counts)})"


def needs_annotator(cfg: EvalConfig, conditional: bool = True) -> bool:
    """The annotator is the feature space (features: annotator), a metric's labeller (class_kl, ...) and, for an
    unconditional G, the labeller of every per-class metric."""
    return (cfg.features == "annotator" or METRICS.need(cfg.metrics, ANNOTATOR)
            or (not conditional and any(METRICS[g].labels == CLASS for g in cfg.metrics if g in METRICS)))


def validate(data: LongTailData, cfg: EvalConfig, annotator, conditional: bool = True) -> None:
    """Reject configurations that cannot be evaluated, naming the key, before any expensive work: the metrics'
    own checks (their records) against this data's set sizes, and the annotator that the config needs."""
    problems = METRICS.config_problems(cfg.metrics, conditional)
    if needs_annotator(cfg, conditional) and annotator is None:
        problems.append(f"eval.features / eval.metrics: {cfg.features!r} features, metrics that read the annotator or "
                        f"per-class metrics of an unconditional G need the balanced annotator classifier, none was "
                        f"given")
    if annotator is not None and annotator.num_classes != data.num_classes:
        problems.append(f"annotator has {annotator.num_classes} classes, the data {data.num_classes}")
    smallest_real = min(data.eval.counts())
    if smallest_real < 2:
        problems.append(f"dataset.eval_per_class: every class needs >= 2 evaluation images, the smallest has "
                        f"{smallest_real}")
    if not problems:
        problems = METRICS.evaluation_problems(cfg, EvalSizes(data.num_classes, smallest_real, len(data.eval)))
    if problems:
        raise ValueError("cannot evaluate:\n  " + "\n  ".join(problems))
