"""Adversarial objectives, entropy, perceptual losses and gradient penalties: known values and bf16 safety."""

from __future__ import annotations

import math
import types
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from stylezoo.core.components.kinds import AdversarialLoss, LossTerm, Penalty, StepContext
from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import CompositionError, ConfigError, DataError
from stylezoo.core.ops.stats import gram, moments
from stylezoo.plugins.adversarial import BCE, LSGAN, WGAN, AdvConfig, BCEConfig, Entropy, EntropyConfig, Hinge
from stylezoo.plugins.penalties import R1, WGANGP, Dragan, DraganConfig, NoPenalty, NoPenaltyConfig, PenaltyConfig
from stylezoo.plugins.perceptual import (
    Content,
    ContentConfig,
    GramConfig,
    GramStyle,
    MomentsConfig,
    MomentStyle,
)

LN2 = math.log(2.0)
BIG = 50.0


@dataclass
class FakeExtractor:
    layer_names: tuple[str, ...] = ("a", "b", "c")
    style_layers: tuple[str, ...] = ("a", "b")
    content_layers: tuple[str, ...] = ("c",)
    weights: str = "random"


def feats(n: int = 2, seed: int = 0, layers: tuple[str, ...] = ("a", "b", "c")) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.rand(n, 3 + i, 4, 4, generator=g) for i, name in enumerate(layers)}


def ctx_with(fake_feats: dict, **kw) -> StepContext:
    n = next(iter(fake_feats.values())).shape[0]
    return StepContext(fake=torch.zeros(n, 3, 8, 8), feats={"fake": fake_feats, **kw.pop("feats", {})}, **kw)


# ------------------------------------------------------------------------------------------ adversarial
def test_bce_known_values() -> None:
    bce = BCE(BCEConfig())
    big, zeros = torch.full((4,), BIG), torch.zeros(4)
    assert bce.d_loss(big, -big).item() == pytest.approx(0.0, abs=1e-6)
    assert bce.d_loss(zeros, zeros).item() == pytest.approx(2 * LN2, rel=1e-6)
    assert bce.d_loss(-big, big).item() == pytest.approx(2 * BIG, rel=1e-4)
    assert bce.g_loss(big).item() == pytest.approx(0.0, abs=1e-6)
    assert bce.g_loss(zeros).item() == pytest.approx(LN2, rel=1e-6)


def test_bce_label_smoothing_moves_the_real_minimum() -> None:
    bce = BCE(BCEConfig(label_smoothing=0.1))
    big = torch.full((3,), BIG)
    # the real target is 0.9, so a saturated real logit costs 0.1 * BIG
    assert bce.d_loss(big, -big).item() == pytest.approx(0.1 * BIG, rel=1e-3)
    # minimum of the real part at sigmoid(l) = 0.9
    best = torch.tensor([math.log(0.9 / 0.1)])
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert bce.d_loss(best, torch.full((1,), -BIG)).item() == pytest.approx(h, rel=1e-4)


def test_lsgan_hinge_wgan_known_values() -> None:
    ones, zeros = torch.ones(5), torch.zeros(5)
    ls = LSGAN(AdvConfig())
    assert ls.d_loss(ones, zeros).item() == 0.0
    assert ls.d_loss(zeros, ones).item() == pytest.approx(2.0)
    assert ls.g_loss(ones).item() == 0.0 and ls.g_loss(zeros).item() == pytest.approx(1.0)
    hinge = Hinge(AdvConfig())
    assert hinge.d_loss(ones * 2, -ones * 2).item() == 0.0
    assert hinge.d_loss(zeros, zeros).item() == pytest.approx(2.0)
    assert hinge.g_loss(ones * 3).item() == pytest.approx(-3.0)
    w = WGAN(AdvConfig())
    # the critic wants real high and fake low: lower loss when real > fake
    assert w.d_loss(ones * 2, ones * -1).item() == pytest.approx(-3.0)
    assert w.d_loss(ones * -1, ones * 2).item() == pytest.approx(3.0)
    assert w.g_loss(ones * 2).item() == pytest.approx(-2.0)


