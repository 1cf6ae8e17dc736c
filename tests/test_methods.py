"""Imbalance methods: their formulas on hand-computed numbers, their effect on a tiny generator, and a few hundred
real training steps each on digits-LT 16x16."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from imbgan_core.config import ConfigError, RunConfig, method_params
from imbgan_core.methods import METHODS, config_problems
from imbgan_core.methods import losses
from imbgan_core.methods.acgan import ACGAN
from imbgan_core.methods.cbgan import (CBGAN, balance_regularizer, class_weights_from_counts,
                                       update_effective_counts)
from imbgan_core.methods.contentstyle import ContentStyle
from imbgan_core.methods.mixup import Mixup
from imbgan_core.methods.smooth import smoothed_labels
from imbgan_core.methods.softlabel import Softlabel
from imbgan_core.nets import build_discriminator
from imbgan_core.nets.contentstyle import ContentStyleGenerator
from imbgan_core.nets.layers import AuxiliaryClassifierDiscriminator
from imbgan_core.training import Run

from helpers_gan import parameters_equal, tiny_assets, tiny_cfg

PARAMS = {name: {k: p.default for k, p in spec.items()} for name, spec in method_params().items()}
# Model settings a method needs beyond tiny_cfg's defaults (ACGAN's D has no projection: Odena et al. Sec. 3).
MODEL_OVERRIDES = {"acgan": {"model.d_conditional": False}}


def test_every_method_declares_its_parameters_with_a_source_and_a_valid_default():
    """The method class is the one place its parameters are declared: config validation reads it."""
    assert all(cls.name == name for name, cls in METHODS.items())
    for name, cls in METHODS.items():
        for key, param in cls.param_specs.items():
            assert param.ref, f"{name}.{key} names no paper section or reference"
            assert param.check(param.default) is None, f"{name}.{key}: default {param.default!r} fails its own range"
    with pytest.raises(ConfigError, match=r"method.lambda: -1.0 is below the valid range \[0.0, inf\)"):
        RunConfig.from_dict({"method": {"name": "cbgan", "lambda": -1.0}})


# ------------------------------------------------------------------------------------------------------ CBGAN
def test_cbgan_effective_count_update_on_hand_computed_numbers():
    n = torch.tensor([50.0, 50.0, 50.0], dtype=torch.float64)
    c = torch.tensor([10.0, 0.0, 90.0], dtype=torch.float64)
    # Eq. 5 with alpha = 0.5: (1 - 0.5) * 50 + beta * c
    assert update_effective_counts(n, c, 0.5, "one").tolist() == [35.0, 25.0, 115.0]
    assert update_effective_counts(n, c, 0.5, "alpha").tolist() == [30.0, 25.0, 70.0]
    # alpha = 0.2, beta = alpha: 0.8 * 50 + 0.2 * c; a class never generated decays but stays >= 1
    assert update_effective_counts(n, c, 0.2, "alpha").tolist() == pytest.approx([42.0, 40.0, 58.0])
    assert update_effective_counts(torch.tensor([1.5]), torch.tensor([0.0]), 0.9, "one").tolist() == [1.0]


def test_cbgan_weights_are_inverse_counts_normalised_to_k():
    w = class_weights_from_counts(torch.tensor([10.0, 20.0, 40.0]))
    assert w.sum().item() == pytest.approx(3.0)
    assert (w[0] / w[1]).item() == pytest.approx(2.0) and (w[1] / w[2]).item() == pytest.approx(2.0)


def test_cbgan_regularizer_value():
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0]])  # batch mean p = [0.75, 0.25]
    weights = torch.tensor([0.5, 1.5])
    expected = 0.5 * 0.75 * math.log(0.75) + 1.5 * 0.25 * math.log(0.25)
    assert balance_regularizer(probs, weights).item() == pytest.approx(expected)


class TinyGenerator(nn.Module):
    """z -> 16-pixel 'image' in [-1, 1]; the frozen classifier below labels it."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16), nn.Tanh())

    def forward(self, z, y=None):
        return self.net(z)


