"""Every metric group, registered once with its record (``METRICS``): the one place that names a metric.

Each function takes (evaluator, generated sample, generate) and returns (scalars, per-class vectors, meta). Groups
that read class labels use ``ev.class_sets`` / ``ev.group_sets``: the conditioning label for a class-conditional G,
the annotator's argmax for an unconditional one, with an under-filled class standing in as the whole generated pool
(docs/metrics.md, "Unconditional generators"). ``python -m imbgan_core.metrics.catalog`` prints docs/metrics.md's
table.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from imbgan_core.metrics.distribution import class_accuracy, class_kl
from imbgan_core.metrics.diversity import DIVERSITY_MAX_SAMPLES, LPIPS_MAX_PAIRS, feature_diversity, lpips_diversity
from imbgan_core.metrics.frechet import GaussianStats, frechet_distance_stats
from imbgan_core.metrics.kid import kernel_inception_distance
from imbgan_core.metrics.prdc import prdc
from imbgan_core.metrics.registry import (ANNOTATOR, CLASS, CONDITIONING, LPIPS_WEIGHTS, MAX, MIN, NONE, PRDC_RADII,
                                          EvalSizes, MetricRegistry)

if TYPE_CHECKING:
    from imbgan_core.metrics.evaluator import Evaluator, Generated

METRICS = MetricRegistry()
SEED = 0  # KID subsets, IS split shuffle, LPIPS pairs and diversity subsets: the same at every evaluation
IS_SPLITS = 10  # Salimans et al. 2016 / torch-fidelity default
PRDC_NAMES = ("precision", "recall", "density", "coverage")


def _generated_total(cfg, sizes: EvalSizes) -> int:
    return cfg.samples_per_class * sizes.num_classes


def _check_prdc(cfg, sizes: EvalSizes) -> list[str]:
    smallest = min(_generated_total(cfg, sizes), sizes.real_total)
    return [] if cfg.prdc_k < smallest else [
        f"eval.prdc_k: k = {cfg.prdc_k} needs more than k samples per set (PRDC), the smallest set has {smallest}"]


def _check_intra_prdc(cfg, sizes: EvalSizes) -> list[str]:
    smallest = min(cfg.samples_per_class, sizes.smallest_real_class, cfg.min_class_samples)
    return [] if cfg.prdc_k < smallest else [
        f"eval.prdc_k: k = {cfg.prdc_k} needs more than k samples in every class (intra-PRDC), the smallest class "
        f"set has {smallest} (eval.samples_per_class, real images per class, eval.min_class_samples)"]


def _check_is(cfg, sizes: EvalSizes) -> list[str]:
    return [] if _generated_total(cfg, sizes) >= IS_SPLITS else [
        f"eval.samples_per_class: the Inception Score needs >= {IS_SPLITS} samples in all"]


@METRICS.register("fid", {"fid": MIN}, labels=NONE, summary="FID, all generated vs all real evaluation images")
def fid(ev: Evaluator, s: Generated, generate):
    """FID over all generated vs all real evaluation images (Heusel et al. 2017)."""
    return {"fid": frechet_distance_stats(GaussianStats.from_features(s.features), ev.gaussian("all"))}, {}, {}


@METRICS.register("intra_fid", {"intra_fid": MIN, "intra_fid_std": MIN, "fid_many": MIN, "fid_medium": MIN,
                                "fid_few": MIN}, labels=CLASS, per_class=("fid",),
                  summary="per-class FID: mean and population std over classes; FID of each group's pooled classes")
def intra_fid(ev: Evaluator, s: Generated, generate):
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


@METRICS.register("kid", {"kid": MIN, "kid_few": MIN}, labels=CLASS,
                  summary="KID (unbiased MMD², cubic kernel), overall and of the pooled few-shot group")
def kid(ev: Evaluator, s: Generated, generate):
    """KID over all samples and over the pooled few-shot group (Bińkowski et al. 2018; KID-few as in UTLO)."""
    overall = _kid_of(ev, s.features, "all")
    few = ev.group_sets(s).get("few")
    kid_few = _kid_of(ev, few, "few").value if few is not None else math.nan
    estimate = "full sample" if overall.subset_size is None else f"{overall.subsets} subsets x {overall.subset_size}"
    return {"kid": overall.value, "kid_few": kid_few}, {}, {"kid_std": overall.std, "kid_estimate": estimate}


@METRICS.register("intra_kid", {"intra_kid": MIN}, labels=CLASS, per_class=("kid",), summary="mean per-class KID")
def intra_kid(ev: Evaluator, s: Generated, generate):
    """Mean per-class KID (Softlabel-GAN Table 7); a class below the subset size gets one full-sample estimate."""
    per_class = [_kid_of(ev, x, name).value for name, x in ev.class_sets(s)]
    return {"intra_kid": sum(per_class) / len(per_class)}, {"kid": per_class}, {}


@METRICS.register("is", {"is": MAX}, labels=NONE, check=_check_is,
                  summary="Inception Score from the feature space's classifier head, 10 splits (std in meta)")
def inception_score(ev: Evaluator, s: Generated, generate):
    """IS from the extractor's classifier head (annotator logits, or InceptionV3's unbiased logits), 10 splits."""
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    out = isc_features_to_metric(s.logits, splits=IS_SPLITS, shuffle=True, rng_seed=SEED)
    return {"is": out[KEY_METRIC_ISC_MEAN]}, {}, {"is_std": out[KEY_METRIC_ISC_STD], "is_splits": IS_SPLITS}


@METRICS.register("prdc", {name: MAX for name in PRDC_NAMES}, labels=NONE, needs=(PRDC_RADII,), check=_check_prdc,
                  summary="precision, recall, density, coverage (Naeem et al. 2020), k = eval.prdc_k")
def prdc_all(ev: Evaluator, s: Generated, generate):
    """Precision / recall / density / coverage of all samples (Naeem et al. 2020), k = eval.prdc_k."""
    return prdc(ev.real_sets["all"], s.features, ev.cfg.prdc_k, ev.radii["all"]), {}, {"prdc_k": ev.cfg.prdc_k}


@METRICS.register("intra_prdc", {f"intra_{name}": MAX for name in PRDC_NAMES}, labels=CLASS, needs=(PRDC_RADII,),
                  check=_check_intra_prdc, per_class=PRDC_NAMES,
                  summary="per-class PRDC averaged over classes (Softlabel-GAN Sec. 5.2)")
def intra_prdc(ev: Evaluator, s: Generated, generate):
    """Per-class PRDC averaged over classes (Softlabel-GAN Sec. 5.2, intra-Precision etc.)."""
    rows = [prdc(ev.real_sets[name], x, ev.cfg.prdc_k, ev.radii[name]) for name, x in ev.class_sets(s)]
    per_class = {name: [row[name] for row in rows] for name in PRDC_NAMES}
    scalars = {f"intra_{name}": sum(v) / len(v) for name, v in per_class.items()}
    return scalars, per_class, {"prdc_k": ev.cfg.prdc_k}


@METRICS.register("lpips", {"lpips": MAX, "intra_lpips": MAX}, labels=CONDITIONING, needs=(LPIPS_WEIGHTS,),
                  per_class=("lpips",), summary="LPIPS (AlexNet) distance over random pairs, overall and within class")
def lpips(ev: Evaluator, s: Generated, generate):
    """LPIPS and intra-LPIPS over random disjoint pairs (Softlabel-GAN Sec. 5.2); see metrics.diversity."""
    overall, per_class = lpips_diversity(ev.lpips, s.images, s.labels, ev.num_classes, SEED)
    pairs = {"lpips": min(len(s.labels) // 2, LPIPS_MAX_PAIRS), "intra_lpips": ev.cfg.samples_per_class // 2}
    return {"lpips": overall, "intra_lpips": sum(per_class) / len(per_class)}, {"lpips": per_class}, {
        "lpips_pairs": pairs}


@METRICS.register("diversity", {"diversity": MAX, "intra_diversity": MAX}, labels=CONDITIONING,
                  per_class=("diversity",),
                  summary="offline diversity: mean pairwise feature distance relative to the real images'")
def diversity(ev: Evaluator, s: Generated, generate):
    """Offline diversity: mean pairwise feature distance relative to the real data's (see metrics.diversity)."""
    real = ev.real["diversity"]
    overall, per_class = feature_diversity(s.features, s.labels, ev.num_classes, float(real["all"]),
                                           [float(real[str(k)]) for k in range(ev.num_classes)], SEED)
    return {"diversity": overall, "intra_diversity": sum(per_class) / len(per_class)}, {"diversity": per_class}, {
        "diversity_max_samples": DIVERSITY_MAX_SAMPLES}


