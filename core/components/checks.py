"""The checks every component passes, for the built-ins and for plugin authors' own components.

From your plugin's test suite::

    import pytest
    from stylezoo.testing import check_component, plugin_components

    @pytest.mark.parametrize("name", plugin_components("my_plugin"))
    def test_my_component(name, tmp_path):
        check_component(name, tmp_path)

Each check builds the component small and offline (size 32, `weights="random"` where it has weights), runs it
on tiny tensors the way the engine does (dispatching on the kind and on `family`, `needs`, `adversarial`),
and checks shapes, finite values, gradients and a safetensors round trip of its state. A failed check raises
ComponentCheckError (an AssertionError) that names the component and what is wrong.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .kinds import NEEDS, StepContext
from .registry import Registry, default_registry

N, SIDE = 2, 32
VGG_NAMES = tuple(f"relu{b}_{i}" for b, n in zip(range(1, 6), (2, 2, 4, 4, 4)) for i in range(1, n + 1))


class ComponentCheckError(AssertionError):
    """A component does not do what the engine relies on; the message says which and what."""


def _expect(ok: Any, message: str) -> None:
    if not ok:
        raise ComponentCheckError(message)


def check_component(name: str, tmp_path: str | Path | None = None, *, registry: Registry | None = None) -> None:
    """Run the checks of `name`'s kind on it; raises ComponentCheckError if one fails. `tmp_path`: a folder
    for the round trip's file (default: a temporary one)."""
    reg = registry or default_registry()
    name = reg.get(name).name
    if tmp_path is None:
        with tempfile.TemporaryDirectory() as tmp:
            return check_component(name, tmp, registry=reg)
    module = build(reg, name, seed=0)
    _expect(isinstance(module, nn.Module), f"{name}: its factory must return an nn.Module, got {type(module).__name__}")
    _expect(getattr(module, "stylezoo_name", name) == name, f"{name}: built as {getattr(module, 'stylezoo_name', '?')}")
    check = {"gen": check_generator, "disc": check_discriminator, "feat": check_extractor, "loss": check_loss,
             "gp": check_penalty}[name.split("/")[0]]
    check(reg, name, module, Path(tmp_path))


def plugin_components(plugin: str, *, registry: Registry | None = None) -> list[str]:
    """The names a loaded plugin registered (by its entry-point name, module name or distribution name);
    refused when the plugin failed to load or is not there, so a broken plugin cannot pass with no checks."""
    reg = registry or default_registry()
    _ = reg.entries
    found = [p for p in reg.plugins if plugin in (p.name, p.module, p.dist)]
    _expect(found, f"no plugin {plugin!r} is loaded (loaded: {', '.join(p.name for p in reg.plugins)})")
    errors = [f"{p.name}: {p.error}" for p in found if p.error]
    _expect(not errors, f"plugin {plugin!r} failed to load: {'; '.join(errors)}")
    return sorted(n for p in found for n in p.components)


def _images(seed: int, n: int = N, side: int = SIDE) -> Tensor:
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


def tiny_overrides(reg: Registry, name: str) -> dict[str, Any]:
    """Small, offline settings: size=32 for gens and discs that have a size, random pretrained-network weights."""
    fields = {f.name for f in dataclasses.fields(reg.get(name).config)}
    ov: dict[str, Any] = {}
    if "size" in fields and name.split("/")[0] in ("gen", "disc"):
        ov["size"] = SIDE
    if "weights" in fields:  # extractors, and generators built on one (gen/adain's encoder)
        ov["weights"] = "random"
    return ov


def build(reg: Registry, name: str, seed: int) -> Any:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "random weights" warnings are the point here
        return reg.build(name, tiny_overrides(reg, name))


def _trainable(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad]


def _finite(t: Tensor, what: str) -> None:
    _expect(torch.is_tensor(t) and t.is_floating_point(), f"{what}: expected a float tensor, got {type(t)}")
    _expect(torch.isfinite(t).all(), f"{what}: NaN or Inf")


def _grads(module: nn.Module, what: str, every: bool = True) -> None:
    params = _trainable(module)
    missing = [n for n, p in params if p.grad is None]
    _expect(not (missing if every else len(missing) == len(params)), f"{what}: no gradient reached {missing[:5]}")
    grads = [p.grad for _, p in params if p.grad is not None]
    _expect(all(torch.isfinite(g).all() for g in grads), f"{what}: non-finite gradients")
    _expect(any(g.abs().sum() > 0 for g in grads), f"{what}: all gradients are zero")


