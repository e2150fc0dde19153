"""A smoke test for every registered component: builds tiny, runs, no NaNs, gradients, safetensors round trip.

Names are collected at import time from a full Registry (built-ins and installed plugins), and the checks
dispatch on the kind and on the Protocol attributes (family, needs, adversarial), so a new component, built-in
or third-party, is covered the moment it registers.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from stylezoo.core.errors import ConfigError
from stylezoo.core.components.kinds import NEEDS, StepContext
from stylezoo.core.components.registry import Registry
from stylezoo.core.components.registry import BUILTIN_PLUGINS as BUILTINS

REGISTRY = Registry()
NAMES = REGISTRY.names()
PLUGINS = [p.name for p in REGISTRY.plugins]
N, SIDE = 2, 32
VGG_NAMES = tuple(f"relu{b}_{i}" for b, n in zip(range(1, 6), (2, 2, 4, 4, 4)) for i in range(1, n + 1))


def images(seed: int, n: int = N, side: int = SIDE) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, side, side, generator=g) * 2 - 1


class TinyExtractor(nn.Module):
    """A frozen random extractor with VGG19's layer names (so loss terms' default layers exist), 4 channels."""

    layer_names = VGG_NAMES
    style_layers = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    content_layers = ("relu4_2",)
    weights = "random"

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(123)
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1) for i in range(len(VGG_NAMES)))
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, image: Tensor, layers: tuple[str, ...]) -> dict[str, Tensor]:
        out, x, deepest = {}, image, max(VGG_NAMES.index(n) for n in layers)
        for i, (name, conv) in enumerate(zip(VGG_NAMES, self.convs)):
            if i and name.endswith("_1"):
                x = F.avg_pool2d(x, 2)
            x = F.relu(conv(x))
            if name in layers:
                out[name] = x
            if i == deepest:
                break
        return out


class TinyDisc(nn.Module):
    """A small conv discriminator with a patch-map output, for the penalties."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(8, 1, 4, 2, 1))

    def forward(self, image: Tensor, **cond: Any) -> Tensor:
        return self.net(image)


# ------------------------------------------------------------------------------------------ helpers


def tiny_overrides(name: str) -> dict[str, Any]:
    """Small, offline settings: size=32 for gens and discs that have a size, random pretrained-network weights."""
    fields = {f.name for f in dataclasses.fields(REGISTRY.get(name).config)}
    ov: dict[str, Any] = {}
    if "size" in fields and name.split("/")[0] in ("gen", "disc"):
        ov["size"] = SIDE
    if "weights" in fields:  # extractors, and generators built on one (gen/adain's encoder)
        ov["weights"] = "random"
    return ov


def build(name: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "random weights" warnings are the point here
        return REGISTRY.build(name, tiny_overrides(name))


def trainable(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad]


def assert_finite(t: Tensor, what: str) -> None:
    assert torch.is_tensor(t) and t.is_floating_point(), f"{what}: expected a float tensor, got {type(t)}"
    assert torch.isfinite(t).all(), f"{what}: NaN or Inf"


def assert_all_grads(module: nn.Module, what: str, every: bool = True) -> None:
    params = trainable(module)
    missing = [n for n, p in params if p.grad is None]
    assert not (missing if every else len(missing) == len(params)), f"{what}: no gradient reached {missing[:5]}"
    params = [(n, p) for n, p in params if p.grad is not None]
    assert all(torch.isfinite(p.grad).all() for _, p in params), f"{what}: non-finite gradients"
    assert any(p.grad.abs().sum() > 0 for _, p in params), f"{what}: all gradients are zero"


def round_trip(name: str, module: nn.Module, tmp_path: Path, run) -> None:  # noqa: ANN001
    """save_file(state_dict) -> load into a freshly built module -> identical outputs in eval mode."""
    path = tmp_path / "state.safetensors"
    state = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path))
    fresh = build(name, seed=987)
    if any(v.is_floating_point() for v in state.values()):
        before = fresh.state_dict()
        assert any(not torch.equal(before[k], v) for k, v in state.items() if v.is_floating_point()), (
            f"{name}: a fresh build equals the original, so the round trip would prove nothing")
    missing, unexpected = fresh.load_state_dict(load_file(str(path)), strict=True)
    assert not missing and not unexpected
    module.eval()
    fresh.eval()
    with torch.no_grad():
        a, b = run(module), run(fresh)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6, msg=f"{name}: outputs differ after the round trip")


def as_tuple(out: Any) -> tuple[Tensor, ...]:
    if isinstance(out, dict):
        return tuple(out[k] for k in sorted(out))
    return out if isinstance(out, tuple) else (out,)


# ------------------------------------------------------------------------------------------ plugins


