"""Label-conditioned generators: gen/cin's conditional instance norm, labels from style folders, a projection
discriminator, per-label style targets in a tiny run, stylize by label name (API and CLI), unknown labels."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from stylezoo.core.cli import app
from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import DataError, UsageError
from stylezoo.core.files.data import style_labels
from stylezoo.core.files.images import load_tensor
from stylezoo.core.runs.runconfig import resolve
from stylezoo.core.training.engine import Trainer
from stylezoo.core.use.stylizer import Stylizer, load_generator
from stylezoo.plugins.cin import CondInstanceNorm

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
CONTENT, STYLE = SAMPLES / "content", SAMPLES / "style"
TINY = {"size": 32, "batch": 2, "steps": 2, "sample_every": 0, "ckpt_every": 0, "log_every": 1, "num_samples": 2}
SMALL = {"gen": {"channels": 8, "n_res": 1}, "disc": {"n_layers": 2, "channels": 8}, "feat": {"weights": "random"}}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


def perturbed(reg: Registry, labels: tuple[str, ...] = ("ink", "oil", "pastel")) -> torch.nn.Module:
    torch.manual_seed(0)
    gen = reg.build("gen/cin", {"channels": 8, "n_res": 1, "num_labels": len(labels), "labels": list(labels)})
    with torch.no_grad():
        for p in gen.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # labels start equal (scale 1, shift 0); make them differ
    return gen.eval()


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """A style folder with two labelled sub-folders of bundled paintings."""
    root = tmp_path / "styles"
    for label, files in {"swirl": ("starry_night.jpg", "the_scream.jpg"), "sea": ("great_wave.jpg",)}.items():
        (root / label).mkdir(parents=True)
        for f in files:
            shutil.copy(STYLE / f, root / label / f)
    return root


# ---------------------------------------------------------------------------------------------- the layers
def test_conditional_instance_norm_picks_and_mixes_per_label_scales() -> None:
    torch.manual_seed(0)
    cin = CondInstanceNorm(4, 3)
    with torch.no_grad():
        cin.scale.copy_(torch.randn(3, 4))
        cin.shift.copy_(torch.randn(3, 4))
    x = torch.randn(2, 4, 5, 5)
    norm = torch.nn.functional.instance_norm(x)
    onehot = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    want = norm * cin.scale[[2, 0]][..., None, None] + cin.shift[[2, 0]][..., None, None]
    torch.testing.assert_close(cin(x, onehot), want, atol=1e-5, rtol=1e-5)
    w = torch.tensor([[0.25, 0.75, 0.0]] * 2)
    mixed = norm * (w @ cin.scale)[..., None, None] + (w @ cin.shift)[..., None, None]
    torch.testing.assert_close(cin(x, w), mixed, atol=1e-5, rtol=1e-5)


def test_two_labels_give_different_outputs_from_the_same_input(reg: Registry) -> None:
    gen = perturbed(reg)
    x = load_tensor(CONTENT / "chelsea.jpg", 32)[None]
    with torch.no_grad():
        a, b = gen(x, label=torch.tensor([0])), gen(x, label=torch.tensor([1]))
        assert a.shape == (1, 3, 32, 32) and (a - b).abs().mean() > 1e-2
        torch.testing.assert_close(gen(x, label_weights=torch.tensor([[1.0, 0.0, 0.0]])), a)
        torch.testing.assert_close(gen(x, label_weights=torch.tensor([[2.0, 0.0, 0.0]])), a)  # rows are normalised
        torch.testing.assert_close(gen(x), gen(x, label_weights=torch.ones(1, 3)))  # no label: an equal mix
        both = gen(x.expand(2, -1, -1, -1), label=torch.tensor([0, 1]))
        torch.testing.assert_close(both, torch.cat([a, b]), atol=1e-4, rtol=1e-4)  # batched float sums differ
        with pytest.raises(ValueError, match="labels must be in 0..2"):
            gen(x, label=torch.tensor([3]))
        with pytest.raises(ValueError, match="2 columns for 3 labels"):
            gen(x, label_weights=torch.ones(1, 2))


def test_projection_discriminator_uses_the_label(reg: Registry) -> None:
    torch.manual_seed(0)
    disc = reg.build("disc/patch", {"n_layers": 2, "channels": 8, "num_labels": 3}).eval()
    with torch.no_grad():
        disc.embed.weight.normal_(0, 1)
    x = load_tensor(STYLE / "great_wave.jpg", 32)[None].expand(2, -1, -1, -1)
    out = disc(x, label=torch.tensor([0, 2]))
    assert out.shape == disc.net(x).shape  # the projection term lines up with the patch map
    assert (out[0] - out[1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="got no label"):
        disc(x)
    plain = reg.build("disc/patch", {"n_layers": 2, "channels": 8})  # unconditional: labels are ignored
    torch.testing.assert_close(plain(x, label=torch.tensor([0, 1])), plain(x))


# ---------------------------------------------------------------------------------------------- labels from data
def test_style_labels_from_sub_folders_or_one_per_image(labelled: Path, tmp_path: Path) -> None:
    names, files, labels = style_labels(labelled)
    assert names == ("sea", "swirl")
    assert {f.name: names[y] for f, y in zip(files, labels)} == {
        "great_wave.jpg": "sea", "starry_night.jpg": "swirl", "the_scream.jpg": "swirl"}
    names, files, labels = style_labels(STYLE)
    assert "starry_night" in names and len(names) == len(files) and labels == list(range(len(files)))
    shutil.copy(STYLE / "the_scream.jpg", labelled / "loose.jpg")
    with pytest.raises(DataError, match="beside the style sub-folders"):
        style_labels(labelled)
    # a glob over folders whose files share stems and names: labels by the path the files differ by
    for sub, name in (("s1", "paint.jpg"), ("s2", "paint.jpg"), ("s2", "paint.png")):
        (tmp_path / sub).mkdir(exist_ok=True)
        shutil.copy(STYLE / "the_scream.jpg", tmp_path / sub / name)
    names, files, _ = style_labels(str(tmp_path / "s*" / "paint.*"))
    assert sorted(names) == ["s1/paint.jpg", "s2/paint.jpg", "s2/paint.png"]


# ---------------------------------------------------------------------------------------------- end to end
def cin_run(reg: Registry, style: Path, **train: object) -> object:
    return resolve(reg, cli={"gen": "cin", "disc": "patch", "feat": "vgg16", "adv": "lsgan", "gp": "r1",
                             "train": {**TINY, **train}, "data": {"content": str(CONTENT), "style": str(style)},
                             "set": SMALL}, losses=["content", "gram:1000"])


def test_training_learns_the_folder_labels_and_stylize_picks_them(reg: Registry, labelled: Path,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr = Trainer(cin_run(reg, labelled, sample_every=2), out, registry=reg)
    assert tr.components.gen.labels == ("sea", "swirl") and tr.components.disc.num_labels == 2
    gram = tr.components.losses["loss/gram"]
    assert gram.labelled and gram.gram_0.shape[0] == 2  # one Gram target per label
    gcond, dcond, real = tr.cond.draw(0, None)
    assert torch.equal(gcond["label"], dcond["label"]) and real.shape == (2, 3, 32, 32)
    labels = torch.cat([tr.cond.draw(s, None)[0]["label"] for s in range(8)])
    assert set(labels.tolist()) == {0, 1}
    # the discriminator's real images are style images of each sample's label
    sea = tr.data.real.files.index(labelled / "sea" / "great_wave.jpg")
    for s in range(4):
        g, _, real = tr.cond.draw(s, None)
        for k, y in enumerate(g["label"].tolist()):
            if y == 0:
                assert torch.equal(real[k], tr.data.real.take([sea], s, tr.train_cfg.seed, first=k)[0])
    tr.fit()
    grid = Image.open(out / "samples" / "final.png")
    assert grid.size[1] == 2 + 3 * (32 + 2)  # content row + one row per label
    g = load_generator(out)
    assert g.module.labels == ("sea", "swirl")

    st = Stylizer.load(out, device="cpu")
    assert st.labels == ("sea", "swirl") and "mixing all 2" in (st.condition_note() or "")
    with torch.no_grad():
        for p in st.module.parameters():  # two steps barely move the labels apart; make the check meaningful
            p.add_(torch.randn_like(p) * 0.2)
    x = load_tensor(CONTENT / "rocket.jpg", 40)
    a, b = st.set_labels("sea")(x), st.set_labels("swirl")(x)
    assert (a - b).abs().mean() > 1e-2
    torch.testing.assert_close(st.set_labels({"sea": 1.0, "swirl": 0.0})(x), a)
    half = st.set_labels(["sea:0.5", "swirl:0.5"])(x)
    assert (half - a).abs().mean() > 0 and (half - b).abs().mean() > 0
    with pytest.raises(UsageError, match="Unknown style label 'oil'.*sea, swirl"):
        st.set_labels("oil")
    with pytest.raises(UsageError, match="the weight after ':' must be a number, got 'abc'"):
        st.set_labels(["sea:abc"])
    with pytest.raises(UsageError, match="does not take a style image"):
        st.set_style(STYLE / "the_scream.jpg")

    res = CliRunner().invoke(app, ["stylize", str(out), str(CONTENT / "chelsea.jpg"), "-o", str(tmp_path / "o.png"),
                                   "--style-label", "oil"])
    assert res.exit_code != 0 and "Unknown style label 'oil'" in res.output and "sea, swirl" in res.output
    res = CliRunner().invoke(app, ["stylize", str(out), str(CONTENT / "chelsea.jpg"), "-o", str(tmp_path / "o.png"),
                                   "--size", "32", "--style-label", "sea:0.5", "--style-label", "swirl:0.5", "-q"])
    assert res.exit_code == 0, res.output and (tmp_path / "o.png").is_file()

    # eval scores the label asked for, as stylize would restyle (unconditioned: the labels' mix)
    from stylezoo.core.evaluation.checkpoint_eval import evaluate_checkpoint

    scores = {lab: evaluate_checkpoint(out, content=str(CONTENT), size=32, registry=reg, style_label=[lab])
              for lab in ("sea", "swirl")}
    assert scores["sea"].metrics["content_feat"] != scores["swirl"].metrics["content_feat"]
    assert any("style label(s) sea" in n for n in scores["sea"].notes)
    with pytest.raises(UsageError, match="Unknown style label 'oil'"):
        evaluate_checkpoint(out, content=str(CONTENT), size=32, registry=reg, style_label=["oil"])

    # resuming on style folders whose labels changed is refused
    shutil.copytree(labelled / "sea", labelled / "zebra")
    with pytest.raises(DataError, match="differ from the run's"):
        from stylezoo.core.training.api import train

        train(resume=out, steps=3, registry=reg)


def test_a_flat_style_folder_gives_one_label_per_image(reg: Registry, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # no discriminator: the labels only reach the generator and the style targets
        rc = resolve(reg, cli={"gen": "cin", "disc": "", "adv": "", "feat": "vgg16", "train": {**TINY, "steps": 1},
                               "data": {"content": str(CONTENT), "style": str(STYLE)},
                               "set": {"gen": SMALL["gen"], "feat": SMALL["feat"]}}, losses=["gram:1000"])
        tr = Trainer(rc, tmp_path / "flat", registry=reg)
    assert tr.components.gen.num_labels == len(list(STYLE.glob("*.jpg"))) and "starry_night" in tr.components.gen.labels
    gcond, dcond, real = tr.cond.draw(0, None)
    assert "label" in gcond and dcond == {} and real is None
    logs = tr.train_step(0)
    assert torch.isfinite(torch.tensor(logs["g/loss/gram"]))


def test_eval_scores_a_style_label_against_that_labels_images(reg: Registry, labelled: Path, tmp_path: Path) -> None:
    from stylezoo.core.evaluation.checkpoint_eval import evaluate_checkpoint
    from stylezoo.core.evaluation.evaluate import Evaluator, load_folder, style_images

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = resolve(reg, cli={"gen": "cin", "disc": "", "adv": "", "feat": "vgg16", "train": {**TINY, "steps": 1},
                               "data": {"content": str(CONTENT), "style": str(labelled)},
                               "set": {"gen": SMALL["gen"], "feat": SMALL["feat"]}}, losses=["gram:1000"])
        Trainer(rc, tmp_path / "run", registry=reg).fit()
    (tmp_path / "photos").mkdir()
    shutil.copy(CONTENT / "chelsea.jpg", tmp_path / "photos")
    x, _ = load_folder(tmp_path / "photos", 32)
    st = Stylizer.load(tmp_path / "run", device="cpu", precision="fp32", backend="torch", registry=reg)

    def grams(*files: str) -> dict[str, torch.Tensor]:
        targets = Evaluator(style=style_images([labelled / f for f in files], 64), registry=reg).style_targets
        assert targets is not None
        return targets

    sea, swirl = grams("sea/great_wave.jpg"), grams("swirl/starry_night.jpg", "swirl/the_scream.jpg")
    for labels, target in ((["sea"], sea), (["swirl"], swirl),
                           (["sea:0.25", "swirl:0.75"], {k: 0.25 * sea[k] + 0.75 * swirl[k] for k in sea})):
        ev = Evaluator(registry=reg)
        ev.style_targets = target
        want = ev.score(st.set_labels(labels)(x))["style_gram"]
        res = evaluate_checkpoint(tmp_path / "run", content=str(tmp_path / "photos"), size=32, registry=reg,
                                  style_label=labels)
        assert res.metrics["style_gram"] == pytest.approx(want, rel=1e-4), labels
    assert any("sea 0.25, swirl 0.75" in n and "style_gram" in n for n in res.notes), res.notes


def test_export_takes_label_weights_as_an_input_and_passes_parity(reg: Registry, tmp_path: Path) -> None:
    import numpy as np
    import onnxruntime as ort

    from stylezoo.core.components.config import config_to_dict
    from stylezoo.core.files import checkpoint as ckpt
    from stylezoo.core.use.export import export, sample_photos

    gen = perturbed(reg)
    path = tmp_path / "cin.safetensors"
    ckpt.save(path, ckpt.prefixed("gen", gen.state_dict()),
              {"composition": {"gen": "gen/cin"}, "configs": {"gen": config_to_dict(gen.cfg)}, "step": 1})
    report = export(path, "onnx", tmp_path / "cin.onnx", registry=reg)
    assert report.passed and len(report.cases) == 2
    sess = ort.InferenceSession(str(tmp_path / "cin.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input", "label_weights"]
    x = sample_photos(2, (32, 40))
    onehot = np.eye(3, dtype=np.float32)[[0, 2]]
    got = sess.run(None, {"input": x.numpy(), "label_weights": onehot})[0]
    with torch.no_grad():
        want = gen(x, label=torch.tensor([0, 2])).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    other = sess.run(None, {"input": x.numpy(), "label_weights": np.eye(3, dtype=np.float32)[[1, 1]]})[0]
    assert np.abs(got - other).mean() > 1e-2
