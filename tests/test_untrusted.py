"""Untrusted files: checkpoints and weights from strangers.

Pickles are refused without being unpickled (a booby-trapped one proves it); the only torch.load in the
code base is the one-time weights_only=True conversion; a checkpoint naming components that are not
installed says which plugin to install; tensors that do not match the declared composition, garbage
metadata and files that are not safetensors at all are refused with CheckpointError, nothing half-loaded;
a plugin that takes an already registered name is refused naming both.
"""

from __future__ import annotations

import ast
import json
import pathlib
import pickle
import shutil
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_results import clean_error, invoke
from PIL import Image
from safetensors.torch import save_file

import stylezoo.core.components.registry as registry_mod
from stylezoo.core.components.hookspecs import hookimpl
from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import CheckpointError, WeightsError
from stylezoo.core.files import checkpoint as ckpt
from stylezoo.core.files.weights import load_local
from stylezoo.core.runs.runconfig import RunConfig, resolve
from stylezoo.core.training.api import train
from stylezoo.core.training.engine import Trainer
from stylezoo.core.training.trainstate import load_run_state
from stylezoo.core.use.stylizer import load_generator

ROOT = Path(__file__).resolve().parent.parent
TINY = {"size": 32, "batch": 2, "steps": 2, "sample_every": 0, "ckpt_every": 1, "log_every": 1, "num_samples": 2}
NOISE = {"gen": "dcgan", "disc": "dcgan", "adv": "lsgan", "feat": "", "gp": "none", "train": TINY,
         "set": {"gen": {"channels": 8, "max_channels": 16, "latent_dim": 16},
                 "disc": {"channels": 8, "max_channels": 16}}}


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("data")
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return d


@pytest.fixture(scope="module")
def run_dir(reg: Registry, tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A finished two-step noise run with last.safetensors and checkpoints/step-*.safetensors."""
    out = tmp_path_factory.mktemp("run")
    rc = resolve(reg, cli={**NOISE, "data": {"data": str(data_dir)}}, losses=["tv"])
    Trainer(rc, out, registry=reg).fit()
    return out


# ------------------------------------------------------------------------------------------ pickles
class _Trap:
    """Unpickling this creates the marker file: proof that something unpickled the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (pathlib.Path.touch, (self.marker,))


def _trap(path: Path) -> Path:
    marker = path.parent / f"{path.name}.UNPICKLED"
    path.write_bytes(pickle.dumps({"gen.weight": _Trap(marker)}))
    return marker


def _entries(tmp: Path) -> dict[str, Callable[[Path], Any]]:
    return {
        "ckpt.load": ckpt.load,
        "ckpt.read_meta": ckpt.read_meta,
        "load_generator": load_generator,
        "cli stylize": lambda p: invoke("stylize", p, tmp / "in.png", "-o", tmp / "out"),
        "cli run --resume": lambda p: invoke("run", "--resume", p, "--quiet"),
        "train(resume=...)": lambda p: train(resume=p),
    }


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".bin", ".pkl"])
@pytest.mark.parametrize("entry", ["ckpt.load", "ckpt.read_meta", "load_generator", "cli stylize",
                                   "cli run --resume", "train(resume=...)"])
def test_pickles_are_refused_without_being_unpickled(tmp_path: Path, suffix: str, entry: str) -> None:
    path = tmp_path / f"model{suffix}"
    marker = _trap(path)
    call = _entries(tmp_path)[entry]
    if entry.startswith("cli"):
        clean_error(call(path), "pickled", "safetensors", "arbitrary code", "weights_only=True")
    else:
        with pytest.raises(CheckpointError, match="pickled") as e:
            call(path)
        assert "safetensors" in str(e.value)
    assert not marker.exists()


