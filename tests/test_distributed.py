"""Distributed data-parallel training with 2 CPU processes (gloo on 127.0.0.1): the ranks end with identical
weights, the result matches one process training on the same global batch, only rank 0 writes files, and a
run resumes with a different number of processes. The launcher (`stylezoo run --nproc 2`) runs torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import ConfigError
from stylezoo.core.files import checkpoint as ckpt
from stylezoo.core.runs.runconfig import RunConfig, resolve
from stylezoo.core.runtime import distributed as D
from stylezoo.core.training.api import train
from stylezoo.core.training.engine import Trainer

pytestmark = pytest.mark.slow

TINY = {"size": 32, "batch": 4, "steps": 3, "sample_every": 0, "ckpt_every": 0, "log_every": 1, "num_samples": 2,
        "lr": 2e-4, "precision": "fp32"}
# DCGAN: batch norm in G (synchronised across ranks), instance norm in D
NOISE = {"gen": "dcgan", "disc": "dcgan", "feat": "", "adv": "lsgan", "gp": "none", "train": TINY,
         "set": {"gen": {"channels": 8, "latent_dim": 16}, "disc": {"channels": 8}}}
IMAGE = {"gen": "encdec", "disc": "patch", "feat": "", "adv": "lsgan", "gp": "none", "train": TINY,
         "set": {"gen": {"channels": 8, "n_res": 1}, "disc": {"n_layers": 2, "channels": 8}}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, run: dict, out: str, results: str) -> None:
    """One rank: join the group from the environment (as under torchrun), train, save its final weights."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with D.session("cpu") as env:
        assert (env.rank, env.world) == (rank, world)
        tr = Trainer(RunConfig.from_dict(run), out)
        assert (tr.rank, tr.world) == (rank, world)
        if world > 1:
            assert (any(isinstance(m, D.GlobalBatchNorm) for m in tr.components.gen.modules())
                    == (run["gen"] == "gen/dcgan"))
        tr.fit()
        state = {f"gen.{k}": v for k, v in tr.components.gen.state_dict().items()}
        state |= {f"disc.{k}": v for k, v in tr.components.disc.state_dict().items()}
        save_file({k: v.contiguous() for k, v in state.items()}, f"{results}/rank{rank}.safetensors",
                  metadata={"history": json.dumps(tr.history)})


def _spawn(run: RunConfig, out: Path, results: Path, world: int = 2) -> list[dict[str, torch.Tensor]]:
    results.mkdir(parents=True, exist_ok=True)
    mp.spawn(_worker, args=(world, _free_port(), run.to_dict(), str(out), str(results)), nprocs=world, join=True)
    return [load_file(results / f"rank{r}.safetensors") for r in range(world)]


def _single(run: RunConfig, out: Path) -> Trainer:
    tr = Trainer(run, out, rank=0, world=1)
    tr.fit()
    return tr


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


@pytest.mark.parametrize("base", [NOISE, IMAGE], ids=["dcgan-syncbn", "encdec-patch"])
def test_two_processes_match_one_process_on_the_same_global_batch(reg: Registry, tmp_path: Path, base: dict) -> None:
    rc = resolve(reg, cli=base, losses=["tv"])
    ranks = _spawn(rc, tmp_path / "ddp", tmp_path / "weights")
    for k in ranks[0]:  # DDP keeps the replicas identical, bit for bit
        assert torch.equal(ranks[0][k], ranks[1][k]), k
    one = _single(rc, tmp_path / "one")
    state = _state(one)
    assert set(state) == set(ranks[0])  # global batch norm keeps the checkpoint's keys
    _close(ranks[0], state)
    # the logged losses are the global batch's (averaged over the ranks), like the single process's
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r, s in zip(rows, one.history):
        for key in ("d/loss", "g/loss", "d/real", "d/fake", "grad/gen"):
            assert r[key] == pytest.approx(s[key], rel=1e-3, abs=1e-4), key
    # only rank 0 wrote the run's files
    assert (tmp_path / "ddp" / "last.safetensors").is_file() and (tmp_path / "ddp" / "samples" / "final.png").is_file()
    if base is IMAGE:  # resume the 2-process run in 1 process: as if 1 process had trained all along
        train(resume=tmp_path / "ddp", steps=5, registry=reg)
        full = _single(resolve(reg, cli={**IMAGE, "train": {**TINY, "steps": 5}}, losses=["tv"]), tmp_path / "full")
        resumed, _ = ckpt.load(tmp_path / "ddp" / "last.safetensors")
        _close({k: v for k, v in resumed.items() if k.split(".", 1)[0] in ("gen", "disc")}, _state(full))
        rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]


def _state(tr: Trainer) -> dict[str, torch.Tensor]:
    return {f"gen.{k}": v for k, v in tr.components.gen.state_dict().items()} | \
        {f"disc.{k}": v for k, v in tr.components.disc.state_dict().items()}


# Parameters whose gradient is zero in exact arithmetic: a residual block's last instance-norm bias adds a
# per-channel constant that the next convolution's instance norm subtracts again. Adam scales the rounding
# noise left in their gradient to steps of +-lr, so their values follow the summation order, not the maths.
NULL_GRADIENT = ".body.6.bias"


def _close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(want)
    for k, v in want.items():
        if k.startswith("gen.res.") and k.endswith(NULL_GRADIENT):
            continue
        if v.is_floating_point():
            torch.testing.assert_close(got[k], v, rtol=1e-3, atol=2e-4, msg=k)
        else:
            assert torch.equal(got[k], v), k


