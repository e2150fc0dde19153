"""gen/wct (universal style transfer, Li et al. 2017): the whitening-colouring transform's statistics, the
cascade's training-mode reconstruction, alpha, style mixing, the default style, checkpoints without the frozen
encoder, loss/identity, and a tiny end-to-end run through the engine and stylize (API and CLI)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from stylezoo.core.cli import app
from stylezoo.core.components.kinds import StepContext
from stylezoo.core.components.registry import Registry
from stylezoo.core.files import weights as W
from stylezoo.core.files.images import load_tensor
from stylezoo.core.runs.runconfig import resolve
from stylezoo.core.training.engine import Trainer
from stylezoo.core.use.stylizer import Stylizer
from stylezoo.plugins.wct import feature_stats, wct

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
CONTENT, STYLE = SAMPLES / "content", SAMPLES / "style"
LAYERS = ("relu2_1", "relu1_1")  # two levels keep the tests small; the default has four
TINY = {"size": 32, "batch": 2, "steps": 3, "sample_every": 3, "ckpt_every": 0, "log_every": 1, "num_samples": 2}


def need_vgg() -> None:
    ws = W.get_set("vgg16-hed")
    if not W.cached_path("vgg16-hed").is_file() and W.package_file(ws) is None:
        pytest.skip(f"{ws.requirement} is not installed: run `stylezoo weights pull vgg16-hed` (make test does)")


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


def build(reg: Registry, weights: str = "random", seed: int = 0, layers: tuple[str, ...] = LAYERS) -> torch.nn.Module:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return reg.build("gen/wct", {"weights": weights, "layers": layers}).eval()


def image(name: str, side: int = 32, folder: Path = CONTENT) -> torch.Tensor:
    return load_tensor(folder / name, side)[None]


# ---------------------------------------------------------------------------------------------- the transform
def test_wct_gives_the_features_the_targets_mean_and_covariance() -> None:
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 6, 12, 12, generator=g) * torch.rand(1, 6, 1, 1, generator=g) * 5
    s = torch.randn(1, 6, 20, 20, generator=g) @ torch.randn(20, 20, generator=g)  # correlated channels
    mean, cov = feature_stats(s + 3.0)
    out = wct(f, mean, cov, eps=1e-8)
    got_mean, got_cov = feature_stats(out)
    torch.testing.assert_close(got_mean, mean.expand(2, -1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_cov, cov.expand(2, -1, -1), atol=1e-3, rtol=1e-3)
    assert out.dtype == torch.float32 and out.shape == f.shape


def test_wct_drops_dead_channels_instead_of_dividing_by_zero() -> None:
    f = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    f[:, 2] = 0.0  # a ReLU channel that never fires
    mean, cov = feature_stats(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2)))
    out = wct(f, mean, cov)
    assert torch.isfinite(out).all() and out.abs().max() < 50


# ---------------------------------------------------------------------------------------------- the generator
def test_training_mode_reconstructs_image_k_from_layer_k_alone_and_reaches_every_decoder(reg: Registry) -> None:
    gen = build(reg).train()
    x = torch.cat([image("chelsea.jpg"), image("coffee.jpg"), image("rocket.jpg")])  # layers 0, 1, 0
    assert gen.scales.eq(0).all()  # set from the first training batch
    y = gen(x)
    assert y.shape == x.shape and gen.scales.gt(0).all()
    with torch.no_grad():
        for k, i in ((0, 0), (1, 1), (2, 0)):
            own = torch.tanh(gen.decoders[i](gen._encode(x[k:k + 1], LAYERS[i]) / gen.scales[i]))
            torch.testing.assert_close(y[k:k + 1], own, atol=1e-5, rtol=0)
    y.pow(2).mean().backward()
    for i, dec in enumerate(gen.decoders):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in dec.parameters()), i
    assert all(p.grad is None for p in gen.encoder.parameters())  # the encoder is frozen


def test_alpha_style_batches_weights_and_errors(reg: Registry) -> None:
    gen = build(reg)
    x = image("rocket.jpg").expand(2, -1, -1, -1)
    s = torch.cat([image(f, 32, STYLE) for f in ("the_scream.jpg", "great_wave.jpg", "starry_night.jpg")])
    with torch.no_grad():
        plain = gen(x)  # no style, no default: the reconstruction
        torch.testing.assert_close(gen(x, style=s[:1], alpha=0.0), plain, atol=1e-5, rtol=0)
        full, half = gen(x, style=s[:1]), gen(x, style=s[:1], alpha=0.5)
        assert (full - plain).abs().max() > 0.05 and (half - plain).abs().max() > 0
        per_sample = gen(x, style=s[:2])
        assert (per_sample[0] - per_sample[1]).abs().max() > 0.05  # each content image its own style
        torch.testing.assert_close(gen(x, style=[s[0], s[1][None]]), per_sample)
        torch.testing.assert_close(gen(x, style=s, style_weights=[0.0, 1.0, 0.0]), gen(x, style=s[1:2]),
                                   atol=1e-5, rtol=0)
        with pytest.raises(ValueError, match="3 style targets for 2 content"):
            gen(x, style=s)
        with pytest.raises(ValueError, match="2 style weights for 3 style images"):
            gen(x, style=s, style_weights=[0.5, 0.5])
        with pytest.raises(ValueError, match=">= 0"):
            gen(x, style=s, style_weights=[-1.0, 1.0, 1.0])


def test_default_style_is_used_without_a_style_and_kept_in_the_state(reg: Registry) -> None:
    gen = build(reg)
    x = image("coffee.jpg")
    styles = torch.cat([image(f, 32, STYLE) for f in ("the_scream.jpg", "great_wave.jpg")])
    with torch.no_grad():
        before = gen(x)
        assert not gen.has_default_style()
        gen.set_default_style(styles)
        assert gen.has_default_style()
        stats = gen.style_stats(styles)
        mean_stats = tuple((m.mean(0, keepdim=True), c.mean(0, keepdim=True)) for m, c in stats)
        after = gen(x)
        torch.testing.assert_close(after, gen(x, style_stats=mean_stats))
        assert (after - before).abs().max() > 0.05
        fresh = build(reg, seed=1)
        fresh.load_state_dict(gen.state_dict(), strict=True)
        torch.testing.assert_close(fresh(x), after)


def test_pretrained_encoder_is_left_out_of_checkpoints(reg: Registry) -> None:
    need_vgg()
    gen = build(reg, weights="default")
    state = gen.state_dict()
    assert not [k for k in state if k.startswith("encoder.")]
    assert any(k.startswith("decoders.1.") for k in state) and "default_cov_0" in state and "scales" in state
    fresh = build(reg, weights="default", seed=1)
    fresh.load_state_dict(state, strict=True)
    x, s = image("chelsea.jpg"), image("starry_night.jpg", 32, STYLE)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x, style=s), gen(x, style=s))


def test_config_is_checked(reg: Registry) -> None:
    with pytest.raises(Exception, match="no layer 'relu9_1'"):
        build(reg, layers=("relu9_1",))
    with pytest.raises(Exception, match="distinct"):
        build(reg, layers=("relu1_1", "relu1_1"))


def test_identity_loss_is_the_mean_squared_difference_to_the_input(reg: Registry) -> None:
    term = reg.build("loss/identity", {})
    x = torch.zeros(1, 3, 4, 4)
    y = torch.full((1, 3, 4, 4), 0.5)
    assert float(term(StepContext(fake=y, content=x))) == pytest.approx(0.25)
    with pytest.raises(RuntimeError, match="input image"):
        term(StepContext(fake=y))


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def trained(reg: Registry, tmp_path_factory: pytest.TempPathFactory) -> tuple[Trainer, Path]:
    need_vgg()
    out = tmp_path_factory.mktemp("wct-run")
    rc = resolve(reg, recipe="wct", cli={"train": TINY, "set": {"gen": {"layers": list(LAYERS)}}})
    tr = Trainer(rc, out, registry=reg)
    tr.fit()
    return tr, out


def test_gen_wct_alone_builds_on_its_recipe(reg: Registry) -> None:
    rc = resolve(reg, cli={"gen": "wct"})
    assert rc.disc == "" and set(rc.losses) == {"loss/content", "loss/identity"}


def test_training_reconstructs_and_stylize_takes_any_reference(trained, tmp_path: Path) -> None:
    tr, out = trained
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(np.isfinite(r["g/loss/identity"]) and r["g/loss/identity"] > 0 for r in rows)
    assert tr.components.gen.has_default_style()
    st = Stylizer.load(out, device="cpu", precision="fp32")
    assert st.takes_style
    x = image("astronaut.jpg")
    a = st.set_style(STYLE / "the_scream.jpg", size=48).forward(x)
    b = st.set_style(STYLE / "great_wave.jpg", size=48).forward(x)
    assert a.shape == x.shape and (a - b).abs().mean() > 0.01
    res = CliRunner().invoke(app, ["stylize", str(out), str(CONTENT / "chelsea.jpg"), "--style",
                                   str(STYLE / "composition_vii.jpg"), "-o", str(tmp_path / "o.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o.png").is_file()


def test_export_is_refused_with_the_reason(trained, tmp_path: Path) -> None:
    _, out = trained
    res = CliRunner().invoke(app, ["export", str(out), "-o", str(tmp_path / "m.onnx")])
    assert res.exit_code != 0 and "cannot be exported" in res.output and "eigh" in res.output
    assert not (tmp_path / "m.onnx").exists()
