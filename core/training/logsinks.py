"""Where a run's figures go: metrics.jsonl (always, `JsonlSink`) and the opt-in sinks of `train.log`.

`stylezoo run --log tensorboard` (RunConfig `train.log = ["tensorboard"]`) writes TensorBoard event files to
`RUN/tb/`: every figure of a metrics.jsonl line as a scalar under its metrics.jsonl key (`g/loss`, `d/d_adv`,
`g/loss/gram`, `eval/style_gram`, `time/step_s`, ...), each sample grid as the image `samples` at its step,
and the resolved config.toml as the text `config`. A resumed run opens a new event file in the same folder
with `purge_step` at its first new step, so the steps a killed run logged after its checkpoint are dropped
by TensorBoard's reader and no step appears twice. Only rank 0 writes (as it does metrics.jsonl).

The engine calls `open_sinks` once per `fit`, then `scalars` for each metrics.jsonl line and `grid` for each
sample grid it saves; `check_sinks` refuses a sink whose package is missing before anything is written.
The sink names (`SINKS`) are data of core/runs/runconfig.py, which checks `train.log` against them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..files.checkpoint import NO_SPACE, no_space_error
from ..runs.runconfig import SINKS  # noqa: F401  (re-exported: the names `train.log` accepts)

TB_DIR = "tb"  # the run directory's TensorBoard folder: `tensorboard --logdir runs/` finds every run's
SAMPLES_TAG = "samples"  # the sample grids' image tag
CONFIG_TAG = "config"  # the resolved config.toml, as text


def check_sinks(names: Iterable[str]) -> None:
    """Refuse (UsageError, one line saying what to install) a sink whose package is not installed."""
    for name in names:
        if name == "tensorboard":
            try:
                import tensorboard  # noqa: F401  (torch.utils.tensorboard writes through it)
            except ImportError:
                raise UsageError("--log tensorboard needs the tensorboard package: pip install 'stylezoo[tensorboard]' "
                                 "(or pip install tensorboard).") from None


class JsonlSink:
    """metrics.jsonl, always written: one JSON line per logged step, flushed at once. A full disk is one line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path.open("a")

    def scalars(self, logs: Mapping[str, Any], step: int) -> None:
        try:
            self.file.write(json.dumps(dict(logs)) + "\n")
            self.file.flush()
        except OSError as e:
            if e.errno in NO_SPACE:
                raise no_space_error(self.path) from None
            raise

    def grid(self, path: Path, step: int) -> None:
        pass

    def flush(self) -> None:
        with contextlib.suppress(OSError):  # a full disk was reported by scalars
            self.file.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()


class RunSinks:
    """The run's open sinks (none on ranks other than 0): each call goes to each."""

    def __init__(self, sinks: Sequence[JsonlSink | TensorBoardSink] = ()) -> None:
        self.sinks = list(sinks)

    def scalars(self, logs: Mapping[str, Any], step: int) -> None:
        """One metrics.jsonl line (its `step` key is left out: it is the step)."""
        for s in self.sinks:
            s.scalars(logs, step)

    def grid(self, path: Path | None, step: int) -> None:
        """A sample grid the run just saved (a PNG file)."""
        if path is not None:
            for s in self.sinks:
                s.grid(path, step)

    def flush(self) -> None:
        for s in self.sinks:
            s.flush()

    def close(self) -> None:
        for s in self.sinks:
            s.close()


def open_sinks(names: Iterable[str], out: Path, *, rank: int, resumed_at: int | None) -> RunSinks:
    """The sinks `names` (the run's `train.log`) opened for one `fit` into the run folder `out`, on rank 0 only;
    `resumed_at`: the step a resumed run restarts from (None for a new run). The config goes in at once."""
    names = tuple(names or ())
    if rank != 0:
        return RunSinks()
    check_sinks(names)
    sinks: list[JsonlSink | TensorBoardSink] = [JsonlSink(out / "metrics.jsonl")]
    if "tensorboard" in names:
        # a resumed run restarts after its checkpoint's step: later steps a killed run logged are purged
        purge = resumed_at + 1 if resumed_at is not None else None
        tb = TensorBoardSink(out / TB_DIR, purge_step=purge)
        config = out / "config.toml"
        if config.is_file():
            tb.text(CONFIG_TAG, config.read_text(encoding="utf-8"), resumed_at or 0)
        sinks.append(tb)
    return RunSinks(sinks)


class TensorBoardSink:
    """TensorBoard event files through torch.utils.tensorboard's SummaryWriter."""

    def __init__(self, logdir: Path, *, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        logdir.mkdir(parents=True, exist_ok=True)
        self.logdir = logdir
        self.writer: Any = SummaryWriter(str(logdir), purge_step=purge_step)
        self._last_grid: int | None = None

    def scalars(self, logs: Mapping[str, Any], step: int) -> None:
        for tag, value in logs.items():
            if tag != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag, float(value), step)
        self.writer.flush()

    def grid(self, path: Path, step: int) -> None:
        """The grid PNG at `step`, once per step (the final grid of a run whose last step also sampled is the same)."""
        if step == self._last_grid:
            return
        import numpy as np
        from PIL import Image

        with Image.open(path) as im:
            pixels = np.asarray(im.convert("RGB"))
        self.writer.add_image(SAMPLES_TAG, pixels, step, dataformats="HWC")
        self.writer.flush()
        self._last_grid = step

    def text(self, tag: str, body: str, step: int) -> None:
        """`body` shown as preformatted text (TensorBoard renders its text as Markdown)."""
        self.writer.add_text(tag, "\n".join("    " + line for line in body.splitlines()), step)
        self.writer.flush()

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
