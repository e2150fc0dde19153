"""`stylezoo.train()`: a new run or a resumed one, in this process or as one of torchrun's processes."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..components.registry import Registry, default_registry
from ..errors import ConfigError
from ..files import checkpoint as ckpt
from ..runs.runconfig import RunConfig, resolve, with_steps
from ..runs.rundir import (
    _truncate_metrics,
    check_new_out,
    check_unlocked,
    clear_run,
    default_out,
    holds_run,
    resume_config,
)
from ..runtime import distributed as dist
from .engine import Trainer

log = logging.getLogger("stylezoo")


def train(rc: RunConfig | None = None, *, out: str | Path | None = None, resume: str | Path | None = None,
          steps: int | None = None, registry: Registry | None = None,
          progress: Callable[..., Any] | None = None, overwrite: bool = False,
          data: dict[str, str] | None = None) -> Path:
    """Train a run (or resume one) and return its last checkpoint. Mirrors `stylezoo run`.

    `steps` is the run's length, as `--steps` is (it beats `epochs`); when resuming, the new total. A new run
    refuses an `out` folder that holds a run, unless `overwrite` (then that run's files go first). `data`,
    when resuming: the new place of data that moved since, e.g. {"content": "photos/"} (`--content`).
    """
    resume_from = None
    if resume is not None and rc is not None:
        raise ConfigError("train(): give a RunConfig for a new run or resume=DIR to continue one, not both (a "
                          "resumed run keeps its checkpoint's configuration; only steps= may change).")
    if resume is not None:
        rc, resume_from = resume_config(resume, steps, registry, moved=data)
        out = Path(resume)
    elif data:
        raise ConfigError("train(data=...) gives moved data a new place when resuming; a new run takes its data "
                          "in its RunConfig.")
    elif out is not None and not overwrite:
        check_new_out(out)
    if out is not None:  # before anything touches the folder (metrics truncated on resume, --overwrite)
        check_unlocked(out)
    if rc is None:
        rc = resolve(registry or default_registry())
    if resume is None and steps is not None:  # as `stylezoo run --steps N`: the run's length, epochs or not
        rc = dataclasses.replace(rc, train=with_steps(rc.train, steps))
    with dist.session(rc.train.device) as env:  # under torchrun: join the process group (any process count)
        if resume_from is not None and env.rank == 0:
            assert resume is not None  # resume_from was read from it
            _truncate_metrics(Path(resume) / "metrics.jsonl", int(ckpt.read_meta(resume_from)["step"]))
        if out is None:  # rank 0's clock names the run directory for all
            out = dist.broadcast_text(str(default_out(rc)), dist.local_device(rc.train.device, env))
        trainer = Trainer(rc, out, registry=registry, resume_from=resume_from, progress=progress)
        # only now that the new run is set up (data, weights, modules): a typo must not cost the old run
        if overwrite and resume is None and env.rank == 0 and holds_run(Path(out)):
            log.warning("--overwrite: deleting the run in %s", out)
            clear_run(Path(out))
        return trainer.fit()