@pytest.mark.parametrize("cls", [BCE, LSGAN, Hinge, WGAN])
def test_adversarial_means_patch_maps_and_computes_in_float32(cls: type) -> None:
    cfg = BCEConfig() if cls is BCE else AdvConfig()
    loss = cls(cfg)
    assert isinstance(loss, AdversarialLoss) and loss.adversarial and loss.weight == 1.0
    real = torch.randn(2, 1, 5, 5)
    fake = torch.randn(2, 1, 5, 5)
    d, g = loss.d_loss(real, fake), loss.g_loss(fake)
    assert d.dim() == 0 and g.dim() == 0
    # the same numbers flattened: a patch map is averaged over every logit
    assert d.item() == pytest.approx(loss.d_loss(real.flatten(), fake.flatten()).item(), rel=1e-6)
    d16 = loss.d_loss(real.bfloat16(), fake.bfloat16())
    assert d16.dtype == torch.float32
    assert d16.item() == pytest.approx(loss.d_loss(real.bfloat16().float(), fake.bfloat16().float()).item(), rel=1e-6)


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError):
        BCEConfig(label_smoothing=0.7)
    with pytest.raises(ValueError):
        AdvConfig(weight=-1.0)
    assert EntropyConfig(weight=-0.1).weight == -0.1  # negative alpha is allowed (rewards uncertainty)


# ------------------------------------------------------------------------------------------ entropy
def test_entropy_known_values_and_formula() -> None:
    ent = Entropy(EntropyConfig())
    assert isinstance(ent, LossTerm) and ent.step == "disc" and ent.weight == pytest.approx(0.1)
    fake = torch.zeros(1)
    assert ent(StepContext(fake=fake, logits_real=torch.zeros(3), logits_fake=torch.zeros(2, 1, 2, 2))).item() == \
        pytest.approx(LN2, rel=1e-6)
    big = torch.tensor([BIG, -BIG, 100.0, -100.0])
    assert ent(StepContext(fake=fake, logits_real=big, logits_fake=None)).item() == pytest.approx(0.0, abs=1e-12)
    r, f = torch.randn(6) * 3, torch.randn(2, 1, 3, 3) * 3
    allv = torch.cat([r, f.flatten()]).double()
    p = torch.sigmoid(allv)
    want = (-(p * p.log() + (1 - p) * (1 - p).log())).mean().item()
    got = ent(StepContext(fake=fake, logits_real=r, logits_fake=f))
    assert torch.isfinite(got) and got.item() == pytest.approx(want, rel=1e-5)
    only_fake = ent(StepContext(fake=fake, logits_fake=f)).item()
    pf = torch.sigmoid(f.double())
    assert only_fake == pytest.approx((-(pf * pf.log() + (1 - pf) * (1 - pf).log())).mean().item(), rel=1e-5)
    with pytest.raises(RuntimeError):
        ent(StepContext(fake=fake))


# ------------------------------------------------------------------------------------------ perceptual
def test_gram_matches_hand_computed_value() -> None:
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 1, 2)  # c=2, h=1, w=2
    want = torch.tensor([[1 + 4, 3 + 8], [3 + 8, 9 + 16]]) / 4.0
    assert torch.allclose(gram(f)[0], want)
    g = gram(torch.randn(3, 4, 5, 6, dtype=torch.bfloat16))
    assert g.shape == (3, 4, 4) and g.dtype == torch.float32


