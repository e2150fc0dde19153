"""`run --log tensorboard`: RUN/tb/ read back with TensorBoard's own reader (tags, steps, an image, the config);
a resume appends without a duplicated step; only rank 0 writes; a missing package or an unknown sink is one line."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from stylezoo.core.cli import app
from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import ConfigError, UsageError
from stylezoo.core.runs.runconfig import SAMPLES, resolve
from stylezoo.core.training.api import train
from stylezoo.core.training.engine import Trainer
from stylezoo.core.training.logsinks import CONFIG_TAG, SAMPLES_TAG, check_sinks, open_sinks

pytest.importorskip("tensorboard",
                    reason="the tensorboard extra is not installed (pip install 'stylezoo[tensorboard]')")

TRAIN = {"size": 32, "batch": 2, "steps": 4, "sample_every": 2, "ckpt_every": 2, "log_every": 1, "num_samples": 2,
         "log": ["tensorboard"]}


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


def tiny(reg: Registry, **train_: Any) -> Any:
    return resolve(reg, cli={"gen": "encdec", "disc": "patch", "adv": "lsgan", "feat": "", "gp": "none",
                             "train": {**TRAIN, **train_}, "data": {"content": str(SAMPLES / "content")},
                             "set": {"gen": {"channels": 8, "n_res": 1}, "disc": {"n_layers": 2, "channels": 8}}},
                   losses=["tv"])


def events(logdir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def run(reg: Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tb-run")
    Trainer(tiny(reg), out, registry=reg).fit()
    return out


def test_every_metric_is_a_scalar_under_its_metrics_jsonl_key(run: Path) -> None:
    acc = events(run / "tb")
    rows = metrics(run)
    keys = {k for r in rows for k in r if k != "step"}
    assert {"g/loss", "d/loss", "g/loss/tv", "time/step_s"} <= keys
    assert set(acc.Tags()["scalars"]) == keys
    for key in ("g/loss", "d/d_adv", "g/loss/tv"):
        got = [(e.step, e.value) for e in acc.Scalars(key)]
        assert got == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in rows if key in r]


def test_sample_grids_are_images_at_the_sample_steps_and_the_config_is_text(run: Path) -> None:
    acc = events(run / "tb")
    grids = acc.Images(SAMPLES_TAG)
    assert [g.step for g in grids] == [2, 4]  # the final grid is step 4's: not written twice
    import io

    from PIL import Image

    with Image.open(io.BytesIO(grids[-1].encoded_image_string)) as im, Image.open(run / "samples" / "final.png") as png:
        assert im.size == png.size and im.convert("RGB").tobytes() == png.convert("RGB").tobytes()
    text = acc.Tensors(f"{CONFIG_TAG}/text_summary")[0].tensor_proto.string_val[0].decode()
    assert 'gen = "gen/encdec"' in text and 'log = [\n        "tensorboard",' in text
    assert 'log = [\n    "tensorboard",' in (run / "config.toml").read_text()


def test_a_resume_appends_to_the_stream_without_a_duplicated_step(reg: Registry, run: Path, tmp_path: Path) -> None:
    killed = Path(shutil.copytree(run, tmp_path / "run"))
    # the run was killed after step 4 was logged but before its checkpoint: the newest one is step 2's
    (killed / "last.safetensors").unlink()
    (killed / "checkpoints" / "step-0000004.safetensors").unlink()
    assert [e.step for e in events(killed / "tb").Scalars("g/loss")] == [1, 2, 3, 4]
    train(resume=killed, steps=5, registry=reg)
    acc = events(killed / "tb")
    assert len(list((killed / "tb").glob("events.out.tfevents.*"))) == 2  # one folder, one stream for TensorBoard
    rows = metrics(killed)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    got = [(e.step, e.value) for e in acc.Scalars("g/loss")]
    assert got == [(r["step"], pytest.approx(r["g/loss"], rel=1e-6)) for r in rows]  # the resumed run's values
    assert [g.step for g in acc.Images(SAMPLES_TAG)] == [2, 4, 5]


def test_only_rank_0_writes(tmp_path: Path) -> None:
    sinks = open_sinks(("tensorboard",), tmp_path, rank=1, resumed_at=None)
    assert sinks.sinks == [] and not (tmp_path / "tb").exists() and not (tmp_path / "metrics.jsonl").exists()
    sinks = open_sinks(("tensorboard",), tmp_path, rank=0, resumed_at=None)
    # metrics.jsonl, always, and TensorBoard
    assert [type(s).__name__ for s in sinks.sinks] == ["JsonlSink", "TensorBoardSink"] and (tmp_path / "tb").is_dir()
    sinks.close()


def test_without_log_no_tb_folder(reg: Registry, tmp_path: Path) -> None:
    tr = Trainer(tiny(reg, steps=1, log=[], sample_every=0, ckpt_every=0), tmp_path / "run", registry=reg)
    tr.fit()
    assert not (tmp_path / "run" / "tb").exists()


def test_a_missing_tensorboard_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    with pytest.raises(UsageError, match=r"pip install 'stylezoo\[tensorboard\]'"):
        check_sinks(["tensorboard"])
    check_sinks([])  # nothing asked, nothing needed


def test_unknown_sinks_are_refused_on_the_command_line(reg: Registry) -> None:
    with pytest.raises(ConfigError, match="unknown sink 'tensorbord'.*Did you mean 'tensorboard'"):
        tiny(reg, log=["tensorbord"])
    res = CliRunner().invoke(app, ["run", "--dry-run", "--log", "wandb"])
    assert res.exit_code == 2 and "unknown sink 'wandb'" in res.output


def test_log_cannot_change_a_resumed_run(run: Path) -> None:
    res = CliRunner().invoke(app, ["run", "--resume", str(run), "--log", "tensorboard"])
    assert res.exit_code == 2 and "--log" in res.output and "cannot change a resumed run" in res.output