def round_trip(reg: Registry, name: str, module: Any, tmp_path: Path, run: Callable[[Any], tuple[Tensor, ...]]) -> None:
    """save_file(state_dict) -> load into a freshly built module -> identical outputs in eval mode."""
    path = tmp_path / "state.safetensors"
    state = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path))
    fresh = build(reg, name, seed=987)
    before = fresh.state_dict()
    if any(v.is_floating_point() for v in state.values()) and all(
            torch.equal(before[k], v) for k, v in state.items() if v.is_floating_point() and k in before):
        # a component whose weights come from its config alone (seeded from it, or pretrained): equal builds
        # are right, so the fresh one is perturbed for the round trip to prove that loading restores the weights
        with torch.no_grad():
            for t in before.values():
                if t.is_floating_point():
                    t.add_(1.0)
    missing, unexpected = fresh.load_state_dict(load_file(str(path)), strict=True)
    _expect(not missing and not unexpected, "check failed: not missing and not unexpected")
    module.eval()
    fresh.eval()
    with torch.no_grad():
        a, b = run(module), run(fresh)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6, msg=f"{name}: outputs differ after the round trip")


def _as_tuple(out: Any) -> tuple[Tensor, ...]:
    if isinstance(out, dict):
        return tuple(out[k] for k in sorted(out))
    return out if isinstance(out, tuple) else (out,)


def check_generator(reg: Registry, name: str, gen: Any, tmp_path: Path) -> None:
    family = getattr(gen, "family", None) or reg.get(name).card.get("family")
    _expect(family in ("noise", "image"), f"{name}: family must be 'noise' or 'image', got {family!r}")
    if family == "noise":
        latent, side = int(gen.latent_dim), int(getattr(gen, "size", SIDE))
        _expect(side == SIDE, f"{name}: asked for size={SIDE}, generator says {side}")
        x = torch.randn(N, latent, generator=torch.Generator().manual_seed(1))
    else:
        m = int(gen.size_multiple)
        _expect(m >= 1, "check failed: m >= 1")
        side = math.ceil(SIDE / m) * m
        x = _images(1, side=side)
    # reference-guided generators (needs_style) get one style image per input, as the engine gives them
    cond = {"style": _images(16, side=side)} if getattr(gen, "needs_style", False) else {}
    gen.train()
    out = gen(x, **cond)
    _expect(out.shape == (N, 3, side, side), f"{name}: output {tuple(out.shape)}")
    _finite(out, name)
    _expect(out.min() >= -1 and out.max() <= 1, f"{name}: output leaves [-1, 1]")
    (out * _images(2, side=side)).mean().backward()
    # generators whose parts learn on different images of a batch (`trains_in_turn`, gen/wct's decoders)
    _grads(gen, name, every=not getattr(gen, "trains_in_turn", False))
    round_trip(reg, name, gen, tmp_path, lambda g: _as_tuple(g(x, **cond)))


def check_discriminator(reg: Registry, name: str, disc: Any, tmp_path: Path) -> None:
    x = _images(3).requires_grad_(True)
    disc.train()
    out = disc(x)
    _expect(out.shape == (N,) or (out.dim() == 4 and out.shape[:2] == (N, 1)), f"{name}: logits {tuple(out.shape)}")
    _finite(out, name)
    out.float().mean().backward()
    _grads(disc, name)
    _expect(x.grad is not None and x.grad.abs().sum() > 0, f"{name}: no gradient to the input image")
    real = _images(4)
    round_trip(reg, name, disc, tmp_path, lambda d: _as_tuple(d(real)))


def check_extractor(reg: Registry, name: str, feat: Any, tmp_path: Path) -> None:
    layers = tuple(feat.layer_names)
    _expect(layers and len(set(layers)) == len(layers), "check failed: layers and len(set(layers)) == len(layers)")
    _expect(set(feat.style_layers) <= set(layers) and set(feat.content_layers) <= set(layers),
            "check failed: set(feat.style_layers) <= set(layers) and set(feat.content_l")
    _expect(isinstance(feat.weights, str) and "random" in feat.weights, f"{name}: weights says {feat.weights!r}")
    _expect(_trainable(feat) == [], f"{name}: an extractor must be frozen")
    x = _images(5).requires_grad_(True)
    asked = (layers[0], layers[-1])
    out = feat(x, asked)
    _expect(set(out) == set(asked), f"{name}: asked for {asked}, got {sorted(out)}")
    for k, v in out.items():
        _expect(v.dim() == 4 and v.shape[0] == N, f"{name}: {k} has shape {tuple(v.shape)}")
        _finite(v, f"{name}:{k}")
    sum(v.float().pow(2).mean() for v in out.values()).backward()
    _expect(x.grad is not None and x.grad.abs().sum() > 0, f"{name}: no gradient to the input image")
    only_first = feat(_images(5), layers[:1])
    _expect(set(only_first) == {layers[0]}, "check failed: set(only_first) == {layers[0]}")
    round_trip(reg, name, feat, tmp_path, lambda f: _as_tuple(f(_images(6), asked)))


