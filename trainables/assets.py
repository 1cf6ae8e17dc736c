"""Driver-side asset preparation, once per sweep: dataset, classifier, annotator, soft labels, real statistics.

Trials receive the result through Ray's object store (``tune.with_parameters``), so nothing is rebuilt per trial and
remote nodes need no access to the driver's cache. Dataset, classifier and eval settings cannot be searched
(trainables.spaces.FROZEN_PREFIXES), so one set of assets serves every trial; when ``method.name`` is searched the
assets cover every method the space can pick (e.g. soft labels for softlabel, the classifier for cbgan).
"""
from __future__ import annotations

import dataclasses

from imbgan_core.assets import Assets, prepare_assets
from trainables.spaces import Space


def prepare_sweep_assets(space: Space, cache_dir=None, log=print) -> Assets:
    """Assets for every method in the space, built on CPU (portable to any trial device) and cached on disk."""
    merged: Assets | None = None
    for method in space.method_names:
        cfg = space.run_config({"method.name": method})
        assets = prepare_assets(cfg, cache_dir=cache_dir, device="cpu", log=log)
        merged = assets if merged is None else _union(merged, assets)
    return merged


def _union(a: Assets, b: Assets) -> Assets:
    """Fields of ``a``, with the ones ``a`` lacks (None) taken from ``b``."""
    missing = {f.name: getattr(b, f.name) for f in dataclasses.fields(a) if getattr(a, f.name) is None}
    return dataclasses.replace(a, **missing)
