"""The training loop: a `Trainer` assembles a run (core/training/assembly.py), then repeats its step
(core/training/step.py) until `train.steps`, writing metrics, sample grids, checkpoints and the report.

Everything random derives from (seed, step), so a resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..components.registry import Registry, default_registry
from ..errors import ConfigError, Interrupted, StylezooError, TrainingDiverged
from ..evaluation.evaluate import RunEval, split_holdout
from ..evaluation.report import write_report
from ..files import checkpoint as ckpt
from ..files.data import _seed
from ..files.images import save_grid
from ..runs.runconfig import RunConfig, checked
from ..runs.rundir import RunLock, _StopAtStepEnd, plot_losses, write_config
from ..runtime import distributed as dist
from ..runtime.cpu_memory import keep_freed_memory
from ..runtime.devices import bf16_supported, compile_unavailable
from .assembly import (
    IMAGE,
    build_components,
    check_batch_split,
    check_gen_size,
    place_modules,
    plan_features,
    prepare_data,
)
from .conditioning import STYLE, Conditioning, with_labels
from .ema import GeneratorEMA
from .failures import data_wait_warning, first_step_error, nan_advice
from .health import SampleCheck, check_samples, sample_record, sample_warning
from .logsinks import check_sinks, open_sinks
from .memory import check_step_memory
from .step import TrainStep, fuse_adam
from .trainstate import RunModules, component_names, load_run_state, run_meta, run_state

log = logging.getLogger("stylezoo")


class Trainer:
    """Trains one composition. `Trainer(rc, out).fit()`; `stylezoo run` and `stylezoo.train()` are thin layers over it.

    Its parts, each built once here: `components` (the modules), `data` (a DataPlan), `placement` (how the
    modules are called on the device), `plan` (the feature plan), `cond` (conditions of conditional
    generators), the optimizers, `ema`, and `stepper`, the TrainStep that trains one step.
    """

    def __init__(self, rc: RunConfig, out: str | Path, *, registry: Registry | None = None,
                 resume_from: Path | None = None, progress: Callable[..., Any] | None = None,
                 rank: int | None = None, world: int | None = None) -> None:
        self.out = Path(out)
        self.reg = reg = registry or default_registry()
        rc = checked(reg, rc)  # a RunConfig made in Python may use short names and was never validated
        rc = dataclasses.replace(rc, data=rc.data.absolute())  # config.toml names the images from anywhere
        self.rc = rc = with_labels(reg, rc)  # label-conditioned generators learn the style folders' labels
        env = dist.current()  # under torchrun: this process's rank and the number of processes
        self.rank = env.rank if rank is None else rank
        self.world = env.world if world is None else world
        train = rc.train
        check_batch_split(train.batch, self.world)
        self.device = dist.local_device(train.device, env)
        why = compile_unavailable(self.device) if train.compile else None
        if why:
            raise ConfigError(why)
        check_sinks(train.log)  # --log tensorboard without its package: refused before any work
        cl = train.channels_last  # "auto": where it measured faster (docs/benchmarks.md)
        channels_last = (self.device.type == "cuda") if cl == "auto" else cl is True
        self.progress = progress
        if self.device.type == "cpu" and train.keep_freed_memory:
            keep_freed_memory()  # no page faults per step (core/runtime/cpu_memory.py)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # training shapes are fixed: cuDNN times its algorithms once
        amp = (train.precision == "bf16") or (train.precision == "auto" and bf16_supported(self.device))
        torch.manual_seed(_seed(train.seed, 5))  # initial weights depend on the seed alone
        comps = build_components(reg, rc)
        self.family = getattr(comps.gen, "family", IMAGE)
        # a conditional discriminator judges (input, image) pairs: D(image, condition=input)
        self.cond_disc = comps.disc is not None and int(comps.configs.get("disc", {}).get("cond_channels", 0) or 0) > 0
        check_gen_size(comps.gen, rc.gen, self.family, train.size)
        check_step_memory(comps, self.family, self.device, train.batch, self.world, train.size)  # before data
        self.eval_files = self._holdout(rc, train)
        self.data = prepare_data(rc, train, comps, family=self.family, cond_disc=self.cond_disc, rank=self.rank,
                                 content_files=self._train_files)
        self.train_cfg = train = dataclasses.replace(train, steps=self.data.steps)
        self.components, self.placement = place_modules(comps, self.device, channels_last=channels_last, amp=amp,
                                                        world=self.world, train=train)
        comps = self.components
        ema = GeneratorEMA(comps.gen, train.ema) if train.ema > 0 else None
        self.cond = Conditioning(reg, rc, train, comps, self.data, device=self.device, rank=self.rank,
                                 world=self.world, place=self.placement.place)
        betas = cast("tuple[float, float]", tuple(train.betas))
        self.opt_g = torch.optim.Adam(comps.gen.parameters(), lr=train.lr, betas=betas)
        self.opt_d = (torch.optim.Adam(comps.disc.parameters(), lr=train.lr_d or train.lr, betas=betas)
                      if comps.disc is not None else None)
        self.step = self.bad_steps = 0
        self.good_steps = 0  # steps whose updates were applied, this session
        self.last_bad = ""
        self.history: list[dict[str, float]] = []
        self._data_warned = False
        self.sample_check: SampleCheck | None = None  # the latest sample grid's (core/training/health.py)
        self.plan = plan_features(comps)
        self._prepare_style_targets()
        self.evaluator = self._make_evaluator()
        self.resumed_from = resume_from
        if resume_from is not None:
            loaded = load_run_state(self.modules(ema), resume_from, device=self.device, ema_decay=train.ema)
            self.step, self.bad_steps, ema = loaded.step, loaded.bad_steps, loaded.ema
        self.ema = ema
        for opt in (self.opt_g, self.opt_d):
            fuse_adam(opt, self.device)
        self.stepper = TrainStep(rc, train, comps, self.placement, self.plan, self.data, self.cond, opt_g=self.opt_g,
                                 opt_d=self.opt_d, ema=ema, family=self.family, cond_disc=self.cond_disc,
                                 rank=self.rank, world=self.world)

    # -- set-up ----------------------------------------------------------------------------------------------
    def _holdout(self, rc: RunConfig, train: Any) -> list[Path]:
        """Content files held aside for the in-run evaluation (`eval_every`); sets `_train_files`, the rest."""
        self._train_files: list[Path] | None = None
        spec = rc.data.resolved().content
        if not train.eval_every or self.family != IMAGE or not spec or rc.data.resolved().paired:
            return []
        self._train_files, held = split_holdout(spec, train.eval_holdout)
        if held and len(held) < train.eval_holdout and self.rank == 0:
            log.warning("eval: holding %d of %d content images aside for evaluation, not %d (at most half)",
                        len(held), len(self._train_files) + len(held), train.eval_holdout)
        return held

    @torch.no_grad()
    def _prepare_style_targets(self) -> None:
        data, comps = self.data, self.components
        if data.style_images is None or comps.feat is None:
            return
        feats: dict[str, list[Tensor]] = {}
        for img in data.style_images.split(4):
            with self.placement.autocast():  # the precision the fakes' features will have
                out = self.features(img.to(self.device), self.plan.layers["style"])
            for k, v in out.items():
                feats.setdefault(k, []).append(v.float())
        style_feats = {k: torch.cat(v) for k, v in feats.items()}
        labels = self.cond.style_label_tensor(data.style_files)  # per-label targets for labelled style sets
        for t in comps.losses.values():
            if "style" in getattr(t, "needs", ()) and hasattr(t, "prepare"):
                term: Any = t  # prepare() is optional: not part of the LossTerm protocol
                term.prepare(style_feats, labels=labels) if labels is not None else term.prepare(style_feats)

    def features(self, x: Tensor, layers: tuple[str, ...]) -> dict[str, Tensor]:
        """The extractor's features of `x` at `layers`, run in the extractor's memory format."""
        assert self.components.feat is not None
        return self.placement.features(self.components.feat, x, layers)

    def modules(self, ema: GeneratorEMA | None = None) -> RunModules:
        """The trained state a checkpoint holds."""
        c = self.components
        return RunModules(c.gen, c.disc, ema if ema is not None else getattr(self, "ema", None), self.opt_g,
                          self.opt_d)

    # -- one step ----------------------------------------------------------------------------------------------
    def train_step(self, step: int) -> dict[str, float]:
        """One discriminator update then one generator update (core/training/step.py); the logged figures.
        Stops the run after `train.max_bad_steps` consecutive steps whose updates were skipped."""
        logs = self.stepper.train_step(step)
        self._count_bad()
        return logs

    def _check_data_wait(self) -> None:
        """Warn once when the data loading, not the model, sets the pace (failures.data_wait_warning)."""
        if self._data_warned or self.rank != 0:
            return
        why = data_wait_warning(self.history, [s for s in (self.data.content, self.data.real) if s is not None])
        if why:
            self._data_warned = True
            log.warning("%s", why)

    def _count_bad(self) -> None:
        """Stop the run after `max_bad_steps` consecutive steps whose update was skipped."""
        if not self.stepper.bad:
            self.bad_steps = 0
            self.good_steps += 1
            return
        self.bad_steps += 1
        self.last_bad = "; ".join(self.stepper.bad)
        if self.bad_steps >= self.train_cfg.max_bad_steps:
            # the bad steps' updates were skipped, so the weights now are the last good ones: fit() saves them
            kept = (f"The bad updates were skipped, and the weights saved in {self.out / 'last.safetensors'}"
                    if self.has_good_weights() else "No step had trained, so nothing was saved")
            raise TrainingDiverged(f"Stopped at step {self.step + 1}: {self.bad_steps} consecutive steps with a "
                                   f"NaN/Inf in {self.last_bad}. {kept}. {self._nan_advice()}")

    def _nan_advice(self) -> str:
        return nan_advice(self.rc.gen if self.stepper.gen_nan else None)

    def checked_step(self, step: int) -> dict[str, float]:
        """`train_step`, with an exception raised inside a component in this session's first step reported
        as one line naming it (fit and `run --dry-run` go through here)."""
        try:
            return self.train_step(step)
        except Exception as e:
            out_of_memory = isinstance(e, (MemoryError, torch.OutOfMemoryError)) or "out of memory" in str(e) \
                or "not enough memory" in str(e)  # a size or batch too large, not a component's settings
            blamed = None if self.good_steps or self.bad_steps or out_of_memory or \
                isinstance(e, (StylezooError, OSError)) else first_step_error(e, self.components, self.rc)
            if blamed is None:  # later steps, or not raised inside a component: a traceback (a bug)
                raise
            raise blamed from e

    def _check_last_steps(self) -> None:
        """At the end: a run none of whose steps trained is an error; bad last steps are a warning."""
        if not self.bad_steps:
            return
        if not self.has_good_weights():
            raise TrainingDiverged(
                f"All {self.bad_steps} steps had a NaN/Inf in {self.last_bad}, so no step trained and nothing was "
                f"saved. {self._nan_advice()}")
        if self.rank == 0:
            log.warning("the last %d step(s) had a NaN/Inf in %s; their updates were skipped, so the weights saved "
                        "are those of step %d", self.bad_steps, self.last_bad, self.step - self.bad_steps)

    def has_good_weights(self) -> bool:
        """Whether the weights now are worth saving: some step trained, or they came from a checkpoint, and
        none is NaN or Inf (the guard skips bad updates; a finite update can still overflow a weight)."""
        return (self.good_steps > 0 or self.resumed_from is not None) and all(
            bool(torch.isfinite(p).all()) for m in (self.components.gen, self.components.disc) if m is not None
            for p in m.parameters())

    # -- samples, checkpoints ------------------------------------------------------------------------------
    @property
    def infer_gen(self) -> nn.Module:
        """The generator that samples and evaluation use: the weight average when `train.ema` is on."""
        return self.ema.module if self.ema is not None else self.components.gen

    @torch.no_grad()
    def samples(self) -> Tensor:
        gen, fixed = self.infer_gen, self.data.fixed_input
        gen.eval()
        with self.placement.autocast():
            out = gen(self.placement.place(fixed) if self.family == IMAGE else fixed.to(self.device))
        self.components.gen.train()
        return out.float().cpu()

    def save_samples(self, name: str) -> Path:
        """Write a sample grid and check its outputs (`sample_check`)."""
        path = self.out / "samples" / f"{name}.png"
        if self.cond.kind != "none":  # content | style | output, or content and a row per label
            rows = self.cond.sample_rows(self.infer_gen, self.placement.autocast)
            outputs = rows[2:] if self.cond.kind == STYLE else rows[1:]
        else:
            outputs = [self.samples()]  # input | output | true target (paired), or the outputs alone (noise)
            rows = ([self.data.fixed_input] if self.family == IMAGE else []) + outputs
            rows += [self.data.fixed_target] if self.data.fixed_target is not None else []
        self.sample_check = check_samples(outputs, self.data.fixed_input if self.family == IMAGE else None)
        return save_grid(rows, path, step=self.step)

    def meta(self) -> dict[str, Any]:
        """The metadata that rebuilds this run (core/training/trainstate.py)."""
        return run_meta(self.rc, self.train_cfg, self.reg, configs=self.components.configs, step=self.step,
                        family=self.family, ema=self.ema, bad_steps=self.bad_steps)

    def names(self) -> list[str]:
        """The registered names this run is composed of."""
        return component_names(self.rc)

    def save_checkpoint(self, keep: bool, path: Path | None = None, extra: dict[str, Any] | None = None) -> Path:
        """Write last.safetensors (and, with `keep`, checkpoints/step-N.safetensors); returns the first.
        `path`: write there instead (best.safetensors), with `extra` metadata."""
        tensors, meta = run_state(self.modules(), self.meta() | (extra or {}))
        if path is not None:
            return ckpt.save(path, tensors, meta)
        last = ckpt.save(self.out / "last.safetensors", tensors, meta)
        if keep:
            ckpt.save(self.out / "checkpoints" / f"step-{self.step:07d}.safetensors", tensors, meta)
        return last

    def describe(self) -> str:
        """One line saying what this run trains, on what, for how long and where it writes."""
        rc, t = self.rc, self.train_cfg
        parts = [rc.gen]
        if rc.disc:
            parts.append(f"{rc.disc} ({', '.join(n for n in (rc.adv, rc.gp) if n)})")
        if rc.feat:
            parts.append(rc.feat)
        terms = ", ".join(f"{n.split('/', 1)[1]} {t_.weight:g}" for n, t_ in sorted(self.components.losses.items()))
        start = f"from step {self.step} to {t.steps}" if self.resumed_from is not None else f"{t.steps} steps"
        world = f" x {self.world} processes" if self.world > 1 else ""
        return (f"{' + '.join(parts)}; losses {terms or 'none'} | {t.size} px, batch {t.batch}, {start} | "
                f"{self.device}{world}, {'bf16 autocast' if self.placement.amp else 'fp32'} | {self.out}")

    # -- the loop --------------------------------------------------------------------------------------------
    def nothing_to_train(self, run: Path | None = None) -> bool:
        """Whether a resumed run is already at its `train.steps` (then logged, naming `run`, by default the
        output folder, and what to do); fit and `run --dry-run` train nothing then."""
        if self.resumed_from is None or self.step < self.train_cfg.steps:
            return False
        log.warning("%s is already at step %d (of --steps %d): nothing to train; give a larger --steps to "
                    "continue it.", run or self.out, self.step, self.train_cfg.steps)
        return True

    def fit(self) -> Path:
        """Train until `train.steps`; returns the path of the last checkpoint."""
        if self.nothing_to_train():  # write nothing: the run is as it was
            assert self.resumed_from is not None
            return self.resumed_from
        lock = RunLock(self.out).acquire() if self.rank == 0 else None  # one writer per run folder, before any write
        try:
            if self.rank == 0:
                log.info("%s %s", "resuming" if self.resumed_from is not None else "training", self.describe())
                write_config(self.out / "config.toml", self.rc)
            # metrics.jsonl and --log tensorboard (core/training/logsinks.py); none on other ranks
            sinks = open_sinks(self.train_cfg.log, self.out, rank=self.rank,
                               resumed_at=self.step if self.resumed_from is not None else None)
            try:
                return self._fit(sinks, self.out / "last.safetensors")
            finally:
                sinks.close()
        finally:
            if lock is not None:
                lock.release()

    def _fit(self, sinks: Any, last: Path) -> Path:
        signals, final = _StopAtStepEnd().install(), self.out / "samples" / "final.png"
        self._mid_step = False
        try:
            t_saved = time.perf_counter()
            while self.step < self.train_cfg.steps:
                signals.busy = True
                t0 = time.perf_counter()
                self._mid_step = True
                logs = self.checked_step(self.step)
                self.step += 1
                self._mid_step = False
                dt = time.perf_counter() - t0
                logs |= {"step": self.step, "time/step_s": dt, "time/data_s": self.stepper.data_s,
                         "time/images_per_s": self.train_cfg.batch / max(dt, 1e-9)}
                self._check_data_wait()
                evaluated = self._evaluate(logs)
                self.history.append(logs)
                if self.progress is not None:
                    self.progress(self.step, self.train_cfg.steps, logs)
                t = self.train_cfg
                if self.step == t.steps and self.rank == 0:  # the final grid, its check in the last metrics line
                    try:
                        final = self.save_samples("final")
                    except Exception:  # e.g. a full disk: the trained weights first, then the error
                        self.save_checkpoint(keep=False)
                        raise
                    logs |= self.sample_check.figures() if self.sample_check is not None else {}
                if evaluated or self.step % t.log_every == 0 or self.step in (1, t.steps):
                    sinks.scalars(logs, self.step)
                if self.rank == 0:
                    if t.sample_every and self.step % t.sample_every == 0:
                        sinks.grid(self.save_samples(f"step-{self.step:07d}"), self.step)
                    if t.ckpt_every and self.step % t.ckpt_every == 0:
                        last, t_saved = self.save_checkpoint(keep=True), time.perf_counter()
                    elif t.ckpt_minutes and time.perf_counter() - t_saved >= 60 * t.ckpt_minutes:
                        last, t_saved = self.save_checkpoint(keep=False), time.perf_counter()  # by time
                signals.busy = False
                if signals.pending is not None:
                    raise Interrupted(signals.pending)
            self._check_last_steps()
        except TrainingDiverged:
            if self.rank == 0 and self.has_good_weights():
                self.save_checkpoint(keep=False)
            raise
        except KeyboardInterrupt:
            if self._mid_step:  # a second signal cut a step short: its half-applied update must not be saved
                log.warning("interrupted in the middle of step %d: keeping the last checkpoint", self.step + 1)
            elif self.rank == 0 and self.step > 0:
                self.save_checkpoint(keep=False)
            raise
        finally:
            signals.restore()
            sinks.flush()
        if self.rank == 0:
            warning = sample_warning(self.sample_check, self.rc, self.reg, self.train_cfg.lr)
            last = self.save_checkpoint(keep=True, extra=sample_record(self.sample_check, warning))
            sinks.grid(final, self.step)
            plot_losses(self.out / "metrics.jsonl", self.out / "loss.png")
            self._write_report()
            if warning:
                log.warning("%s", warning)
        return last

    # -- evaluation and report hooks (the logic lives in core/evaluation/) ----------------------------------------
    def _make_evaluator(self) -> RunEval | None:
        t = self.train_cfg
        if not t.eval_every or self.rank != 0:
            return None
        return RunEval(self.rc.data, t, out=self.out, family=self.family, eval_files=self.eval_files,
                       pairs=self.data.pairs, fixed_input=self.data.fixed_input, real=self.data.real,
                       latent_dim=getattr(self.components.gen, "latent_dim", None),
                       styled=self.data.style_images is not None, device=self.device, registry=self.reg)

    def _evaluate(self, logs: dict[str, Any]) -> bool:
        """Every `eval_every` steps and at the last: add eval/ metrics to `logs`, keep best.safetensors."""
        ev = self.evaluator
        if ev is None or (self.step % self.train_cfg.eval_every and self.step != self.train_cfg.steps):
            return False
        scores, improved = ev(self.infer_gen)
        if improved:
            self.save_checkpoint(False, ev.path, ev.best_meta(scores))
        logs |= scores
        return True

    def _write_report(self) -> None:
        try:
            write_report(self.out)
        except Exception as e:  # the run is saved already; a plotting problem must not fail it
            log.warning("could not write %s (%s: %s); rebuild it with `stylezoo report %s`",
                        self.out / "report.html", type(e).__name__, e, self.out)
