"""The evaluator: one generation pass with known labels and one feature pass produce every requested metric.

Real statistics of the balanced evaluation split (per class, as in docs/reference.md#softlabel-eval)
are computed once per content hash of dataset spec + eval images + groups + feature extractor + its weights and
cached on disk (``imbgan_core.cache.cached``): features, per-class and per-group means with centred features (n < d)
or covariance and √Σ (n >= d), the real KID term of every class and group, real diversity references, and (when PRDC
is asked for) k-NN radii under a second key that adds k. A second sweep on the same data recomputes none of it.

Generation asks ``generate(labels)`` for ``eval.samples_per_class`` samples of every class, class-major, in calls of
at most ``GENERATE_BATCH`` labels; float output in [-1, 1] is quantised to uint8 exactly like real images
(``viz.to_uint8``: round((x + 1) * 127.5), clamped to 0..255), then both go through the same feature pass.

Metric groups and the scalar keys each reports are ``config.METRIC_GROUPS``; per-class vectors go to
``EvalResult.per_class``, sample counts, the feature-space name and timings to ``EvalResult.meta``. In the annotator
feature space ``fid``/``intra_fid``/``kid``/... are *domain* metrics (a classifier trained on the dataset itself), not
Inception FID: ``meta["feature_space"]`` travels with every result so they are never compared with each other.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

from imbgan_core.cache import cached, tensor_digest
from imbgan_core.config import METRIC_GROUPS, EvalConfig
from imbgan_core.data.types import LongTailData
from imbgan_core.metrics.distribution import class_accuracy, class_kl
from imbgan_core.metrics.diversity import (DIVERSITY_MAX_SAMPLES, LPIPS_MAX_PAIRS, LPIPSDistance, alexnet_weights,
                                            feature_diversity, lpips_diversity, mean_pairwise_distance)
from imbgan_core.metrics.features import AnnotatorFeatures, build_extractor, extract
from imbgan_core.metrics.frechet import GaussianStats, frechet_distance_stats
from imbgan_core.metrics.kid import kernel_inception_distance, within_set_term
from imbgan_core.metrics.prdc import nearest_neighbour_radii, prdc
from imbgan_core.viz import to_uint8

GENERATE_BATCH = 500  # labels per generate() call
STATS_VERSION = 1  # bump when the content of the real-statistics artifact changes
SEED = 0  # KID subsets, IS split shuffle, LPIPS pairs and diversity subsets: the same at every evaluation
IS_SPLITS = 10  # Salimans et al. 2016 / torch-fidelity default
ANNOTATOR_GROUPS = ("class_accuracy", "class_kl")
PRDC_NAMES = ("precision", "recall", "density", "coverage")


@dataclass
class EvalResult:
    """Scalars keyed as in ``config.METRIC_GROUPS``; per-class vectors; sample counts, feature space and timings."""

    scalars: dict[str, float] = field(default_factory=dict)
    per_class: dict[str, list[float]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


@dataclass
class Generated:
    """One evaluation's generated samples: uint8 images, conditioning labels, features, logits, annotator labels."""

    images: torch.Tensor
    labels: torch.Tensor
    features: torch.Tensor
    logits: torch.Tensor
    annotator_labels: torch.Tensor | None


class Evaluator:
    """Every metric of ``cfg.metrics`` for a class-conditional generator on ``data`` (see the module docstring)."""

    def __init__(self, data: LongTailData, cfg: EvalConfig, annotator=None, cache_dir=None, device="cpu"):
        self.data, self.cfg, self.annotator = data, cfg, annotator
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.device = device
        self.num_classes = data.num_classes
        self.real_counts = data.eval.counts()
        validate(data, cfg, annotator)
        if "lpips" in cfg.metrics:
            alexnet_weights()  # fail on a missing weight file now, before anything expensive
        self.extractor = build_extractor(cfg.features, annotator, cfg.weights_path, device)
        self.labeller = None
        if any(g in cfg.metrics for g in ANNOTATOR_GROUPS):
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
        if self.radii is None and ("prdc" in self.cfg.metrics or "intra_prdc" in self.cfg.metrics):
            key = {**self.stats_key(), "prdc_k": self.cfg.prdc_k}
            path = cached("real_prdc_radii", key, self._build_radii, self.cache_dir, filename="radii.pt")
            self.radii = torch.load(path, map_location="cpu", weights_only=True)
        if self.lpips is None and "lpips" in self.cfg.metrics:
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
    def evaluate(self, generate: Callable[[torch.Tensor], torch.Tensor]) -> EvalResult:
        """Generate, extract features once, compute every group of ``cfg.metrics``."""
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
        sample = Generated(images, labels, features.double(), logits, annotator_labels)
        result = EvalResult(meta=self._base_meta(labels))
        for group in self.cfg.metrics:
            scalars, per_class, meta = METRIC_FUNCTIONS[group](self, sample, generate)
            if set(scalars) != set(METRIC_GROUPS[group]):
                raise RuntimeError(f"metric group {group!r} produced {sorted(scalars)}, config.METRIC_GROUPS "
                                   f"lists {sorted(METRIC_GROUPS[group])}")
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
            "groups": {g: list(m) for g, m in self.data.groups.items()},
            "real_stats": "built" if self.real_stats_built else "cached",
            "real_stats_build_s": float(self.real["seconds"]),
            "metrics": list(self.cfg.metrics),
        }

    # ------------------------------------------------------------------------------------------ helpers
    def gaussian(self, name: str) -> GaussianStats:
        return GaussianStats.from_state(self.real["gaussians"][name])

    def class_sets(self, sample: Generated):
        """(class name, its generated features) for every class; the name keys the real statistics."""
        return [(str(k), sample.features[sample.labels == k]) for k in range(self.num_classes)]

    def group_sets(self, sample: Generated):
        """(group, generated features of its classes) for every group; empty groups give None."""
        out = {}
        for group, members in self.data.groups.items():
            out[group] = sample.features[torch.isin(sample.labels, torch.tensor(members))] if members else None
        return out