def test_builtins_have_no_failures():
    builtin = Registry(entry_points=False)
    assert [(p.name, p.error) for p in builtin.failures] == []
    assert {p.name for p in builtin.plugins} == {m.rsplit(".", 1)[-1] for m in BUILTINS}


@pytest.mark.parametrize("plugin", PLUGINS)
def test_plugin_loaded(plugin):
    (info,) = [p for p in REGISTRY.plugins if p.name == plugin]
    assert info.error is None, f"plugin {plugin} ({info.dist}) failed to load: {info.error}"
    assert info.components, f"plugin {plugin} registered nothing"


# ------------------------------------------------------------------------------------------ per component


@pytest.mark.parametrize("name", NAMES)
def test_component_smoke(name, tmp_path):
    kind = name.split("/")[0]
    module = build(name, seed=0)
    assert isinstance(module, nn.Module), f"{name}: factory must return an nn.Module"
    assert module.stylezoo_name == name
    check = {"gen": check_generator, "disc": check_discriminator, "feat": check_extractor,
             "loss": check_loss, "gp": check_penalty}[kind]
    check(name, module, tmp_path)


def check_generator(name: str, gen: nn.Module, tmp_path: Path) -> None:
    family = getattr(gen, "family", None) or REGISTRY.get(name).card.get("family")
    assert family in ("noise", "image"), f"{name}: family must be 'noise' or 'image', got {family!r}"
    if family == "noise":
        latent, side = int(gen.latent_dim), int(getattr(gen, "size", SIDE))
        assert side == SIDE, f"{name}: asked for size={SIDE}, generator says {side}"
        x = torch.randn(N, latent, generator=torch.Generator().manual_seed(1))
    else:
        m = int(gen.size_multiple)
        assert m >= 1
        side = math.ceil(SIDE / m) * m
        x = images(1, side=side)
    # reference-guided generators (needs_style) get one style image per input, as the engine gives them
    cond = {"style": images(16, side=side)} if getattr(gen, "needs_style", False) else {}
    gen.train()
    out = gen(x, **cond)
    assert out.shape == (N, 3, side, side), f"{name}: output {tuple(out.shape)}"
    assert_finite(out, name)
    assert out.min() >= -1 and out.max() <= 1, f"{name}: output leaves [-1, 1]"
    (out * images(2, side=side)).mean().backward()
    assert_all_grads(gen, name)
    round_trip(name, gen, tmp_path, lambda g: as_tuple(g(x, **cond)))


def check_discriminator(name: str, disc: nn.Module, tmp_path: Path) -> None:
    x = images(3).requires_grad_(True)
    disc.train()
    out = disc(x)
    assert out.shape == (N,) or (out.dim() == 4 and out.shape[:2] == (N, 1)), f"{name}: logits {tuple(out.shape)}"
    assert_finite(out, name)
    out.float().mean().backward()
    assert_all_grads(disc, name)
    assert x.grad is not None and x.grad.abs().sum() > 0, f"{name}: no gradient to the input image"
    real = images(4)
    round_trip(name, disc, tmp_path, lambda d: as_tuple(d(real)))


