"""What a run directory holds and how it is read back: config.toml, metrics.jsonl, loss.png, the checkpoint
a run resumes from, and the signal guard that lets a step finish before a run stops.

The engine (core/training/engine.py) writes these while it trains; the CLI, the report and `stylize` read them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..components.registry import Registry, default_registry
from ..errors import CheckpointError, ConfigError, DataError, Interrupted, UsageError
from ..files import checkpoint as ckpt
from .runconfig import _PATH_FIELDS, RunConfig, _absolute, _expand, component_config, with_steps

log = logging.getLogger("stylezoo")


class _StopAtStepEnd:
    """SIGINT/SIGTERM while `busy` only set `pending`: the step in flight finishes (and is logged and saved)
    before the run stops, so the checkpoint saved on interrupt holds whole steps and a resumed run repeats
    the uninterrupted one. A second signal stops at once. Only on the main thread; ignored signals stay so."""

    def __init__(self) -> None:
        self.busy = False
        self.pending: int | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.busy and self.pending is None:
            self.pending = signum
            return
        raise Interrupted(signum)

    def install(self) -> _StopAtStepEnd:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(s) not in (signal.SIG_IGN, None):
                    self._old[s] = signal.signal(s, self._handler)
        return self

    def restore(self) -> None:
        import signal

        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}


def write_config(path: Path, rc: RunConfig) -> None:
    import tomli_w

    ckpt.atomic_write(path, lambda tmp: tmp.write_text(tomli_w.dumps(_toml_safe(rc.to_dict()))))


def _toml_safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _toml_safe(x) for k, x in v.items() if x is not None}
    if isinstance(v, (list, tuple)):
        return [_toml_safe(x) for x in v]
    return v


def plot_losses(metrics: Path, out: Path) -> Path | None:
    """Loss curves from metrics.jsonl as a PNG (one panel per step side)."""
    if not metrics.exists():
        return None
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for r in rows for k in r if k.startswith(("g/", "d/")) and k not in ("d/real", "d/fake")})
    sides = [s for s in ("g/", "d/") if any(k.startswith(s) for k in keys)]
    fig, axes = plt.subplots(1, len(sides), figsize=(6 * len(sides), 3.6), squeeze=False)
    for ax, side in zip(axes[0], sides):
        for k in keys:
            if k.startswith(side):
                xs = [r["step"] for r in rows if k in r]
                ys = [r[k] for r in rows if k in r]
                ax.plot(xs, ys, label=k[2:], lw=1.4)
        ax.set_title("generator" if side == "g/" else "discriminator")
        ax.set_xlabel("step")
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    ckpt.atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return out


def newest_valid_checkpoint(run_dir: Path, *, to: str = "resume") -> Path:
    """The newest checkpoint in a run dir that reads back cleanly (a torn or corrupt file is skipped).

    `to` ("resume" or "load") words the error when there is none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        ckpt.refuse_pickle(run_dir)
        raise CheckpointError(f"{run_dir} is not a run directory: give the folder a run wrote "
                              "(with last.safetensors and checkpoints/).")
    cands = [run_dir / "last.safetensors", *sorted((run_dir / "checkpoints").glob("step-*.safetensors"), reverse=True)]
    why: list[str] = []
    steps: list[tuple[int, int, Path]] = []
    for i, p in enumerate(cands):
        if not p.is_file():
            continue
        try:
            steps.append((-int(ckpt.read_meta(p)["step"]), i, p))
        except (CheckpointError, KeyError, ValueError) as e:
            why.append(str(e))
    for _, _, p in sorted(steps):  # newest first: only tensors of the one picked (and torn newer ones) are read
        try:
            ckpt.load(p)
            return p
        except CheckpointError as e:
            why.append(str(e))
    detail = f" ({why[0]})" if why else ""
    if to == "resume":
        raise CheckpointError(f"No valid checkpoint in {run_dir}: nothing to resume{detail}. Start a new run "
                              "there with --overwrite (Python: overwrite=True), or give another --out.")
    raise CheckpointError(f"No valid checkpoint in {run_dir}{detail}: give a run folder that `stylezoo run` wrote "
                          "(it holds last.safetensors) or a checkpoint file (.safetensors).")


RUN_FILES = ("config.toml", "last.safetensors", "best.safetensors", "metrics.jsonl", "loss.png", "report.html",
             "checkpoints", "samples")  # what a training run writes into its directory
RUN_FOLDER_FILES = {"checkpoints": ("step-*.safetensors", ".step-*.tmp"),  # and, in its folders, only these
                    "samples": ("step-*.png", "final.png", ".step-*.tmp", ".final.png.*.tmp")}
