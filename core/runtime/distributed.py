"""Distributed data-parallel training on PyTorch's own engine (torch.distributed, DistributedDataParallel).

A run is distributed when it is started by `torchrun` (or `stylezoo run --nproc N`, which starts torchrun):
torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous (MASTER_ADDR/MASTER_PORT) in each worker's
environment; `session()` joins the process group from there (gloo on CPU, NCCL on CUDA) and leaves it
at the end. Each rank draws its slice of the global batch (core/files/data.py), gradients are averaged by DDP,
logged scalars are averaged across ranks, and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..errors import UsageError


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: its global rank, the number of processes, its rank on this machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def from_env() -> DistEnv:
    """The rank/world torchrun put in the environment ((0, 1, 0) when not started by torchrun)."""
    try:
        return DistEnv(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                       int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise UsageError("RANK/WORLD_SIZE/LOCAL_RANK in the environment are not integers; "
                         "start distributed runs with torchrun or `stylezoo run --nproc N`.") from None


def current() -> DistEnv:
    """The rank/world of the joined process group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size(), from_env().local_rank)
    return DistEnv()


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def local_device(spec: str, env: DistEnv) -> torch.device:
    """The device of this rank: `auto`/`cuda` become cuda:LOCAL_RANK under torchrun when CUDA is present."""
    from .devices import pick_device

    dev = pick_device(spec)  # unknown or absent devices: a UsageError
    if dev.type == "cuda" and dev.index is None and env.distributed:
        dev = torch.device("cuda", env.local_rank)
    return dev


def init(device_spec: str = "auto") -> DistEnv:
    """Join the process group described by the environment (a no-op outside torchrun)."""
    env = from_env()
    if not env.distributed or dist.is_initialized():
        return current() if env.distributed else env
    if not dist.is_available():
        raise UsageError("This PyTorch build has no torch.distributed; run with one process.")
    dev = local_device(device_spec, env)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    extra: dict[str, Any] = {"device_id": dev} if dev.type == "cuda" else {}
    dist.init_process_group(backend_for(dev), init_method="env://", rank=env.rank, world_size=env.world, **extra)
    return env