def check_extractor(name: str, feat: nn.Module, tmp_path: Path) -> None:
    layers = tuple(feat.layer_names)
    assert layers and len(set(layers)) == len(layers)
    assert set(feat.style_layers) <= set(layers) and set(feat.content_layers) <= set(layers)
    assert isinstance(feat.weights, str) and "random" in feat.weights, f"{name}: weights says {feat.weights!r}"
    assert trainable(feat) == [], f"{name}: an extractor must be frozen"
    x = images(5).requires_grad_(True)
    asked = (layers[0], layers[-1])
    out = feat(x, asked)
    assert set(out) == set(asked), f"{name}: asked for {asked}, got {sorted(out)}"
    for k, v in out.items():
        assert v.dim() == 4 and v.shape[0] == N, f"{name}: {k} has shape {tuple(v.shape)}"
        assert_finite(v, f"{name}:{k}")
    sum(v.float().pow(2).mean() for v in out.values()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0, f"{name}: no gradient to the input image"
    only_first = feat(images(5), layers[:1])
    assert set(only_first) == {layers[0]}
    round_trip(name, feat, tmp_path, lambda f: as_tuple(f(images(6), asked)))


def check_penalty(name: str, gp: nn.Module, tmp_path: Path) -> None:
    torch.manual_seed(0)
    disc, real, fake = TinyDisc(), images(7), images(8)
    value = gp(disc, real, fake)
    assert value.dim() == 0, f"{name}: penalty must be a scalar"
    assert_finite(value, name)
    assert value >= 0, f"{name}: a penalty is never negative, got {value.item()}"
    if value > 0:
        value.backward()
        assert_all_grads(disc, name, every=False)  # input gradients do not depend on the last bias
    torch.manual_seed(5)
    a = gp(disc, real, fake).detach()
    torch.manual_seed(5)
    b = gp(disc, real, fake).detach()
    assert torch.equal(a, b), f"{name}: not reproducible under the global seed"

    def run(m: nn.Module) -> tuple[Tensor, ...]:
        torch.manual_seed(5)
        with torch.enable_grad():  # penalties differentiate D's input
            return (m(disc, real, fake).detach(),)

    round_trip(name, gp, tmp_path, run)


def check_loss(name: str, term: nn.Module, tmp_path: Path) -> None:
    if getattr(term, "adversarial", False):
        return check_adversarial(name, term, tmp_path)
    assert term.step in ("gen", "disc", "both"), f"{name}: step is {term.step!r}"
    assert set(term.needs) <= NEEDS, f"{name}: unknown needs {set(term.needs) - NEEDS}"
    assert isinstance(term.weight, (int, float)) and math.isfinite(term.weight)
    extractor = TinyExtractor()

    def context(m: nn.Module) -> tuple[StepContext, list[Tensor]]:
        raw = (images(9) * 2).requires_grad_(True)
        logits_real = torch.randn(N, 1, 3, 3, generator=torch.Generator().manual_seed(10)).requires_grad_(True)
        logits_fake = torch.randn(N, 1, 3, 3, generator=torch.Generator().manual_seed(11)).requires_grad_(True)
        fake, content, target, real = torch.tanh(raw), images(12), images(13), images(14)
        layers = tuple(m.feature_layers(extractor))
        assert set(layers) <= set(extractor.layer_names), f"{name}: asks for unknown layers {layers}"
        feats = {"fake": extractor(fake, layers), "content": extractor(content, layers),
                 "target": extractor(target, layers)} if layers else {}
        if "style" in m.needs:
            m.prepare(extractor(images(15, n=3), layers))
        # keys a term reads from ctx.cond (`cond_needs`, e.g. a generator's AdaIN target): shaped like its features
        cond = {k: extractor(images(17), layers)[layers[0]] for k in getattr(m, "cond_needs", ())}
        ctx = StepContext(fake=fake, real=real, content=content, target=target, paired=True,
                          logits_fake=logits_fake, logits_real=logits_real, feats=feats, cond=cond)
        return ctx, [raw, logits_real, logits_fake]

    ctx, leaves = context(term)
    value = term(ctx)
    assert value.dim() == 0, f"{name}: a loss term returns a scalar, got shape {tuple(value.shape)}"
    assert_finite(value, name)
    value.backward()
    grads = [t.grad for t in leaves if t.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads), f"{name}: no finite gradient to its inputs"
    assert any(g.abs().sum() > 0 for g in grads), f"{name}: gradients to its inputs are all zero"
    round_trip(name, term, tmp_path, lambda m: (m(context(m)[0]),))


def check_adversarial(name: str, adv: nn.Module, tmp_path: Path) -> None:
    for shape in ((N,), (N, 1, 3, 3)):
        lr = torch.randn(shape, generator=torch.Generator().manual_seed(20)).requires_grad_(True)
        lf = torch.randn(shape, generator=torch.Generator().manual_seed(21)).requires_grad_(True)
        d, g = adv.d_loss(lr, lf), adv.g_loss(lf)
        for what, v in (("d_loss", d), ("g_loss", g)):
            assert v.dim() == 0, f"{name}.{what} must be a scalar"
            assert_finite(v, f"{name}.{what}")
        (d + g).backward()
        assert lr.grad is not None and lf.grad is not None and lr.grad.abs().sum() > 0
    # the objectives point the right way: D prefers high real and low fake logits, G high fake logits
    hi, lo = torch.full((N,), 3.0), torch.full((N,), -3.0)
    assert adv.d_loss(hi, lo) < adv.d_loss(lo, hi), f"{name}: d_loss rewards the wrong side"
    assert adv.g_loss(hi) < adv.g_loss(lo), f"{name}: g_loss rewards the wrong side"
    assert torch.isfinite(adv.d_loss(torch.full((N,), 80.0), torch.full((N,), -80.0))), f"{name}: unstable logits"
    lr, lf = torch.randn(N), torch.randn(N)
    round_trip(name, adv, tmp_path, lambda m: (m.d_loss(lr, lf), m.g_loss(lf, lr)))


def test_components_reject_bad_config_values():
    """Every config with a `weight` refuses a negative or NaN one, except terms whose sign is meaningful."""
    checked = 0
    for name in NAMES:
        fields = {f.name for f in dataclasses.fields(REGISTRY.get(name).config)}
        if "weight" not in fields or name == "loss/entropy":  # entropy: alpha < 0 rewards uncertainty
            continue
        with pytest.raises(ConfigError):
            REGISTRY.make_config(name, {"weight": -1.0})
        checked += 1
    assert checked >= 5