def test_gram_loss_zero_for_own_style_and_positive_for_another() -> None:
    ext, style = FakeExtractor(), feats(1, seed=1)
    loss = GramStyle(GramConfig())
    assert loss.feature_layers(ext) == ("a", "b")
    loss.prepare(style)
    assert loss.gram_0.shape == (1, 3, 3) and "gram_0" not in loss.state_dict()
    same = loss(ctx_with({k: v.expand(2, -1, -1, -1) for k, v in style.items()}))
    assert same.item() == pytest.approx(0.0, abs=1e-12)
    other = loss(ctx_with(feats(2, seed=2)))
    assert other.item() > 0
    # equal layer weights 1/2: explicit (0.5, 0.5) gives the same number, (1, 0) only layer a
    explicit = GramStyle(GramConfig(layer_weights=(0.5, 0.5)))
    explicit.feature_layers(ext)
    explicit.prepare(style)
    assert explicit(ctx_with(feats(2, seed=2))).item() == pytest.approx(other.item(), rel=1e-6)
    only_a = GramStyle(GramConfig(layer_weights=(1.0, 0.0)))
    only_a.feature_layers(ext)
    only_a.prepare(style)
    fa = feats(2, seed=2)
    want = torch.mean((gram(fa["a"]) - gram(style["a"])) ** 2).item()
    assert only_a(ctx_with(fa)).item() == pytest.approx(want, rel=1e-6)


def test_gram_normalized_by_target_is_scale_free_per_layer() -> None:
    """normalize="target": each layer's term is mse / mean(target^2), so a layer whose features are 100x larger
    counts as much as the others (with "none" it dominates, as VGG's shallow layers do) and the value is the
    squared relative Gram distance."""
    ext, style, fake = FakeExtractor(), feats(1, seed=1), feats(2, seed=2)

    def value(normalize: str, scale_a: float) -> float:
        loss = GramStyle(GramConfig(normalize=normalize))  # type: ignore[arg-type]
        loss.feature_layers(ext)
        loss.prepare({**style, "a": style["a"] * scale_a})
        return loss(ctx_with({**fake, "a": fake["a"] * scale_a})).item()

    assert value("target", 100.0) == pytest.approx(value("target", 1.0), rel=1e-4)
    assert value("none", 100.0) > 1e6 * value("none", 1.0)
    t = gram(style["a"])
    want_a = (torch.mean((gram(fake["a"]) - t) ** 2) / torch.mean(t**2)).item()
    only_a = GramStyle(GramConfig(normalize="target", layer_weights=(1.0, 0.0)))
    only_a.feature_layers(ext)
    only_a.prepare(style)
    assert only_a(ctx_with(fake)).item() == pytest.approx(want_a, rel=1e-5)
    with pytest.raises(ValueError, match="normalize"):
        GramConfig(normalize="layer")  # type: ignore[arg-type]


def test_gram_layer_weights_must_match_layers() -> None:
    with pytest.raises(ConfigError, match="layer_weights"):
        GramStyle(GramConfig(layer_weights=(1.0, 2.0, 3.0))).feature_layers(FakeExtractor())


def test_gram_labels_select_per_label_targets() -> None:
    ext = FakeExtractor()
    s0, s1 = feats(2, seed=3), feats(1, seed=4)
    style = {k: torch.cat([s0[k], s1[k]]) for k in s0}
    loss = GramStyle(GramConfig())
    loss.feature_layers(ext)
    loss.prepare(style, labels=torch.tensor([0, 0, 1]))
    assert loss.gram_0.shape == (2, 3, 3)
    assert torch.allclose(loss.gram_0[0], gram(s0["a"]).mean(0)) and torch.allclose(loss.gram_0[1], gram(s1["a"])[0])
    fake = {k: v.clone() for k, v in s1.items()}
    right = loss(ctx_with(fake, cond={"label": torch.tensor([1])}))
    wrong = loss(ctx_with(fake, cond={"label": torch.tensor([0])}))
    assert right.item() == pytest.approx(0.0, abs=1e-12) and wrong.item() > 0
    with pytest.raises(RuntimeError, match="label"):
        loss(ctx_with(fake))
    with pytest.raises(DataError):
        loss.prepare(style, labels=torch.tensor([0, 2, 2]))


