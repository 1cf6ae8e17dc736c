"""The training loop: DiffAugment ranges, EMA, exact resume, divergence, checkpoints, sampling and evaluation."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from imbgan_core.augment import DiffAugment, brightness, contrast, cutout, parse_policy, saturation, translation
from imbgan_core.training import CHECKPOINT_FILE, CheckpointError, DivergedError, Run, update_ema

from helpers_gan import parameters_equal, tiny_assets, tiny_cfg


# ------------------------------------------------------------------------------------------------ DiffAugment
def per_image_offsets(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    return (after - before).flatten(1).mean(1)


def test_brightness_shift_within_half():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(2000, 1, 4, 4)
    shift = per_image_offsets(x, brightness(x, gen))
    assert shift.min() >= -0.5 and shift.max() <= 0.5
    assert shift.min() < -0.45 and shift.max() > 0.45  # the whole range is used


def test_saturation_and_contrast_factors():
    gen = torch.Generator().manual_seed(0)
    x = torch.tensor([[-0.5, 0.5, 0.0]]).view(1, 3, 1, 1).repeat(2000, 1, 1, 1)  # channel mean 0
    factor = saturation(x, gen)[:, 1, 0, 0] / 0.5
    assert factor.min() >= 0.0 and factor.max() <= 2.0 and factor.min() < 0.05 and factor.max() > 1.95
    y = torch.tensor([-0.5, 0.5]).view(1, 1, 1, 2).repeat(2000, 1, 1, 1)  # image mean 0
    factor = contrast(y, gen)[:, 0, 0, 1] / 0.5
    assert factor.min() >= 0.5 and factor.max() <= 1.5 and factor.min() < 0.55 and factor.max() > 1.45


def test_translation_within_one_eighth_and_zero_fill():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(500, 1, 16, 16)
    x[:, :, 8, 8] = 1.0  # one bright pixel: its new position is the shift
    out = translation(x, gen)
    pos = out.flatten(1).argmax(1)
    dy, dx = pos // 16 - 8, pos % 16 - 8
    assert dy.abs().max() == 2 and dx.abs().max() == 2  # 16 / 8 = 2 pixels, both ends reached
    assert torch.equal(out.sum((1, 2, 3)), torch.ones(500))
    assert translation(torch.ones(500, 1, 16, 16), gen).min() == 0.0  # padding fills with zeros


def test_cutout_zeroes_a_half_size_square():
    gen = torch.Generator().manual_seed(0)
    out = cutout(torch.ones(500, 1, 16, 16), gen)
    zeros = (out == 0).flatten(1).sum(1)
    assert zeros.max() == 64  # 8 x 8 when fully inside
    assert zeros.min() >= 16  # clipped at a corner it keeps at least a quarter of the square


def test_diffaugment_policy_and_determinism():
    assert parse_policy("color, translation,cutout") == ["color", "translation", "cutout"]
    assert parse_policy("") == []
    with pytest.raises(ValueError, match="train.diffaugment.*'rotate'"):
        parse_policy("color,rotate")
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    aug = DiffAugment("color,translation,cutout")
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert torch.equal(DiffAugment("")(x, torch.Generator()), x)


def test_diffaugment_is_differentiable():
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    DiffAugment("color,translation,cutout")(x, torch.Generator().manual_seed(0)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# -------------------------------------------------------------------------------------------------------- EMA
def test_ema_update_formula_and_buffers():
    ema, model = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        ema.weight.fill_(1.0)
        model.weight.fill_(3.0)
        model.running_mean.fill_(7.0)
    update_ema(ema, model, 0.75)
    assert ema.weight.tolist() == [1.5, 1.5]  # 0.75 * 1 + 0.25 * 3
    assert ema.running_mean.tolist() == [7.0, 7.0]


def test_ema_tracks_generator_until_start_then_averages(digits_data):
    run = Run(tiny_cfg("cgan", {"train.ema_start": 2, "train.ema_decay": 0.9}), tiny_assets(digits_data))
    run.train(2)
    assert parameters_equal(run.G_ema, run.G)
    before = {k: v.clone() for k, v in run.G_ema.state_dict().items()}
    run.train(1)
    w_name = "fc.weight"
    expected = 0.9 * before[w_name] + 0.1 * run.G.state_dict()[w_name]
    assert torch.allclose(run.G_ema.state_dict()[w_name], expected, atol=1e-7)
    assert not torch.equal(run.G_ema.state_dict()[w_name], run.G.state_dict()[w_name])


def test_ema_generator_samples_with_batchnorm_statistics_of_its_own_weights(digits_data):
    run = Run(tiny_cfg("cgan", {"train.ema_decay": 0.999, "train.lr_g": 1e-2}), tiny_assets(digits_data))
    run.train(10)
    run.sample(torch.arange(10))  # standing statistics are computed for the EMA generator here
    bn = run.G_ema.norms[0].bn
    inputs = []
    hook = bn.register_forward_hook(lambda module, args, out: inputs.append(args[0]))
    with torch.no_grad():
        run.G_ema.eval()(torch.randn(2048, 32), torch.randint(0, 10, (2048,)))
    hook.remove()
    own_mean = inputs[0].mean(dim=(0, 2, 3))
    scale = inputs[0].std(dim=(0, 2, 3)).mean()
    assert (bn.running_mean - own_mean).abs().max() < 0.04 * scale  # G's copied statistics: ~0.09
    run.train(1)  # training copies G's statistics back; they belong to G's weights
    assert torch.equal(run.G_ema.norms[0].bn.running_mean, run.G.norms[0].bn.running_mean)


# ---------------------------------------------------------------------------------------------- exact resume
def full_state(run: Run) -> dict:
    return {"G": run.G.state_dict(), "D": run.D.state_dict(), "G_ema": run.G_ema.state_dict(),
            "opt_g": run.opt_g.state_dict()["state"], "opt_d": run.opt_d.state_dict()["state"],
            "method": run.method.state_dict()}


def assert_same(a, b, path=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    else:
        assert a == b, path


@pytest.mark.parametrize("method,extra", [
    ("cgan", {"train.n_dis": 2}),
    ("cbgan", {"train.ema_start": 3}),
    ("mixup", {}),
    ("oversample", {"train.batch_size": 200}),  # epochs of the weighted sampler roll over mid-run
])
def test_resume_is_bit_exact(method, extra, digits_data, lt_classifier, tmp_path):
    params = {"cycle": 2} if method == "cbgan" else {}
    cfg = tiny_cfg(method, extra, **params)
    classifier = lt_classifier if method == "cbgan" else None
    straight = Run(cfg, tiny_assets(digits_data, classifier))
    straight.train(6)
    first = Run(cfg, tiny_assets(digits_data, classifier))
    first.train(3)
    first.save(tmp_path)
    resumed = Run(cfg.replace({"train.steps": 500}), tiny_assets(digits_data, classifier))
    resumed.load(tmp_path)
    assert resumed.steps_done == 3
    resumed.train(3)
    assert_same(full_state(straight), full_state(resumed))
    assert torch.equal(straight.sample(torch.arange(10)), resumed.sample(torch.arange(10)))


def test_checkpoint_from_another_config_is_refused(digits_data, tmp_path):
    run = Run(tiny_cfg("cgan"), tiny_assets(digits_data))
    run.save(tmp_path)
    other = Run(tiny_cfg("cgan", {"train.lr_g": 1e-3}), tiny_assets(digits_data))
    with pytest.raises(CheckpointError, match=r"train\.lr_g"):
        other.load(tmp_path)


def test_corrupt_or_missing_checkpoint_names_the_file(digits_data, tmp_path):
    run = Run(tiny_cfg("cgan"), tiny_assets(digits_data))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        run.load(tmp_path)
    path = run.save(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=CHECKPOINT_FILE):
        run.load(tmp_path)
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temporary file


# ------------------------------------------------------------------------------------------------ divergence
def test_non_finite_loss_raises_diverged_error_naming_step_and_loss(digits_data):
    run = Run(tiny_cfg("cgan"), tiny_assets(digits_data))
    run.train(2)
    with torch.no_grad():
        run.D.fc.parametrizations.weight.original.fill_(float("nan"))
    with pytest.raises(DivergedError) as info:
        run.step()
    assert info.value.step == 3 and info.value.loss_name == "loss_d" and math.isnan(info.value.value)
    assert "step 3" in str(info.value) and "loss_d" in str(info.value)


def test_non_finite_generator_term_is_named(digits_data):
    run = Run(tiny_cfg("contentstyle"), tiny_assets(digits_data))
    with torch.no_grad():
        run.G.style_map[0].weight.fill_(float("inf"))
    with pytest.raises(DivergedError, match="jacobian_reg|loss"):
        run.step()


# ------------------------------------------------------------------------------------- side effects, sampling
def test_run_leaves_global_rng_and_threads_alone(digits_data):
    threads = torch.get_num_threads()
    state = torch.random.get_rng_state()
    run = Run(tiny_cfg("mixup"), tiny_assets(digits_data))
    run.train(2)
    run.sample(torch.arange(4))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.get_num_threads() == threads


def test_same_seed_same_run_other_seed_other_run(digits_data):
    a, b = (Run(tiny_cfg("cgan"), tiny_assets(digits_data)) for _ in range(2))
    c = Run(tiny_cfg("cgan", {"train.seed": 1}), tiny_assets(digits_data))
    for run in (a, b, c):
        run.train(2)
    assert parameters_equal(a.G, b.G) and not parameters_equal(a.G, c.G)


def test_sample_is_uint8_reproducible_and_does_not_disturb_training(digits_data, tmp_path):
    a, b = (Run(tiny_cfg("cgan"), tiny_assets(digits_data)) for _ in range(2))
    a.train(2)
    b.train(2)
    images = a.sample(torch.tensor([0, 1, 9]))
    assert images.dtype == torch.uint8 and images.shape == (3, 1, 16, 16)
    assert torch.equal(images, a.sample(torch.tensor([0, 1, 9])))
    assert not torch.equal(images, a.sample(torch.tensor([0, 1, 9]), seed=123))
    path = a.save_sample_grid(tmp_path / "grid.png", per_class=3)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    a.train(2)
    b.train(2)
    assert parameters_equal(a.G, b.G)  # sampling consumed none of the training streams


def test_amp_on_cpu_warns_and_runs_fp32(digits_data):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = Run(tiny_cfg("cgan", {"train.amp": True}), tiny_assets(digits_data))
    assert any("amp" in str(w.message) for w in caught)
    assert not run.amp and math.isfinite(run.step()["loss_g"])


# ------------------------------------------------------------------------------------------------ evaluation
def test_evaluate_is_reproducible_and_leaves_training_untouched(digits_data, annotator):
    from helpers_gan import tiny_eval_assets

    assets = tiny_eval_assets(digits_data, annotator, tiny_cfg("cgan"))
    a, b = Run(tiny_cfg("cgan"), assets), Run(tiny_cfg("cgan"), assets)
    a.train(3)
    b.train(3)
    first, second = a.evaluate(), a.evaluate()
    assert math.isfinite(first.scalars["intra_fid"]) and 0.0 <= first.scalars["class_accuracy"] <= 1.0
    assert first.scalars == second.scalars
    assert len(first.per_class["fid"]) == digits_data.num_classes
    a.train(2)
    b.train(2)
    assert parameters_equal(a.G, b.G)
