"""imbgan_core.classifier and nets.classifier: real training on digits-LT, caching, soft labels."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from imbgan_core.classifier import (
    classifier_key, differentiable_copy, entropy_bonus_loss, get_classifier, random_translate, soft_labels,
    train_classifier, training_set,
)
from imbgan_core.config import ClassifierConfig
from imbgan_core.data import load_dataset
from imbgan_core.nets.classifier import ResNet32, SmallCNN, build_classifier_net, resolve_arch

ONE_EPOCH = ClassifierConfig(epochs=1, batch_size=64)


@pytest.fixture(scope="module")
def digits8(digits_cfg):
    """8x8 digits-LT: the cheapest real data for training-path tests."""
    return load_dataset(dataclasses.replace(digits_cfg.dataset, resolution=8))


def test_annotator_and_classifier_accuracy(annotator, lt_classifier, digits_data):
    """Balanced annotator: high held-out accuracy; long-tailed C: good on the head, the tail is harder."""
    assert annotator.report["overall"] >= 0.9
    assert min(annotator.report["groups"].values()) >= 0.85
    assert lt_classifier.report["overall"] >= 0.7
    assert lt_classifier.report["groups"]["many"] >= 0.9
    assert len(annotator.report["per_class"]) == digits_data.num_classes
    assert annotator.report["train_images"] == len(digits_data.train) + len(digits_data.pool)
    assert lt_classifier.report["train_images"] == len(digits_data.train)


def test_report_is_recomputed_from_weights(annotator, digits_data):
    """The stored accuracy is the accuracy of the stored weights on the eval split."""
    with torch.no_grad():
        pred = annotator(digits_data.eval.as_float()).argmax(1)
    assert (pred == digits_data.eval.labels).double().mean().item() == pytest.approx(annotator.report["overall"])


def test_classifier_interface(annotator, digits_data):
    x = digits_data.eval.as_float(torch.arange(5))
    assert annotator(x).shape == (5, 10) and annotator.num_classes == 10
    assert annotator.features(x).shape == (5, annotator.feature_dim) and annotator.feature_dim == 128
    assert len(annotator.cache_key) == 16
    with pytest.raises(ValueError, match=r"expects N x 1 x 16 x 16"):
        annotator(torch.zeros(2, 3, 16, 16))


def test_classifier_is_frozen_but_passes_gradients(lt_classifier, digits_data):
    """Methods (CBGAN) backpropagate through C into generated images; C itself never changes."""
    wrapper = torch.nn.ModuleDict({"c": lt_classifier})
    wrapper.train()
    assert not lt_classifier.training and not lt_classifier.net.training
    assert all(not p.requires_grad for p in lt_classifier.parameters())
    x = digits_data.train.as_float(torch.arange(4)).requires_grad_(True)
    lt_classifier(x).logsumexp(1).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_second_call_is_a_cache_hit(annotator, digits_data, digits_cfg, cache_dir):
    messages = []
    again = get_classifier(digits_data, digits_cfg.classifier, "annotator", cache_dir=cache_dir, log=messages.append)
    assert any("cache hit" in m for m in messages) and not any("epoch" in m for m in messages)
    assert again.cache_key == annotator.cache_key
    for a, b in zip(again.state_dict().values(), annotator.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    folder = cache_dir / "classifier" / again.cache_key
    report = json.loads((folder / "report.json").read_text())
    assert report["overall"] == annotator.report["overall"] and report["key"]["role"] == "annotator"
    assert (folder / "weights.pt").is_file()


def test_changed_spec_is_a_miss_for_c_not_for_the_annotator(digits_data, digits_cfg):
    """A new imbalance changes C's key; the annotator's data (all non-eval images) does not change."""
    rho5 = load_dataset(dataclasses.replace(
        digits_cfg.dataset, imbalance=dataclasses.replace(digits_cfg.dataset.imbalance, ratio=5.0)))
    cfg = digits_cfg.classifier
    assert classifier_key(rho5, cfg, "classifier") != classifier_key(digits_data, cfg, "classifier")
    assert classifier_key(rho5, cfg, "annotator") == classifier_key(digits_data, cfg, "annotator")
    balanced = load_dataset(dataclasses.replace(
        digits_cfg.dataset, imbalance=dataclasses.replace(digits_cfg.dataset.imbalance, profile="none")))
    assert classifier_key(balanced, cfg, "annotator") == classifier_key(digits_data, cfg, "annotator")
    reference = training_set(digits_data, "annotator")
    for other in (rho5, balanced):
        same = training_set(other, "annotator")
        assert torch.equal(same.images, reference.images) and torch.equal(same.labels, reference.labels)
    bigger = dataclasses.replace(digits_cfg.dataset, resolution=32)
    assert classifier_key(load_dataset(bigger), cfg, "annotator") != classifier_key(digits_data, cfg, "annotator")
    for change in ({"seed": 1}, {"epochs": 9}, {"lr": 1e-2}, {"arch": "resnet32"}, {"threads": 2}):
        changed = dataclasses.replace(cfg, **change)
        assert classifier_key(digits_data, changed, "classifier") != classifier_key(digits_data, cfg, "classifier")
    with_bonus = dataclasses.replace(cfg, entropy_bonus=0.3)
    assert classifier_key(digits_data, with_bonus, "classifier") != classifier_key(digits_data, cfg, "classifier")
    assert classifier_key(digits_data, with_bonus, "annotator") == classifier_key(digits_data, cfg, "annotator")


def test_miss_trains_a_new_classifier(digits8, tmp_path):
    messages = []
    first = get_classifier(digits8, ONE_EPOCH, "classifier", cache_dir=tmp_path, log=messages.append)
    assert sum("epoch 1/1" in m for m in messages) == 1
    other_seed = get_classifier(digits8, dataclasses.replace(ONE_EPOCH, seed=1), "classifier", cache_dir=tmp_path,
                                log=messages.append)
    assert sum("epoch 1/1" in m for m in messages) == 2
    assert other_seed.cache_key != first.cache_key
    assert len(list((tmp_path / "classifier").glob("*/weights.pt"))) == 2


def test_training_is_deterministic_and_leaves_global_rng_alone(digits8):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    net_a, report_a = train_classifier(digits8, ONE_EPOCH, "classifier", "cnn", log=lambda m: None)
    assert torch.equal(torch.rand(1), expected_next)
    net_b, report_b = train_classifier(digits8, ONE_EPOCH, "classifier", "cnn", log=lambda m: None)
    for a, b in zip(net_a.state_dict().values(), net_b.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert report_a["per_class"] == report_b["per_class"]


def test_weights_do_not_depend_on_the_callers_thread_count(digits_data):
    """The annotator is every FID's feature space and is cached by its key: a sweep driver (2 threads) and the train
    CLI (train.threads 1) must build the same weights, or two results under one ``feature_weights`` key were scored
    in different feature spaces. Training runs on ``classifier.threads`` whatever the caller set."""
    cfg = ClassifierConfig(epochs=1, batch_size=64)
    previous = torch.get_num_threads()
    nets = []
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            nets.append(train_classifier(digits_data, cfg, "annotator", "cnn", log=lambda m: None)[0])
            assert torch.get_num_threads() == threads  # the caller's setting is restored
    finally:
        torch.set_num_threads(previous)
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_entropy_bonus_loss_formula():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    labels = torch.tensor([0, 2])
    p = logits.softmax(1)
    entropy = -(p * p.log()).sum(1).mean()
    assert entropy_bonus_loss(logits, labels, 0.0) == pytest.approx(F.cross_entropy(logits, labels).item())
    expected = F.cross_entropy(logits, labels) - 0.3 * entropy
    assert entropy_bonus_loss(logits, labels, 0.3).item() == pytest.approx(expected.item())


def test_random_translate_is_a_shift_of_the_padded_image():
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8)
    out = random_translate(x, torch.Generator().manual_seed(0))
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    for n in range(2):
        crops = [padded[n, :, dy:dy + 8, dx:dx + 8] for dy in range(3) for dx in range(3)]
        assert any(torch.equal(out[n], c) for c in crops)
    assert torch.equal(out, random_translate(x, torch.Generator().manual_seed(0)))


def test_differentiable_copy_matches_c_and_leaves_it_alone(lt_classifier, digits_data):
    """CBGAN's fused, channels-last copy of C: same logits and input gradients, no BatchNorm left, frozen; the
    shared classifier keeps its BatchNorm layers and weights."""
    before = {k: v.clone() for k, v in lt_classifier.state_dict().items()}
    fast = differentiable_copy(lt_classifier, "cpu")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in lt_classifier.modules()) == 3
    assert all(not p.requires_grad for p in fast.parameters())
    x = digits_data.train.as_float(torch.arange(16))
    grads = []
    for net, inp in ((lt_classifier, x), (fast, x.contiguous(memory_format=torch.channels_last))):
        inp = inp.clone().requires_grad_(True)
        logits = net(inp)
        torch.log_softmax(logits, 1)[:, 0].sum().backward()
        grads.append((logits.detach(), inp.grad))
    (ref_logits, ref_grad), (fast_logits, fast_grad) = grads
    assert ref_grad.abs().sum() > 0
    torch.testing.assert_close(fast_logits, ref_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast_grad, ref_grad, rtol=1e-4, atol=1e-5)
    for key, value in lt_classifier.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_nets_shapes_and_auto_arch():
    assert resolve_arch("auto", 16) == "cnn" and resolve_arch("auto", 32) == "resnet32"
    resnet = build_classifier_net("auto", 7, 3, 32)
    assert isinstance(resnet, ResNet32) and resnet.feature_dim == 64
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in resnet.modules())
    assert n_convs + 1 == 32  # 31 conv layers + the linear head
    out = resnet(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 7) and resnet.features(torch.zeros(2, 3, 32, 32)).shape == (2, 64)
    cnn = build_classifier_net("cnn", 10, 1, 8)
    assert isinstance(cnn, SmallCNN) and cnn(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match="classifier.arch"):
        resolve_arch("vgg", 32)


def test_bad_role_is_rejected(digits_data, digits_cfg):
    with pytest.raises(ValueError, match="role"):
        get_classifier(digits_data, digits_cfg.classifier, "judge")
    anonymous = dataclasses.replace(digits_data, spec={})
    with pytest.raises(ValueError, match="spec is empty"):
        get_classifier(anonymous, digits_cfg.classifier, "classifier")


def test_soft_labels_cached_and_correct(lt_classifier, digits_data, cache_dir):
    probs = soft_labels(lt_classifier, digits_data.train, cache_dir=cache_dir)
    assert probs.shape == (len(digits_data.train), 10) and probs.dtype == torch.float32
    assert torch.allclose(probs.sum(1), torch.ones(len(probs)), atol=1e-5)
    with torch.no_grad():
        direct = lt_classifier(digits_data.train.as_float()).softmax(1)
    assert torch.allclose(probs, direct, atol=1e-6)
    files = sorted((cache_dir / "soft_labels").glob("*/soft_labels.pt"))
    assert torch.equal(soft_labels(lt_classifier, digits_data.train, cache_dir=cache_dir), probs)
    assert sorted((cache_dir / "soft_labels").glob("*/soft_labels.pt")) == files  # hit: no new artifact
    soft_labels(lt_classifier, digits_data.eval, cache_dir=cache_dir)
    assert len(list((cache_dir / "soft_labels").glob("*/soft_labels.pt"))) == len(files) + 1


RACER = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from imbgan_core.classifier import get_classifier
    from imbgan_core.config import ClassifierConfig
    from imbgan_core.data.types import ImageDataset, LongTailData

    def split(n_per_class, seed):  # small random images: no dataset imports, so the two processes overlap
        gen = torch.Generator().manual_seed(seed)
        labels = torch.arange(4).repeat_interleave(n_per_class)
        return ImageDataset(torch.randint(0, 256, (len(labels), 1, 8, 8), generator=gen, dtype=torch.uint8),
                            labels, ["a", "b", "c", "d"])

    data = LongTailData(split(8, 0), split(2, 1), {"many": [0], "medium": [1], "few": [2, 3]},
                        spec={"source": "race-test"})
    clf = get_classifier(data, ClassifierConfig(epochs=2, batch_size=16), "classifier", cache_dir=sys.argv[1])
    print("KEY", clf.cache_key)
""")


@pytest.mark.slow
def test_two_processes_racing_train_once(tmp_path):
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "cache")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    logs = "".join(out for out, _ in outputs)
    assert logs.count("epoch 1/2") == 1 and logs.count("cache hit") == 1
    keys = {line for line in logs.splitlines() if line.startswith("KEY")}
    assert len(keys) == 1
    assert len(list((tmp_path / "cache" / "classifier").glob("*/weights.pt"))) == 1