def test_gradient_penalty_double_backward_under_ddp(reg: Registry, tmp_path: Path) -> None:
    """WGAN-GP's create_graph pass goes through the bare discriminator; the D step's one backward syncs it."""
    rc = resolve(reg, cli={**NOISE, "adv": "wgan", "gp": "wgan-gp", "train": {**TINY, "steps": 2}}, losses=["tv"])
    ranks = _spawn(rc, tmp_path / "ddp", tmp_path / "weights")
    for k in ranks[0]:
        assert torch.equal(ranks[0][k], ranks[1][k]), k
    history = json.loads(_meta(tmp_path / "weights" / "rank0.safetensors")["history"])
    assert all(torch.isfinite(torch.tensor(h["d/gp/wgan-gp"])) and h["d/gp/wgan-gp"] > 0 for h in history)


def _meta(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()


def test_batch_that_does_not_split_over_the_processes_is_refused(reg: Registry, tmp_path: Path) -> None:
    rc = resolve(reg, cli={**IMAGE, "train": {**TINY, "batch": 3}}, losses=["tv"])
    with pytest.raises(ConfigError, match="multiple of the number of processes"):
        Trainer(rc, tmp_path, rank=0, world=2)


@pytest.mark.parametrize("extra,code,fragment", [
    (["--batch", "3"], 2, "does not split over 2 processes"),
    (["--content", "/nonexistent/photos"], 1, "no such file or folder"),
    (["--out", "HOLDS_A_RUN"], 2, "holds a run"),
])
def test_nproc_checks_the_run_before_starting_any_worker(extra: list[str], code: int, fragment: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A mistake every worker would make is reported once, as one line, before torchrun starts."""
    from typer.testing import CliRunner

    from stylezoo.core.cli import app

    (tmp_path / "config.toml").write_text("")  # a folder that holds a run
    monkeypatch.setattr(D, "launch", lambda *a: pytest.fail("torchrun was started"))
    extra = [str(tmp_path) if e == "HOLDS_A_RUN" else e for e in extra]
    r = CliRunner().invoke(app, ["run", "--nproc", "2", "--gen", "encdec", "--disc", "patch", "--feat", "none",
                                 "--loss", "tv", "--size", "32", "--batch", "4", "--steps", "2", "--quiet", *extra])
    assert r.exit_code == code, r.output
    assert fragment in r.output and r.output.count("error:") == 1 and "Traceback" not in r.output


def test_torchrun_command_and_cli_launcher(tmp_path: Path) -> None:
    """`stylezoo run --nproc 2` starts torchrun; rank 0 alone writes the run, whose metrics are global."""
    cmd = D.torchrun_command(2, ["run", "--quiet"])
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"] and "--nproc_per_node=2" in cmd
    assert cmd[-3:] == ["stylezoo", "run", "--quiet"]
    out = tmp_path / "r"
    args = ["run", "--nproc", "2", "--gen", "encdec", "--disc", "patch", "--feat", "none", "--loss", "tv",
            "--set", "gen.channels=8", "--set", "gen.n_res=1", "--set", "disc.n_layers=2", "--set", "disc.channels=8",
            "--size", "32", "--batch", "4", "--steps", "2", "--precision", "fp32", "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "stylezoo", *args], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    meta = ckpt.read_meta(out / "last.safetensors")
    assert meta["step"] == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]  # one writer: no line twice
    assert r.stdout.count("done:") == 1


def _launch(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-m", "stylezoo", "run", "--nproc", "2", "--size", "32", "--batch", "4",
                           "--out", str(tmp_path / "r"), *args], capture_output=True, text=True, env=full, timeout=600)


def test_an_error_every_worker_hits_is_reported_once(tmp_path: Path) -> None:
    """Both ranks stop on NaN losses: one error line, no torchrun traceback or failure table, no warnings."""
    r = _launch(["--gen", "dcgan", "--disc", "dcgan", "--feat", "none", "--loss", "tv", "--steps", "6",
                 "--lr", "1e12", "--quiet"], tmp_path)
    assert r.returncode == 1, r.stderr[-3000:]
    assert r.stderr.count("error:") == 1 and "NaN/Inf" in r.stderr, r.stderr[-3000:]
    for noise in ("Traceback", "ChildFailedError", "FAILED", "Warning"):  # dcgan: global batch norm's all-reduce
        assert noise not in r.stderr, r.stderr[-3000:]


def test_a_worker_crash_is_shown_with_its_own_output(tmp_path: Path) -> None:
    """Rank 1 alone crashes: its traceback's end is shown, rank 0 says in one line that it lost its peer."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    import stylezoo.core.training.engine as E\n"
        "    def boom(self, step):\n"
        "        raise RuntimeError('boom on rank 1')\n"
        "    E.Trainer.train_step = boom\n")
    r = _launch(["--gen", "encdec", "--disc", "patch", "--feat", "none", "--loss", "tv", "--steps", "4",
                 "--set", "gen.channels=8", "--set", "gen.n_res=1"], tmp_path,
                PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    assert r.returncode == 1, r.stderr[-3000:]
    assert "worker rank 1 failed (exit code 1)" in r.stderr and "RuntimeError: boom on rank 1" in r.stderr
    assert r.stderr.count("[rank0]") == 0 and "ChildFailedError" not in r.stderr, r.stderr[-3000:]
    lost = [line for line in r.stderr.splitlines() if "lost its connection" in line]
    assert len(lost) <= 1 and all(line.startswith("error: rank 0") for line in lost), r.stderr[-3000:]