def test_cbgan_regularizer_gradient_balances_classes_like_fig_3():
    """Fixed N̂: the class with a tiny N̂ gains share, the class with a huge N̂ loses it (CBGAN Fig. 3)."""
    torch.manual_seed(0)
    classifier = nn.Sequential(nn.Linear(16, 4))
    gen = TinyGenerator()
    params = dict(PARAMS["cbgan"], **{"lambda": 4.0})
    method = CBGAN(params, 4, SimpleNamespace(classifier=classifier))
    method.counts = torch.tensor([1000.0, 50.0, 50.0, 2.0], dtype=torch.float64)  # held fixed (no cycle end)
    z = torch.randn(256, 8)

    def shares():
        with torch.no_grad():
            return torch.softmax(classifier(gen(z)), dim=1).mean(0)

    before = shares()
    opt = torch.optim.Adam(gen.parameters(), lr=1e-2)
    for _ in range(60):
        terms = method.generator_terms(gen, z, None, gen(z), torch.Generator())
        opt.zero_grad()
        terms["cbgan_reg"].backward()
        opt.step()
    after = shares()
    assert after[3] > before[3] + 0.05  # small N̂: share raised
    assert after[0] < before[0] - 0.05  # large N̂: share lowered
    assert classifier[0].weight.grad is None  # C stays frozen


def test_cbgan_counts_classifier_argmax_and_updates_only_at_cycle_end():
    classifier = nn.Linear(16, 3)
    with torch.no_grad():
        classifier.weight.zero_()
        classifier.bias.copy_(torch.tensor([0.0, 5.0, 0.0]))  # every image -> class 1
    params = dict(PARAMS["cbgan"], cycle=2, alpha=0.5, beta="one")
    method = CBGAN(params, 3, SimpleNamespace(classifier=classifier))
    fake = torch.zeros(10, 16)
    method.generator_terms(None, None, None, fake, None)
    method.after_step(1)
    assert method.counts.tolist() == [50.0, 50.0, 50.0]
    assert method.cycle_counts.tolist() == [0.0, 10.0, 0.0]
    method.generator_terms(None, None, None, fake, None)
    method.after_step(2)  # cycle end: 0.5 * 50 + [0, 20, 0]
    assert method.counts.tolist() == [25.0, 45.0, 25.0]
    assert method.cycle_counts.tolist() == [0.0, 0.0, 0.0]


def test_cbgan_inverse_count_fake_labels():
    params = dict(PARAMS["cbgan"], fake_labels="inverse_count")
    method = CBGAN(params, 2, SimpleNamespace(classifier=nn.Linear(4, 2)))
    method.counts = torch.tensor([1.0, 99.0], dtype=torch.float64)
    labels = method.fake_labels(4000, torch.Generator().manual_seed(0))
    assert (labels == 0).float().mean().item() == pytest.approx(0.99, abs=0.01)


def test_cbgan_defaults_to_relativistic_loss(digits_data, lt_classifier):
    run = Run(tiny_cfg("cbgan"), tiny_assets(digits_data, lt_classifier))
    assert run.loss == "relativistic"
    assert Run(tiny_cfg("cgan"), tiny_assets(digits_data)).loss == "hinge"


# -------------------------------------------------------------------------------------------------- Softlabel
def test_softlabel_cached_labels_equal_classifier_softmax(digits_data, lt_classifier):
    from imbgan_core.classifier import soft_labels

    table = soft_labels(lt_classifier, digits_data.train)
    with torch.no_grad():
        expected = torch.softmax(lt_classifier(digits_data.train.as_float()), dim=1)
    assert torch.allclose(table, expected, atol=1e-6)
    method = Softlabel({}, digits_data.num_classes, tiny_assets(digits_data, lt_classifier))
    index = torch.tensor([3, 0, 100])
    x = digits_data.train.as_float(index)
    _, labels = method.real_batch(x, digits_data.train.labels[index], index, torch.Generator())
    assert torch.equal(labels, table[index])
    assert torch.allclose(labels.sum(1), torch.ones(3), atol=1e-5)


