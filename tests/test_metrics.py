"""Metrics on cases with a known answer (identical sets, the style image against itself, growing noise),
reference matching by file stem, and `stylezoo eval` on a tiny trained run.

Everything runs on 32 px images and a dozen samples; FID/KID are checked for order, not absolute values.
The extractors are the real offline weights (`make weights`), as the metrics use them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchmetrics.image.fid import FrechetInceptionDistance
from typer.testing import CliRunner

from stylezoo.core.cli import app
from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import ConfigError, DataError, UsageError
from stylezoo.core.evaluation.evaluate import domain_images, match_by_stem, split_holdout
from stylezoo.core.files.images import find_images
from stylezoo.core.ops import metrics as M
from stylezoo.core.runs.runconfig import SAMPLES, resolve
from stylezoo.core.training.engine import Trainer

SIZE = 32


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


@pytest.fixture(scope="module")
def vgg(reg: Registry) -> torch.nn.Module:
    return reg.build("feat/vgg16")


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """12 deterministic 32 px crops of the bundled photos and paintings."""
    return domain_images(find_images(SAMPLES), SIZE, 12)


def noisy(x: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def strictly_increasing(xs: list[float]) -> bool:
    return all(a < b for a, b in zip(xs, xs[1:]))


# -- the table --------------------------------------------------------------------------------------------------
def test_every_metric_has_one_direction_and_the_best_follows_it() -> None:
    assert M.METRICS["style_gram"].direction == "min" and M.METRICS["fid_effl0"].direction == "min"
    assert M.METRICS["content_ssim"].direction == "max" and M.METRICS["ref_ssim"].direction == "max"
    assert M.better("fid_effl0", 10.0, 12.0) and not M.better("fid_effl0", 12.0, 10.0)
    assert M.better("content_ssim", 0.8, 0.7) and not M.better("content_ssim", 0.6, 0.7)
    assert M.better("style_gram", 5.0, None) and not M.better("style_gram", float("nan"), None)
    with pytest.raises(UsageError, match="fid_effl0"):
        M.check_metric("fid")
    with pytest.raises(UsageError):  # a spread is not a quality to rank checkpoints by
        M.check_metric("kid_effl0_std")


def test_train_config_eval_fields_are_range_checked(reg: Registry) -> None:
    for bad, match in ((["train.eval_every=-1"], "eval_every"), (["train.eval_holdout=0"], "eval_holdout"),
                       (["train.eval_metric=fid"], "Did you mean 'fid_effl0'")):
        with pytest.raises(ConfigError, match=match):
            resolve(reg, cli={"gen": "encdec", "data": {"content": "x"}}, sets=bad)


# -- pixel measures -------------------------------------------------------------------------------------------------
def test_ssim_is_one_for_identical_images_and_falls_with_noise(photos: torch.Tensor) -> None:
    assert torch.allclose(M.ssim(photos, photos), torch.ones(len(photos)), atol=1e-5)
    means = [float(M.ssim(noisy(photos, s), photos).mean()) for s in (0.05, 0.2, 0.6)]
    assert strictly_increasing(means[::-1]), means
    tiny = photos[:2, :, :6, :6]  # smaller than SSIM's 11 px window still works down to 6 px (reflect padding)
    assert torch.allclose(M.ssim(tiny, tiny), torch.ones(2), atol=1e-5)
    with pytest.raises(UsageError, match="at least 6x6 px"):  # below that, one line instead of a padding error
        M.ssim(photos[:2, :, :5, :9], photos[:2, :, :5, :9])


def test_ssim_is_computed_in_float32_under_bf16_autocast(photos: torch.Tensor) -> None:
    """loss/ssim and the eval metric give the float32 value even when called inside the engine's autocast."""
    a, b = photos, noisy(photos, 0.2)
    ref = M.ssim(a, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = M.ssim(a, b)
    assert got.dtype == torch.float32 and torch.equal(got, ref)


def test_ssim_is_torchmetrics_ssim(photos: torch.Tensor) -> None:
    """M.ssim filters with matrix products; the values are torchmetrics' (its 11x11 convolution, run here in
    float64) to float32 rounding, on square and oblong images and at the 6 px minimum (torchmetrics' own
    float32 values are 2e-6 to 2e-5 off there), and it has a gradient (loss/ssim)."""
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    for a, b in ((photos, noisy(photos, 0.2)), (photos[:2, :, :24, :32], photos[2:4, :, :24, :32]),
                 (photos[:2, :, :6, :7], noisy(photos[:2, :, :6, :7], 0.3))):
        want = tm_ssim(M.luminance(a).double(), M.luminance(b).double(), data_range=1.0, reduction="none")
        got = M.ssim(a, b)
        assert got.shape == (a.shape[0],) and got.dtype == torch.float32
        assert torch.allclose(got.double(), want, atol=4e-5, rtol=0), (got, want)
    x = noisy(photos[:2], 0.3).requires_grad_(True)
    (1 - M.ssim(x, photos[:2]).mean()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_perceptual_distance_in_slices_is_the_whole_map_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    """perceptual_distance normalises a few rows at a time (M.SLICE_ELEMENTS); the value is the formula on
    whole maps, for bf16 channels_last features (the Evaluator's) and float32 contiguous ones."""
    def whole(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
        per = []
        for k in b:
            fa, fb = a[k].double(), b[k].double()
            na, nb = fa / (fa.norm(dim=1, keepdim=True) + M.EPS), fb / (fb.norm(dim=1, keepdim=True) + M.EPS)
            per.append((na - nb).square().sum(1).mean((1, 2)))
        return torch.stack(per).mean(0)

    torch.manual_seed(4)
    a = {"x": torch.randn(3, 16, 11, 9).relu(), "y": torch.randn(3, 32, 5, 4).relu()}
    b = {k: (v + 0.5 * torch.randn(v.shape)).relu() for k, v in a.items()}
    monkeypatch.setattr(M, "SLICE_ELEMENTS", 3 * 16 * 9 * 2)  # 2 rows a slice for "x": a ragged last slice
    for conv in (lambda t: t, lambda t: t.bfloat16().contiguous(memory_format=torch.channels_last)):
        fa, fb = ({k: conv(v) for k, v in d.items()} for d in (a, b))
        got = M.perceptual_distance(fa, fb)
        assert got.dtype == torch.float32 and got.shape == (3,)
        assert torch.allclose(got.double(), whole(fa, fb), rtol=1e-5), (got, whole(fa, fb))
    assert float(M.perceptual_distance(a, a).abs().max()) < 1e-6


def test_l1_has_known_values() -> None:
    black, white = -torch.ones(2, 3, 8, 8), torch.ones(2, 3, 8, 8)
    assert torch.equal(M.l1(black, white), torch.ones(2))
    assert torch.equal(M.l1(white, white), torch.zeros(2))
    assert torch.allclose(M.l1(black, torch.zeros(2, 3, 8, 8)), torch.full((2,), 0.5))


# -- feature distances on VGG16 -------------------------------------------------------------------------------
def test_gram_distance_is_zero_for_the_style_image_itself_and_grows_with_noise(vgg: torch.nn.Module) -> None:
    style = domain_images([SAMPLES / "style" / "starry_night.jpg"], SIZE * 2, 1)
    layers = tuple(vgg.style_layers)
    with torch.no_grad():
        targets = M.gram_targets(vgg(style, layers))
        d = [float(M.gram_distance(vgg(noisy(style, s), layers), targets)) for s in (0.0, 0.1, 0.3, 0.8)]
    assert abs(d[0]) < 1e-6, d
    assert strictly_increasing(d), d


def test_evaluator_scores_batch_by_batch_as_all_at_once(reg: Registry, vgg: torch.nn.Module,
                                                        photos: torch.Tensor) -> None:
    """The evaluator reduces every batch before the next (memory); its scores are those of the whole set."""
    from stylezoo.core.evaluation.evaluate import Evaluator

    out, content, style = noisy(photos[:5], 0.2), photos[:5], photos[6:11]
    ev = Evaluator(style=style, registry=reg, batch=2, precision="fp32")
    got = ev.score(out, content=content, reference=photos[6:8], ref_index=[0, 3])
    # bf16 autocast (the default where the CPU has fast bfloat16; here asked for): the same scores but for rounding
    fast = Evaluator(style=style, registry=reg, batch=2, precision="bf16").score(
        out, content=content, reference=photos[6:8], ref_index=[0, 3])
    layers, cl = tuple(vgg.style_layers), tuple(vgg.content_layers)
    pl = ev.perceptual_layers()
    with torch.no_grad():
        t = M.gram_targets(vgg(style, layers))
        f = vgg(out, tuple(dict.fromkeys(layers + cl)))
        want = {"style_gram": float(M.gram_distance(f, t).mean()),
                "content_feat": float(M.feature_distance(f, {k: v for k, v in vgg(content, cl).items()}).mean()),
                "content_ssim": float(M.ssim(out, content).mean()),
                "ref_ssim": float(M.ssim(out[[0, 3]], photos[6:8]).mean()),
                "ref_perceptual": float(M.perceptual_distance(vgg(out[[0, 3]], pl), vgg(photos[6:8], pl)).mean())}
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
        assert fast[k] == pytest.approx(v, rel=1e-2, abs=1e-4), k


def test_evaluator_bf16_vgg_holds_bf16_weights_and_gives_autocasts_features(reg: Registry,
                                                                          photos: torch.Tensor) -> None:
    """Under bf16 the Evaluator's VGG16 holds bfloat16 weights (no cast per call); its features are exactly
    those of the float32 module under autocast, which casts the same weights every call. EfficientNet has
    batch norm and keeps float32 weights."""
    from stylezoo.core.evaluation.evaluate import Evaluator

    ev = Evaluator(registry=reg, precision="bf16")
    assert next(ev.vgg.parameters()).dtype == torch.bfloat16
    assert next(ev.effl0.parameters()).dtype == torch.float32
    ref = reg.build("feat/vgg16").eval().to(memory_format=torch.channels_last)
    layers = ("relu1_2", "relu3_3", "relu5_3")
    got = ev.vgg_feats(photos[:3], layers)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        want = ref(photos[:3].contiguous(memory_format=torch.channels_last), layers)
    for k in layers:
        assert got[k].dtype == torch.bfloat16 and torch.equal(got[k], want[k]), k


def test_content_and_perceptual_distances_are_zero_for_identity_and_grow_with_noise(
        vgg: torch.nn.Module, photos: torch.Tensor) -> None:
    x, c, p = photos[:4], tuple(vgg.content_layers), M.PERCEPTUAL_LAYERS
    layers = tuple(dict.fromkeys(c + p))
    with torch.no_grad():
        ref = vgg(x, layers)
        cd, pd = [], []
        for s in (0.0, 0.1, 0.3, 0.8):
            f = vgg(noisy(x, s), layers)
            cd.append(float(M.feature_distance(f, {k: ref[k] for k in c}).mean()))
            pd.append(float(M.perceptual_distance(f, {k: ref[k] for k in p}).mean()))
    assert cd[0] == 0.0 and pd[0] < 1e-10, (cd, pd)
    assert strictly_increasing(cd) and strictly_increasing(pd), (cd, pd)


# -- FID / KID ----------------------------------------------------------------------------------------------------
def test_fid_in_the_spanned_basis_equals_torchmetrics_on_the_full_features() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(10, 200, generator=g) * 3, torch.rand(12, 200, generator=g) * 3 + 0.2
    full = FrechetInceptionDistance(feature=M._Features(200))
    full.update(a.double(), real=True)
    full.update(b.double(), real=False)
    assert M.fid_kid(a, b)["fid_effl0"] == pytest.approx(float(full.compute()), rel=1e-6)


def test_fid_and_kid_are_zero_for_identical_sets_and_grow_with_noise(reg: Registry, photos: torch.Tensor) -> None:
    effl0 = reg.build("feat/efficientnet-lite0")
    with torch.no_grad():
        real = effl0.pooled(photos)
        shuffled = photos.flatten(2)[:, :, torch.randperm(SIZE * SIZE, generator=torch.Generator().manual_seed(0))]
        runs = [M.fid_kid(real, effl0.pooled(noisy(photos, s))) for s in (0.0, 0.1, 0.3, 1.0)]
        pixels = M.fid_kid(real, effl0.pooled(shuffled.reshape(photos.shape)))
    fid = [r["fid_effl0"] for r in runs]
    kid = [r["kid_effl0"] for r in runs]
    assert abs(fid[0]) < 1e-3, fid  # the same set: zero up to numerics
    assert strictly_increasing(fid), fid
    # KID is torchmetrics' unbiased MMD^2: zero in expectation for independent samples of one distribution;
    # a set against itself comes out slightly below zero (the diagonal kernel terms), then it grows with noise
    assert kid[0] <= 1e-9 and abs(kid[0]) < kid[-1], kid
    assert strictly_increasing(kid), kid
    assert all(r["kid_effl0_std"] > 0 for r in runs)
    assert pixels["fid_effl0"] > fid[1]  # shuffled pixels are further than mild noise


def test_kid_subset_size_adapts_to_small_sets() -> None:
    assert M.kid_subset_size(3, 10) == 3
    assert M.kid_subset_size(16, 40) == 8
    assert M.kid_subset_size(5000, 4000) == 1000
    g = torch.Generator().manual_seed(0)
    out = M.fid_kid(torch.rand(3, 64, generator=g), torch.rand(3, 64, generator=g) + 1)
    assert out["kid_effl0"] > 0 and out["fid_effl0"] > 0
    with pytest.raises(UsageError, match="at least 2"):
        M.fid_kid(torch.rand(1, 64), torch.rand(5, 64))


# -- sets ---------------------------------------------------------------------------------------------------------
def _png(path: Path, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 40), (value, value // 2, 255 - value)).save(path)
    return path


def test_references_are_matched_by_stem_and_missing_ones_reported(tmp_path: Path) -> None:
    content = [_png(tmp_path / "c" / n) for n in ("a.png", "b.png", "c.jpg")]
    for n in ("a.jpg", "c.png", "z.png"):
        _png(tmp_path / "r" / n)
    pairs, missing = match_by_stem(content, tmp_path / "r")
    assert [(i, p.name) for i, p in pairs] == [(0, "a.jpg"), (2, "c.png")]
    assert missing == ["b"]
    _png(tmp_path / "r" / "a.png")
    with pytest.raises(DataError, match="share the stem 'a'"):
        match_by_stem(content, tmp_path / "r")


def test_holdout_takes_at_most_half_of_the_images(tmp_path: Path) -> None:
    for i in range(12):
        _png(tmp_path / f"{i}.png", 20 * i)
    train, held = split_holdout(tmp_path, 2)
    assert len(held) == 2 and len(train) == 10 and not set(train) & set(held)
    train, held = split_holdout(tmp_path, 10)
    assert len(train) == 6 and len(held) == 6  # not 2 to train on and 10 held
    train, held = split_holdout(SAMPLES / "content", 4)  # the bundled photos: 3 still train, not 1
    assert len(train) == 3 and len(held) == 2
    assert split_holdout(tmp_path / "0.png", 4) == ([tmp_path / "0.png"], [])


# -- stylezoo eval --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(reg: Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    rc = resolve(reg, cli={"gen": "encdec", "disc": "", "adv": "", "feat": "", "gp": "none",
                           "train": {"size": SIZE, "batch": 2, "steps": 1, "sample_every": 0, "ckpt_every": 1,
                                     "num_samples": 2},
                           "data": {"content": str(SAMPLES / "content"),
                                    "style": str(SAMPLES / "style" / "the_scream.jpg")},
                           "set": {"gen": {"channels": 8, "n_res": 1}}}, losses=["tv"])
    Trainer(rc, out, registry=reg).fit()
    return out


def test_eval_cli_prints_json_and_appends_to_the_runs_eval_log(tiny_run: Path, tmp_path: Path) -> None:
    refs = tmp_path / "refs"
    refs.mkdir()
    for name in ("astronaut", "chelsea"):  # grey "sketches" of two of the five content images
        Image.open(SAMPLES / "content" / f"{name}.jpg").convert("L").save(refs / f"{name}.png")
    r = CliRunner().invoke(app, ["eval", str(tiny_run), "--content", str(SAMPLES / "content"), "--style",
                                 str(SAMPLES / "style" / "the_scream.jpg"), "--reference", str(refs),
                                 "--size", str(SIZE), "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    for key in ("style_gram", "content_feat", "content_ssim", "fid_effl0", "kid_effl0", "kid_effl0_std",
                "ref_ssim", "ref_l1", "ref_perceptual"):
        assert isinstance(rec["metrics"][key], float), key
    assert rec["n"] == 5 and sorted(rec["missing_reference"]) == ["camera_gray", "coffee", "rocket"]
    assert 0 < rec["metrics"]["content_ssim"] <= 1
    lines = (tiny_run / "eval.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["metrics"] == rec["metrics"]
    # a checkpoint inside the run (checkpoints/step-N) logs to the same run; the table names the metrics
    step = next((tiny_run / "checkpoints").glob("step-*.safetensors"))
    r = CliRunner().invoke(app, ["eval", str(step), "--size", str(SIZE), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "style_gram" in r.stdout and "lower" in r.stdout
    assert len((tiny_run / "eval.jsonl").read_text().splitlines()) == len(lines) + 1
    # a checkpoint copied out of its run: scored, and it says where the results were not logged
    alone = tmp_path / "alone.safetensors"
    shutil.copy(step, alone)
    r = CliRunner().invoke(app, ["eval", str(alone), "--size", str(SIZE), "--device", "cpu"])
    assert r.exit_code == 0 and "not logged" in r.output and "not inside a run folder" in r.output, r.output


def test_eval_cli_errors_are_one_line(tiny_run: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(app, ["eval", str(tiny_run), "--reference", str(tmp_path / "empty"), "--size", "32",
                                 "--device", "cpu"])
    assert r.exit_code != 0 and "same file name" in r.output
    r = CliRunner().invoke(app, ["eval", str(tiny_run), "--size", "8", "--device", "cpu"])
    assert r.exit_code == 2 and "--size" in r.output
    for num in ("0", "-3"):  # was a traceback, or an empty result logged with exit 0
        r = CliRunner().invoke(app, ["eval", str(tiny_run), "--num", num, "--device", "cpu"])
        assert r.exit_code == 2 and "--num must be >= 1" in r.output and "Traceback" not in r.output


def test_eval_of_a_paired_run_defaults_to_its_pairs(reg: Registry, tmp_path: Path) -> None:
    from stylezoo.core.evaluation.checkpoint_eval import evaluate_checkpoint

    for side in ("photo", "sketch"):
        (tmp_path / "pairs" / side).mkdir(parents=True)
    for f in sorted((SAMPLES / "content").iterdir())[:4]:
        im = Image.open(f).convert("RGB").resize((40, 40))
        im.save(tmp_path / "pairs" / "photo" / f"{f.stem}.png")
        im.convert("L").save(tmp_path / "pairs" / "sketch" / f"{f.stem}.png")
    rc = resolve(reg, cli={"gen": "unet", "disc": "", "adv": "", "feat": "", "gp": "none",
                           "train": {"size": SIZE, "batch": 2, "steps": 1, "sample_every": 0, "num_samples": 2},
                           "set": {"gen": {"channels": 8}},
                           "data": {"pairs": str(tmp_path / "pairs"), "content": "", "style": ""}}, losses=["l1"])
    Trainer(rc, tmp_path / "run", registry=reg).fit()
    res = evaluate_checkpoint(tmp_path / "run", size=SIZE)
    assert res.inputs["reference"] == res.inputs["data"] == str(tmp_path / "pairs" / "sketch")
    assert res.missing_reference == [] and res.n == 4
    assert {"ref_ssim", "ref_l1", "ref_perceptual", "fid_effl0", "style_gram"} <= set(res.metrics)
    assert any("training pairs" in n for n in res.notes)
    # other photos given: still scored against the run's targets (FID/KID, Gram), as without --content
    (tmp_path / "held").mkdir()
    for f in sorted((SAMPLES / "content").iterdir())[-2:]:
        shutil.copy(f, tmp_path / "held" / f.name)
    res = evaluate_checkpoint(tmp_path / "run", content=str(tmp_path / "held"), size=SIZE)
    assert res.inputs["data"] == res.inputs["style"] == str(tmp_path / "pairs" / "sketch")
    assert {"fid_effl0", "kid_effl0", "style_gram", "content_feat"} <= set(res.metrics) and res.n == 2
    assert res.inputs["reference"] is None and any("--reference" in n for n in res.notes)
    # and with their own references, the paired metrics too
    res = evaluate_checkpoint(tmp_path / "run", content=str(tmp_path / "pairs" / "photo"), size=SIZE,
                              reference=str(tmp_path / "pairs" / "sketch"))
    assert {"ref_ssim", "fid_effl0", "style_gram"} <= set(res.metrics)


def test_eval_of_a_noise_generator_scores_at_its_own_size_as_training_does(reg: Registry, tmp_path: Path) -> None:
    from stylezoo.core.evaluation.checkpoint_eval import evaluate_checkpoint
    from stylezoo.core.evaluation.evaluate import Evaluator, generate, style_images
    from stylezoo.core.files import checkpoint as ckpt
    from stylezoo.core.use.stylizer import load_generator

    style = str(SAMPLES / "style" / "starry_night.jpg")
    rc = resolve(reg, cli={"gen": "dcgan", "disc": "dcgan", "feat": "vgg16", "gp": "none",
                           "train": {"size": SIZE, "batch": 2, "steps": 1, "sample_every": 0, "num_samples": 2},
                           "data": {"data": str(SAMPLES / "content"), "style": style}},
                 losses=["gram"], sets=["feat.weights=random"])
    last = Trainer(rc, tmp_path / "run", registry=reg).fit()
    g = load_generator(last)
    outputs = generate(g.module, torch.randn(4, g.module.latent_dim, generator=torch.Generator().manual_seed(0)))

    def gram_at(side: int) -> float:
        return Evaluator(style=style_images(style, side), registry=reg).score(outputs)["style_gram"]

    # the in-run evaluation's style side: twice the generator's 32 px (or train.style_size), whatever --size says
    res = evaluate_checkpoint(last, num=4, registry=reg)
    assert res.metrics["style_gram"] == pytest.approx(gram_at(2 * SIZE), rel=1e-5)
    assert res.inputs["size"] == SIZE and res.inputs["content"] is None
    assert evaluate_checkpoint(last, num=4, size=SIZE, registry=reg).metrics == res.metrics
    tensors, meta = ckpt.load(last)
    meta["run"]["train"]["style_size"] = 48
    ckpt.save(tmp_path / "style48.safetensors", tensors, meta)
    res = evaluate_checkpoint(tmp_path / "style48.safetensors", num=4, registry=reg)
    assert res.metrics["style_gram"] == pytest.approx(gram_at(48), rel=1e-5)
    # a size or content it cannot use is refused in one line, not recorded as if used
    for args, what in ((["--size", "64"], "--size 64"), (["--content", str(SAMPLES / "content")], "--content")):
        r = CliRunner().invoke(app, ["eval", str(last), "--num", "2", "--device", "cpu", "--no-log", *args])
        assert r.exit_code == 2 and what in r.output and "noise" in r.output and "Traceback" not in r.output, r.output
