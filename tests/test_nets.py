"""Backbones: paper layer shapes at width 1.0, shapes at every resolution, conditioning and projection heads."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from imbgan_core.nets import ARCHITECTURES, build_discriminator, build_generator
from imbgan_core.nets.layers import ProjectionHead


def conv_shapes(module: nn.Module, kind) -> list[tuple]:
    """(in, out, kernel, stride) of every layer of ``kind`` in definition order."""
    return [(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0]) for m in module.modules()
            if type(m).__name__.endswith(kind.__name__)]


def test_sndcgan_matches_cbgan_tables_6_and_7():
    g = build_generator("sndcgan", 128, 10, 32, 3, 1.0)
    assert (g.fc.in_features, g.fc.out_features) == (128, 8192)
    assert conv_shapes(g, nn.ConvTranspose2d) == [(512, 256, 4, 2), (256, 128, 4, 2), (128, 64, 4, 2)]
    assert conv_shapes(g, nn.Conv2d) == [(64, 3, 3, 1)]
    d = build_discriminator("sndcgan", 10, 32, 3, 1.0, "none")
    assert conv_shapes(d, nn.Conv2d) == [(3, 64, 3, 1), (64, 64, 4, 2), (64, 128, 3, 1), (128, 128, 4, 2),
                                         (128, 256, 3, 1), (256, 256, 4, 2), (256, 512, 3, 1)]
    assert (d.fc.in_features, d.fc.out_features) == (512, 1)


def test_resnet_64_matches_cbgan_tables_8_and_9():
    g = build_generator("resnet", 128, 0, 64, 3, 1.0)
    assert g.fc.out_features == 16384
    assert [(b.conv1.in_channels, b.conv2.out_channels) for b in g.blocks] == [(1024, 512), (512, 256),
                                                                               (256, 128), (128, 64)]
    d = build_discriminator("resnet", 0, 64, 3, 1.0, "none")
    assert [(b.conv1.in_channels, b.conv2.out_channels, b.down) for b in d.blocks] == [
        (3, 64, True), (64, 128, True), (128, 256, True), (256, 512, True), (512, 1024, False)]
    assert d.fc.in_features == 1024


def test_resnet_32_is_miyato_cifar_model():
    g = build_generator("resnet", 128, 0, 32, 3, 1.0)
    assert [(b.conv1.in_channels, b.conv2.out_channels) for b in g.blocks] == [(256, 256)] * 3
    d = build_discriminator("resnet", 0, 32, 3, 1.0, "none")
    assert [(b.conv1.out_channels, b.down) for b in d.blocks] == [(128, True), (128, True), (128, False),
                                                                  (128, False)]


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("resolution,channels", [(8, 1), (16, 3), (64, 3)])
def test_shapes_and_range(arch, resolution, channels):
    torch.manual_seed(0)
    g = build_generator(arch, 24, 5, resolution, channels, 0.0625)
    d = build_discriminator(arch, 5, resolution, channels, 0.0625, "hard")
    y = torch.tensor([0, 1, 2, 4])
    x = g(torch.randn(4, 24), y)
    assert x.shape == (4, channels, resolution, resolution)
    assert x.abs().max() <= 1.0
    assert d(x, y).shape == (4,)


def test_width_scales_channels():
    small = sum(p.numel() for p in build_generator("sndcgan", 64, 10, 16, 1, 0.25).parameters())
    large = sum(p.numel() for p in build_generator("sndcgan", 64, 10, 16, 1, 0.5).parameters())
    assert large > 2 * small


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_conditional_generator_uses_labels_unconditional_ignores_them(arch):
    z = torch.randn(6, 32)
    torch.manual_seed(0)
    cond = build_generator(arch, 32, 4, 16, 1, 0.125)
    with torch.no_grad():
        for m in cond.modules():  # move the class gains away from their identity initialisation
            if isinstance(m, nn.Embedding):
                m.weight.normal_()
    cond.eval()
    assert not torch.allclose(cond(z, torch.zeros(6, dtype=torch.long)), cond(z, torch.ones(6, dtype=torch.long)))
    uncond = build_generator(arch, 32, 0, 16, 1, 0.125).eval()
    assert torch.equal(uncond(z, torch.zeros(6, dtype=torch.long)), uncond(z, torch.ones(6, dtype=torch.long)))


def test_biggan_hierarchical_latent_needs_enough_dims():
    g = build_generator("biggan", 24, 3, 32, 1, 0.125)
    assert g.n_chunks == 4  # one chunk for the 4x4 input and one per up-block
    with pytest.raises(ValueError, match="z_dim"):
        build_generator("biggan", 3, 3, 32, 1, 0.125)


def test_soft_head_is_linear_in_probability_vectors_and_one_hot_equals_index():
    torch.manual_seed(0)
    head = ProjectionHead(8, 4, "soft").eval()
    phi = torch.randn(3, 8)
    idx = torch.tensor([0, 2, 3])
    one_hot = torch.nn.functional.one_hot(idx, 4).float()
    assert torch.allclose(head(phi, idx), head(phi, one_hot))
    p = torch.tensor([[0.2, 0.8, 0.0, 0.0]] * 3)
    mixed = 0.2 * head(phi, torch.zeros(3, dtype=torch.long)) + 0.8 * head(phi, torch.ones(3, dtype=torch.long))
    assert torch.allclose(head(phi, p), mixed, atol=1e-6)
    assert head.embed.parametrizations.weight.original.shape == (8, 4)  # bias-free linear K -> F
    assert head.embed.bias is None


def test_hard_head_rejects_probabilities_and_none_head_ignores_labels():
    hard = ProjectionHead(8, 4, "hard")
    with pytest.raises(TypeError, match="hard-label"):
        hard(torch.randn(2, 8), torch.full((2, 4), 0.25))
    soft = ProjectionHead(8, 4, "soft")
    with pytest.raises(ValueError, match="N x 4"):
        soft(torch.randn(2, 8), torch.full((2, 3), 1 / 3))
    none = ProjectionHead(8, 4, "none")
    assert torch.equal(none(torch.randn(2, 8), None), torch.zeros(2))


def test_discriminator_layers_are_spectrally_normalised():
    d = build_discriminator("sndcgan", 4, 16, 1, 0.25, "hard").train()
    x = torch.randn(8, 1, 16, 16)
    for _ in range(30):  # power iterations converge during training forwards
        d(x, torch.zeros(8, dtype=torch.long))
    d.eval()
    for m in d.modules():
        if isinstance(m, nn.Conv2d):
            sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
            assert sigma == pytest.approx(1.0, abs=0.05)