def validate(data: LongTailData, cfg: EvalConfig, annotator) -> None:
    """Reject configurations that cannot be evaluated, naming the key, before any expensive work."""
    problems = []
    for i, group in enumerate(cfg.metrics):
        if group not in METRIC_GROUPS:
            problems.append(f"eval.metrics[{i}]: unknown metric {group!r} (valid: {', '.join(METRIC_GROUPS)})")
    needs_annotator = cfg.features == "annotator" or any(g in cfg.metrics for g in ANNOTATOR_GROUPS)
    if needs_annotator and annotator is None:
        problems.append(f"eval.features / eval.metrics: {cfg.features!r} features or {list(ANNOTATOR_GROUPS)} need the "
                        "balanced annotator classifier, none was given")
    if annotator is not None and annotator.num_classes != data.num_classes:
        problems.append(f"annotator has {annotator.num_classes} classes, the data {data.num_classes}")
    smallest_real = min(data.eval.counts())
    if smallest_real < 2:
        problems.append(f"dataset.eval_per_class: every class needs >= 2 evaluation images, the smallest has "
                        f"{smallest_real}")
    sizes = []
    if "prdc" in cfg.metrics:
        sizes += [cfg.samples_per_class * data.num_classes, len(data.eval)]
    if "intra_prdc" in cfg.metrics:
        sizes += [cfg.samples_per_class, smallest_real]
    if sizes:
        smallest = min(sizes)
        if cfg.prdc_k >= smallest:
            problems.append(f"eval.prdc_k: k = {cfg.prdc_k} needs more than k samples per set (PRDC), the smallest "
                            f"set has {smallest}")
    if "is" in cfg.metrics and cfg.samples_per_class * data.num_classes < IS_SPLITS:
        problems.append(f"eval.samples_per_class: the Inception Score needs >= {IS_SPLITS} samples in all")
    if problems:
        raise ValueError("cannot evaluate:\n  " + "\n  ".join(problems))


# ------------------------------------------------------------------------------------------------ metric groups
# Each takes (evaluator, generated sample, generate) and returns (scalars, per-class vectors, meta).
def _fid(ev: Evaluator, s: Generated, generate):
    """FID over all generated vs all real evaluation images (Heusel et al. 2017)."""
    value = frechet_distance_stats(GaussianStats.from_features(s.features), ev.gaussian("all"))
    return {"fid": value}, {}, {}


def _intra_fid(ev: Evaluator, s: Generated, generate):
    """Per-class FID (intra-FID, Miyato & Koyama 2018): mean and population std over classes; per-group FIDs of the
    pooled samples of the group's classes (FID-few / FID-many as in UTLO, Khorram et al. 2023)."""
    per_class = [frechet_distance_stats(GaussianStats.from_features(x), ev.gaussian(name))
                 for name, x in ev.class_sets(s)]
    values = torch.tensor(per_class, dtype=torch.float64)
    scalars = {"intra_fid": float(values.mean()), "intra_fid_std": float(values.std(unbiased=False))}
    for group, x in ev.group_sets(s).items():
        scalars[f"fid_{group}"] = (frechet_distance_stats(GaussianStats.from_features(x), ev.gaussian(group))
                                   if x is not None else math.nan)
    return scalars, {"fid": per_class}, {}


def _kid_of(ev: Evaluator, x: torch.Tensor, name: str):
    return kernel_inception_distance(x, ev.real_sets[name], ev.cfg.kid_subsets, ev.cfg.kid_subset_size, SEED,
                                     y_term=float(ev.real["kid_terms"][name]))


def _kid(ev: Evaluator, s: Generated, generate):
    """KID over all samples and over the pooled few-shot group (Bińkowski et al. 2018; KID-few as in UTLO)."""
    overall = _kid_of(ev, s.features, "all")
    few = ev.group_sets(s).get("few")
    kid_few = _kid_of(ev, few, "few").value if few is not None else math.nan
    estimate = "full sample" if overall.subset_size is None else f"{overall.subsets} subsets x {overall.subset_size}"
    return {"kid": overall.value, "kid_few": kid_few}, {}, {"kid_std": overall.std, "kid_estimate": estimate}


