"""Tiny GAN run configs for the GAN-core tests: real training steps on digits-LT 16x16 in milliseconds."""
from __future__ import annotations

import torch

from imbgan_core.assets import Assets
from imbgan_core.config import RunConfig, apply_overrides

# Small but complete: SNDCGAN at 1/8 width, DiffAugment on, every method's defaults except the latent split.
TINY = {
    "dataset": {"source": "digits", "resolution": 16, "imbalance": {"profile": "exponential", "ratio": 10}},
    "model": {"arch": "sndcgan", "width": 0.125, "z_dim": 32},
    "train": {"batch_size": 32, "steps": 400, "eval_every": 200, "device": "cpu"},
    "classifier": {"epochs": 8, "batch_size": 64, "lr": 2e-3},  # = conftest.TEST_CLASSIFIER (shared cache entry)
    "eval": {"samples_per_class": 20, "metrics": ["intra_fid", "class_accuracy"]},
}
METHOD_EXTRAS = {"contentstyle": {"content_dim": 16, "style_dim": 16}}


def tiny_cfg(method: str = "cgan", overrides: dict | None = None, **params) -> RunConfig:
    data = apply_overrides(TINY, {"method": {"name": method, **METHOD_EXTRAS.get(method, {}), **params}})
    return RunConfig.from_dict(apply_overrides(data, overrides or {}))


def tiny_assets(data, classifier=None) -> Assets:
    """Assets for training only; soft labels straight from the classifier when one is given."""
    soft = None
    if classifier is not None:
        from imbgan_core.classifier import soft_labels

        soft = soft_labels(classifier, data.train)
    return Assets(data=data, classifier=classifier, soft_labels=soft)


def parameters_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def tiny_eval_assets(data, annotator, cfg: RunConfig) -> Assets:
    """Assets with a prepared Evaluator (real statistics of the eval split in the annotator's feature space)."""
    from imbgan_core.metrics.evaluator import Evaluator

    evaluator = Evaluator(data, cfg.eval, annotator)
    evaluator.prepare()
    return Assets(data=data, annotator=annotator, evaluator_state=evaluator)
