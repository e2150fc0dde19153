"""The built-in generators and discriminators: shapes, ranges, gradients, spectral norm, config errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import stylezoo
from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import ConfigError
from stylezoo.core.files.checkpoint import load, load_module_state, prefixed, save, section

MODULES = ("stylezoo.plugins.dcgan", "stylezoo.plugins.encdec", "stylezoo.plugins.patchgan", "stylezoo.plugins.unet")
SMALL = {"channels": 8}  # narrow networks keep every test fast


@pytest.fixture(scope="module")
def reg() -> Registry:
    r = Registry(builtins=MODULES, entry_points=False)
    assert not r.failures, r.failures
    return r


def rand_images(n: int, h: int, w: int | None = None, c: int = 3) -> torch.Tensor:
    return torch.rand(n, c, h, w or h) * 2 - 1


def assert_grads(module: nn.Module, out: torch.Tensor) -> None:
    module.zero_grad(set_to_none=True)
    out.sum().backward()
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    assert params
    for name, p in params:
        assert p.grad is not None, f"no gradient reached {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient in {name}"


# ------------------------------------------------------------------------------------------ gen/dcgan
@pytest.mark.parametrize("size", [32, 64, 128])
def test_dcgan_gen_output_side_equals_size(reg: Registry, size: int) -> None:
    g = reg.build("gen/dcgan", {"size": size, "latent_dim": 16, **SMALL})
    assert g.family == "noise" and g.latent_dim == 16 and g.size == size
    out = g(torch.randn(2, 16))
    assert out.shape == (2, 3, size, size)
    assert g(torch.randn(2, 16, 1, 1)).shape == (2, 3, size, size)  # 4-d noise is accepted too


def test_dcgan_gen_defaults_are_the_classic_network(reg: Registry) -> None:
    g = reg.build("gen/dcgan")
    convs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [512, 256, 128, 64, 3]
    assert convs[0].in_channels == 128
    big = convs[1].weight.detach()
    assert 0.018 < big.std().item() < 0.022 and abs(big.mean().item()) < 0.002  # N(0, 0.02) init


def test_dcgan_gen_range_grads_and_ignored_cond(reg: Registry) -> None:
    g = reg.build("gen/dcgan", {"size": 32, "latent_dim": 16, **SMALL})
    out = g(torch.randn(4, 16) * 50, label=torch.zeros(4, dtype=torch.long))
    assert out.min() >= -1 and out.max() <= 1
    assert out.std() > 0.01  # not a constant image
    assert_grads(g, out)


def test_dcgan_gen_rejects_wrong_noise(reg: Registry) -> None:
    g = reg.build("gen/dcgan", {"size": 32, "latent_dim": 16, **SMALL})
    with pytest.raises(ValueError, match=r"\(N, 16\)"):
        g(torch.randn(2, 8))


# ------------------------------------------------------------------------------------------ disc/dcgan
@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("sn", [False, True])
def test_dcgan_disc_logits(reg: Registry, size: int, sn: bool) -> None:
    d = reg.build("disc/dcgan", {"size": size, "spectral_norm": sn, **SMALL})
    x = rand_images(3, size)
    out = d(x, label=torch.zeros(3))  # unknown cond kwargs are ignored
    assert out.shape == (3,)
    assert d.head.in_features == 4 * 4 * 8 * 2 ** (size.bit_length() - 4)  # sized from the image size
    has_in = any(isinstance(m, nn.InstanceNorm2d) for m in d.modules())
    assert has_in is not sn
    assert_grads(d, out)


def test_dcgan_disc_spectral_norm_bounds_layers(reg: Registry) -> None:
    d = reg.build("disc/dcgan", {"size": 32, "spectral_norm": True, **SMALL})
    d.train()
    for _ in range(30):  # power iterations converge during forward passes
        d(rand_images(2, 32))
    d.eval()
    w = d.head.weight.detach()
    assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=0.05)


def test_dcgan_disc_condition(reg: Registry) -> None:
    d = reg.build("disc/dcgan", {"size": 32, "cond_channels": 2, **SMALL})
    assert d(rand_images(2, 32), condition=rand_images(2, 32, c=2)).shape == (2,)
    with pytest.raises(ValueError, match="no condition"):
        d(rand_images(2, 32))
    plain = reg.build("disc/dcgan", {"size": 32, **SMALL})
    with pytest.raises(ValueError, match="cond_channels"):
        plain(rand_images(2, 32), condition=rand_images(2, 32))


def test_dcgan_disc_wrong_image_size_is_explained(reg: Registry) -> None:
    d = reg.build("disc/dcgan", {"size": 32, **SMALL})
    with pytest.raises(ValueError, match="built for 32x32"):
        d(rand_images(1, 64))


# ------------------------------------------------------------------------------------------ gen/encdec
@pytest.mark.parametrize("hw", [(32, 32), (32, 48), (20, 28)])
def test_encdec_keeps_the_input_size(reg: Registry, hw: tuple[int, int]) -> None:
    g = reg.build("gen/encdec", {"n_res": 2, **SMALL})
    assert g.family == "image" and g.size_multiple == 4
    out = g(rand_images(2, *hw) * 20)
    assert out.shape == (2, 3, *hw)  # 20x28 is not a multiple of 4 and still comes back at its size
    assert out.min() >= -1 and out.max() <= 1 and out.std() > 0.01
    assert_grads(g, out)


def test_encdec_n_down_sets_size_multiple(reg: Registry) -> None:
    g = reg.build("gen/encdec", {"n_down": 3, "n_res": 1, **SMALL})
    assert g.size_multiple == 8
    assert g(rand_images(1, 16, 24)).shape == (1, 3, 16, 24)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in g.modules())  # upsample + conv only


# ------------------------------------------------------------------------------------------ disc/patch
@pytest.mark.parametrize("size,side", [(32, 2), (64, 6)])
def test_patch_logit_map(reg: Registry, size: int, side: int) -> None:
    d = reg.build("disc/patch", {"size": size, **SMALL})
    out = d(rand_images(2, size), label=torch.zeros(2))
    assert out.shape == (2, 1, side, side)
    assert_grads(d, out)


@pytest.mark.parametrize("size", [32, 64])
def test_patch_conditional(reg: Registry, size: int) -> None:
    d = reg.build("disc/patch", {"cond_channels": 3, **SMALL})
    assert d.net[0].in_channels == 6
    out = d(rand_images(2, size), condition=rand_images(2, size))
    assert out.shape[:2] == (2, 1)
    assert_grads(d, out)
    with pytest.raises(ValueError, match="no condition"):
        d(rand_images(2, size))


def test_patch_spectral_norm_and_small_images(reg: Registry) -> None:
    d = reg.build("disc/patch", {"spectral_norm": True, "n_layers": 2, **SMALL})
    assert not any(isinstance(m, nn.InstanceNorm2d) for m in d.modules())
    out = d(rand_images(2, 16))
    assert out.shape == (2, 1, 2, 2)
    assert_grads(d, out)
    tiny = reg.build("disc/patch", SMALL)
    with pytest.raises(ValueError, match="at least 24px"):
        tiny(rand_images(1, 16))


# ------------------------------------------------------------------------------------------ gen/unet
@pytest.mark.parametrize("size,depth", [(32, 4), (64, 5)])
def test_unet_depth_from_size(reg: Registry, size: int, depth: int) -> None:
    g = reg.build("gen/unet", {"size": size, **SMALL})
    assert g.family == "image" and g.depth == depth and g.size_multiple == 2**depth
    out = g(rand_images(2, size) * 20)
    assert out.shape == (2, 3, size, size)
    assert out.min() >= -1 and out.max() <= 1 and out.std() > 0.01
    assert_grads(g, out)
    assert g(rand_images(1, 2**depth, 3 * 2**depth)).shape == (1, 3, 2**depth, 3 * 2**depth)


def test_unet_dropout_batch_norm_and_bad_sides(reg: Registry) -> None:
    g = reg.build("gen/unet", {"size": 128, "norm": "batch", **SMALL})
    assert g.depth == 6
    assert sum(isinstance(m, nn.Dropout) for m in g.modules()) == 3  # pix2pix: inner decoder layers
    assert any(isinstance(m, nn.BatchNorm2d) for m in g.modules())
    g.eval()
    x = rand_images(1, 64)
    assert torch.equal(g(x), g(x))  # dropout is off in eval mode
    with pytest.raises(ValueError, match="multiples of 64"):
        g(rand_images(1, 64, 96))
    assert reg.build("gen/unet", {"size": 64, "depth": 2, **SMALL}).size_multiple == 4


# ------------------------------------------------------------------------------------------ configs, cards, checkpoints
@pytest.mark.parametrize(
    "name,overrides,message",
    [
        ("gen/dcgan", {"size": 48}, "32, 64, 128, 256"),
        ("gen/dcgan", {"latent_dim": 0}, "latent_dim"),
        ("disc/dcgan", {"size": 48}, "power of two"),
        ("gen/encdec", {"n_down": 9}, "n_down"),
        ("gen/encdec", {"norm": "batch"}, "'instance', 'instance-encoder'"),
        ("disc/patch", {"size": 16}, "lower n_layers"),
        ("disc/patch", {"n_layers": 0}, "n_layers"),
        ("gen/unet", {"norm": "group"}, "'instance', 'batch'"),
        ("gen/unet", {"size": 30}, "multiple of 4"),
        ("gen/unet", {"depth": 9}, "depth"),
    ],
)
def test_invalid_configs_raise_config_error(name: str, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        stylezoo.build(name, **overrides)
    assert str(info.value).startswith(name)  # the message names the component


def test_cards_agree_with_the_classes(reg: Registry) -> None:
    for name in ("gen/dcgan", "gen/encdec", "gen/unet"):
        entry = reg.get(name)
        assert entry.card["family"] == entry.factory.family
        assert entry.card.get("paper") and entry.card.get("licence") == "Apache-2.0"
    assert "1611.07004" in reg.get("gen/unet").card["paper"]


@pytest.mark.parametrize("name,overrides", [
    ("disc/dcgan", {"size": 32, "spectral_norm": True, **SMALL}),
    ("disc/patch", {"spectral_norm": True, "cond_channels": 1, **SMALL}),
    ("gen/unet", {"size": 32, **SMALL}),
])
def test_safetensors_round_trip(reg: Registry, tmp_path, name: str, overrides: dict) -> None:
    kw = {"condition": rand_images(2, 32, c=1)} if overrides.get("cond_channels") else {}
    a = reg.build(name, overrides)
    a(rand_images(2, 32), **kw)  # a training-mode pass moves batch-norm stats and spectral-norm vectors
    path = save(tmp_path / "m.safetensors", prefixed("m", a.state_dict()), {"name": name})
    tensors, _ = load(path)
    b = reg.build(name, overrides)
    load_module_state(b, section(tensors, "m"), "model")
    a.eval()
    b.eval()
    x = rand_images(2, 32)
    assert torch.allclose(a(x, **kw), b(x, **kw))


def test_encdec_residual_starts_as_identity_and_learns() -> None:
    """residual=True: tanh(head + atanh(x)) with a zero head is the identity; gradients reach the head."""
    g = stylezoo.build("gen/encdec", residual=True, channels=8, n_res=1)
    x = torch.rand(2, 3, 32, 48) * 1.8 - 0.9
    y = g(x)
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)
    y.square().mean().backward()
    assert g.head[1].weight.grad is not None and g.head[1].weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="residual"):
        stylezoo.build("gen/encdec", residual=True, out_channels=1)


@pytest.mark.parametrize("norm", ["instance", "instance-encoder"])
def test_encdec_norms_place_their_layers_and_keep_the_identity_start(norm: str) -> None:
    """"instance-encoder": instance norm in the stem and downsampling only (the residual blocks and upsampling,
    where instance norm's droplet blots form, have none, and their convs a bias instead)."""
    from torch import nn

    g = stylezoo.build("gen/encdec", residual=True, channels=8, n_res=2, norm=norm)

    def kinds(m: nn.Module) -> set[type]:
        return {type(c) for c in m.modules() if isinstance(c, nn.InstanceNorm2d)}

    enc = kinds(g.stem) | kinds(g.down)
    dec = kinds(g.res) | kinds(g.up)
    expected = {"instance": ({nn.InstanceNorm2d}, {nn.InstanceNorm2d}),
                "instance-encoder": ({nn.InstanceNorm2d}, set())}
    assert (enc, dec) == expected[norm]
    convs = [c for c in g.res.modules() if isinstance(c, nn.Conv2d)]
    assert convs and all((c.bias is not None) == (norm == "instance-encoder") for c in convs)
    x = torch.rand(2, 3, 32, 32) * 1.8 - 0.9
    torch.testing.assert_close(g(x), x, atol=1e-5, rtol=0)
