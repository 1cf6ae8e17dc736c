"""Sample diversity: LPIPS / intra-LPIPS (Softlabel-GAN Sec. 5.2) and an offline feature-space diversity.

- ``lpips``: mean LPIPS (Zhang et al. 2018, AlexNet backbone, lpips package v0.1 linear layers) over disjoint random
  pairs of generated images; ``intra_lpips`` the same within each class, averaged over classes (Softlabel-GAN: 100
  images per class). The AlexNet trunk is read from ``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth`` with
  ``weights_only=True`` (never downloaded; a missing file is a clear error); the linear layers ship with lpips.
  AlexNet needs inputs of at least ~32 px, so smaller images are upsampled to ``LPIPS_MIN_SIZE`` with one fixed
  bilinear filter (our choice; at >= 64 px images are used as they are). ``lpips`` uses at most
  ``LPIPS_MAX_PAIRS`` pairs (seeded) to bound its cost.
- ``diversity`` (offline, any resolution): mean pairwise L2 distance between generated samples in the evaluation
  feature space divided by the same quantity for the real evaluation images, so 1.0 ≈ real diversity and a
  collapsed generator goes to 0; ``intra_diversity`` is the per-class ratio averaged over classes. MS-SSIM is not
  usable at 8–32 px (docs/reference.md#ms-ssim), hence a feature-space measure. The global term uses at most
  ``DIVERSITY_MAX_SAMPLES`` samples per side (seeded) so its cost stays O(n²d) with bounded n.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from imbgan_core.metrics.features import hub_checkpoint

LPIPS_MIN_SIZE = 64
LPIPS_MAX_PAIRS = 1000
LPIPS_BATCH = 256
DIVERSITY_MAX_SAMPLES = 2000
# torchvision's AlexNet_Weights.IMAGENET1K_V1.url (tests/test_features.py keeps the two equal)
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
ALEXNET_FILE = ALEXNET_URL.rsplit("/", 1)[-1]  # alexnet-owt-7be5be79.pth


def mean_pairwise_distance(features: torch.Tensor, seed: int = 0, max_samples: int = DIVERSITY_MAX_SAMPLES) -> float:
    """Mean L2 distance over all pairs (float64), on a seeded subset of ``max_samples`` when there are more."""
    x = features.double()
    if x.shape[0] > max_samples:
        x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:max_samples]]
    if x.shape[0] < 2:
        raise ValueError(f"diversity needs at least 2 samples, got {x.shape[0]}")
    return float(torch.pdist(x).mean())


def feature_diversity(features: torch.Tensor, labels: torch.Tensor, num_classes: int, real_global: float,
                      real_per_class: list[float], seed: int = 0) -> tuple[float, list[float]]:
    """(global ratio, per-class ratios) of generated to real mean pairwise feature distance."""
    overall = mean_pairwise_distance(features, seed) / real_global
    per_class = [mean_pairwise_distance(features[labels == k], seed) / real_per_class[k] for k in range(num_classes)]
    return overall, per_class


def alexnet_weights() -> torch.nn.Module:
    """torchvision AlexNet with ImageNet weights from the hub cache, loaded as plain tensors."""
    path = hub_checkpoint(ALEXNET_FILE, ALEXNET_URL, "AlexNet (LPIPS backbone)")
    from torchvision.models import alexnet  # imported here: torchvision's model zoo costs ~1.7 s to import

    net = alexnet()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net


class LPIPSDistance:
    """LPIPS(AlexNet) between image pairs given as uint8 tensors of any size >= 1 px, 1 or 3 channels."""

    def __init__(self, device="cpu"):
        trunk = alexnet_weights()  # checked before building anything else
        import lpips

        with warnings.catch_warnings():  # lpips calls torchvision's deprecated alexnet(pretrained=False): harmless
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)  # random trunk: no download
        for block in (model.net.slice1, model.net.slice2, model.net.slice3, model.net.slice4, model.net.slice5):
            for index, layer in block.named_children():
                layer.load_state_dict(trunk.features[int(index)].state_dict())
        self.model = model.eval().requires_grad_(False).to(device)
        self.device = device

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device).float().div(127.5).sub(1.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if min(x.shape[-2:]) < LPIPS_MIN_SIZE:
            x = F.interpolate(x, size=(LPIPS_MIN_SIZE, LPIPS_MIN_SIZE), mode="bilinear", align_corners=False)
        return x

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = [self.model(self._prepare(x), self._prepare(y)).flatten().cpu()
               for x, y in zip(a.split(LPIPS_BATCH), b.split(LPIPS_BATCH))]
        return torch.cat(out).double()


def _pair_mean(distance: LPIPSDistance, images: torch.Tensor, generator: torch.Generator, max_pairs: int) -> float:
    order = torch.randperm(images.shape[0], generator=generator)
    pairs = min(images.shape[0] // 2, max_pairs)
    if pairs < 1:
        return math.nan
    return float(distance(images[order[:pairs]], images[order[pairs:2 * pairs]]).mean())


def lpips_diversity(distance: LPIPSDistance, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                    seed: int = 0) -> tuple[float, list[float]]:
    """(LPIPS over random pairs of all images, per-class LPIPS over disjoint pairs within each class)."""
    generator = torch.Generator().manual_seed(seed)
    overall = _pair_mean(distance, images, generator, LPIPS_MAX_PAIRS)
    per_class = [_pair_mean(distance, images[labels == k], generator, images.shape[0]) for k in range(num_classes)]
    return overall, per_class
