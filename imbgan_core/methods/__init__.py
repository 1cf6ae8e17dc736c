"""Imbalance methods, one file each, registered by name; each class declares its own ``param_specs``."""
from __future__ import annotations

import torch

from ..config import RunConfig, metric_registry
from .acgan import ACGAN
from .base import Method
from .cbgan import CBGAN
from .cgan import CGAN
from .contentstyle import ContentStyle
from .mixup import Mixup
from .oversample import Oversample
from .smooth import Smooth
from .softlabel import Softlabel

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in
                                    (CGAN, Smooth, Softlabel, Mixup, Oversample, CBGAN, ContentStyle, ACGAN)}


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ValueError(f"method.name: unknown method {name!r} (valid: {', '.join(METHODS)})")
    return METHODS[name]


def config_problems(cfg: RunConfig) -> list[str]:
    """Method-specific config problems plus model ones every method shares (checked before any data loads)."""
    problems = method_class(cfg.method.name).config_problems(cfg)
    if cfg.model.d_conditional and not cfg.model.g_conditional:
        problems.append("model.d_conditional: a projection discriminator needs a class-conditional generator "
                        "(set model.g_conditional: true, or both false)")
    problems.extend(metric_registry().label_problems(cfg.eval.metrics, cfg.model.g_conditional))
    return problems


def build_method(cfg: RunConfig, assets, num_classes: int, device: str | torch.device = "cpu") -> Method:
    return method_class(cfg.method.name)(cfg.method.params, num_classes, assets, device)
