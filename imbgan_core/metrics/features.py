"""Feature spaces for metrics: one pass over uint8 images gives features (FID, KID, PRDC, diversity) and logits (IS).

- ``annotator``: the balanced annotator classifier's penultimate features and logits, at the data resolution. Works
  offline and is the default for the embedded data. Its FID is a *domain* FID, not comparable to Inception FID
  (docs/reference.md#domain-fid); results carry ``meta["feature_space"]`` so the two are never mixed up.
- ``inception``: torch-fidelity's InceptionV3 with the FID weights (2048-d pool features, unbiased logits for IS),
  registered in torch-fidelity's extractor registry as ``imbgan-inception-v3`` by ``metrics.inception``, imported on
  first use. The weights come from
  ``$TORCH_HOME/hub/checkpoints`` or ``eval.weights_path``; nothing is ever downloaded: a missing file is a
  ``MissingWeightsError`` naming the file, the folder searched and where to get it. It resizes every image to 299 px
  itself with one fixed filter (TF1-compatible bilinear); grey images are repeated to 3 channels.

Both take uint8 images: generated images are quantised exactly like real ones first (``imbgan_core.viz.to_uint8``).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

# torch-fidelity's URL_INCEPTION_V3 (tests/test_features.py keeps the two equal). torch-fidelity itself is imported
# only when an Inception extractor is built: it loads torchvision's model zoo (~1.7 s), which every Ray worker and
# every refused CLI call would otherwise pay.
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
INCEPTION_FILE = INCEPTION_URL.rsplit("/", 1)[-1]  # weights-inception-2015-12-05-6726825d.pth
INCEPTION_REGISTRY_NAME = "imbgan-inception-v3"
INCEPTION_OUTPUTS = ["2048", "logits_unbiased"]  # torch-fidelity's layers for FID/KID/PRC and for IS
FEATURE_SPACES = ("annotator", "inception")


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights are not on disk; the message says which file, where it was looked for and how to get it."""


class BadWeightsError(ValueError):
    """A weight file exists but is not the expected weights (random bytes, a truncated download, another model's
    state dict); the message names the file, what was expected and what was found."""


def hub_checkpoint(filename: str, url: str, what: str, override: str | None = None,
                   override_key: str | None = None) -> Path:
    """Path of a pretrained weight file: ``override`` if given, else ``$TORCH_HOME/hub/checkpoints/<filename>``."""
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"{override_key}: {what} weight file {path} does not exist")
        return path
    directory = Path(torch.hub.get_dir()) / "checkpoints"
    path = directory / filename
    if not path.is_file():
        hint = f", or set {override_key} to the file's path" if override_key else ""
        raise MissingWeightsError(
            f"{what} weights not found: expected {filename} in {directory} (the torch hub cache, $TORCH_HOME/hub/"
            f"checkpoints). imbgan never downloads at run time: on a machine with internet download {url} and copy "
            f"it to {path}{hint}.")
    return path


def inception_weights(weights_path: str | None = None) -> Path:
    """The InceptionV3 FID weight file (``eval.weights_path`` or the hub cache)."""
    return hub_checkpoint(INCEPTION_FILE, INCEPTION_URL, "InceptionV3 (FID)", weights_path, "eval.weights_path")


def file_digest(path: Path) -> str:
    """sha256 (first 16 hex chars) of a file's bytes: identifies weights whatever their file name."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


INCEPTION_EXPECTED = (f"expected torch-fidelity's InceptionV3 FID weights ({INCEPTION_FILE}, a state dict of "
                      f"tensors, {INCEPTION_URL})")


def load_inception_state(path: Path) -> dict:
    """The tensors of an InceptionV3 weight file (``weights_only=True``: plain tensors, no code), or a
    BadWeightsError naming the file and what was expected (random bytes, a truncated download, another file)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, IndexError... on bad bytes
        raise BadWeightsError(f"{path}: not a weight file torch can read ({type(exc).__name__}); "
                              f"{INCEPTION_EXPECTED}") from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadWeightsError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors; "
                              f"{INCEPTION_EXPECTED}")
    return state


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


class AnnotatorFeatures:
    """Penultimate features and logits of the balanced annotator (offline "domain" feature space)."""

    name = "annotator"
    batch_size = 512

    def __init__(self, annotator, device="cpu"):
        self.net = annotator.to(device).eval()
        self.device = device
        self.dim = int(annotator.feature_dim)
        self.cache_key = annotator.cache_key

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass: the classifier net's logits are ``head(features(x))`` (nets.classifier.ClassifierNet)."""
        x = images.to(self.device).float().div(127.5).sub(1.0)  # uint8 -> [-1, 1], as ImageDataset.as_float
        features = self.net.features(x)
        return features.float().cpu(), self.net.net.head(features).float().cpu()


class InceptionFeatures:
    """torch-fidelity InceptionV3 (FID weights) through its extractor registry: 2048-d features, 1008 logits."""

    name = "inception"
    batch_size = 64
    dim = 2048

    def __init__(self, weights_path: str | None = None, device="cpu"):
        path = inception_weights(weights_path)
        self.cache_key = file_digest(path)
        from torch_fidelity.utils import create_feature_extractor

        import imbgan_core.metrics.inception  # noqa: F401  registers SafeInceptionV3 under INCEPTION_REGISTRY_NAME

        self.net = create_feature_extractor(INCEPTION_REGISTRY_NAME, INCEPTION_OUTPUTS, cuda=False, verbose=False,
                                            feature_extractor_weights_path=str(path)).to(device)
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.to(self.device)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        features, logits = self.net(x)
        return features.float().cpu(), logits.float().cpu()


def build_extractor(features: str, annotator=None, weights_path: str | None = None, device="cpu"):
    """The feature space named by ``eval.features``."""
    if features == "annotator":
        if annotator is None:
            raise ValueError("eval.features: 'annotator' needs the balanced annotator classifier, none was given")
        return AnnotatorFeatures(annotator, device)
    if features == "inception":
        return InceptionFeatures(weights_path, device)
    raise ValueError(f"eval.features: {features!r} is not one of {list(FEATURE_SPACES)}")


def extract(extractor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and logits of uint8 images, in the extractor's batch size."""
    if images.dtype != torch.uint8:
        raise TypeError(f"feature extraction takes uint8 images, got {images.dtype}")
    features, logits = [], []
    for batch in images.split(extractor.batch_size):
        f, lg = extractor(batch)
        features.append(f)
        logits.append(lg)
    if not features:
        raise ValueError("no images to extract features from")
    return torch.cat(features), torch.cat(logits)