@METRICS.register("class_accuracy", {"class_accuracy": MAX}, labels=CONDITIONING, needs=(ANNOTATOR,),
                  per_class=("class_accuracy",),
                  summary="share of samples the annotator gives their conditioning class")
def class_accuracy_group(ev: Evaluator, s: Generated, generate):
    """Share of samples the annotator assigns to their conditioning class (CBGAN Sec. 5), overall and per class."""
    overall, per_class = class_accuracy(s.annotator_labels, s.labels, ev.num_classes)
    return {"class_accuracy": overall}, {"class_accuracy": per_class}, {}


@METRICS.register("class_kl", {"class_kl": MIN}, labels=NONE, needs=(ANNOTATOR,),
                  summary="KL(annotator label histogram ‖ uniform) (CBGAN Sec. 5)")
def class_kl_group(ev: Evaluator, s: Generated, generate):
    """KL(annotator label histogram ‖ uniform) of the generated pool (CBGAN Sec. 5; a conditional G draws a balanced
    set of conditioning labels, an unconditional one its own class mix)."""
    return {"class_kl": class_kl(s.annotator_labels, ev.num_classes)}, {}, {}


@METRICS.register("class_fill", {"underfilled_classes": MIN}, labels=CLASS, needs=(ANNOTATOR,),
                  per_class=("class_count",),
                  summary="classes with fewer than eval.min_class_samples images (0 for a conditional G)")
def class_fill(ev: Evaluator, s: Generated, generate):
    """How many classes the per-class metrics had to stand in for (an unconditional G that drops classes)."""
    counts = torch.bincount(s.labels, minlength=ev.num_classes).tolist()
    return {"underfilled_classes": float(sum(c < ev.cfg.min_class_samples for c in counts))}, {
        "class_count": [float(c) for c in counts]}, {}


@METRICS.register("cas", {"cas": MAX, "cas_real": MAX}, labels=CONDITIONING,
                  summary="Classification Accuracy Score: a classifier trained on generated images, tested on real")
def cas(ev: Evaluator, s: Generated, generate):
    """Classification Accuracy Score: on-the-fly generated training data, real evaluation split (metrics.cas)."""
    from imbgan_core.metrics.cas import classification_accuracy_score

    out = classification_accuracy_score(generate, ev.data, ev.cfg.cas, filter_classifier=ev.annotator,
                                        device=ev.device, seed=SEED, cache_dir=ev.cache_dir)
    return {"cas": out["cas"], "cas_real": out["cas_real"]}, {}, {
        "cas_generated": ev.cfg.cas.steps * ev.cfg.cas.batch_size}


if __name__ == "__main__":
    print(METRICS.markdown_table())