def check_penalty(reg: Registry, name: str, gp: Any, tmp_path: Path) -> None:
    torch.manual_seed(0)
    disc, real, fake = TinyDisc(), _images(7), _images(8)
    value = gp(disc, real, fake)
    _expect(value.dim() == 0, f"{name}: penalty must be a scalar")
    _finite(value, name)
    _expect(value >= 0, f"{name}: a penalty is never negative, got {value.item()}")
    if value > 0:
        value.backward()
        _grads(disc, name, every=False)  # input gradients do not depend on the last bias
    torch.manual_seed(5)
    a = gp(disc, real, fake).detach()
    torch.manual_seed(5)
    b = gp(disc, real, fake).detach()
    _expect(torch.equal(a, b), f"{name}: not reproducible under the global seed")

    def run(m: Any) -> tuple[Tensor, ...]:
        torch.manual_seed(5)
        with torch.enable_grad():  # penalties differentiate D's input
            return (m(disc, real, fake).detach(),)

    round_trip(reg, name, gp, tmp_path, run)


def check_loss(reg: Registry, name: str, term: Any, tmp_path: Path) -> None:
    if getattr(term, "adversarial", False):
        return check_adversarial(reg, name, term, tmp_path)
    _expect(term.step in ("gen", "disc", "both"), f"{name}: step is {term.step!r}")
    _expect(set(term.needs) <= NEEDS, f"{name}: unknown needs {set(term.needs) - NEEDS}")
    _expect(isinstance(term.weight, (int, float)) and math.isfinite(term.weight),
            "check failed: isinstance(term.weight, (int, float)) and math.isfinite(term")
    extractor = TinyExtractor()

    def context(m: Any) -> tuple[StepContext, list[Tensor]]:
        raw = (_images(9) * 2).requires_grad_(True)
        logits_real = torch.randn(N, 1, 3, 3, generator=torch.Generator().manual_seed(10)).requires_grad_(True)
        logits_fake = torch.randn(N, 1, 3, 3, generator=torch.Generator().manual_seed(11)).requires_grad_(True)
        fake, content, target, real = torch.tanh(raw), _images(12), _images(13), _images(14)
        layers = tuple(m.feature_layers(extractor))
        _expect(set(layers) <= set(extractor.layer_names), f"{name}: asks for unknown layers {layers}")
        feats = {"fake": extractor(fake, layers), "content": extractor(content, layers),
                 "target": extractor(target, layers)} if layers else {}
        if "style" in m.needs:
            m.prepare(extractor(_images(15, n=3), layers))
        # keys a term reads from ctx.cond (`cond_needs`, e.g. a generator's AdaIN target): shaped like its features
        cond = {k: extractor(_images(17), layers)[layers[0]] for k in getattr(m, "cond_needs", ())}
        ctx = StepContext(fake=fake, real=real, content=content, target=target, paired=True,
                          logits_fake=logits_fake, logits_real=logits_real, feats=feats, cond=cond)
        return ctx, [raw, logits_real, logits_fake]

    ctx, leaves = context(term)
    value = term(ctx)
    _expect(value.dim() == 0, f"{name}: a loss term returns a scalar, got shape {tuple(value.shape)}")
    _finite(value, name)
    value.backward()
    grads = [t.grad for t in leaves if t.grad is not None]
    _expect(grads and all(torch.isfinite(g).all() for g in grads), f"{name}: no finite gradient to its inputs")
    _expect(any(g.abs().sum() > 0 for g in grads), f"{name}: gradients to its inputs are all zero")
    round_trip(reg, name, term, tmp_path, lambda m: (m(context(m)[0]),))


def check_adversarial(reg: Registry, name: str, adv: Any, tmp_path: Path) -> None:
    for shape in ((N,), (N, 1, 3, 3)):
        lr = torch.randn(shape, generator=torch.Generator().manual_seed(20)).requires_grad_(True)
        lf = torch.randn(shape, generator=torch.Generator().manual_seed(21)).requires_grad_(True)
        d, g = adv.d_loss(lr, lf), adv.g_loss(lf)
        for what, v in (("d_loss", d), ("g_loss", g)):
            _expect(v.dim() == 0, f"{name}.{what} must be a scalar")
            _finite(v, f"{name}.{what}")
        (d + g).backward()
        _expect(lr.grad is not None and lf.grad is not None and lr.grad.abs().sum() > 0,
                "check failed: lr.grad is not None and lf.grad is not None and lr.grad.abs(")
    # the objectives point the right way: D prefers high real and low fake logits, G high fake logits
    hi, lo = torch.full((N,), 3.0), torch.full((N,), -3.0)
    _expect(adv.d_loss(hi, lo) < adv.d_loss(lo, hi), f"{name}: d_loss rewards the wrong side")
    _expect(adv.g_loss(hi) < adv.g_loss(lo), f"{name}: g_loss rewards the wrong side")
    _expect(torch.isfinite(adv.d_loss(torch.full((N,), 80.0), torch.full((N,), -80.0))), f"{name}: unstable logits")
    lr, lf = torch.randn(N), torch.randn(N)
    round_trip(reg, name, adv, tmp_path, lambda m: (m.d_loss(lr, lf), m.g_loss(lf, lr)))


__all__ = ["check_component", "plugin_components", "ComponentCheckError", "TinyExtractor", "TinyDisc"]
