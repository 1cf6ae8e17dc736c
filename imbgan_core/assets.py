"""Everything a run needs besides its own networks, prepared once (and cached) before training starts.

``prepare_assets`` builds only what the config needs: the data always; the pretrained classifier C when the
method uses it (cbgan, softlabel); C's soft labels of the training images for softlabel; the balanced annotator
when the evaluation uses it; and a prepared ``Evaluator`` (real statistics computed) as ``evaluator_state``.
Trainables ship one ``Assets`` to every trial, so no trial repeats this work.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from .classifier import get_classifier, soft_labels
from .config import RunConfig
from .data import LongTailData, load_dataset
from .methods import method_class
from .metrics.evaluator import Evaluator, needs_annotator
from .metrics.features import inception_weights, load_inception_state


@dataclass
class Assets:
    data: LongTailData
    classifier: Any = None  # imbgan_core.classifier.Classifier trained on the long-tailed split (role "classifier")
    annotator: Any = None  # the same kind of net trained on balanced data (role "annotator"), for metrics
    soft_labels: torch.Tensor | None = None  # N_train x K softmax of C on every training image (softlabel)
    evaluator_state: Evaluator | None = None  # prepared (real statistics loaded), shared by every trial


def prepare_assets(cfg: RunConfig, cache_dir=None, device: str = "cpu", log: Callable = print) -> Assets:
    if cfg.eval.features == "inception":  # a missing or bad weight file fails now, before classifiers are trained
        load_inception_state(inception_weights(cfg.eval.weights_path))
    data = load_dataset(cfg.dataset)
    method = method_class(cfg.method.name)
    classifier = soft = annotator = None
    if method.needs_classifier:
        classifier = get_classifier(data, cfg.classifier, "classifier", cache_dir=cache_dir, device=device, log=log)
    if method.needs_soft_labels:
        soft = soft_labels(classifier, data.train, cache_dir=cache_dir)
    if needs_annotator(cfg.eval, cfg.model.g_conditional):
        annotator = get_classifier(data, cfg.classifier, "annotator", cache_dir=cache_dir, device=device, log=log)
    evaluator = Evaluator(data, cfg.eval, annotator, cache_dir=cache_dir, device=device,
                          conditional=cfg.model.g_conditional)
    evaluator.prepare()
    return Assets(data=data, classifier=classifier, annotator=annotator, soft_labels=soft, evaluator_state=evaluator)