def test_gram_is_float32_and_finite_under_bf16_autocast() -> None:
    ext, style = FakeExtractor(), feats(1, seed=5)
    loss = GramStyle(GramConfig())
    loss.feature_layers(ext)
    loss.prepare({k: v.bfloat16() for k, v in style.items()})
    fake = {k: v.bfloat16().requires_grad_(True) for k, v in feats(2, seed=6).items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss(ctx_with(fake))
    assert out.dtype == torch.float32 and torch.isfinite(out) and out.item() > 0
    out.backward()
    assert fake["a"].grad is not None and torch.isfinite(fake["a"].grad.float()).all()


def test_bf16_gram_has_a_float32_result_and_a_bf16_gradient() -> None:
    """bfloat16 features multiply on oneDNN's bf16 path but sum and return in float32 (core/ops/stats.py)."""
    torch.manual_seed(0)
    f = torch.randn(3, 16, 8, 8).relu().bfloat16().requires_grad_(True)
    f64 = f.detach().double().requires_grad_(True)
    x = f64.reshape(3, 16, 64)
    ref = torch.bmm(x, x.transpose(1, 2)) / (16 * 64)
    before = torch.backends.mkldnn.matmul.fp32_precision
    g = gram(f)
    assert torch.backends.mkldnn.matmul.fp32_precision == before  # the process-wide switch is restored
    assert g.dtype == torch.float32
    # float32-grade: a bfloat16 result would be off by about 3e-3 of the largest entry
    assert ((g.double() - ref).abs().max() / ref.abs().max()).item() < 2e-5
    target = ref.detach() * 1.05
    ((g - target.float()) ** 2).sum().backward()
    ((ref - target) ** 2).sum().backward()
    assert f.grad is not None and f.grad.dtype == torch.bfloat16
    assert ((f.grad.double() - f64.grad).abs().max() / f64.grad.abs().max()).item() < 2e-2
    # float32 features take the plain float32 product
    assert torch.allclose(gram(f.detach().float()).double(), ref, rtol=1e-5, atol=1e-7)
    # no silent second derivative
    f2 = f.detach().requires_grad_(True)
    (dg,) = torch.autograd.grad(gram(f2).sum(), f2, create_graph=True)
    with pytest.raises(RuntimeError):
        dg.float().sum().backward()


def test_a_zero_weight_on_the_fused_gram_loss_gives_a_zero_gradient() -> None:
    """--loss gram:0 (or a layer weight of 0) under bf16: oneDNN's baddbmm with alpha 0 returned its
    uninitialised buffer as the gradient (NaN or 1e14 at this shape); it must be exactly zero."""
    from stylezoo.core.ops.stats import gram_mse

    torch.manual_seed(0)
    for _ in range(3):
        f = torch.randn(2, 64, 16, 16).bfloat16().requires_grad_(True)
        (0 * gram_mse(f, torch.randn(1, 64, 64))).backward()
        assert f.grad is not None and torch.equal(f.grad, torch.zeros_like(f))


@pytest.mark.parametrize("per_sample_target", [False, True])
def test_gram_mse_matches_mse_of_the_gram_in_value_and_gradient(per_sample_target: bool) -> None:
    """The fused bf16 style loss (one backward product) is the composed one, to float64's reference."""
    from stylezoo.core.ops.stats import gram_mse

    torch.manual_seed(1)
    f = torch.randn(3, 16, 5, 7).relu().bfloat16().requires_grad_(True)  # 35 positions: no power-of-2 luck
    f64 = f.detach().double().requires_grad_(True)
    x = f64.reshape(3, 16, 35)
    ref_g = torch.bmm(x, x.transpose(1, 2)) / (16 * 35)
    other = torch.randn(3 if per_sample_target else 1, 16, 35).relu().double()
    target = torch.bmm(other, other.transpose(1, 2)) / (16 * 35)
    ref = ((ref_g - target) ** 2).mean()
    ref.backward()
    got = gram_mse(f, target.float())
    assert got.dtype == torch.float32 and got.shape == ()
    assert abs(got.item() - ref.item()) / ref.item() < 1e-4
    got.backward()
    assert f.grad is not None and f.grad.dtype == torch.bfloat16
    assert ((f.grad.double() - f64.grad).abs().max() / f64.grad.abs().max()).item() < 2e-2
    # float32 features, or a target that wants a gradient, take the composed float32 loss
    f32 = f.detach().float().requires_grad_(True)
    assert torch.allclose(gram_mse(f32, target.float()).double(), ref.detach(), rtol=1e-4)
    t = target.float().requires_grad_(True)
    gram_mse(f.detach(), t).backward()
    assert t.grad is not None and t.grad.abs().sum() > 0
    # no silent second derivative
    f2 = f.detach().requires_grad_(True)
    (dg,) = torch.autograd.grad(gram_mse(f2, target.float()), f2, create_graph=True)
    with pytest.raises(RuntimeError):
        dg.float().sum().backward()



def test_bf16_gram_of_channels_last_features_is_the_contiguous_one_without_copies() -> None:
    """Channels_last features (the extractor's layout under CPU bf16) are read as (N, HW, C) matrices: the
    same Gram and loss, and gradients that come back channels_last, with no layout copy either way."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from stylezoo.core.ops import stats

    if not stats._bf16_fp32_matmul.available():
        pytest.skip("this torch has no bf16 matmul switch: the float32 Gram is used")
    torch.manual_seed(2)
    base = torch.randn(3, 16, 5, 7).relu().bfloat16()
    target = gram(torch.randn(1, 16, 5, 7).relu().bfloat16()).detach()

    class Copies(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
            # a copy that keeps the dtype is a layout copy; the product's bf16 -> float32 casts of slices are not
            self.n += func in (torch.ops.aten.clone.default, torch.ops.aten._unsafe_view.default) or (
                func is torch.ops.aten.copy_.default and args[0].dtype == args[1].dtype)
            return func(*args, **(kwargs or {}))

    for fn in (lambda f: gram(f).square().sum(), lambda f: stats.gram_mse(f, target)):
        ref_f = base.clone().requires_grad_(True)
        ref = fn(ref_f)
        ref.backward()
        cl_f = base.to(memory_format=torch.channels_last).requires_grad_(True)
        with Copies() as spy:
            got = fn(cl_f)
            got.backward()
        assert spy.n == 0
        assert torch.allclose(got, ref, rtol=1e-5)
        assert cl_f.grad is not None and ref_f.grad is not None
        assert cl_f.grad.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(cl_f.grad.float(), ref_f.grad.float(), rtol=1e-2, atol=1e-3)

def test_bf16_gram_in_many_slices_is_the_float64_gram(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bf16 product casts a slice of positions at a time (stats.GRAM_SLICE): with slices of 64 positions
    and a ragged last one, the Gram and the fused loss are still float64's to float32 rounding, either layout."""
    from stylezoo.core.ops import stats

    if not stats._bf16_fp32_matmul.available():
        pytest.skip("this torch has no bf16 matmul switch: the float32 Gram is used")
    monkeypatch.setattr(stats, "GRAM_SLICE", 1)  # the floor: 64 positions a slice
    torch.manual_seed(3)
    f = torch.randn(2, 8, 13, 17).relu().bfloat16()  # 221 positions: 3 full slices and a ragged one
    x = f.double().reshape(2, 8, 221)
    ref = torch.bmm(x, x.transpose(1, 2)) / (8 * 221)
    target = ref[:1] * 0.9
    for feats in (f, f.to(memory_format=torch.channels_last)):
        g = gram(feats)
        assert ((g.double() - ref).abs().max() / ref.abs().max()).item() < 1e-6
        loss = stats.gram_mse(feats, target.float())
        want = ((ref - target) ** 2).mean()
        assert abs(loss.item() - want.item()) / want.item() < 1e-4


def test_bf16_gram_falls_back_to_float32_on_a_torch_without_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    from stylezoo.core.ops import stats

    monkeypatch.setattr(stats._BF16Gram, "apply", lambda *a: pytest.fail("bf16 path taken"))
    monkeypatch.setattr(stats._BF16GramMSE, "apply", lambda *a: pytest.fail("bf16 path taken"))
    monkeypatch.setattr(torch.backends, "mkldnn", types.SimpleNamespace())  # no matmul switch, as in torch 2.4
    assert not stats._bf16_fp32_matmul.available()
    f = torch.randn(2, 4, 3, 3).bfloat16()
    x = f.double().reshape(2, 4, 9)
    want = torch.bmm(x, x.transpose(1, 2)) / 36
    got = gram(f)
    assert got.dtype == torch.float32 and torch.allclose(got.double(), want, rtol=1e-6)
    loss = stats.gram_mse(f, torch.zeros(1, 4, 4))
    assert torch.allclose(loss.double(), (want ** 2).mean(), rtol=1e-6)


def test_moments_zero_for_identical_stats_and_per_sample_style() -> None:
    ext, style = FakeExtractor(), feats(1, seed=7)
    loss = MomentStyle(MomentsConfig())
    assert loss.weight == 10.0 and loss.feature_layers(ext) == ("a", "b")
    loss.prepare(style)
    # same channel statistics, different spatial arrangement: still 0
    flipped = {k: v.flip(-1).expand(3, -1, -1, -1) for k, v in style.items()}
    assert loss(ctx_with(flipped)).item() == pytest.approx(0.0, abs=1e-10)
    other = feats(3, seed=8)
    assert loss(ctx_with(other)).item() > 0
    m, s = moments(other["a"])
    want_a = torch.mean((m - moments(style["a"])[0]) ** 2) + torch.mean((s - moments(style["a"])[1]) ** 2)
    solo = MomentStyle(MomentsConfig(layers=("a",)))
    solo.feature_layers(ext)
    solo.prepare(style)
    assert solo(ctx_with(other)).item() == pytest.approx(want_a.item(), rel=1e-6)
    # reference-guided: each sample against its own style features, not the cached target
    own = loss(ctx_with(other, cond={"style_feats": {k: v.flip(-2) for k, v in other.items()}}))
    assert own.item() == pytest.approx(0.0, abs=1e-10)


def test_moments_std_uses_eps() -> None:
    m, s = moments(torch.ones(1, 2, 3, 3))
    assert torch.allclose(m, torch.ones(1, 2)) and torch.allclose(s, torch.full((1, 2), 1e-5 ** 0.5))


def test_content_loss_paired_and_batch_mean_modes() -> None:
    ext = FakeExtractor()
    loss = Content(ContentConfig())
    assert loss.feature_layers(ext) == ("c",) and loss.needs == {"feats_fake", "feats_content"}
    a = feats(2, seed=9)
    b = {k: v.flip(0) for k, v in a.items()}  # same batch, samples swapped
    paired = loss(ctx_with(a, feats={"content": b}, paired=True))
    assert paired.item() == pytest.approx(torch.mean((a["c"] - b["c"]) ** 2).item(), rel=1e-6) and paired.item() > 0
    unpaired = loss(ctx_with(a, feats={"content": b}, paired=False))
    assert unpaired.item() == pytest.approx(0.0, abs=1e-12)  # batch means agree
    c = feats(4, seed=10)  # a different batch size is fine in batch-mean mode
    want = torch.mean((a["c"].mean(0) - c["c"].mean(0)) ** 2).item()
    assert loss(ctx_with(a, feats={"content": c})).item() == pytest.approx(want, rel=1e-6)


def test_content_against_target() -> None:
    loss = Content(ContentConfig(against="target", layers=("a", "b")))
    assert loss.needs == {"feats_fake", "feats_target"} and Content.needs == {"feats_fake", "feats_content"}
    assert loss.feature_layers(FakeExtractor()) == ("a", "b")
    a, t = feats(2, seed=11), feats(2, seed=12)
    want = sum(torch.mean((a[k] - t[k]) ** 2).item() for k in ("a", "b"))
    assert loss(ctx_with(a, feats={"target": t})).item() == pytest.approx(want, rel=1e-6)


def test_content_normalized_per_layer_makes_every_layer_count_alike() -> None:
    loss = Content(ContentConfig(layers=("a", "b"), normalize="target"))
    loss.feature_layers(FakeExtractor())
    a, c = feats(2, seed=13), feats(2, seed=14)
    c = {"a": c["a"], "b": c["b"] * 100.0}  # layer b's features 100x larger, as deeper VGG layers are
    a = {"a": a["a"], "b": a["b"] * 100.0}
    got = loss(ctx_with(a, feats={"content": c}, paired=True)).item()
    want = sum((torch.mean((a[k] - c[k]) ** 2) / torch.mean(c[k] ** 2)).item() for k in ("a", "b"))
    assert got == pytest.approx(want, rel=1e-5)
    plain = Content(ContentConfig(layers=("a", "b")))
    plain.feature_layers(FakeExtractor())
    assert plain(ctx_with(a, feats={"content": c}, paired=True)).item() > 1000 * got  # b dominates the plain sum
    with pytest.raises(ValueError, match="normalize"):
        ContentConfig(normalize="layer")  # type: ignore[arg-type]


def test_unknown_layer_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="'zz'.*valid layers: a, b, c"):
        Content(ContentConfig(layers=("a", "zz"))).feature_layers(FakeExtractor())
    with pytest.raises(ConfigError, match="valid layers: a, b, c"):
        MomentStyle(MomentsConfig(layers=("relu9_9",))).feature_layers(FakeExtractor())
    with pytest.raises(CompositionError):
        GramStyle(GramConfig()).feature_layers(None)


