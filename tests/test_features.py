"""Feature extractors and LPIPS with weight files the tests build: shapes, registry, offline errors, no download.

The pretrained weights cannot be fetched here, so the tests save randomly initialised networks of the exact expected
structure under the expected file names in a temporary ``$TORCH_HOME/hub/checkpoints``.
"""
import math
import pickle

import pytest
import torch
import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torchvision.models import alexnet

from imbgan_core.config import EvalConfig
from imbgan_core.metrics.catalog import METRICS
from imbgan_core.data.types import ImageDataset, LongTailData
from imbgan_core.metrics.evaluator import Evaluator
from imbgan_core.metrics.diversity import ALEXNET_FILE, ALEXNET_URL, LPIPSDistance
from imbgan_core.metrics.features import (INCEPTION_FILE, INCEPTION_REGISTRY_NAME, INCEPTION_URL, AnnotatorFeatures,
                                          InceptionFeatures, MissingWeightsError, build_extractor,
                                          extract, file_digest)


def _random_inception_state() -> dict:
    """A random-init state dict of torch-fidelity's InceptionV3 (its constructor would download: patched off)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tf_inception, "load_state_dict_from_url", lambda *args, **kwargs: {})
        patch.setattr(tf_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        torch.manual_seed(0)
        net = tf_inception.FeatureExtractorInceptionV3("random", ["2048"])
    return net.state_dict()


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """A TORCH_HOME whose hub cache holds random InceptionV3 and AlexNet weights under the expected names."""
    home = tmp_path_factory.mktemp("torch_home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(_random_inception_state(), checkpoints / INCEPTION_FILE)
    torch.manual_seed(0)
    torch.save(alexnet().state_dict(), checkpoints / ALEXNET_FILE)
    return home


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path


def test_inception_file_name_is_torch_fidelitys():
    assert INCEPTION_FILE == "weights-inception-2015-12-05-6726825d.pth"
    assert tf_inception.URL_INCEPTION_V3 == INCEPTION_URL and INCEPTION_URL.endswith("/" + INCEPTION_FILE)


def test_alexnet_url_is_torchvisions():
    from torchvision.models import AlexNet_Weights

    assert ALEXNET_URL == AlexNet_Weights.IMAGENET1K_V1.url and ALEXNET_URL.endswith("/" + ALEXNET_FILE)


def test_metric_modules_import_without_torch_fidelity_lpips_or_torchvision():
    """They are imported by every Ray worker and every CLI call; the heavy libraries load only when used."""
    import subprocess
    import sys

    code = ("import sys, imbgan_core.metrics.evaluator, imbgan_core.training, trainables.tune, trainables.gan; "
            "print(sorted(m for m in ('torch_fidelity', 'lpips', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_inception_without_weights_fails_with_instructions(empty_torch_home):
    with pytest.raises(MissingWeightsError) as info:
        InceptionFeatures()
    message = str(info.value)
    assert INCEPTION_FILE in message
    assert str(empty_torch_home / "hub" / "checkpoints") in message
    assert tf_inception.URL_INCEPTION_V3 in message and "eval.weights_path" in message
    with pytest.raises(MissingWeightsError, match="eval.weights_path: .*nowhere.pth"):
        build_extractor("inception", weights_path=str(empty_torch_home / "nowhere.pth"))


def test_inception_features_from_the_hub_cache(torch_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    extractor = build_extractor("inception")
    from imbgan_core.metrics.inception import SafeInceptionV3  # imported by the extractor, registered on import

    assert FEATURE_EXTRACTORS_REGISTRY[INCEPTION_REGISTRY_NAME] is SafeInceptionV3
    assert type(extractor.net) is SafeInceptionV3
    weights = torch_home / "hub" / "checkpoints" / INCEPTION_FILE
    assert extractor.name == "inception" and extractor.cache_key == file_digest(weights)
    assert torch.equal(extractor.net.fc.weight, torch.load(weights, weights_only=True)["fc.weight"])
    grey = torch.randint(0, 256, (3, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    features, logits = extract(extractor, grey)
    assert features.shape == (3, 2048) and logits.shape == (3, 1008)
    assert torch.isfinite(features).all() and features.std() > 0
    colour, _ = extract(extractor, grey.expand(-1, 3, -1, -1).contiguous())
    assert torch.allclose(colour, features)  # grey is repeated to 3 channels
    # an explicit weights_path (eval.weights_path) works without any hub cache
    monkeypatch.setenv("TORCH_HOME", str(torch_home / "elsewhere"))
    explicit = build_extractor("inception", weights_path=str(weights))
    assert torch.allclose(extract(explicit, grey)[0], features)
    # a prepared evaluator holding it travels to Ray trials pickled: the class must pickle by reference
    shipped = pickle.loads(pickle.dumps(explicit))
    assert type(shipped.net) is SafeInceptionV3 and torch.equal(extract(shipped, grey)[0], extract(explicit, grey)[0])


def test_annotator_features(annotator, digits_data):
    extractor = AnnotatorFeatures(annotator)
    assert build_extractor(EvalConfig().features, annotator).cache_key == annotator.cache_key
    images = digits_data.eval.images[:7]
    features, logits = extract(extractor, images)
    assert features.shape == (7, annotator.feature_dim) and logits.shape == (7, digits_data.num_classes)
    assert torch.allclose(logits, annotator(digits_data.eval.as_float(torch.arange(7))))
    with pytest.raises(TypeError, match="uint8"):
        extract(extractor, digits_data.eval.as_float(torch.arange(7)))
    with pytest.raises(ValueError, match="eval.features"):
        build_extractor("annotator", annotator=None)


def test_lpips_without_alexnet_weights_fails_with_instructions(empty_torch_home):
    with pytest.raises(MissingWeightsError, match=ALEXNET_FILE) as info:
        LPIPSDistance()
    assert str(empty_torch_home / "hub" / "checkpoints") in str(info.value)


def test_lpips_uses_the_hub_alexnet(torch_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    distance = LPIPSDistance()
    trunk = torch.load(torch_home / "hub" / "checkpoints" / ALEXNET_FILE, weights_only=True)
    layers = {name: layer for block in distance.model.net.children() for name, layer in block.named_children()}
    for index in ("0", "3", "6", "8", "10"):  # every conv layer of AlexNet's trunk
        assert torch.equal(layers[index].weight, trunk[f"features.{index}.weight"])
    generator = torch.Generator().manual_seed(1)
    a = torch.randint(0, 256, (4, 1, 16, 16), dtype=torch.uint8, generator=generator)
    b = torch.randint(0, 256, (4, 1, 16, 16), dtype=torch.uint8, generator=generator)
    assert torch.allclose(distance(a, a), torch.zeros(4, dtype=torch.float64))
    assert (distance(a, b) > 0).all()


def _tiny_data(digits_data, per_class: int = 3) -> LongTailData:
    """Two digit classes, ``per_class`` evaluation images each: small enough for 299 px InceptionV3 on a CPU."""
    keep = torch.cat([(digits_data.eval.labels == k).nonzero().flatten()[:per_class] for k in range(2)])
    eval_split = ImageDataset(digits_data.eval.images[keep], digits_data.eval.labels[keep], ["0", "1"])
    return LongTailData(train=eval_split, eval=eval_split, groups={"many": [0], "medium": [], "few": [1]},
                        spec={"test": "two digit classes", "per_class": per_class})


def test_evaluator_in_the_inception_space(torch_home, monkeypatch, digits_data, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    data = _tiny_data(digits_data)
    cfg = EvalConfig(features="inception", metrics=["fid", "intra_fid", "kid", "is", "diversity"],
                     samples_per_class=5)
    evaluator = Evaluator(data, cfg, annotator=None, cache_dir=tmp_path)
    result = evaluator.evaluate(lambda labels: data.eval.as_float(labels * 3))  # the first image of each class
    assert set(result.scalars) == METRICS.keys_of(cfg.metrics)
    assert result.meta["feature_space"] == "inception" and result.meta["feature_dim"] == 2048
    assert math.isnan(result.scalars["fid_medium"]) and math.isfinite(result.scalars["fid_few"])
    assert result.scalars["intra_diversity"] == 0.0  # one image per class, repeated: no diversity within a class


def test_evaluator_lpips_group(torch_home, monkeypatch, digits_data, annotator, tmp_path):
    cfg = EvalConfig(metrics=["lpips"], samples_per_class=6)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(MissingWeightsError, match=ALEXNET_FILE):
        Evaluator(digits_data, cfg, annotator, cache_dir=tmp_path)  # before any statistics are computed
    assert not (tmp_path / "real_stats").exists()
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    evaluator = Evaluator(digits_data, cfg, annotator, cache_dir=tmp_path)
    varied = evaluator.evaluate(lambda labels: digits_data.eval.as_float(torch.randperm(len(labels))))
    constant = evaluator.evaluate(lambda labels: digits_data.eval.as_float(torch.zeros_like(labels)))
    assert set(varied.scalars) == {"lpips", "intra_lpips"} and len(varied.per_class["lpips"]) == 10
    assert varied.scalars["lpips"] > 0 and varied.scalars["intra_lpips"] > 0
    assert constant.scalars["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert varied.meta["lpips_pairs"] == {"lpips": 30, "intra_lpips": 3}