# what the other commands write there about the run: `eval`'s log, `export`'s default files and parity records
ABOUT_RUN_FILES = ("eval.jsonl",) + tuple(f"{ck}.{fmt}{rec}" for ck in ("last", "best")
                                          for fmt in ("onnx", "torchscript")
                                          for rec in ("", ".parity.json"))


def clear_run(path: Path) -> None:
    """Delete what a run, and eval and export about it, wrote into `path`, leaving anything else there alone."""
    import shutil

    for name in RUN_FILES + ABOUT_RUN_FILES:
        p = Path(path) / name
        if name in RUN_FOLDER_FILES and p.is_dir() and not p.is_symlink():
            for f in {f for pattern in RUN_FOLDER_FILES[name] for f in p.glob(pattern)}:
                f.unlink() if f.is_file() or f.is_symlink() else shutil.rmtree(f)
            if not any(p.iterdir()):
                p.rmdir()
        elif p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def holds_run(path: Path) -> bool:
    """Whether a directory already holds a training run (its config, metrics or a checkpoint)."""
    path = Path(path)
    return path.is_dir() and ((path / "config.toml").exists() or (path / "last.safetensors").exists()
                              or (path / "metrics.jsonl").exists()
                              or any((path / "checkpoints").glob("*.safetensors")))


def iter_metrics(run_dir: Path) -> Iterator[dict[str, Any]]:
    p = Path(run_dir) / "metrics.jsonl"
    if p.exists():
        for line in p.read_text().splitlines():
            row = _json_line(line)
            if row is not None:
                yield row


def _json_line(line: str) -> dict[str, Any] | None:
    """One metrics.jsonl row, or None for a blank or torn line (a killed run or a full disk)."""
    try:
        row = json.loads(line) if line.strip() else None
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) else None


def default_out(rc: RunConfig) -> Path:
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{rc.recipe}"


def _data_gone(spec: str) -> bool:
    """Whether a data spec (a file, a folder or a glob; `samples:` names bundled images) names nothing now."""
    path = _expand(spec)
    if Path(path).exists():  # a real file or folder, even one with [brackets] in its name
        return False
    return not (any(c in path for c in "*?[") and glob.glob(path, recursive=True))


def relocate_data(rc: RunConfig, run_dir: str | Path, moved: dict[str, str] | None = None, *,
                  warn: bool = True) -> RunConfig:
    """A resumed run's data where it is now: `moved` gives new places ({"content": DIR, ...}) for data that is
    no longer where the run was trained from. Data still in place cannot change (the run trains on the same
    images); data that is gone with no new place is refused with the flag that gives it. `warn`: log a line
    per moved path (off for a check whose caller resumes later and says it then)."""
    moved = {k: str(v) for k, v in (moved or {}).items() if v and _absolute(str(v)) != getattr(rc.data, k, None)}
    unknown = sorted(set(moved) - set(_PATH_FIELDS))
    if unknown:
        raise UsageError(f"Only data paths can move on a resume ({', '.join(_PATH_FIELDS)}), not {', '.join(unknown)}.")
    d = rc.data
    for key, new in moved.items():
        old = getattr(d, key)
        if not old:
            raise UsageError(f"--{key} cannot be added to a resumed run: {run_dir} was trained without it.")
        if not _data_gone(old):
            raise UsageError(f"--{key} cannot change a resumed run: its images are still at {old}, and a resumed "
                             "run trains on the same images. To train on others, start a new run (--out DIR).")
        if warn:
            log.warning("resuming %s with --%s %s: the run's %s (%s) is no longer there", run_dir, key, new, key, old)
    for key in _PATH_FIELDS:
        old = getattr(d, key)
        if old and key not in moved and _data_gone(old):
            raise DataError(f"{run_dir} was trained on --{key} {old}, which is no longer there: move it back, or "
                            f"give its new place with `stylezoo run --resume {run_dir} --{key} NEW_PLACE`.")
    new_data: Any = dataclasses.replace(d, **moved)  # type: ignore[arg-type]  # path fields only, checked above
    return dataclasses.replace(rc, data=new_data.absolute()) if moved else rc