# ------------------------------------------------------------------------------------------ penalties
class TinyD(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.tanh(self.conv(x)).mean((2, 3))
        out = self.head(h).squeeze(1)
        return out if label is None else out + label.float()


class LinearD(nn.Module):
    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) * self.w.flatten()).sum(1)


PENALTIES = [
    (WGANGP, PenaltyConfig()), (pytest.param(R1, PenaltyConfig(), id="r1")), (Dragan, DraganConfig()),
]


@pytest.mark.parametrize("cls,cfg", PENALTIES)
def test_penalty_finite_positive_and_trains_d(cls: type, cfg: object) -> None:
    torch.manual_seed(0)
    d = TinyD()
    gp = cls(cfg)
    assert isinstance(gp, Penalty) and gp.weight == 10.0
    real, fake = torch.rand(3, 3, 8, 8) * 2 - 1, torch.rand(3, 3, 8, 8) * 2 - 1
    out = gp(d, real, fake, label=torch.tensor([0, 1, 0]))
    assert out.dim() == 0 and torch.isfinite(out) and out.item() > 0
    out.backward()
    # create_graph: the penalty reaches D's weights (the head's bias never moves an input gradient)
    for p in (d.conv.weight, d.conv.bias, d.head.weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


@pytest.mark.parametrize("cls,cfg", PENALTIES)
def test_penalty_under_bf16_autocast(cls: type, cfg: object) -> None:
    torch.manual_seed(1)
    d = TinyD()
    real, fake = (torch.rand(2, 3, 8, 8) * 2 - 1).bfloat16(), (torch.rand(2, 3, 8, 8) * 2 - 1).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cls(cfg)(d, real, fake)
    assert out.dtype == torch.float32 and torch.isfinite(out) and out.item() > 0
    out.backward()
    assert d.conv.weight.grad is not None and torch.isfinite(d.conv.weight.grad).all()


def test_r1_equals_analytic_value_for_linear_d() -> None:
    w = torch.randn(3, 4, 4)
    out = R1(PenaltyConfig(weight=4.0))(LinearD(w.clone()), torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4))
    assert out.item() == pytest.approx(0.5 * 4.0 * w.pow(2).sum().item(), rel=1e-5)