def test_softlabel_discriminator_takes_probabilities_and_fakes_stay_one_hot(digits_data, lt_classifier):
    run = Run(tiny_cfg("softlabel"), tiny_assets(digits_data, lt_classifier))
    assert run.D.head.mode == "soft"
    x = run.real_images[:4]
    probs = run.assets.soft_labels[:4]
    assert run.D(x, probs).shape == (4,)
    fake_labels = run.method.fake_labels(4, torch.Generator().manual_seed(0))
    assert fake_labels.dtype == torch.long  # fakes: class indices, one-hot inside the soft head
    one_hot = torch.nn.functional.one_hot(fake_labels, digits_data.num_classes).float()
    run.D.eval()
    assert torch.allclose(run.D(x, fake_labels), run.D(x, one_hot))


def test_softlabel_needs_soft_labels(digits_data):
    with pytest.raises(ValueError, match="soft_labels"):
        Softlabel({}, digits_data.num_classes, tiny_assets(digits_data))


# ----------------------------------------------------------------------------------------------------- Smooth
def test_smooth_label_formula():
    labels = smoothed_labels(torch.tensor([1, 3]), 4, 0.2)
    assert torch.allclose(labels, torch.tensor([[0.05, 0.85, 0.05, 0.05], [0.05, 0.05, 0.05, 0.85]]))


def test_smooth_with_alpha_zero_equals_cgan(digits_data):
    runs = [Run(tiny_cfg("cgan"), tiny_assets(digits_data)), Run(tiny_cfg("smooth", alpha=0.0), tiny_assets(digits_data))]
    for run in runs:
        run.train(4)
    assert parameters_equal(runs[0].G, runs[1].G)
    assert parameters_equal(runs[0].D, runs[1].D)
    smoothed = Run(tiny_cfg("smooth", alpha=0.3), tiny_assets(digits_data))
    smoothed.train(4)
    assert not parameters_equal(runs[0].D, smoothed.D)


# ------------------------------------------------------------------------------------------------------ Mixup
def test_mixup_mixes_images_and_labels_with_one_lambda():
    method = Mixup({"a": 0.2}, 3)
    x = torch.stack([torch.full((1, 2, 2), float(v)) for v in (0.0, 1.0, 2.0, 3.0)])
    y = torch.tensor([0, 1, 2, 0])
    gen = torch.Generator().manual_seed(1)
    mixed, labels = method.real_batch(x, y, None, gen)
    assert torch.allclose(labels.sum(1), torch.ones(4))
    lam = labels.max(1).values.min()  # one lambda for the whole batch
    # every mixed image is lam * x_i + (1 - lam) * x_perm(i), with labels mixed the same way
    for i in range(4):
        partners = [j for j in range(4) if torch.allclose(mixed[i], lam * x[i] + (1 - lam) * x[j])
                    or torch.allclose(mixed[i], (1 - lam) * x[i] + lam * x[j])]
        assert partners


# ------------------------------------------------------------------------------------------------- Oversample
def test_oversample_draws_classes_about_evenly(digits_data):
    run = Run(tiny_cfg("oversample"), tiny_assets(digits_data))
    labels = torch.cat([digits_data.train.labels[run.sampler.next()] for _ in range(200)])
    share = torch.bincount(labels, minlength=10).float() / labels.numel()
    assert share.min() > 0.07 and share.max() < 0.13  # uniform is 0.1; the raw split has 0.25 vs 0.024
    uniform = Run(tiny_cfg("cgan"), tiny_assets(digits_data))
    raw = torch.cat([digits_data.train.labels[uniform.sampler.next()] for _ in range(50)])
    assert (raw == 0).float().mean() > 0.2


# ---------------------------------------------------------------------------------------------- Content-style
def linear_backbone(z_dim: int) -> nn.Module:
    backbone = nn.Linear(z_dim, z_dim)
    backbone.z_dim = z_dim
    return backbone


