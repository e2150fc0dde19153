"""Training state is never lost or turned bad (#26): one writer per run folder, interrupted writes cleaned up,
a full disk said in one line (safetensors' own error too), checkpoints by time, NaN state never saved."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import SafetensorError
from typer.testing import CliRunner, Result

from stylezoo.core.cli import app
from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import CheckpointError, ConfigError
from stylezoo.core.files import checkpoint as ckpt
from stylezoo.core.runs.runconfig import resolve
from stylezoo.core.runs.rundir import LOCK
from stylezoo.core.training.api import train
from stylezoo.core.training.engine import Trainer

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"
TINY = {"size": 32, "batch": 2, "steps": 2, "sample_every": 0, "ckpt_every": 1, "log_every": 1, "num_samples": 2}
IMAGE = {"gen": "encdec", "disc": "patch", "feat": "", "gp": "none", "train": TINY,
         "set": {"gen": {"channels": 8, "n_res": 1}, "disc": {"n_layers": 2, "channels": 8}},
         "data": {"content": str(SAMPLES / "content"), "style": str(SAMPLES / "style")}}


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


def invoke(*args: Any) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture()
def run(reg: Registry, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    train(resolve(reg, cli=IMAGE, losses=["tv"]), out=out, registry=reg)
    return out


@pytest.fixture()
def live_pid() -> Any:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_folder_a_live_run_holds_is_refused_with_its_process_id(run: Path, reg: Registry, live_pid: int) -> None:
    (run / LOCK).write_text(f"{live_pid}\n")
    metrics = (run / "metrics.jsonl").read_bytes()
    last = (run / "last.safetensors").read_bytes()
    with pytest.raises(ConfigError, match=f"being written by process {live_pid}"):
        train(resume=run, steps=4, registry=reg)
    with pytest.raises(ConfigError, match=f"process {live_pid}"):
        train(resolve(reg, cli=IMAGE, losses=["tv"]), out=run, overwrite=True, registry=reg)
    r = invoke("run", "--resume", run, "--steps", "4", "--quiet")
    assert r.exit_code != 0 and f"process {live_pid}" in r.output and "Traceback" not in r.output
    # nothing of the live run was touched: its metrics were not truncated, its checkpoint not replaced
    assert (run / "metrics.jsonl").read_bytes() == metrics and (run / "last.safetensors").read_bytes() == last
    assert (run / LOCK).read_text().strip() == str(live_pid)


def test_a_lock_left_by_a_killed_run_is_taken_over_and_its_torn_writes_removed(run: Path, reg: Registry) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # that process has exited
    (run / LOCK).write_text(f"{pid}\n")
    torn = [run / ".tmpAb12Cd", run / "checkpoints" / ".tmpXy34Zw", run / f".last.safetensors.{pid}-abcd1234.tmp"]
    for f in torn:
        f.write_bytes(b"half a checkpoint")
    train(resume=run, steps=3, registry=reg)
    assert not any(f.exists() for f in torn)
    assert ckpt.read_meta(run / "last.safetensors")["step"] == 3
    assert not (run / LOCK).exists()  # released at the end


def test_the_lock_is_held_while_training_and_refuses_a_second_writer(reg: Registry, tmp_path: Path) -> None:
    seen: list[int | None] = []

    def progress(step: int, total: int, logs: dict[str, float]) -> None:
        seen.append(int((tmp_path / "run" / LOCK).read_text()))
        with pytest.raises(ConfigError, match=f"process {os.getpid()}"):
            _other_process_lock(tmp_path / "run")

    train(resolve(reg, cli=IMAGE, losses=["tv"]), out=tmp_path / "run", registry=reg, progress=progress)
    assert seen == [os.getpid()] * 2 and not (tmp_path / "run" / LOCK).exists()


def _other_process_lock(folder: Path) -> None:
    """What a second process finds: the lock holder (this test process) is alive and not it."""
    code = (f"from stylezoo.core.runs.rundir import RunLock\nRunLock({str(folder)!r}).acquire()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0 and "being written by process" in r.stderr:
        raise ConfigError(r.stderr.strip().splitlines()[-1])


def _safetensors_enospc(*_: Any, **__: Any) -> None:
    raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                          '"No space left on device" })')


def test_a_full_disk_in_safetensors_own_error_is_one_line(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = (run / "last.safetensors").read_bytes()
    monkeypatch.setattr(ckpt, "save_file", _safetensors_enospc)
    r = invoke("run", "--resume", run, "--steps", "4", "--quiet")
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "No space left" in r.output and "last.safetensors" in r.output
    assert (run / "last.safetensors").read_bytes() == before
    assert [p for p in run.rglob("*") if p.name.endswith(".tmp")] == []
    with pytest.raises(OSError) as e:  # the conversion keeps the errno the rest of the code checks
        monkeypatch.setattr(ckpt, "atomic_write", lambda path, write: write(path))
        ckpt.save(run / "x.safetensors", {"a": torch.zeros(1)}, {})
    assert e.value.errno == errno.ENOSPC


def test_last_checkpoint_is_written_by_time_between_step_checkpoints(reg: Registry, tmp_path: Path) -> None:
    steps_saved: list[int | None] = []
    out = tmp_path / "run"

    def progress(step: int, total: int, logs: dict[str, float]) -> None:
        last = out / "last.safetensors"
        steps_saved.append(ckpt.read_meta(last)["step"] if last.exists() else None)

    rc = resolve(reg, cli={**IMAGE, "train": {**TINY, "steps": 3, "ckpt_every": 0, "ckpt_minutes": 1e-9}},
                 losses=["tv"])
    train(rc, out=out, registry=reg, progress=progress)
    # progress is called before the step's checkpoint: each step finds the previous one saved by time
    assert steps_saved == [None, 1, 2]
    assert ckpt.read_meta(out / "last.safetensors")["step"] == 3  # and the final one
    plain = tmp_path / "plain"
    steps_saved.clear()
    out = plain
    rc = resolve(reg, cli={**IMAGE, "train": {**TINY, "steps": 3, "ckpt_every": 0, "ckpt_minutes": 0}}, losses=["tv"])
    train(rc, out=out, registry=reg, progress=progress)
    assert steps_saved == [None, None, None]  # 0: by steps only


def test_a_resumed_optimizer_state_with_nan_is_refused(run: Path, reg: Registry, tmp_path: Path) -> None:
    tensors, meta = ckpt.load(run / "last.safetensors")
    key = sorted(k for k in tensors if k.startswith("opt_g.") and k.endswith("exp_avg_sq"))[0]
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    ckpt.save(run / "last.safetensors", tensors, {k: v for k, v in meta.items() if k != "format"})
    for f in (run / "checkpoints").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(CheckpointError, match="NaN or Inf"):
        train(resume=run, steps=4, registry=reg)
    r = invoke("run", "--resume", run, "--steps", "4", "--quiet")
    assert r.exit_code == 1 and "NaN or Inf" in r.output and "Traceback" not in r.output


def test_nan_weights_are_never_the_last_good_ones(reg: Registry, tmp_path: Path) -> None:
    tr = Trainer(resolve(reg, cli=IMAGE, losses=["tv"]), tmp_path / "run", registry=reg)
    tr.train_step(0)
    tr.good_steps = 1
    assert tr.has_good_weights()
    with torch.no_grad():
        next(tr.components.gen.parameters()).fill_(float("nan"))
    assert not tr.has_good_weights()