def test_wgan_gp_and_dragan_zero_for_unit_gradient_linear_d() -> None:
    w = torch.randn(3, 4, 4)
    w = w / w.norm()  # ||grad|| = 1 everywhere
    real, fake = torch.randn(4, 3, 4, 4), torch.randn(4, 3, 4, 4)
    assert WGANGP(PenaltyConfig())(LinearD(w.clone()), real, fake).item() == pytest.approx(0.0, abs=1e-8)
    assert Dragan(DraganConfig())(LinearD(w.clone()), real, fake).item() == pytest.approx(0.0, abs=1e-8)
    out = WGANGP(PenaltyConfig(weight=2.0))(LinearD(3 * w.clone()), real, fake)  # ||grad|| = 3: 2 * (3-1)^2
    assert out.item() == pytest.approx(8.0, rel=1e-5)


def test_no_penalty_is_zero() -> None:
    gp = NoPenalty(NoPenaltyConfig())
    out = gp(TinyD(), torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8))
    assert out.item() == 0.0 and gp.weight == 0.0


# ------------------------------------------------------------------------------------------ registry
def test_registered_with_cards() -> None:
    reg = Registry(["stylezoo.plugins.adversarial", "stylezoo.plugins.perceptual", "stylezoo.plugins.penalties"],
                   entry_points=False)
    assert not reg.failures
    for name in ("loss/bce", "loss/lsgan", "loss/hinge", "loss/wgan"):
        assert reg.get(name).card["role"] == "adversarial" and reg.build(name).adversarial
    assert reg.get("loss/entropy").card["compatible"] == ("loss/bce",)
    assert "loss/wgan" in reg.get("gp/wgan-gp").card["compatible"]
    assert "loss/wgan" not in reg.get("gp/none").card["compatible"]
    assert reg.build("loss/gram", {"layers": "a,b", "layer_weights": "1,2"}).cfg.layer_weights == (1.0, 2.0)
    assert reg.build("gp/r1", {"weight": 1}).weight == 1.0
    for name in reg.names():
        card_defaults = reg.get(name).card.get("defaults", {})
        cfg = reg.make_config(name)
        for key, value in card_defaults.items():
            assert getattr(cfg, key) == value, (name, key)