def test_finite_difference_matches_jacobian_norm_of_linear_style_map():
    torch.manual_seed(0)
    gen = ContentStyleGenerator(linear_backbone(12), 4, 8, 3)
    gen.style_map = nn.Linear(16, 8)  # e_S(z, w) = A [z; w] + b: its Jacobian in w is A[:, 8:]
    exact = torch.linalg.matrix_norm(gen.style_map.weight[:, 8:]).item()
    n = 20000
    z, y = torch.randn(n, 12), torch.randint(0, 3, (n,))
    for eps in (0.5, 0.1, 1e-3):
        est = gen.style_jacobian_norm(z, y, eps, torch.randn(n, 8)).detach()
        assert est.pow(2).mean().sqrt().item() == pytest.approx(exact, rel=0.03)


def test_finite_difference_converges_to_jacobian_of_nonlinear_style_map():
    torch.manual_seed(0)
    gen = ContentStyleGenerator(linear_backbone(12), 4, 8, 3)
    z_s, w = torch.randn(1, 8), gen.class_embedding(torch.tensor([1]))
    jac = torch.autograd.functional.jacobian(lambda v: gen.style(z_s, v), w).reshape(8, 8)
    exact = torch.linalg.matrix_norm(jac).item()
    n = 20000
    z = torch.cat([torch.zeros(1, 4), z_s], 1).expand(n, -1)
    est = gen.style_jacobian_norm(z, torch.ones(n, dtype=torch.long), 1e-3, torch.randn(n, 8)).detach()
    assert est.pow(2).mean().sqrt().item() == pytest.approx(exact, rel=0.03)


@pytest.mark.parametrize("epsilon", [0.5, 0.25])
def test_contentstyle_applied_penalty_is_the_official_strength(epsilon):
    """The term is the official code's λ_J·‖Δ‖, Δ = e_S(z, w) − e_S(z, w + εδ), averaged over the batch: 0.1·‖Δ‖
    at the defaults (λ_J 0.1, ε 0.5), not 0.1·‖Δ‖/ε = 2× that (issue 14 item 4)."""
    torch.manual_seed(0)
    params = dict(PARAMS["contentstyle"], content_dim=4, style_dim=8, epsilon=epsilon)
    assert params["lambda_j"] == 0.1 and PARAMS["contentstyle"]["epsilon"] == 0.5
    method = ContentStyle(params, 3)
    gen = ContentStyleGenerator(linear_backbone(12), 4, 8, 3)
    z, y = torch.randn(64, 12), torch.randint(0, 3, (64,))
    term = method.generator_terms(gen, z, y, None, torch.Generator().manual_seed(5))["jacobian_reg"]
    delta = torch.randn(64, 8, generator=torch.Generator().manual_seed(5))  # the draw generator_terms makes
    w = gen.class_embedding(y)
    diff = gen.style(z[:, 4:], w) - gen.style(z[:, 4:], w + epsilon * delta)
    assert term.item() == pytest.approx(0.1 * diff.norm(dim=1).mean().item(), rel=1e-5)


def test_contentstyle_regularizer_enters_generator_loss(digits_data):
    run = Run(tiny_cfg("contentstyle", lambda_j=0.5), tiny_assets(digits_data))
    assert isinstance(run.G, ContentStyleGenerator)
    logs = run.step()
    assert logs["jacobian_reg"] > 0
    assert run.G.class_embedding.weight.grad is not None


# ------------------------------------------------------------------------------------------------------ ACGAN
@pytest.mark.parametrize("arch", ["sndcgan", "resnet", "biggan"])
def test_acgan_discriminator_gives_a_source_logit_and_k_class_logits(arch):
    torch.manual_seed(0)
    d = build_discriminator(arch, 7, 16, 3, 0.125, "none", aux_classifier=True).eval()
    assert isinstance(d, AuxiliaryClassifierDiscriminator) and d.trunk.head.mode == "none"  # no projection
    x = torch.randn(5, 3, 16, 16)
    out = d(x, torch.randint(0, 7, (5,)))
    assert out.shape == (5, 1 + 7)
    assert torch.equal(out, d(x))  # labels are not read: the class enters only through the head's targets
    assert torch.allclose(out[:, 0], d.trunk(x))  # column 0 is the backbone's own source logit
    with pytest.raises(ValueError, match="no projection"):
        build_discriminator(arch, 7, 16, 3, 0.125, "hard", aux_classifier=True)


