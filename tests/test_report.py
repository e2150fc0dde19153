"""Evaluation during training (held-aside images, eval/ lines in metrics.jsonl, best.safetensors) and the
self-contained report.html, checked as text and in a real headless browser (Debian's chromium).

The browser test (tests/browser.py drives Debian's chromium over the DevTools protocol) skips when no chromium is
installed: `apt-get install chromium`; .ci/run installs it and sets STYLEZOO_REQUIRE_BROWSER=1, which turns the
skip into a failure.
"""

from __future__ import annotations

import base64
import copy
import html
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from stylezoo.core.cli import app
from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import UsageError
from stylezoo.core.evaluation.report import build_report, image_sources, pick_grids
from stylezoo.core.files import checkpoint as ckpt
from stylezoo.core.runs.runconfig import SAMPLES, resolve
from stylezoo.core.training.engine import Trainer

TRAIN = {"size": 32, "batch": 2, "steps": 3, "sample_every": 1, "ckpt_every": 0, "log_every": 10, "num_samples": 2,
         "eval_every": 2, "eval_holdout": 2}


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


def image_run(reg: Registry, **train: object) -> object:
    return resolve(reg, cli={"gen": "encdec", "disc": "patch", "adv": "lsgan", "feat": "", "gp": "none",
                             "train": {**TRAIN, **train},
                             "data": {"content": str(SAMPLES / "content"),
                                      "style": str(SAMPLES / "style" / "starry_night.jpg")},
                             "set": {"gen": {"channels": 8, "n_res": 1}, "disc": {"n_layers": 2, "channels": 8}}},
                   losses=["tv"])


@pytest.fixture(scope="module")
def trained(reg: Registry, tmp_path_factory: pytest.TempPathFactory) -> Trainer:
    """A 3-step image run evaluated at steps 2 and 3 on 2 held-aside content images."""
    tr = Trainer(image_run(reg), tmp_path_factory.mktemp("run"), registry=reg)
    tr.fit()
    return tr


@pytest.fixture(scope="module")
def run(trained: Trainer) -> Path:
    return trained.out


def test_held_aside_images_are_not_trained_on(trained: Trainer) -> None:
    tr = trained
    assert len(tr.eval_files) == 2
    assert not set(tr.eval_files) & set(tr.data.content.files)
    assert len(tr.data.content.files) + len(tr.eval_files) == 5  # the bundled content images


def test_training_logs_eval_metrics_and_keeps_the_best_checkpoint(run: Path) -> None:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r for r in rows if "eval/style_gram" in r}
    assert sorted(evals) == [2, 3]  # every eval_every steps and at the last
    for key in ("eval/style_gram", "eval/content_feat", "eval/content_ssim", "eval/fid_effl0", "eval/kid_effl0"):
        assert all(isinstance(r[key], float) for r in evals.values()), key
    meta = ckpt.read_meta(run / "best.safetensors")
    assert meta["eval_metric"] == "style_gram"
    best_step = min(evals, key=lambda s: evals[s]["eval/style_gram"])
    assert meta["step"] == best_step
    assert meta["eval"]["style_gram"] == pytest.approx(evals[best_step]["eval/style_gram"])
    assert (run / "samples" / "eval.png").is_file()


def test_best_keeps_the_highest_value_for_ssim_like_metrics(trained: Trainer, tmp_path: Path) -> None:
    ev = copy.copy(trained.evaluator)  # the run's evaluator, ranking by SSIM into another file
    ev.metric, ev.path, ev.best = "content_ssim", tmp_path / "best.safetensors", 2.0  # beyond any SSIM
    logs, improved = ev(trained.infer_gen)
    assert "eval/content_ssim" in logs and not improved
    ev.best = -1.0  # below any SSIM: this evaluation is kept
    logs, improved = ev(trained.infer_gen)
    assert improved and ev.best == logs["eval/content_ssim"] > -1.0
    trained.save_checkpoint(False, ev.path, ev.best_meta(logs))  # what the engine does with an improvement
    meta = ckpt.read_meta(ev.path)
    assert meta["eval_metric"] == "content_ssim" and meta["eval"]["content_ssim"] == ev.best


def test_noise_generators_are_scored_against_the_real_images(reg: Registry, tmp_path: Path) -> None:
    rc = resolve(reg, cli={"gen": "dcgan", "disc": "dcgan", "feat": "", "gp": "none",
                           "train": {**TRAIN, "steps": 1, "eval_every": 1, "eval_metric": "fid_effl0"},
                           "data": {"data": str(SAMPLES / "style")}}, losses=["tv"])
    Trainer(rc, tmp_path, registry=reg).fit()
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    # the default recipe's style image rides along in the config, but no style loss used it: no style_gram
    assert set(k for k in row if k.startswith("eval/")) == {"eval/fid_effl0", "eval/kid_effl0", "eval/kid_effl0_std"}
    assert ckpt.read_meta(tmp_path / "best.safetensors")["eval"]["fid_effl0"] == row["eval/fid_effl0"]