# ------------------------------------------------------------------------------------------ pixel terms
def test_pixel_reconstruction_terms_known_values_and_ssim_gradient() -> None:
    from stylezoo.plugins.pixel import L1, L2, ReconConfig, SSIMConfig, SSIMLoss

    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    same = StepContext(fake=target.clone(), target=target)
    off = StepContext(fake=(target + 0.5).clamp(-1, 1), target=target)
    assert float(L1(ReconConfig())(same)) == 0.0
    assert float(L1(ReconConfig())(off)) == pytest.approx(float((off.fake - target).abs().mean()))
    assert float(L2(ReconConfig())(off)) == pytest.approx(float((off.fake - target).pow(2).mean()))
    ssim_loss = SSIMLoss(SSIMConfig())
    assert float(ssim_loss(same)) == pytest.approx(0.0, abs=1e-5)
    noisy = StepContext(fake=target + 0.3 * torch.randn(2, 3, 32, 32, generator=g), target=target)
    assert float(ssim_loss(noisy)) > float(ssim_loss(StepContext(fake=target * 0.9, target=target))) > 0
    # it trains: gradient steps on an image raise its SSIM to the target
    x = torch.zeros(1, 3, 32, 32, requires_grad=True)
    first = None
    for _ in range(20):
        loss = ssim_loss(StepContext(fake=x, target=target[:1]))
        first = float(loss) if first is None else first
        loss.backward()
        with torch.no_grad():
            x -= 2.0 * x.grad
            x.grad = None
    assert float(ssim_loss(StepContext(fake=x, target=target[:1]))) < first
    with pytest.raises(RuntimeError, match="paired data"):
        ssim_loss(StepContext(fake=target))
    with pytest.raises(ValueError):
        SSIMConfig(weight=-1)
