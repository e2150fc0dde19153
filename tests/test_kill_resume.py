"""Killing a run at any moment loses at most the step in flight, never corrupts `last.safetensors`, and
`--resume` then reproduces the uninterrupted run line for line.

The subprocess test stops a real `stylezoo run` several times on a seeded schedule: SIGKILL at random
points, SIGKILL while a checkpoint is half-written (a slowed-down writer makes that moment wide), and
SIGTERM (which finishes the step in flight and saves). The in-process tests deliver SIGINT/SIGTERM in
the middle of a step, where a naive handler would save a half-updated model.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn
from typer.testing import CliRunner

from stylezoo.core.cli import app
from stylezoo.core.components.hookspecs import hookimpl
from stylezoo.core.components.kinds import StepContext
from stylezoo.core.components.registry import Registry
from stylezoo.core.files import checkpoint as ckpt
from stylezoo.core.runs.runconfig import resolve
from stylezoo.core.runs.rundir import newest_valid_checkpoint
from stylezoo.core.training.api import train
from stylezoo.core.training.engine import Trainer

STEPS = 24
ARGS = ["--gen", "dcgan", "--disc", "dcgan", "--adv", "lsgan", "--feat", "none", "--loss", "tv", "--size", "32",
        "--batch", "2", "--steps", str(STEPS), "--seed", "3", "--quiet", "--set", "gen.channels=8",
        "--set", "gen.max_channels=16", "--set", "gen.latent_dim=16", "--set", "disc.channels=8",
        "--set", "disc.max_channels=16", "--set", "train.sample_every=0", "--set", "train.log_every=1",
        "--set", "train.ckpt_every=1"]

# Runs the CLI; with SZ_SLOW_SAVE=seconds every safetensors write stalls half-way through its temporary file.
BOOT = """
import os, sys, time
delay = float(os.environ.get("SZ_SLOW_SAVE", "0"))
if delay:
    import safetensors.torch as st
    real = st.save_file
    def slow(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        with open(filename, "rb") as f:
            data = f.read()
        with open(filename, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            time.sleep(delay)
            f.write(data[len(data) // 2:])
    st.save_file = slow
from stylezoo.core.cli import main
sys.argv = ["stylezoo", *sys.argv[1:]]
main()
"""


def make_data(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        pixels = np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def rows(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def assert_same_run(a: Path, b: Path, steps: int) -> None:
    """Both runs logged each step exactly once, with the same losses, and ended with the same generator."""
    ra, rb = rows(a), rows(b)
    assert [r["step"] for r in rb] == list(range(1, steps + 1)), [r["step"] for r in rb]
    assert [r["step"] for r in ra] == list(range(1, steps + 1))
    for x, y in zip(ra, rb):
        keys = [k for k in x if k.startswith(("g/", "d/"))]
        assert keys and set(keys) <= set(y)
        for k in keys:
            assert y[k] == pytest.approx(x[k], rel=1e-4, abs=1e-6), (x["step"], k, x[k], y[k])
    ta, _ = ckpt.load(a / "last.safetensors")
    tb, meta = ckpt.load(b / "last.safetensors")
    assert meta["step"] == steps
    for k in ta:
        if k.startswith("gen."):
            torch.testing.assert_close(tb[k], ta[k], rtol=1e-4, atol=1e-5)


def tmp_files(run: Path) -> list[Path]:
    return [p for p in run.rglob("*") if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------ a real process
def _launch(args: list[str], slow: float = 0.0) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("STYLEZOO_DEBUG", "STYLEZOO_PLUGINS")}
    env["SZ_SLOW_SAVE"] = str(slow)
    return subprocess.Popen([sys.executable, "-c", BOOT, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen[str], ok: Callable[[], bool], what: str, timeout: float = 90.0) -> bool:
    """Poll until ok(); False when the process ended first."""
    t0 = time.monotonic()
    while not ok():
        if proc.poll() is not None:
            return False
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)
    return True


def _lines(run: Path) -> int:
    p = run / "metrics.jsonl"
    return p.read_text().count("\n") if p.exists() else 0


def _checkpoint_being_written(run: Path) -> bool:
    return any(p.stat().st_size > 0 for d in (run, run / "checkpoints") if d.is_dir()
               for p in d.glob(".*.safetensors.*.tmp") if p.exists())


@pytest.mark.slow
def test_kill_at_random_points_and_mid_write_then_resume_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data")
    ref, run = tmp_path / "ref", tmp_path / "run"
    r = CliRunner().invoke(app, ["run", *ARGS, "--data", str(data), "--out", str(ref)])
    assert r.exit_code == 0, r.output

    rng = random.Random(20240601)
    plan = ["kill", "kill mid-write", "term", "kill mid-write", "kill"]
    rng.shuffle(plan)
    seen: dict[str, int] = {}
    started = False
    for how in plan:
        args = ["run", "--resume", str(run)] if started else ["run", *ARGS, "--data", str(data), "--out", str(run)]
        proc = _launch(args, slow=0.25 if how == "kill mid-write" else 0.0)
        base = _lines(run)
        # let it train a few steps (the first launch: until its first checkpoint is on disk)
        target = base + rng.randint(1, 3)
        alive = _wait_for(proc, lambda target=target: _lines(run) >= target and (run / "last.safetensors").exists(),
                           "training")
        if alive and how == "kill mid-write":
            alive = _wait_for(proc, lambda: _checkpoint_being_written(run), "a checkpoint write")
        elif alive and how == "kill":
            time.sleep(rng.uniform(0.0, 0.08))
        if alive:
            proc.send_signal({"term": signal.SIGTERM, "int": signal.SIGINT}.get(how, signal.SIGKILL))
        out, err = proc.communicate(timeout=60)
        started = True
        if not alive:  # it finished first: nothing to check for this stop
            continue
        seen[how] = seen.get(how, 0) + 1
        assert "Traceback" not in err, err
        if how == "kill mid-write":
            mine = [t for t in tmp_files(run) if f".{proc.pid}-" in t.name]
            assert mine, "the kill did not land in the middle of a checkpoint write"
        if how in ("term", "int"):
            want = {"term": 128 + signal.SIGTERM, "int": 128 + signal.SIGINT}[how]  # 143, 130: as a shell reports it
            assert proc.returncode == want, (proc.returncode, err)
            assert "interrupted" in err and "--resume" in err
            # the step in flight was finished, logged and saved
            assert ckpt.read_meta(run / "last.safetensors")["step"] == rows(run)[-1]["step"]
        else:
            assert proc.returncode == -signal.SIGKILL
        # never a corrupt last checkpoint; the newest valid one is at least as new as it
        tensors, meta = ckpt.load(run / "last.safetensors")
        assert tensors and newest_valid_checkpoint(run) == run / "last.safetensors"
    assert seen.get("kill mid-write", 0) >= 1 and seen.get("kill", 0) >= 1 and seen.get("term", 0) == 1, seen

    proc = _launch(["run", "--resume", str(run)])
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "skipped 1 file(s) in the" in err and "broken.jpg" in err  # the warning reaches the terminal
    assert tmp_files(run) == []  # the killed writers' temporary files were cleaned up
    assert_same_run(ref, run, STEPS)


# ------------------------------------------------------------------------------------------ signals mid-step
TINY = {"size": 32, "batch": 2, "steps": 6, "sample_every": 0, "ckpt_every": 0, "log_every": 1, "num_samples": 2}


@dataclass
class SignalConfig:
    weight: float = 1.0  # multiplies the (zero) term
    at: int = 2  # the 0-based step whose generator update is interrupted
    signum: int = int(signal.SIGINT)  # which signal to deliver


class SignalSelf(nn.Module):
    """A zero loss term that signals its own process once, after the discriminator has stepped."""

    step: ClassVar[str] = "gen"
    needs: ClassVar[frozenset[str]] = frozenset()
    fired: ClassVar[bool] = False

    def __init__(self, cfg: SignalConfig) -> None:
        super().__init__()
        self.cfg, self.weight = cfg, cfg.weight

    def feature_layers(self, extractor: Any) -> tuple[str, ...]:
        return ()

    def forward(self, ctx: StepContext) -> Tensor:
        if ctx.step == self.cfg.at and not SignalSelf.fired:
            SignalSelf.fired = True
            os.kill(os.getpid(), self.cfg.signum)
            time.sleep(0.05)  # the handler runs here, in the middle of the step
        return (ctx.fake.float() - ctx.fake.float().detach()).mean()


def _plugin() -> types.ModuleType:
    mod = types.ModuleType("signal_plugin")

    @hookimpl
    def register_components(register: Callable[..., None]) -> None:
        register("loss/signal-self", SignalSelf, config=SignalConfig)

    mod.register_components = register_components  # type: ignore[attr-defined]
    return mod


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_in_the_middle_of_a_step_finishes_the_step_then_saves(tmp_path: Path, signum: int) -> None:
    reg = Registry(plugins=[_plugin()])
    data = make_data(tmp_path / "data")
    cli = {"gen": "dcgan", "disc": "dcgan", "adv": "lsgan", "feat": "", "gp": "none", "train": TINY,
           "data": {"data": str(data)}, "set": {"gen": {"channels": 8, "max_channels": 16, "latent_dim": 16},
                                                "disc": {"channels": 8, "max_channels": 16},
                                                "loss/signal-self": {"signum": int(signum)}}}
    rc = resolve(reg, cli=cli, losses=["tv", "signal-self"])
    SignalSelf.fired = True
    Trainer(rc, tmp_path / "ref", registry=reg).fit()  # the same run, never interrupted
    # what the CLI installs for SIGTERM (and Python for SIGINT): an immediate KeyboardInterrupt, which without
    # the engine's own handling lands in the middle of the step (and a plain SIGTERM would end pytest)
    previous = signal.signal(signum, _interrupt)
    try:
        SignalSelf.fired = False
        with pytest.raises(KeyboardInterrupt):
            Trainer(rc, tmp_path / "run", registry=reg).fit()
        assert SignalSelf.fired
        assert signal.getsignal(signum) is _interrupt  # restored after the run
    finally:
        signal.signal(signum, previous)
    meta = ckpt.read_meta(tmp_path / "run" / "last.safetensors")
    assert meta["step"] == 3 == rows(tmp_path / "run")[-1]["step"]  # step index 2 was completed, then saved
    train(resume=tmp_path / "run", registry=reg)
    assert_same_run(tmp_path / "ref", tmp_path / "run", 6)


def test_a_torn_metrics_line_does_not_stop_a_resume(tmp_path: Path) -> None:
    """A kill or a full disk can leave half a line at the end of metrics.jsonl: resume drops it."""
    reg = Registry()
    data = make_data(tmp_path / "data")
    cli = {"gen": "dcgan", "disc": "dcgan", "adv": "lsgan", "feat": "", "gp": "none",
           "train": {**TINY, "steps": 2, "ckpt_every": 1}, "data": {"data": str(data)},
           "set": {"gen": {"channels": 8, "max_channels": 16, "latent_dim": 16},
                   "disc": {"channels": 8, "max_channels": 16}}}
    Trainer(resolve(reg, cli=cli, losses=["tv"]), tmp_path / "run", registry=reg).fit()
    with (tmp_path / "run" / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "g/loss": 0.12')  # torn
    train(resume=tmp_path / "run", steps=3, registry=reg)
    assert [r["step"] for r in rows(tmp_path / "run")] == [1, 2, 3]