def _acgan_logits():
    d_real = torch.tensor([[1.0, 2.0, 0.0, -1.0], [-0.5, 0.0, 1.0, 0.0]])  # [source, 3 class logits] per image
    d_fake = torch.tensor([[0.3, 0.0, 0.0, 3.0], [-2.0, 1.0, -1.0, 0.5]])
    return d_real, d_fake, torch.tensor([0, 1]), torch.tensor([2, 0])


def test_acgan_losses_on_hand_computed_numbers():
    """Eq. 2-3: D minimises −(L_S + w L_C), G minimises −(w L_C − L_S) with the non-saturating source term."""
    d_real, d_fake, y_real, y_fake = _acgan_logits()
    method = ACGAN({"aux_weight": 0.7}, 3)
    assert method.default_loss == "nonsaturating"

    def nll(row, label):  # −log softmax(row)[label]
        return -(row[label] - math.log(sum(math.exp(v) for v in row)))

    def softplus(v):
        return math.log1p(math.exp(v))

    r, f = d_real.tolist(), d_fake.tolist()
    l_c = -(nll(r[0][1:], 0) + nll(r[1][1:], 1)) / 2 - (nll(f[0][1:], 2) + nll(f[1][1:], 0)) / 2
    neg_l_s = (softplus(-1.0) + softplus(0.5)) / 2 + (softplus(0.3) + softplus(-2.0)) / 2
    d_loss = method.discriminator_loss("nonsaturating", d_real, d_fake, y_real, y_fake)
    assert d_loss.item() == pytest.approx(neg_l_s - 0.7 * l_c, rel=1e-6)
    g_fake_class = (nll(f[0][1:], 2) + nll(f[1][1:], 0)) / 2
    g_loss = method.generator_loss("nonsaturating", d_fake, None, y_fake)
    assert g_loss.item() == pytest.approx((softplus(-0.3) + softplus(2.0)) / 2 + 0.7 * g_fake_class, rel=1e-6)


@pytest.mark.parametrize("kind", losses.LOSSES)
def test_acgan_with_aux_weight_zero_is_the_plain_gan_loss(kind):
    d_real, d_fake, y_real, y_fake = _acgan_logits()
    method = ACGAN({"aux_weight": 0.0}, 3)
    assert torch.equal(method.discriminator_loss(kind, d_real, d_fake, y_real, y_fake),
                       losses.discriminator_loss(kind, d_real[:, 0], d_fake[:, 0]))
    assert torch.equal(method.generator_loss(kind, d_fake, d_real, y_fake),
                       losses.generator_loss(kind, d_fake[:, 0], d_real[:, 0]))
    weighted = ACGAN({"aux_weight": 1.0}, 3)
    assert weighted.discriminator_loss(kind, d_real, d_fake, y_real, y_fake) > \
        method.discriminator_loss(kind, d_real, d_fake, y_real, y_fake)


def test_acgan_with_aux_weight_zero_never_moves_the_class_head(digits_data):
    run = Run(tiny_cfg("acgan", MODEL_OVERRIDES["acgan"], aux_weight=0.0), tiny_assets(digits_data))
    head = {k: v.clone() for k, v in run.D.classifier.state_dict().items() if "original" in k or k == "bias"}
    trunk = {k: v.clone() for k, v in run.D.trunk.state_dict().items()}
    run.train(3)
    assert all(torch.equal(run.D.classifier.state_dict()[k], v) for k, v in head.items())
    assert any(not torch.equal(run.D.trunk.state_dict()[k], v) for k, v in trunk.items())  # D did train