def cleanup(*, wait: bool = True) -> None:
    """Leave the process group; with `wait`, after every rank got here (so rank 0 finishes writing first)."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            with contextlib.suppress(Exception):
                dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def session(device_spec: str = "auto") -> Iterator[DistEnv]:
    """`with session(): ...` joins the group from the environment and leaves it at the end.

    A group joined by the caller before is left alone. After an error no rank waits for the others
    (they may be blocked in a collective that will never complete; torchrun stops them).
    """
    owned = dist.is_available() and not dist.is_initialized()
    env = init(device_spec)
    ok = False
    try:
        yield env
        ok = True
    finally:
        if owned:
            cleanup(wait=ok)


def has_batch_norm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch, over all ranks, for CPU process
    groups (torch's SyncBatchNorm is GPU-only). Two differentiable all-reduces (sums, then squared
    deviations) per call; float32 math under autocast; eval mode uses the running statistics as usual."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or not current().distributed:
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, c] + [1] * (x.dim() - 2)
        xf = x.float()
        sums = all_reduce(torch.cat([xf.sum(dims), xf.new_full((1,), x.numel() / c)]))
        n, mean = sums[-1], sums[:-1] / sums[-1]
        dev = xf - mean.view(shape)
        var = all_reduce((dev * dev).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                assert self.num_batches_tracked is not None  # a buffer when track_running_stats
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean, alpha=m)
                self.running_var.mul_(1 - m).add_(var * n / (n - 1).clamp(min=1), alpha=m)
        y = dev * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


class _AllReduceSum(torch.autograd.Function):
    """A differentiable sum over ranks: the gradient of each rank's input is the sum of every rank's output
    gradient. (torch.distributed.nn.functional.all_reduce does this too, but warns once per rank and run
    that it is deprecated, with no differentiable replacement yet.)"""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:
        g = g.clone()
        dist.all_reduce(g)
        return g


def _to_global_bn(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, _to_global_bn(child))
    return module


def sync_batch_norm(module: nn.Module, device: torch.device | None = None) -> nn.Module:
    """Batch norm layers computing their statistics over the global batch (all ranks) when distributed:
    torch's SyncBatchNorm on CUDA, GlobalBatchNorm on CPU. The state dict keys stay those of BatchNorm."""
    if not (current().distributed and has_batch_norm(module)):
        return module
    if device is not None and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _to_global_bn(module)


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` in DistributedDataParallel when distributed (gradients averaged over ranks), else itself."""
    if not current().distributed or not any(p.requires_grad for p in module.parameters()):
        return module
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    # buffers are equal on every rank without a broadcast at each forward: batch norm statistics are the
    # global batch's, spectral norm's power iteration sees the same averaged weights
    quiet = "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters
    opts: dict[str, Any] = {"forward_sync_buffers": False} if quiet else {"broadcast_buffers": False}
    return DDP(module, device_ids=ids, **opts)


def mean_across(values: Tensor) -> Tensor:
    """The element-wise mean of `values` over all ranks (itself when not distributed)."""
    env = current()
    if not env.distributed:
        return values
    values = values.detach().float().clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / env.world


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when `flag` is true on any rank (so every rank takes the same decision)."""
    if not current().distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_text(text: str, device: torch.device, src: int = 0) -> str:
    """Rank `src`'s `text` on every rank (a run directory name chosen from the clock, say)."""
    if not current().distributed:
        return text
    data = torch.tensor(list(text.encode()), dtype=torch.uint8)
    n = torch.tensor([data.numel()], dtype=torch.int64, device=device)
    dist.broadcast(n, src)
    buf = torch.zeros(int(n.item()), dtype=torch.uint8, device=device)
    if current().rank == src:
        buf.copy_(data.to(device))
    dist.broadcast(buf, src)
    return bytes(buf.cpu().tolist()).decode()


def torchrun_command(nproc: int, args: Sequence[str], *, module: str = "stylezoo") -> list[str]:
    """The torchrun command that starts `nproc` local workers of `python -m MODULE ARGS...`."""
    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1, got {nproc}.")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", module, *args]


LAUNCH_DIR = "STYLEZOO_LAUNCH_DIR"  # set by launch(): where workers leave their errors and other ranks' output


def launch(nproc: int, args: Sequence[str]) -> int:
    """Run `stylezoo ARGS...` in `nproc` processes on this machine under torchrun; returns the exit code.

    Each worker gets cores // nproc threads (torchrun's default would be 1). Rank 0 writes to the terminal as
    usual; the other ranks' output goes to files. When a worker fails, the user sees each distinct error once
    (rank 0's as it happened, another rank's when it differs, with the tail of its output when it crashed
    without a message), and not torchrun's traceback and failure table.
    """
    import logging
    import tempfile

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if shutil.which(sys.executable) is None:  # pragma: no cover - an embedded interpreter
        raise UsageError("Cannot find the Python interpreter to start torchrun with; run torchrun yourself.")
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", LAUNCH_DIR)}
    if saved["OMP_NUM_THREADS"] is None:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    # torchrun's own log lines repeat what the workers say (failures as tracebacks, "Received 2 death signal")
    elastic = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.startswith("torch.distributed")]
    levels = [lg.level for lg in elastic]
    for lg in elastic:
        lg.setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="stylezoo-ranks-") as tmp:
        os.environ[LAUNCH_DIR] = tmp
        try:
            run(parse_args(torchrun_command(nproc, args)[3:]))
            return 0
        except ChildFailedError as e:
            return _report_failures(e, Path(tmp))
        except SignalException as e:  # Ctrl-C or SIGTERM reached the launcher: the workers were stopped
            return 128 + int(e.sigval)
        finally:
            for lg, lv in zip(elastic, levels):
                lg.setLevel(lv)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _report_failures(e: Any, tmp: Path) -> int:
    """Each distinct worker error once, on stderr; the exit code of the first failure (the root cause)."""
    from rich.console import Console
    from rich.markup import escape

    con = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
    said = {(tmp / "rank0.error").read_text()} if (tmp / "rank0.error").is_file() else set()
    for rank in sorted(e.failures):
        if rank == 0:
            continue  # its error or traceback went to the terminal as it happened
        msg_file = tmp / f"rank{rank}.error"
        if msg_file.is_file():
            msg = msg_file.read_text()
            if msg not in said:
                said.add(msg)
                con.print(f"[bold red]error:[/] (rank {rank}) {escape(msg)}")
            continue
        f = e.failures[rank]
        if f.exitcode < 0 and rank != e.get_first_failure()[0]:
            continue  # stopped by torchrun's signal after another rank failed first: nothing of its own to say
        how = f"signal {f.signal_name()}" if f.exitcode < 0 else f"exit code {f.exitcode}"
        log = tmp / f"rank{rank}.log"
        tail = log.read_text(errors="replace").splitlines()[-12:] if log.is_file() else []
        con.print(f"[bold red]error:[/] worker rank {rank} failed ({how}){'; its last output:' if tail else '.'}")
        if tail:
            con.print(escape("\n".join(tail)))
    code = e.get_first_failure()[1].exitcode  # the root cause's
    return code if code > 0 else 128 - code if code < 0 else 1


_PEER_LOST = ("closed by peer", "reset by peer", "remote worker", "Broken pipe", "Connection refused")


def peer_lost(e: BaseException) -> str | None:
    """What `e`, raised in a distributed worker, says when it is the worker finding another one gone (then its
    own failure is a consequence, not the cause); else None."""
    return next((p for p in _PEER_LOST if p in str(e)), None) if isinstance(e, RuntimeError) else None


def quiet_worker_output() -> None:
    """In a worker started by launch(): ranks other than 0 write their output to files, not the terminal."""
    where = os.environ.get(LAUNCH_DIR)
    rank = from_env().rank
    if not where or rank == 0 or not Path(where).is_dir():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(Path(where) / f"rank{rank}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def note_worker_error(message: str) -> None:
    """In a worker started by launch(): leave this rank's error message for the launcher to report once."""
    where = os.environ.get(LAUNCH_DIR)
    if where and Path(where).is_dir():
        with contextlib.suppress(OSError):
            (Path(where) / f"rank{from_env().rank}.error").write_text(message)


__all__ = ["DistEnv", "from_env", "current", "init", "cleanup", "session", "sync_batch_norm", "GlobalBatchNorm", "wrap",
           "mean_across", "any_rank", "broadcast_text", "torchrun_command", "launch", "local_device",
           "quiet_worker_output", "note_worker_error", "peer_lost"]