def resume_config(run_dir: str | Path, steps: int | None = None, registry: Registry | None = None, *,
                  moved: dict[str, str] | None = None, warn: bool = True) -> tuple[RunConfig, Path]:
    """The RunConfig stored in a run's newest valid checkpoint (optionally with a new total of steps, and
    data that moved at `moved`, see `relocate_data`, which `warn`s about it)."""
    path = newest_valid_checkpoint(Path(run_dir))
    meta = ckpt.read_meta(path)
    reg = registry or default_registry()
    ckpt.require_components(meta, reg, path)
    try:
        rc = RunConfig.from_dict(meta.get("run", {}))
        shapes = ckpt.tensor_shapes(path)  # an edited config must not make us build (allocate) another model
        for role, what in (("gen", "generator"), ("disc", "discriminator")):
            if getattr(rc, role):
                ckpt.check_buildable(reg.get(getattr(rc, role)).factory, component_config(reg, rc, role),
                                     ckpt.section(shapes, role), what)
    except ConfigError as e:
        raise CheckpointError(f"{path}: its run configuration is not valid here ({e}).") from None
    if steps is not None:  # the new total; a run sized in epochs is sized in steps from here on
        rc.train = with_steps(rc.train, steps)
    return relocate_data(rc, run_dir, moved, warn=warn), path


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics lines logged after the checkpoint a run resumes from (they will be logged again)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    keep = [line for line in lines if (r := _json_line(line)) is not None and r.get("step", 0) <= step]
    if keep == lines:
        return  # nothing to drop: leave the file as it is
    ckpt.atomic_write(path, lambda tmp: tmp.write_text("".join(line + "\n" for line in keep)))
def check_new_out(out: str | Path) -> None:
    """Refuse to start a new run in a folder that already holds one (it would mix the two runs' files)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: give a folder for the run (it is created if missing).")
    saved = (out / "last.safetensors").exists() or any((out / "checkpoints").glob("*.safetensors"))
    if holds_run(out) and not saved:
        raise ConfigError(f"{out} holds a run that stopped before it saved a checkpoint, so there is nothing to "
                          "resume: start again with --overwrite, or give another --out (Python: overwrite=True).")
    if holds_run(out):
        raise ConfigError(f"{out} already holds a run: continue it with `stylezoo run --resume {out}`, replace it "
                          "with --overwrite, or give another --out (Python: train(resume=...) / overwrite=True).")




LOCK = ".lock"  # in a run folder: the process id of the run or resume writing it
_SAFETENSORS_TMP = re.compile(r"^\.tmp[A-Za-z0-9]{6}$")  # safetensors' own temporary file for a save in progress


class RunLock:
    """One writer per run folder: `acquire` writes this process's id to RUN/.lock and refuses (ConfigError,
    naming the holder's process id) while another live process holds it. A lock whose process is gone (a
    killed run) is taken over, and the interrupted writes that process left are removed then."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = self.out / LOCK
        self.held = False

    def holder(self) -> int | None:
        """The live process holding the folder (other than this one), or None."""
        try:
            pid = int(self.path.read_text(encoding="ascii").strip() or 0)
        except (OSError, ValueError):
            return None
        return pid if pid > 0 and pid != os.getpid() and ckpt._pid_alive(pid) else None

    def acquire(self) -> RunLock:
        self.out.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a stale lock is replaced; two processes taking it over race for the rename
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                check_unlocked(self.out)
                with contextlib.suppress(OSError):  # stale: its process is gone
                    self.path.unlink()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            self.held = True
            clean_interrupted_writes(self.out)
            return self
        raise ConfigError(f"{self.out}: could not take its lock file {self.path}; remove it if no run is using "
                          "the folder.")

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(OSError):
                if self.path.read_text(encoding="ascii").strip() == str(os.getpid()):
                    self.path.unlink()
            self.held = False


def check_unlocked(out: str | Path) -> None:
    """Refuse (ConfigError, naming its process id) a run folder that a live run or resume is writing."""
    pid = RunLock(Path(out)).holder()
    if pid is not None:
        raise ConfigError(f"{out} is being written by process {pid} (a `stylezoo run` or --resume still running): "
                          "wait for it to finish or stop it, or give another --out.")


def clean_interrupted_writes(out: Path) -> list[Path]:
    """Remove what killed writes left in a run folder (called holding its lock): our atomic writes' temporary
    files whose process is gone, and safetensors' own `.tmpXXXXXX` files, which only a writer of the folder makes."""
    removed: list[Path] = []
    for folder in (out, out / "checkpoints", out / "samples"):
        removed += ckpt.remove_stale_tmp(folder)
        with contextlib.suppress(OSError):
            for name in os.listdir(folder):
                if _SAFETENSORS_TMP.match(name):
                    with contextlib.suppress(OSError):
                        (folder / name).unlink()
                        removed.append(folder / name)
    return removed
