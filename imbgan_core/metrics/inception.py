"""torch-fidelity's InceptionV3, loaded safely, registered as ``imbgan-inception-v3`` in its extractor registry.

A module of its own so that torch-fidelity (which imports torchvision's model zoo, ~1.7 s) loads only when an
Inception feature space is built, while the class stays importable by name: a prepared evaluator holding it
pickles by reference when Ray ships it to trials.
"""
from __future__ import annotations

import io

import torch
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from imbgan_core.metrics.features import (INCEPTION_EXPECTED, INCEPTION_REGISTRY_NAME, BadWeightsError, _first_line,
                                          inception_weights, load_inception_state)


class SafeInceptionV3(FeatureExtractorInceptionV3):
    """torch-fidelity's InceptionV3 loading its weights with ``weights_only=True`` and never from the internet.

    torch-fidelity itself would download when no path is given and unpickle the file with ``weights_only=False``;
    here the file is resolved first (clear error when missing), read as plain tensors, and only those tensors,
    re-serialised in memory, reach the parent constructor.
    """

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        path = inception_weights(feature_extractor_weights_path)
        state = load_inception_state(path)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        try:
            super().__init__(name, features_list, feature_extractor_weights_path=buffer, **kwargs)
        except (RuntimeError, KeyError, ValueError) as exc:  # load_state_dict: missing / unexpected / mis-shaped
            raise BadWeightsError(f"{path}: {INCEPTION_EXPECTED}; torch-fidelity's InceptionV3 refused it "
                                  f"({_first_line(exc)})") from None


if INCEPTION_REGISTRY_NAME not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(INCEPTION_REGISTRY_NAME, SafeInceptionV3)