def test_noise_generators_pulled_toward_a_style_are_scored_on_it(reg: Registry, tmp_path: Path) -> None:
    """faces-dcgan-gram's set-up: a noise generator with a style image gets style_gram, in-run and in eval."""
    from stylezoo.core.evaluation.checkpoint_eval import evaluate_checkpoint

    style = str(SAMPLES / "style" / "starry_night.jpg")
    rc = resolve(reg, cli={"gen": "dcgan", "disc": "dcgan", "feat": "vgg16", "gp": "none",
                           "train": {**TRAIN, "steps": 1, "eval_every": 1},
                           "data": {"data": str(SAMPLES / "content"), "style": style}},
                 losses=["gram"], sets=["feat.weights=random"])
    last = Trainer(rc, tmp_path, registry=reg).fit()
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert isinstance(row["eval/style_gram"], float) and "eval/fid_effl0" in row
    res = evaluate_checkpoint(last, size=32, num=4, registry=reg)
    assert isinstance(res.metrics["style_gram"], float) and "fid_effl0" in res.metrics
    assert any("style from the run's config" in n for n in res.notes)
    # the same run without a style loss: the style image in its config is not what it aimed at
    rc = resolve(reg, cli={"gen": "dcgan", "disc": "dcgan", "feat": "", "gp": "none",
                           "train": {**TRAIN, "steps": 1, "sample_every": 0},
                           "data": {"data": str(SAMPLES / "content"), "style": style}}, losses=["tv"])
    plain = evaluate_checkpoint(Trainer(rc, tmp_path / "plain", registry=reg).fit(), size=32, num=4, registry=reg)
    assert "style_gram" not in plain.metrics and "fid_effl0" in plain.metrics
    # noise generators have no labels: asking for one is refused, not silently ignored
    with pytest.raises(UsageError, match="--style-label"):
        evaluate_checkpoint(last, size=32, num=4, registry=reg, style_label=["oil"])


def test_report_is_one_self_contained_file(run: Path) -> None:
    page = (run / "report.html").read_text()
    assert page == build_report(run)  # `stylezoo report` rebuilds the same page
    srcs = list(image_sources(page))
    # losses, metric curves, 3 grids over time (the last is the final one), final beside inputs, held-aside eval
    assert len(srcs) == 7, len(srcs)
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    without_images = re.sub(r'src="data:[^"]*"', "", page)
    assert not re.search(r"(?:src|href)=|https?://|<link|@import|url\(", without_images)
    for text in ("Evaluation", "Loss curves", "Metric curves", "Sample grids over time", "Composition and config",
                 "gen/encdec", "loss/tv", "style_gram", "best by style_gram", "held-aside", "Speed", "images/s</b>, "):
        assert text in page, text


def test_report_cli_rebuilds_and_shows_eval_results(run: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(run, tmp_path / "run")
    rec = {"checkpoint": str(copy / "last.safetensors"), "step": 3, "n": 5, "content": "photos", "size": 32,
           "metrics": {"ref_ssim": 0.4321, "fid_effl0": 12.5}}
    (copy / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
        rec, rec | {"weights": "raw"}, rec | {"weights": "ema"}, rec | {"style_label": ["sea"]})))
    (copy / "report.html").unlink()
    r = CliRunner().invoke(app, ["report", str(copy)])
    assert r.exit_code == 0, r.output
    page = (copy / "report.html").read_text()
    assert "stylezoo eval, content photos, size 32" in page and "0.4321" in page
    assert "raw weights" in page and "weight average" in page  # rows of one table told apart
    assert "stylezoo eval, content photos, style label sea, size 32" in page  # another label: another table
    r = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 2 and "not a run directory" in r.output


def test_grids_over_time_are_thinned_evenly() -> None:
    files = [Path(f"step-{i:07d}.png") for i in range(1, 101)]
    picked = pick_grids(files, 5)
    assert [p.name for p in picked] == ["step-0000001.png", "step-0000026.png", "step-0000051.png",
                                        "step-0000075.png", "step-0000100.png"]
    assert pick_grids(files[:3], 5) == files[:3]


IMAGES = """Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0,
    w: i.getBoundingClientRect().width, h: i.getBoundingClientRect().height}))"""


