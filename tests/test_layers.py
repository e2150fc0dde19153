"""core/ops/layers.py: the bfloat16 matrix-product path for tiny feature maps matches the stock layers."""

from __future__ import annotations

import unittest.mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stylezoo.core.ops import layers as L


def _pair(cls: type, stock: type, *args: object, **kw: object) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    ours = cls(*args, **kw)
    ref = stock(*args, **kw)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def _run(m: nn.Module, x: torch.Tensor, bf16: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    m.zero_grad()
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        y = m(x)
    (y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return y.float(), x.grad, m.weight.grad.clone()


CASES = [
    (L.Conv2d, nn.Conv2d, (32, 48, 4, 2, 1), {}, (3, 32, 4, 4)),  # 4x4 -> 2x2: 4 positions, the fast path
    (L.Conv2d, nn.Conv2d, (32, 48, 4, 2, 1), {"bias": False}, (2, 32, 2, 2)),  # 2x2 -> 1x1
    (L.Conv2d, nn.Conv2d, (16, 8, 3, 1, 1), {}, (2, 16, 1, 3)),  # non-square, stride 1
    (L.ConvTranspose2d, nn.ConvTranspose2d, (32, 24, 4, 2, 1), {}, (3, 32, 4, 4)),  # 4x4 -> 8x8
    (L.ConvTranspose2d, nn.ConvTranspose2d, (16, 8, 4, 1, 0), {"bias": False}, (2, 16, 1, 1)),  # DCGAN's 1x1 -> 4x4
]


@pytest.mark.parametrize("cls,stock,args,kw,shape", CASES)
def test_fast_path_matches_the_stock_layer_under_bf16(cls: type, stock: type, args: tuple, kw: dict,
                                                      shape: tuple[int, ...]) -> None:
    ours, ref = _pair(cls, stock, *args, **kw)
    x = torch.randn(shape)
    y, gx, gw = _run(ours, x, bf16=True)
    y_ref, gx_ref, gw_ref = _run(ref, x, bf16=True)
    assert y.shape == y_ref.shape
    scale = y_ref.abs().max()
    assert (y - y_ref).abs().max() <= 0.02 * scale  # bfloat16 rounding, not a different function
    assert (gx - gx_ref).abs().max() <= 0.03 * gx_ref.abs().max()
    assert (gw - gw_ref).abs().max() <= 0.03 * gw_ref.abs().max()


@pytest.mark.parametrize("cls,stock,args,kw,shape", CASES)
def test_float32_is_exactly_the_stock_layer(cls: type, stock: type, args: tuple, kw: dict,
                                            shape: tuple[int, ...]) -> None:
    ours, ref = _pair(cls, stock, *args, **kw)
    x = torch.randn(shape)
    for a, b in zip(_run(ours, x, bf16=False), _run(ref, x, bf16=False)):
        assert torch.equal(a, b)
    assert list(ours.state_dict()) == list(ref.state_dict())


def test_fast_path_is_taken_only_for_few_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    unfold = F.unfold

    def counting(*a: object, **k: object) -> torch.Tensor:
        calls.append(1)
        return unfold(*a, **k)

    monkeypatch.setattr(L.F, "unfold", counting)
    conv = L.Conv2d(8, 8, 4, 2, 1)
    with torch.autocast("cpu", torch.bfloat16):
        conv(torch.randn(1, 8, 4, 4))  # 4 output positions: matrix product
        assert len(calls) == 1
        conv(torch.randn(1, 8, 8, 8))  # 16: the stock convolution
        assert len(calls) == 1
    conv(torch.randn(1, 8, 4, 4))  # float32: stock
    assert len(calls) == 1
    folds: list[int] = []
    fold = F.fold
    monkeypatch.setattr(L.F, "fold", lambda *a, **k: folds.append(1) or fold(*a, **k))
    up = L.ConvTranspose2d(8, 8, 4, 2, 1)
    with torch.autocast("cpu", torch.bfloat16):
        assert up(torch.randn(1, 8, 4, 4)).shape == (1, 8, 8, 8) and len(folds) == 1  # 16 inputs: matrix product
        up(torch.randn(1, 8, 8, 8))  # 64: stock
    assert len(folds) == 1


def test_double_backward_works_for_gradient_penalties() -> None:
    conv = L.Conv2d(8, 4, 4, 2, 1)
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    with torch.autocast("cpu", torch.bfloat16):
        y = conv(x)
    (g,) = torch.autograd.grad(y.float().sum(), x, create_graph=True)
    g.float().pow(2).sum().backward()
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()
    assert conv.weight.grad.abs().sum() > 0


POOL_INPUTS = [
    ((2, 3, 8, 6), torch.float32, {}),
    ((2, 4, 16, 16), torch.bfloat16, {}),
    ((1, 2, 4, 4), torch.float32, {"ceil_mode": True}),  # even sizes: ceil_mode changes nothing
]


@pytest.mark.parametrize("shape,dtype,kw", POOL_INPUTS)
def test_max_pool_fast_path_matches_the_stock_pool_bit_for_bit(shape: tuple, dtype: torch.dtype, kw: dict,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    x = torch.randn(*shape).relu().to(dtype)  # ReLU output: many tied zeros
    x.view(-1)[3] = float("nan")
    x.view(-1)[10] = float("-inf")
    want = nn.MaxPool2d(2, 2, **kw)(x)
    stock = []
    monkeypatch.setattr(F, "max_pool2d", lambda *a, **k: stock.append(1))  # the fast path never calls it
    with torch.no_grad():
        got = L.MaxPool2d(2, 2, **kw)(x)
    assert stock == [] and got.dtype == dtype
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(), want.nan_to_num())


def test_max_pool_keeps_the_stock_kernel_where_the_fast_path_does_not_apply() -> None:
    torch.manual_seed(0)
    pool, ref = L.MaxPool2d(2, 2), nn.MaxPool2d(2, 2)
    x = torch.randn(2, 3, 8, 8).requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    g = torch.randn(2, 3, 4, 4)
    pool(x).backward(g)
    ref(x2).backward(g)
    assert torch.equal(x.grad, x2.grad)  # one winner per window, as the stock backward gives
    calls = []
    real = F.max_pool2d

    def spy(*a: object, **k: object) -> torch.Tensor:
        calls.append(1)
        return real(*a, **k)

    odd, three = torch.randn(1, 2, 5, 5), torch.randn(1, 2, 9, 9)
    cl = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    cases = [(L.MaxPool2d(2, 2, ceil_mode=True), nn.MaxPool2d(2, 2, ceil_mode=True), odd),
             (L.MaxPool2d(2, 2), nn.MaxPool2d(2, 2), cl), (L.MaxPool2d(3, 3), nn.MaxPool2d(3, 3), three)]
    with torch.no_grad():
        wants = [stock(x) for _, stock, x in cases]
        with unittest.mock.patch.object(F, "max_pool2d", spy):
            gots = [ours(x) for ours, _, x in cases]
    assert len(calls) == 3 and all(torch.equal(a, b) for a, b in zip(gots, wants))


@pytest.mark.parametrize("keep", [0.5, 0.8, 0.1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_keep_mask_keeps_the_asked_fraction_scaled_by_one_over_keep(keep: float, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    n = 400_001  # odd: the last word's second draw is cut off
    m = L.keep_mask(torch.Size([n]), keep, dtype)
    assert m.shape == (n,) and m.dtype == dtype
    assert m.unique().tolist() == [0.0, torch.tensor(1 / keep, dtype=dtype).item()]
    frac = (m > 0).float().mean().item()
    assert abs(frac - keep) < 4 * (keep * (1 - keep) / n) ** 0.5  # within 4 standard errors
    # both halves of each random word are used and independent: neighbours agree only by chance
    pairs = (m[:-1:2] > 0) == (m[1::2] > 0)
    assert abs(pairs.float().mean().item() - (keep ** 2 + (1 - keep) ** 2)) < 0.01


def test_dropout_trains_like_the_stock_layer_and_is_the_identity_in_eval() -> None:
    ours, ref = L.Dropout(0.5), nn.Dropout(0.5)
    x = torch.randn(4, 16, 8, 8, requires_grad=True)
    torch.manual_seed(3)
    y = ours(x)
    torch.manual_seed(3)
    assert torch.equal(ours(x), y)  # a seed fixes the mask
    dropped = y == 0
    assert 0.4 < dropped.float().mean().item() < 0.6
    assert torch.equal(y[~dropped], x[~dropped] * 2)
    y.sum().backward()
    assert torch.equal(x.grad, (~dropped).float() * 2)  # the gradient goes through the kept elements only
    ours.eval()
    ref.eval()
    assert torch.equal(ours(x), x) and torch.equal(ref(x), x)
    ours.train()
    with unittest.mock.patch.object(nn.Dropout, "forward", wraps=ref.forward) as stock:
        L.Dropout(0.0)(x)  # nothing to drop: the stock layer (the identity) handles it
        assert stock.call_count == 1


def test_reflection_pad_keeps_bf16_under_autocast_and_matches_the_stock_layer() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 9, dtype=torch.bfloat16, requires_grad=True)
    conv = nn.Conv2d(4, 5, 3)
    g = torch.randn(2, 5, 11, 11)
    got = {}
    for name, pad in (("ours", L.ReflectionPad2d(2)), ("stock", nn.ReflectionPad2d(2))):
        with torch.autocast("cpu", torch.bfloat16):
            padded = pad(x)
            y = conv(padded)
        (gx,) = torch.autograd.grad((y.float() * g).sum(), x)
        got[name] = (padded.dtype, y, gx)
    assert got["ours"][0] == torch.bfloat16 and got["stock"][0] == torch.float32  # autocast's float32 pad
    assert torch.equal(got["ours"][1], got["stock"][1])  # padding only copies values: same forward
    # the border sums of the backward round in bfloat16 instead of float32: within bf16's resolution
    torch.testing.assert_close(got["ours"][2].float(), got["stock"][2].float(), rtol=2 ** -7, atol=2 ** -7)
    xf = x.detach().float().requires_grad_(True)
    assert torch.equal(L.ReflectionPad2d(2)(xf), nn.ReflectionPad2d(2)(xf))  # no autocast: the stock layer


@pytest.mark.parametrize("pad", [(1, 1, 1, 1), (3, 3, 3, 3), (2, 0, 1, 3), (0, 1, 0, 0)])
def test_reflection_pad_backward_is_aten_s_gradient_exactly(pad: tuple) -> None:
    """fold_reflection gives the same gradient as aten's reflection_pad2d_backward (whole numbers: the sums
    are exact in any order), and the layer takes it under a gradient on the CPU."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, requires_grad=True)
    g = torch.randint(-1000, 1000, (2, 3, 7 + pad[2] + pad[3], 6 + pad[0] + pad[1])).double()
    (want,) = torch.autograd.grad(F.pad(x, pad, "reflect"), x, g)
    assert torch.equal(L.fold_reflection(g, pad), want)
    y = L.ReflectionPad2d(pad)(x)
    assert "ReflectPad" in type(y.grad_fn).__name__  # the folding backward, not aten's
    assert torch.equal(y, F.pad(x, pad, "reflect"))
    (got,) = torch.autograd.grad(y, x, g)
    assert torch.equal(got, want)


def test_reflection_pad_backward_differentiates_again() -> None:
    """A gradient penalty through a reflection-padded discriminator needs the backward's own gradient."""
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: L.ReflectionPad2d((2, 1, 1, 2))(t), (x,))
    with torch.no_grad():
        assert L.ReflectionPad2d(1)(x).grad_fn is None  # no gradient: the stock layer


def test_grad_in_layout_is_the_identity_with_a_channels_last_gradient() -> None:
    cl = torch.channels_last
    leaf = torch.randn(2, 8, 6, 6, dtype=torch.bfloat16).to(memory_format=cl).requires_grad_()

    def grad_of_features(wrap: bool) -> torch.Tensor:
        h = torch.relu(leaf)  # a feature map inside an extractor: channels_last, not a leaf
        seen: list[torch.Tensor] = []
        h.register_hook(seen.append)
        y = L.grad_in_layout(h) if wrap else h
        assert torch.equal(y, h) and y.is_contiguous(memory_format=cl)
        F.mse_loss(y.float(), torch.zeros(2, 8, 6, 6)).backward()  # as a loss term does with bf16 features
        return seen[0]

    ref, got = grad_of_features(False), grad_of_features(True)
    assert ref.is_contiguous() and not ref.is_contiguous(memory_format=cl)  # what the boundary is for
    assert got.is_contiguous(memory_format=cl) and not got.is_contiguous()
    assert torch.equal(got, ref)
    plain = torch.randn(2, 8, 6, 6, requires_grad=True)
    assert L.grad_in_layout(plain) is plain  # contiguous tensors are not wrapped


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 8, 16, 31), (2, 4, 8, 64), (1, 2, 1, 1)])
def test_upsample_nearest_is_interpolate_with_aten_s_gradient(shape: tuple, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=dtype)
    size = (2 * shape[2], 2 * shape[3])
    fast = shape[3] < L.NEAREST_MAX_WIDTH
    got, ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    y = L.upsample_nearest(got, size)
    y_ref = F.interpolate(ref, size=size, mode="nearest")
    assert torch.equal(y, y_ref) and y.dtype == dtype
    assert (type(y.grad_fn).__name__ == "_Nearest2xBackward") == fast
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    assert torch.equal(got.grad, ref.grad)  # aten's order (and float32 sums for bf16): the same bits
    g = torch.randn_like(y) * torch.logspace(-30, 30, y.numel()).view_as(y).to(dtype)  # sums that round
    for t in (got, ref):
        t.grad = None
    L.upsample_nearest(got, size).backward(g)
    F.interpolate(ref, size=size, mode="nearest").backward(g)
    assert torch.equal(got.grad, ref.grad)


def test_upsample_nearest_falls_back_where_the_fast_path_does_not_apply() -> None:
    x = torch.randn(1, 2, 5, 7, requires_grad=True)
    for size, xin in (((11, 15), x), ((10, 14), x.transpose(2, 3).contiguous().transpose(2, 3)),
                      ((10, 14), x.contiguous(memory_format=torch.channels_last))):
        y = L.upsample_nearest(xin, size)  # not 2x, not contiguous, channels_last: aten's kernel and layout
        assert type(y.grad_fn).__name__ != "_Nearest2xBackward"
        assert torch.equal(y, F.interpolate(xin, size=size, mode="nearest"))
    assert L.upsample_nearest(x.detach(), (10, 14)).grad_fn is None


def test_upsample_nearest_differentiates_again_and_the_module_matches_nn_upsample() -> None:
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: L.upsample_nearest(t, (6, 8)), (x,))
    z = torch.randn(2, 3, 8, 8)
    assert torch.equal(L.Upsample(scale_factor=2, mode="nearest")(z), nn.Upsample(scale_factor=2, mode="nearest")(z))
    assert torch.equal(L.Upsample(scale_factor=3)(z), nn.Upsample(scale_factor=3)(z))  # other factors: stock
