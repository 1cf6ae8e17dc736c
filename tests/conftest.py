"""Shared session fixtures: a temporary cache, digits-LT (rho = 10, 16x16, 1 channel) and its two classifiers.

The classifiers are trained once per test session into the temporary cache (a few seconds on one thread).
"""
from __future__ import annotations

import os

import pytest
import torch

from imbgan_core.classifier import get_classifier
from imbgan_core.config import RunConfig
from imbgan_core.data import load_dataset

# Small but real classifier settings: the annotator reaches ~0.95 eval accuracy on digits 16x16 with these.
TEST_CLASSIFIER = {"epochs": 8, "batch_size": 64, "lr": 2e-3}


@pytest.fixture(scope="session", autouse=True)
def single_thread():
    """One torch thread: deterministic kernels and a fair share of a 2-core CI machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory):
    """A session-wide cache folder, also exported as IMBGAN_CACHE so nothing touches ~/.cache."""
    path = tmp_path_factory.mktemp("imbgan_cache")
    previous = os.environ.get("IMBGAN_CACHE")
    os.environ["IMBGAN_CACHE"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("IMBGAN_CACHE", None)
    else:
        os.environ["IMBGAN_CACHE"] = previous


@pytest.fixture(scope="session")
def digits_cfg() -> RunConfig:
    """Digits-LT: exponential profile rho = 10, 16x16, 1 channel, small fast classifier settings."""
    return RunConfig.from_dict({
        "name": "digits-lt-test",
        "dataset": {"source": "digits", "resolution": 16, "channels": 1,
                    "imbalance": {"profile": "exponential", "ratio": 10}},
        "classifier": dict(TEST_CLASSIFIER),
    })


@pytest.fixture(scope="session")
def digits_data(digits_cfg):
    return load_dataset(digits_cfg.dataset)


@pytest.fixture(scope="session")
def annotator(digits_data, digits_cfg, cache_dir):
    return get_classifier(digits_data, digits_cfg.classifier, "annotator", cache_dir=cache_dir, log=_quiet)


@pytest.fixture(scope="session")
def lt_classifier(digits_data, digits_cfg, cache_dir):
    return get_classifier(digits_data, digits_cfg.classifier, "classifier", cache_dir=cache_dir, log=_quiet)


def _quiet(message: str) -> None:
    """Training progress is not test output."""