def test_acgan_training_teaches_the_aux_head_the_classes_of_real_images(digits_data):
    """100 real steps: D's class cross-entropy on the held-out balanced real images falls from ~ln 10 and its
    accuracy leaves chance. DiffAugment off and lr 2e-3 so that 100 steps show it (with cutout it takes longer)."""
    cfg = tiny_cfg("acgan", {**MODEL_OVERRIDES["acgan"], "train.diffaugment": "", "train.lr_d": 2e-3,
                             "train.lr_g": 2e-3})
    run = Run(cfg, tiny_assets(digits_data))
    assert run.loss == "nonsaturating"
    x, y = digits_data.eval.as_float(), digits_data.eval.labels

    def real_class_loss():
        run.D.eval()
        with torch.no_grad():
            out = run.D(x)
        assert out.shape == (len(y), 1 + digits_data.num_classes)
        class_logits = out[:, 1:]
        return torch.nn.functional.cross_entropy(class_logits, y).item(), (class_logits.argmax(1) == y).float().mean()

    before, acc_before = real_class_loss()
    for _ in range(100):
        logs = run.step()
        assert all(math.isfinite(v) for v in logs.values()), logs
    after, acc_after = real_class_loss()
    assert before > 2.0 and after < 0.8 * before
    assert acc_before < 0.2 and acc_after > 0.35


# ---------------------------------------------------------------------------------------------- config checks
@pytest.mark.parametrize("method,overrides,key", [
    ("smooth", {"model.d_conditional": False, "model.g_conditional": False}, "model.d_conditional"),
    ("contentstyle", {"model.g_conditional": False, "model.d_conditional": False}, "model.g_conditional"),
    ("cgan", {"model.g_conditional": False}, "model.d_conditional"),
    ("cgan", {"train.diffaugment": "color,rotate"}, "train.diffaugment"),
    ("acgan", {}, "model.d_conditional"),  # tiny_cfg's projection D: ACGAN's D has none
    ("acgan", {"model.g_conditional": False, "model.d_conditional": False}, "model.g_conditional"),
])
def test_bad_method_model_combinations_are_rejected_before_data(method, overrides, key):
    cfg = tiny_cfg(method, overrides)
    assert any(p.startswith(key) for p in config_problems(cfg)) or key == "train.diffaugment"
    with pytest.raises(ConfigError, match=key):
        Run(cfg, assets=None)  # fails before prepare_assets would load anything


def test_cbgan_runs_with_an_unconditional_generator(digits_data, lt_classifier):
    unconditional = {"model.g_conditional": False, "model.d_conditional": False}
    with pytest.raises(ConfigError, match=r"eval.metrics\[\d\]: 'class_accuracy' compares each image"):
        Run(tiny_cfg("cbgan", unconditional), assets=None)  # class_accuracy reads the label G was asked for
    cfg = tiny_cfg("cbgan", {**unconditional, "eval.metrics": ["fid", "intra_fid", "class_kl"]})
    run = Run(cfg, tiny_assets(digits_data, lt_classifier))
    logs = run.train(3)
    assert run.D.head.mode == "none" and math.isfinite(logs["cbgan_reg"])


# ------------------------------------------------------------------------------------------- a few hundred steps
@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(method_params()))
def test_every_method_trains_200_steps_with_finite_losses(method, digits_data, lt_classifier):
    extra = {"cycle": 50} if method == "cbgan" else {}
    cfg = tiny_cfg(method, MODEL_OVERRIDES.get(method), **extra)
    run = Run(cfg, tiny_assets(digits_data, lt_classifier if METHODS[method].needs_classifier else None))
    for _ in range(200):
        logs = run.step()
        assert all(math.isfinite(v) for v in logs.values()), logs
    assert run.steps_done == 200
    images = run.sample(torch.arange(10))
    assert images.dtype == torch.uint8 and images.shape == (10, 1, 16, 16)
    if method == "cbgan":
        assert not torch.equal(run.method.counts, torch.full((10,), 50.0, dtype=torch.float64))
    if method == "acgan":
        assert isinstance(run.D, AuxiliaryClassifierDiscriminator)