def test_the_trap_really_fires_when_unpickled(tmp_path: Path) -> None:
    """The control for the test above: the booby-trapped file does run code when unpickled."""
    marker = _trap(tmp_path / "m.pt")
    pickle.loads((tmp_path / "m.pt").read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("name", ["model.safetensors", "last.safetensors"])
def test_a_pickle_renamed_to_safetensors_is_not_unpickled(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    marker = _trap(path)
    for call in (ckpt.load, ckpt.read_meta, load_generator):
        with pytest.raises(CheckpointError, match="not a valid safetensors file"):
            call(path)
    clean_error(invoke("stylize", path, tmp_path / "in.png", "-o", tmp_path / "out"), "not a valid safetensors")
    assert not marker.exists()


def test_a_run_dir_holding_only_a_pickle_has_nothing_to_resume(tmp_path: Path) -> None:
    marker = _trap(tmp_path / "last.pt")
    clean_error(invoke("run", "--resume", tmp_path, "--quiet"), "No valid checkpoint", str(tmp_path))
    assert not marker.exists()


def test_weight_files_are_refused_when_pickled(tmp_path: Path) -> None:
    marker = _trap(tmp_path / "vgg.pth")
    with pytest.raises(WeightsError, match="pickled"):
        load_local(tmp_path / "vgg.pth")
    assert not marker.exists()


def _sources(include_tests: bool) -> list[Path]:
    skip = {".venv", "build", "dist", ".git", "node_modules"}
    out = []
    for p in ROOT.rglob("*.py"):
        parts = set(p.relative_to(ROOT).parts)
        if parts & skip or any(x.endswith(".egg-info") for x in parts):
            continue
        if not include_tests and "tests" in parts:
            continue
        out.append(p)
    return out


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


UNPICKLERS = {"torch.load", "torch.serialization.load", "torch.jit.load", "pickle.load", "pickle.loads",
              "pickle.Unpickler", "dill.load", "dill.loads", "joblib.load", "torch.hub.load_state_dict_from_url",
              "torch.hub.load", "marshal.loads", "shelve.open"}


# (file, call) pairs allowed to deserialise, and why
ALLOWED = {("core/files/weights.py", "torch.load"),  # weights_only=True, once, converting a package's weights
           ("core/use/onnx.py", "torch.jit.load")}  # parity check of the TorchScript file it has just written


def test_the_only_torch_load_is_the_weights_only_conversion() -> None:
    """No package source unpickles: the single torch.load is core/files/weights.py's weights_only=True conversion
    (and export re-reads only the TorchScript file it has just written). Tests may unpickle their own data."""
    files = _sources(include_tests=False)
    assert ROOT / "core" / "files" / "weights.py" in files and len(files) > 30
    calls: list[tuple[str, int, str, ast.Call]] = []
    for f in files:
        tree = ast.parse(f.read_text(), str(f))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = _dotted(node.func)
                numpy_pickle = name in ("np.load", "numpy.load") and any(
                    k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                    for k in node.keywords)
                if name in UNPICKLERS or numpy_pickle:
                    calls.append((str(f.relative_to(ROOT)), node.lineno, name, node))
            if isinstance(node, ast.ImportFrom) and node.module in ("torch", "torch.serialization", "pickle", "dill"):
                bad = [a.name for a in node.names if a.name in ("load", "loads", "Unpickler")]
                assert not bad, f"{f}:{node.lineno} imports {node.module}.{bad[0]}: call sites could hide"
    assert {(f, n) for f, _, n, _ in calls} <= ALLOWED, [(f, line, n) for f, line, n, _ in calls]
    loads = [c for f, _, n, c in calls if n == "torch.load"]
    assert len(loads) == 1, "exactly one torch.load, the weights_only=True conversion"
    call = loads[0]
    wo = [k for k in call.keywords if k.arg == "weights_only"]
    assert wo and isinstance(wo[0].value, ast.Constant) and wo[0].value.value is True


def test_no_pickle_module_in_the_package() -> None:
    for f in _sources(include_tests=False):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for n in names:
                assert n.split(".")[0] not in ("pickle", "cPickle", "dill", "shelve", "joblib"), f"{f}: imports {n}"


# ------------------------------------------------------------------------------------------ missing plugins
@pytest.fixture(scope="module")
def extras_run(reg: Registry, tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A one-step run of the stylezoo-extras plugin's generator and loss (installed as an entry point)."""
    out = tmp_path_factory.mktemp("extras")
    cli = {"gen": "pixelshuffle", "disc": "patch", "adv": "lsgan", "feat": "", "gp": "none",
           "train": {**TINY, "steps": 1}, "data": {"content": str(data_dir), "data": str(data_dir)},
           "set": {"gen": {"channels": 8, "blocks": 1}, "disc": {"channels": 8, "n_layers": 2}}}
    Trainer(resolve(reg, cli=cli, losses=["tv", "laplacian"]), out, registry=reg).fit()
    return out


def test_checkpoint_records_which_package_provides_each_component(extras_run: Path) -> None:
    meta = ckpt.read_meta(extras_run / "last.safetensors")
    assert meta["plugins"]["gen/pixelshuffle"] == "stylezoo-extras"
    assert meta["plugins"]["loss/laplacian"] == "stylezoo-extras"
    assert meta["plugins"]["loss/tv"] == "stylezoo"


def test_missing_plugin_says_which_package_to_install(extras_run: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    without = Registry(entry_points=False)  # the built-ins only: stylezoo-extras "not installed"
    want = ["'gen/pixelshuffle'", "no loaded plugin provides", "pip install stylezoo-extras"]
    with pytest.raises(CheckpointError) as e:
        load_generator(extras_run, registry=without)
    assert all(w in str(e.value) for w in want)
    with pytest.raises(CheckpointError) as e:
        train(resume=extras_run, registry=without)
    assert all(w in str(e.value) for w in want)
    monkeypatch.setattr(registry_mod, "_default", without)
    clean_error(invoke("stylize", extras_run, extras_run, "-o", tmp_path / "out"), *want)
    clean_error(invoke("run", "--resume", extras_run, "--quiet"), *want)


def test_a_missing_loss_term_names_its_package_too(run_dir: Path, reg: Registry, tmp_path: Path) -> None:
    tensors, meta = ckpt.load(run_dir / "last.safetensors")
    meta["composition"]["losses"].append("loss/acme-sharpness")
    meta["plugins"]["loss/acme-sharpness"] = "stylezoo-acme"
    (tmp_path / "run").mkdir()
    ckpt.save(tmp_path / "run" / "last.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match=r"'loss/acme-sharpness'.*pip install stylezoo-acme"):
        train(resume=tmp_path / "run", registry=reg)


# ------------------------------------------------------------------------------------------ tampered tensors
def _edit(kind: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    gen = sorted(k for k in tensors if k.startswith("gen.") and k.endswith("weight"))[0]
    disc = sorted(k for k in tensors if k.startswith("disc.") and k.endswith("weight"))[0]
    opt = sorted(k for k in tensors if k.startswith("opt_g.") and k.endswith("exp_avg"))[0]
    if kind == "gen: wrong shape":
        tensors[gen] = torch.zeros(*tensors[gen].shape[:-1], tensors[gen].shape[-1] + 1)
    elif kind == "gen: tensor dropped":
        del tensors[gen]
    elif kind == "gen: stray tensor":
        tensors["gen.backdoor.weight"] = torch.zeros(3)
    elif kind == "disc: wrong shape":
        tensors[disc] = tensors[disc].flatten()
    elif kind == "disc: tensor dropped":
        del tensors[disc]
    elif kind == "stray owner":
        tensors["ema.gen.weight"] = torch.zeros(3)
    elif kind == "optimizer: wrong shape":
        tensors[opt] = torch.zeros(5)
    elif kind == "optimizer: tensor dropped":
        del tensors[opt]
    elif kind == "optimizer: unknown parameter":
        tensors["opt_g.999.exp_avg"] = torch.zeros(2)
    elif kind == "optimizer: bad key":
        tensors["opt_g.exp_avg"] = torch.zeros(2)
    elif kind == "optimizer: lr is text":
        meta["optim"]["opt_g"]["param_groups"][0]["lr"] = "fast"
    elif kind == "gen: int8 weights":
        tensors[gen] = tensors[gen].to(torch.int8)
    elif kind == "gen: bool weights":
        tensors[gen] = tensors[gen] > 0
    elif kind == "gen: a NaN weight":
        tensors[gen] = tensors[gen].clone()
        tensors[gen].view(-1)[3] = float("nan")
    elif kind == "disc: Inf weights":
        tensors[disc] = torch.full_like(tensors[disc], float("inf"))
    elif kind == "optimizer: a group too many":
        meta["optim"]["opt_g"]["param_groups"].append(dict(meta["optim"]["opt_g"]["param_groups"][0]))
    else:
        raise AssertionError(kind)


EDITS = ["gen: wrong shape", "gen: tensor dropped", "gen: stray tensor", "disc: wrong shape", "disc: tensor dropped",
         "stray owner", "optimizer: wrong shape", "optimizer: tensor dropped", "optimizer: unknown parameter",
         "optimizer: bad key", "optimizer: lr is text", "optimizer: a group too many", "gen: int8 weights",
         "gen: bool weights", "gen: a NaN weight", "disc: Inf weights"]


@pytest.fixture(scope="module")
def trainer(reg: Registry, run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Trainer:
    rc = RunConfig.from_dict(ckpt.read_meta(run_dir / "last.safetensors")["run"])
    return Trainer(rc, tmp_path_factory.mktemp("fresh"), registry=reg)


def _state(tr: Trainer) -> dict[str, Any]:
    s = {f"gen.{k}": v.clone() for k, v in tr.components.gen.state_dict().items()}
    s |= {f"disc.{k}": v.clone() for k, v in tr.components.disc.state_dict().items()}
    s["opt_g"] = json.dumps(tr.opt_g.state_dict()["param_groups"]) + str(len(tr.opt_g.state))
    s["opt_d"] = json.dumps(tr.opt_d.state_dict()["param_groups"]) + str(len(tr.opt_d.state))
    s["step"] = tr.step
    return s


@pytest.mark.parametrize("kind", EDITS)
def test_tensors_that_do_not_match_the_composition_are_refused_not_half_loaded(
        kind: str, run_dir: Path, trainer: Trainer, reg: Registry, tmp_path: Path) -> None:
    tensors, meta = ckpt.load(run_dir / "last.safetensors")
    _edit(kind, tensors, meta)
    bad = tmp_path / "run"
    bad.mkdir()
    ckpt.save(bad / "last.safetensors", tensors, {k: v for k, v in meta.items() if k != "format"})
    before = _state(trainer)
    with pytest.raises(CheckpointError, match="nothing was loaded|no place for") as e:
        load_run_state(trainer.modules(), bad / "last.safetensors", device=trainer.device,
                       ema_decay=trainer.train_cfg.ema)
    after = _state(trainer)
    assert before.keys() == after.keys()
    for k in before:
        assert (torch.equal(before[k], after[k]) if isinstance(before[k], torch.Tensor) else before[k] == after[k]), k
    assert "\n" not in str(e.value)
    clean_error(invoke("run", "--resume", bad, "--quiet"))
    if kind.startswith("gen"):
        what = "generator tensor gen|NaN or Inf" if "NaN" in kind else "generator tensors do not match"
        with pytest.raises(CheckpointError, match=what) as e:
            load_generator(bad, registry=reg)
        if "NaN" in kind:  # one line naming the tensor, for every command that loads a generator
            name = sorted(k for k in tensors if k.startswith("gen.") and k.endswith("weight"))[0].removeprefix("gen.")
            assert name in str(e.value) and "NaN" in str(e.value)
            for args in (("stylize", bad, "-n", "1", "-o", tmp_path / "o"), ("export", bad, "-o", tmp_path / "m.onnx"),
                         ("eval", bad, "--num", "2")):
                clean_error(invoke(*args), name)
        clean_error(invoke("stylize", bad, "-n", "1", "-o", tmp_path / "out"), "nothing was loaded")
    elif kind == "stray owner":  # a broken weight average (ema.*) is refused; the raw generator is intact
        with pytest.raises(CheckpointError, match="weight average"):
            load_generator(bad, registry=reg)
        assert load_generator(bad, registry=reg, ema=False).name == "gen/dcgan"
    else:  # the generator itself is intact: stylize can use it
        assert load_generator(bad, registry=reg).name == "gen/dcgan"


@pytest.mark.parametrize("where", ["configs", "run"])
def test_an_edited_config_cannot_make_us_build_a_huge_model(where: str, run_dir: Path, reg: Registry,
                                                            tmp_path: Path) -> None:
    """channels = 2**20 would need terabytes: the config is checked against the file's tensors on the meta
    device, before anything is allocated."""
    tensors, meta = ckpt.load(run_dir / "last.safetensors")
    if where == "configs":
        meta["configs"]["gen"]["channels"] = meta["configs"]["gen"]["max_channels"] = 2**20
    else:
        meta["run"]["set"]["disc"] = {"channels": 2**20, "max_channels": 2**20}
    (tmp_path / "run").mkdir()
    ckpt.save(tmp_path / "run" / "last.safetensors", tensors, meta)
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="do not match|cannot be built|out of range"):
        if where == "configs":
            load_generator(tmp_path / "run", registry=reg)
        else:
            train(resume=tmp_path / "run", registry=reg)
    assert time.perf_counter() - t0 < 20


# ------------------------------------------------------------------------------------------ not checkpoints at all
BAD_META: dict[str, Any] = {
    "not JSON": "{step: 1,",
    "JSON list": "[1, 2, 3]",
    "step is null": {"step": None},
    "step is negative": {"step": -3},
    "step is text": {"step": "12"},
    "configs is a list": {"configs": []},
    "gen config is a list": {"configs": {"gen": [1, 2]}},
    "run is a number": {"run": 5},
    "run.train is a number": {"run": {"train": 3}},
    "run.set holds a list": {"run": {"set": {"gen": [1]}}},
    "composition names a number": {"composition": {"gen": 3}},
    "losses is text": {"composition": {"gen": "gen/dcgan", "losses": "loss/tv"}},
    "optim is a number": {"optim": 7},
    "optimizer groups is a number": {"optim": {"opt_g": {"param_groups": 3}}},
    "versions is a list": {"versions": ["torch"]},
    "family is a number": {"family": 1},
}


@pytest.mark.parametrize("case", list(BAD_META))
def test_garbage_metadata_is_a_checkpoint_error(case: str, run_dir: Path, reg: Registry, tmp_path: Path) -> None:
    tensors, meta = ckpt.load(run_dir / "last.safetensors")
    spec = BAD_META[case]
    raw = spec if isinstance(spec, str) else json.dumps({**meta, **spec})
    path = tmp_path / "run" / "last.safetensors"
    path.parent.mkdir()
    save_file(tensors, str(path), metadata={ckpt.META_KEY: raw})
    for call in (ckpt.read_meta, ckpt.load, lambda p: load_generator(p, registry=reg)):
        with pytest.raises(CheckpointError, match="metadata"):
            call(path)
    clean_error(invoke("stylize", path, "-n", "1", "-o", tmp_path / "out"), "metadata")
    clean_error(invoke("run", "--resume", path.parent, "--quiet"), "No valid checkpoint", "metadata")


@pytest.mark.parametrize("content", ["random bytes", "empty", "a PNG", "safetensors without our metadata",
                                     "a header that lies about its length", "a folder"])
def test_files_that_are_not_checkpoints(content: str, tmp_path: Path, reg: Registry) -> None:
    path = tmp_path / "model.safetensors"
    if content == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "a PNG":
        Image.new("RGB", (8, 8)).save(path, format="PNG")
    elif content == "safetensors without our metadata":
        save_file({"w": torch.zeros(2)}, str(path))
    elif content == "a header that lies about its length":
        path.write_bytes((10**12).to_bytes(8, "little") + b'{"w": {}}')
    else:
        path.mkdir()
    for call in (ckpt.read_meta, ckpt.load, lambda p: load_generator(p, registry=reg)):
        with pytest.raises(CheckpointError) as e:
            call(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    clean_error(invoke("stylize", path, "-n", "1", "-o", tmp_path / "out"), str(path))


def test_a_torn_last_checkpoint_falls_back_to_the_newest_valid_one(run_dir: Path, tmp_path: Path,
                                                                    reg: Registry) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    last = run / "last.safetensors"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    assert load_generator(run, registry=reg).path.name == "step-0000002.safetensors"
    r = invoke("run", "--resume", run, "--steps", "3", "--quiet")
    assert r.exit_code == 0, r.output
    assert ckpt.read_meta(last)["step"] == 3


# ------------------------------------------------------------------------------------------ plugins, via the CLI
def test_cli_plugin_taking_a_registered_name_is_refused_naming_both(monkeypatch: pytest.MonkeyPatch,
                                                                    fake_component: tuple[type, type]) -> None:
    module, config = fake_component
    mod = types.ModuleType("acme_copycat")

    @hookimpl
    def register_components(register: Callable[..., None]) -> None:
        register("gen/acme-own", module, config=config)
        register("gen/dcgan", module, config=config)

    mod.register_components = register_components  # type: ignore[attr-defined]
    monkeypatch.setattr(registry_mod, "_default", Registry(plugins=[mod]))
    r = invoke("plugins", "--json")
    assert r.exit_code == 0, r.output
    info = {p["name"]: p for p in json.loads(r.stdout)}
    error = info["acme_copycat"]["error"]
    assert info["acme_copycat"]["components"] == [] and info["dcgan"]["error"] is None
    assert "'gen/dcgan' is registered twice" in error
    assert "plugin 'dcgan' (stylezoo)" in error and "plugin 'acme_copycat'" in error  # both plugins named
    listing = invoke("list")
    assert listing.exit_code == 0 and "gen/dcgan" in listing.output and "gen/acme-own" not in listing.output
    assert "1 plugin(s) failed to load: acme_copycat" in listing.output


def test_cli_plugin_failing_at_import_is_reported_and_the_zoo_still_trains(tmp_path: Path, data_dir: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from stylezoo.core.components.registry import BUILTIN_PLUGINS as BUILTINS

    (tmp_path / "szt_boom_at_import.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry_mod, "_default", Registry(builtins=(*BUILTINS, "szt_boom_at_import")))
    info = {p["name"]: p for p in json.loads(invoke("plugins", "--json").stdout)}
    assert info["szt_boom_at_import"]["error"] == "RuntimeError: boom at import"
    r = invoke("run", "--gen", "dcgan", "--disc", "dcgan", "--adv", "lsgan", "--feat", "none", "--loss", "tv",
               "--size", "32", "--batch", "2", "--data", data_dir, "--set", "gen.channels=8", "--dry-run")
    assert r.exit_code == 0 and "gen/dcgan" in r.output, r.output