def _intra_kid(ev: Evaluator, s: Generated, generate):
    """Mean per-class KID (Softlabel-GAN Table 7); a class below the subset size gets one full-sample estimate."""
    per_class = [_kid_of(ev, x, name).value for name, x in ev.class_sets(s)]
    return {"intra_kid": sum(per_class) / len(per_class)}, {"kid": per_class}, {}


def _inception_score(ev: Evaluator, s: Generated, generate):
    """IS from the extractor's classifier head (annotator logits, or InceptionV3's unbiased logits), 10 splits."""
    out = isc_features_to_metric(s.logits, splits=IS_SPLITS, shuffle=True, rng_seed=SEED)
    return {"is": out[KEY_METRIC_ISC_MEAN]}, {}, {"is_std": out[KEY_METRIC_ISC_STD], "is_splits": IS_SPLITS}


def _prdc(ev: Evaluator, s: Generated, generate):
    """Precision / recall / density / coverage of all samples (Naeem et al. 2020), k = eval.prdc_k."""
    out = prdc(ev.real_sets["all"], s.features, ev.cfg.prdc_k, ev.radii["all"])
    return out, {}, {"prdc_k": ev.cfg.prdc_k}


def _intra_prdc(ev: Evaluator, s: Generated, generate):
    """Per-class PRDC averaged over classes (Softlabel-GAN Sec. 5.2, intra-Precision etc.)."""
    rows = [prdc(ev.real_sets[name], x, ev.cfg.prdc_k, ev.radii[name]) for name, x in ev.class_sets(s)]
    per_class = {name: [row[name] for row in rows] for name in PRDC_NAMES}
    scalars = {f"intra_{name}": sum(v) / len(v) for name, v in per_class.items()}
    return scalars, per_class, {"prdc_k": ev.cfg.prdc_k}


def _lpips(ev: Evaluator, s: Generated, generate):
    """LPIPS and intra-LPIPS over random disjoint pairs (Softlabel-GAN Sec. 5.2); see metrics.diversity."""
    overall, per_class = lpips_diversity(ev.lpips, s.images, s.labels, ev.num_classes, SEED)
    pairs = {"lpips": min(len(s.labels) // 2, LPIPS_MAX_PAIRS), "intra_lpips": ev.cfg.samples_per_class // 2}
    return {"lpips": overall, "intra_lpips": sum(per_class) / len(per_class)}, {"lpips": per_class}, {
        "lpips_pairs": pairs}


def _diversity(ev: Evaluator, s: Generated, generate):
    """Offline diversity: mean pairwise feature distance relative to the real data's (see metrics.diversity)."""
    real = ev.real["diversity"]
    overall, per_class = feature_diversity(s.features, s.labels, ev.num_classes, float(real["all"]),
                                           [float(real[str(k)]) for k in range(ev.num_classes)], SEED)
    return {"diversity": overall, "intra_diversity": sum(per_class) / len(per_class)}, {"diversity": per_class}, {
        "diversity_max_samples": DIVERSITY_MAX_SAMPLES}


def _class_accuracy(ev: Evaluator, s: Generated, generate):
    """Share of samples the annotator assigns to their conditioning class (CBGAN Sec. 5), overall and per class."""
    overall, per_class = class_accuracy(s.annotator_labels, s.labels, ev.num_classes)
    return {"class_accuracy": overall}, {"class_accuracy": per_class}, {}


def _class_kl(ev: Evaluator, s: Generated, generate):
    """KL(annotator label histogram ‖ uniform) over a balanced set of conditioning labels (CBGAN Sec. 5)."""
    return {"class_kl": class_kl(s.annotator_labels, ev.num_classes)}, {}, {}


def _cas(ev: Evaluator, s: Generated, generate):
    """Classification Accuracy Score: on-the-fly generated training data, real evaluation split (metrics.cas)."""
    from imbgan_core.metrics.cas import classification_accuracy_score

    out = classification_accuracy_score(generate, ev.data, ev.cfg.cas, filter_classifier=ev.annotator,
                                        device=ev.device, seed=SEED, cache_dir=ev.cache_dir)
    return {"cas": out["cas"], "cas_real": out["cas_real"]}, {}, {
        "cas_generated": ev.cfg.cas.steps * ev.cfg.cas.batch_size}


METRIC_FUNCTIONS: dict[str, Callable] = {
    "fid": _fid, "intra_fid": _intra_fid, "kid": _kid, "intra_kid": _intra_kid, "is": _inception_score,
    "prdc": _prdc, "intra_prdc": _intra_prdc, "lpips": _lpips, "diversity": _diversity,
    "class_accuracy": _class_accuracy, "class_kl": _class_kl, "cas": _cas,
}