def test_report_renders_in_a_headless_browser(run: Path, tmp_path: Path) -> None:
    """What a person sees, offline: every curve and grid decoded and painted (not blank), no console error, no
    request for anything outside the file. Each check is shown to fail on a page that breaks it."""
    from browser import Browser, blank, need_browser

    need_browser()
    url = (run / "report.html").resolve().as_uri()
    with Browser(tmp_path, width=1200, height=2000) as b:
        page = b.new_page()
        page.goto(url, offline=True)
        imgs = page.eval(IMAGES)
        assert len(imgs) == 7 and all(i["ok"] and i["w"] > 50 and i["h"] > 20 for i in imgs), imgs
        alts = [i["alt"] for i in imgs]
        curves = [k for k, a in enumerate(alts) if a.startswith(("losses per step", "evaluation metrics"))]
        grids = [k for k, a in enumerate(alts) if a.startswith(("step ", "final", "last evaluation"))]
        assert len(curves) == 2 and len(grids) == 5, alts
        for k in curves + grids:  # each region of the screenshot shows a picture, not an empty box
            shot = page.element_shot("img", k)
            assert not blank(shot), (alts[k], shot.size)
        assert page.eval("document.body.dataset.imagesOk") == page.eval("document.body.dataset.imagesTotal") == "7"
        assert page.errors() == []
        assert all(u.startswith(("file:", "data:")) for u in page.requests()), page.requests()
        whole = page.screenshot()
        assert whole.size == (1200, 2000) and not blank(whole, min_colours=200)

        # the checks do catch a broken page: a corrupt image, a blank one, a script error, a request to a server
        broken = tmp_path / "broken.html"
        text = (run / "report.html").read_text()
        srcs = list(image_sources(text))
        flat = io.BytesIO()
        Image.new("RGB", (64, 64), (250, 250, 250)).save(flat, format="PNG")
        text = text.replace(srcs[0], "data:image/png;base64,AAAA", 1).replace(
            srcs[1], "data:image/png;base64," + base64.b64encode(flat.getvalue()).decode(), 1)
        text = text.replace("</main>", '<img src="http://127.0.0.1:9/curve.png" alt="remote">'
                                       "<script>undefinedFunction()</script></main>")
        broken.write_text(text)
        page = b.new_page()
        page.goto(broken.as_uri(), offline=True)
        imgs = page.eval(IMAGES)
        assert [i["ok"] for i in imgs] == [False, True, True, True, True, True, True, False]
        assert page.eval("document.body.dataset.imagesOk") == "6"
        assert blank(page.element_shot("img", 1))  # decoded, but nothing to see
        assert any("undefinedFunction" in e for e in page.errors()), page.errors()
        assert "http://127.0.0.1:9/curve.png" in page.requests()


def test_report_states_the_median_speed_and_data_wait() -> None:
    from stylezoo.core.evaluation.report import speed_line

    rows = [{"step": 1, "time/step_s": 9.0, "time/data_s": 5.0, "time/images_per_s": 0.4},  # set-up: left out
            *({"step": s, "time/step_s": 0.2, "time/data_s": 0.05, "time/images_per_s": 20.0} for s in (2, 3, 4)),
            {"step": 4, "eval/style_gram": 0.5}]
    assert speed_line(rows) == ("<p>Median of 3 logged steps: <b>20.0 images/s</b>, 200 ms per step, of which "
                                "50.0 ms waiting for images (25%).</p>")
    assert "No timed steps" in speed_line(rows[:1])


def test_final_samples_are_labelled_with_the_step_they_show(run: Path, tmp_path: Path) -> None:
    """After an interrupted resume, final.png is the earlier run's: the report says so instead of relabelling it."""
    import torch

    from stylezoo.core.files.images import grid_step, save_grid

    assert grid_step(run / "samples" / "final.png") == 3 and grid_step(run / "samples" / "step-0000002.png") == 2
    assert "final samples on training inputs (step 3)" in build_report(run)
    copy = shutil.copytree(run, tmp_path / "run")
    save_grid([torch.zeros(2, 3, 8, 8)], copy / "samples" / "final.png", step=1)
    page = build_report(copy)
    assert html.escape("final samples on training inputs (step 1, older than the checkpoint's step 3") in page
    assert "final samples on training inputs (step 3)" not in page
    save_grid([torch.zeros(2, 3, 8, 8)], copy / "samples" / "final.png")  # a grid that does not say its step
    assert grid_step(copy / "samples" / "final.png") is None
    page = build_report(copy)
    assert "final samples on training inputs — " in page
    # (runs from before the step chunk) it is the last grid again when that grid is at the checkpoint's step
    assert "<figcaption>final</figcaption>" not in page
