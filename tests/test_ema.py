"""train.ema: the generator's weight average, its update rule, checkpoints, resume, and who uses it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from stylezoo.core.cli import app
from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import CheckpointError, ConfigError
from stylezoo.core.files import checkpoint as ckpt
from stylezoo.core.runs.runconfig import resolve
from stylezoo.core.training.api import train
from stylezoo.core.training.ema import GeneratorEMA, ema_decay
from stylezoo.core.training.engine import Trainer
from stylezoo.core.use.stylizer import Stylizer, load_generator

TINY = {"size": 32, "batch": 2, "steps": 4, "sample_every": 0, "ckpt_every": 0, "log_every": 1, "num_samples": 2}
IMAGE = {"gen": "encdec", "disc": "patch", "feat": "", "gp": "none", "train": TINY,
         "set": {"gen": {"channels": 8, "n_res": 1}, "disc": {"n_layers": 2, "channels": 8}}}


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


def image_rc(reg: Registry, **train_over: object):  # noqa: ANN201
    return resolve(reg, cli={**IMAGE, "train": {**TINY, **train_over}}, losses=["tv"])


def test_update_is_a_ramped_exponential_average_and_copies_buffers() -> None:
    gen = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    gen[0].bias.requires_grad_(False)  # frozen parameters follow the generator, they are not averaged
    ema = GeneratorEMA(gen, 0.9)
    w0 = gen[0].weight.detach().clone()
    with torch.no_grad():
        gen[0].weight.add_(1.0)
        gen[0].bias.add_(5.0)
        gen[1].running_mean.fill_(3.0)
    ema.update()
    d = ema_decay(0.9, 1)
    assert d == pytest.approx(2 / 11)  # the ramp: (1 + n) / (10 + n) while below the decay
    torch.testing.assert_close(ema.module[0].weight, d * w0 + (1 - d) * gen[0].weight.detach())
    torch.testing.assert_close(ema.module[0].bias, gen[0].bias.detach())
    assert ema.module[0].bias is gen[0].bias  # shared, not a second copy
    torch.testing.assert_close(ema.module[1].running_mean, torch.full((2,), 3.0))
    assert ema_decay(0.9, 1000) == 0.9
    assert not any(p.requires_grad for p in ema.module.parameters())
    with pytest.raises(ValueError, match="decay"):
        GeneratorEMA(gen, 1.0)


def test_bad_decay_is_a_config_error(reg: Registry) -> None:
    with pytest.raises(ConfigError, match="ema"):
        image_rc(reg, ema=1.5)


def test_training_keeps_the_average_and_everything_uses_it(reg: Registry, tmp_path: Path) -> None:
    tr = Trainer(image_rc(reg, ema=0.5, precision="fp32"), tmp_path, registry=reg)
    tr.fit()
    assert tr.ema is not None and tr.ema.updates == 4
    assert tr.infer_gen is tr.ema.module
    raw = dict(tr.components.gen.named_parameters())
    avg = dict(tr.ema.module.named_parameters())
    assert any(not torch.equal(raw[k], avg[k]) for k in raw), "the average equals the raw weights"
    tensors, meta = ckpt.load(tmp_path / "last.safetensors")
    assert meta["ema"] == {"decay": 0.5, "updates": 4}
    assert any(k.startswith("ema.") for k in tensors) and any(k.startswith("gen.") for k in tensors)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        want_avg, want_raw = tr.ema.module(x), tr.components.gen.eval()(x)
        by_default = load_generator(tmp_path, registry=reg)
        assert by_default.averaged
        torch.testing.assert_close(by_default.module(x), want_avg)
        raw_loaded = load_generator(tmp_path, registry=reg, ema=False)
        assert not raw_loaded.averaged
        torch.testing.assert_close(raw_loaded.module(x), want_raw)
        st = Stylizer.load(tmp_path, device="cpu", precision="fp32", backend="torch", registry=reg)
        torch.testing.assert_close(st(x[0]), want_avg[0], rtol=1e-5, atol=1e-5)
        # samples show the average
        torch.testing.assert_close(tr.samples()[:1], tr.ema.module(tr.data.fixed_input[:1]), rtol=1e-5, atol=1e-5)


def test_a_run_without_ema_has_no_average(reg: Registry, tmp_path: Path) -> None:
    tr = Trainer(image_rc(reg), tmp_path, registry=reg)
    tr.fit()
    assert tr.ema is None and tr.infer_gen is tr.components.gen
    tensors, meta = ckpt.load(tmp_path / "last.safetensors")
    assert "ema" not in meta and not any(k.startswith("ema.") for k in tensors)
    assert not load_generator(tmp_path, registry=reg).averaged


def test_resume_restores_the_average_exactly(reg: Registry, tmp_path: Path) -> None:
    Trainer(image_rc(reg, ema=0.9), tmp_path / "full", registry=reg).fit()
    train(image_rc(reg, ema=0.9, steps=2), out=tmp_path / "half", registry=reg)
    train(resume=tmp_path / "half", steps=4, registry=reg)
    ta, ma = ckpt.load(tmp_path / "full" / "last.safetensors")
    tb, mb = ckpt.load(tmp_path / "half" / "last.safetensors")
    assert ma["ema"] == mb["ema"] == {"decay": 0.9, "updates": 4}
    for k in ta:
        if k.startswith("ema."):
            torch.testing.assert_close(ta[k], tb[k], rtol=1e-4, atol=1e-5)


def test_switching_ema_on_at_resume_starts_from_the_loaded_weights(reg: Registry, tmp_path: Path) -> None:
    train(image_rc(reg, steps=2), out=tmp_path, registry=reg)
    tensors, _ = ckpt.load(tmp_path / "last.safetensors")
    tr = Trainer(image_rc(reg, ema=0.9), tmp_path / "again", registry=reg, resume_from=tmp_path / "last.safetensors")
    assert tr.ema is not None and tr.ema.updates == 0
    for k, v in tr.ema.module.state_dict().items():
        torch.testing.assert_close(v, tensors[f"gen.{k}"])


def test_cli_no_ema_gives_the_raw_weights(reg: Registry, tmp_path: Path) -> None:
    Trainer(image_rc(reg, ema=0.5), tmp_path / "run", registry=reg).fit()
    img = tmp_path / "in.png"
    from stylezoo.core.files.images import tensor_to_pil

    tensor_to_pil(torch.rand(3, 32, 32) * 2 - 1).save(img)
    outs = {}
    for flag in ("--ema", "--no-ema"):
        out = tmp_path / f"out{flag}.png"
        r = CliRunner().invoke(app, ["stylize", str(tmp_path / "run"), str(img), "-o", str(out), "--precision", "fp32",
                                     "--backend", "torch", "--device", "cpu", "-q", flag])
        assert r.exit_code == 0, r.output
        outs[flag] = out.read_bytes()
    assert outs["--ema"] != outs["--no-ema"]
    r = CliRunner().invoke(app, ["eval", str(tmp_path / "run"), "--content", str(tmp_path), "--size", "32",
                                 "--device", "cpu", "--json", "--no-log", "--no-ema"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout[r.stdout.index("{"):])["weights"] == "raw"
    for flag, weights in (("--ema", "ema"), ("--no-ema", "raw")):  # the export's parity record says which
        out = tmp_path / f"g{flag}.ts"
        r = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "-o", str(out), flag])
        assert r.exit_code == 0, r.output
        assert json.loads(out.with_name(out.name + ".parity.json").read_text())["weights"] == weights


def test_resuming_an_averaged_run_with_ema_off_is_refused(reg: Registry, tmp_path: Path) -> None:
    train(image_rc(reg, ema=0.9, steps=2), out=tmp_path, registry=reg)
    with pytest.raises(CheckpointError, match="train.ema"):
        Trainer(image_rc(reg), tmp_path / "again", registry=reg, resume_from=tmp_path / "last.safetensors")


def test_cli_dry_run_names_the_weight_average(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["run", "--gen", "encdec", "--disc", "patch", "--feat", "none", "--loss", "tv",
                                 "--size", "32", "--batch", "2", "--set", "gen.channels=8", "--set", "train.ema=0.99",
                                 "--dry-run"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "weight average (ema 0.99)" in r.output


def test_a_frozen_part_shared_by_the_generator_and_its_average_is_saved(reg: Registry, tmp_path: Path) -> None:
    """gen/adain with a kept (random) encoder: the average holds the encoder's own tensors, which safetensors
    refuses to write twice; the checkpoint gets copies and loads back."""
    rc = resolve(reg, cli={"gen": "adain", "disc": "none", "adv": "none", "feat": "vgg16",
                           "train": {**TINY, "steps": 1, "ema": 0.9},
                           "data": {"content": "samples:content", "style": "samples:style"}},
                 losses=["moments"], sets=["gen.weights=random", "feat.weights=random"])
    last = Trainer(rc, tmp_path, registry=reg).fit()
    tensors, _ = ckpt.load(last)
    shared = [k for k in tensors if k.startswith("ema.encoder.")]
    assert shared and all(torch.equal(tensors[k], tensors["gen." + k[4:]]) for k in shared)
    ckpt.save(tmp_path / "tied.safetensors", {"a": tensors[shared[0]], "b": tensors[shared[0]]}, {"step": 1})
    assert torch.equal(ckpt.load(tmp_path / "tied.safetensors")[0]["b"], tensors[shared[0]])
