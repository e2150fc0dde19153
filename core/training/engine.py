"""The one training engine. Losses and penalties are plugins; the engine only decides what to compute.

Per step: the discriminator update (adversarial d_loss + disc-side terms + gradient penalty), then the
generator update (adversarial g_loss + content/style/tv/... terms). The extractor runs once per image
batch per step, only up to the deepest layer any term needs; style targets are computed once per run.
Everything random derives from (seed, step), so a resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..files import checkpoint as ckpt
from .conditioning import Conditioning, with_labels
from ..runtime.cpu_memory import keep_freed_memory
from ..files.data import ImageSet, PairSet, _seed
from ..runtime.devices import bf16_supported, compile_unavailable, pick_device  # noqa: F401  (pick_device re-exported)
from ..runtime import distributed as D
from .assembly import (  # noqa: F401  (re-exported: Components, check_batch_split, ... were engine's)
    IMAGE, NOISE, Components, build_components, check_batch_split, check_gen_size, check_new_out,
    judges_each_image_alone, place_modules, plan_features, prepare_data,
)
from .ema import GeneratorEMA
from ..errors import CompositionError, ConfigError, PluginError, StylezooError, TrainingDiverged
from ..ops.layers import grad_in_layout
from ..components.kinds import AdversarialLoss, StepContext
from ..components.registry import Registry, default_registry
from ..runs.runconfig import RunConfig, checked, with_steps
from .trainstate import component_names, load_run_state, run_meta, run_state
from ..runs.rundir import (  # noqa: F401  (re-exported: the engine's public helpers live in rundir)
    _StopAtStepEnd, _truncate_metrics, clear_run, default_out, holds_run, iter_metrics, newest_valid_checkpoint, plot_losses,
    resume_config, write_config,
)

log = logging.getLogger("stylezoo")
ROLE_NAMES = ("gen", "disc", "feat", "adv", "gp")


class Trainer:
    """Trains one composition. `Trainer(rc, out).fit()`; the CLI's `stylezoo run` is a thin layer over it."""

    # set while it is built, by core/training/assembly.py
    content: ImageSet | None  # the generator's input images (image generators, unpaired data)
    real: ImageSet | None  # what the discriminator learns as real: the style images, or --data
    pairs: PairSet | None  # paired data (input, target) instead of content and real
    fixed_input: Tensor  # the inputs (or noise) the sample grids show, the same all run
    fixed_target: Tensor | None  # their true targets, for paired data
    style_images: Tensor | None  # the style images the style targets come from, once per run
    style_files: list[Path]
    gen_fwd: Callable[..., Tensor]  # the generator's forward (DDP-wrapped and compiled as asked)
    disc_fwd: Callable[..., Tensor] | None  # the discriminator's forward on real images (DDP-wrapped)
    disc_plain: Callable[..., Tensor] | None  # the discriminator's other calls (see place_modules)
    joint_d: bool  # real and fake judged in one call
    feat_cl: bool  # the extractor alone runs channels_last
    g_terms: dict[str, nn.Module]  # loss terms of the generator step, in name order
    d_terms: dict[str, nn.Module]  # loss terms of the discriminator step
    layers: dict[str, tuple[str, ...]]  # extractor layers per image batch: fake, content, target, style

    def __init__(self, rc: RunConfig, out: str | Path, *, registry: Registry | None = None,
                 resume_from: Path | None = None, progress: Callable[..., Any] | None = None,
                 rank: int | None = None, world: int | None = None) -> None:
        self.rc, self.out = rc, Path(out)
        self.reg = registry or default_registry()
        rc = checked(self.reg, rc)  # a RunConfig made in Python may use short names and was never validated
        rc = dataclasses.replace(rc, data=rc.data.absolute())  # config.toml names the images from anywhere
        self.rc = rc = with_labels(self.reg, rc)  # label-conditioned generators learn the style folders' labels
        env = D.current()  # under torchrun: this process's rank and the number of processes
        self.rank = env.rank if rank is None else rank
        self.world = env.world if world is None else world
        self.t = rc.train
        check_batch_split(self.t.batch, self.world)
        self.device = D.local_device(self.t.device, env)
        why = compile_unavailable(self.device) if self.t.compile else None
        if why:
            raise ConfigError(why)
        cl = self.t.channels_last  # "auto": where it measured faster (benchmarks/speed.py)
        self.channels_last = (self.device.type == "cuda") if cl == "auto" else cl is True
        self.progress = progress
        if self.device.type == "cpu" and self.t.keep_freed_memory:
            keep_freed_memory()  # no page faults per step (core/runtime/cpu_memory.py)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # training shapes are fixed: cuDNN times its algorithms once
        prec = self.t.precision
        self.amp = (prec == "bf16") or (prec == "auto" and bf16_supported(self.device))
        torch.manual_seed(_seed(self.t.seed, 5))  # initial weights depend on the seed alone
        c = build_components(self.reg, rc)
        self.c = c
        self.family = getattr(c.gen, "family", IMAGE)
        # a conditional discriminator judges (input, image) pairs: D(image, condition=input)
        self.cond_disc = c.disc is not None and int(c.configs.get("disc", {}).get("cond_channels", 0) or 0) > 0
        check_gen_size(self)
        prepare_data(self)
        place_modules(self)
        self.ema = GeneratorEMA(c.gen, self.t.ema) if self.t.ema > 0 else None
        self.cond = Conditioning(self)  # style batches or labels for conditional generators
        betas = cast("tuple[float, float]", tuple(self.t.betas))
        self.opt_g = torch.optim.Adam(c.gen.parameters(), lr=self.t.lr, betas=betas)
        self.opt_d = (torch.optim.Adam(c.disc.parameters(), lr=self.t.lr_d or self.t.lr, betas=betas)
                      if c.disc is not None else None)
        self.step = 0
        self.bad_steps = 0
        self.good_steps = 0  # steps whose updates were applied, this session
        self.history: list[dict[str, float]] = []
        self.data_s, self._data_warned = 0.0, False
        plan_features(self)
        self._prepare_style_targets()
        self.evaluator = self._make_evaluator()
        self.resumed_from = resume_from
        if resume_from is not None:
            self.load_state(resume_from)
        for opt in (self.opt_g, self.opt_d):
            fuse_adam(opt, self.device)

    # -- set-up ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _prepare_style_targets(self) -> None:
        if self.style_images is None or self.c.feat is None:
            return
        feats: dict[str, list[Tensor]] = {}
        for img in self.style_images.split(4):
            with self.autocast():  # the precision the fakes' features will have
                out = self.features(img.to(self.device), self.layers["style"])
            for k, v in out.items():
                feats.setdefault(k, []).append(v.float())
        style_feats = {k: torch.cat(v) for k, v in feats.items()}
        labels = self.cond.style_label_tensor(self.style_files)  # per-label targets for labelled style sets
        for t in self.c.losses.values():
            if "style" in getattr(t, "needs", ()) and hasattr(t, "prepare"):
                term: Any = t  # prepare() is optional: not part of the LossTerm protocol
                term.prepare(style_feats, labels=labels) if labels is not None else term.prepare(style_feats)

    def features(self, x: Tensor, layers: tuple[str, ...]) -> dict[str, Tensor]:
        """The extractor's features of `x` at `layers`, run in the extractor's memory format."""
        feat = self.c.feat
        assert feat is not None
        if not self.feat_cl:
            return feat(x, layers)
        out = feat(x.contiguous(memory_format=torch.channels_last), layers)
        return {k: grad_in_layout(v) for k, v in out.items()} if torch.is_grad_enabled() else out

    # -- one step ----------------------------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _mf(self, x: Tensor) -> Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def batch(self, step: int, seed: int | None = None) -> tuple[Tensor | None, Tensor | None, Tensor]:
        """(content, real, generator input) for a step; pure function of (seed, step), seed the run's by default.

        With paired data: (inputs, targets, inputs); the targets are the discriminator's real images.
        """
        b, seed = self.t.batch, self.t.seed if seed is None else seed
        if self.pairs is not None:
            x, y = self.pairs.batch(step, b, seed, rank=self.rank, world=self.world)
            x = self._mf(x)
            return x, self._mf(y), x
        content = self._mf(self.content.batch(step, b, seed, rank=self.rank, world=self.world)) \
            if self.content is not None else None
        real = self._mf(self.real.batch(step, b, seed, rank=self.rank, world=self.world)) \
            if self.real is not None else None
        if self.family == NOISE:
            g = torch.Generator().manual_seed(_seed(seed, 7, step))  # the global batch's noise, this rank's rows
            per = b // self.world
            z = torch.randn(b, cast(int, self.c.gen.latent_dim), generator=g)[self.rank * per:(self.rank + 1) * per]
            return content, real, z.to(self.device)
        assert content is not None
        return content, real, content

    def _extra_d_batch(self, step: int, j: int) -> tuple[Tensor | None, Tensor | None, Tensor, dict[str, Any]]:
        """(content, real, fake, D kwargs) for extra update j >= 1 of `train.d_steps`: its own images and fakes."""
        seed = _seed(self.t.seed, 17, j)  # another draw of the same step; every rank agrees on it
        t_data = time.perf_counter()
        content, real, gin = self.batch(step, seed)
        self.data_s += time.perf_counter() - t_data
        gcond, dlabel, real = self.cond.draw(self, step, real, seed)
        with torch.no_grad(), self.autocast():
            fake = self.gen_fwd(gin, **gcond)
        return content, real, fake, ({"condition": content} if self.cond_disc else {}) | dlabel

    def _d_update(self, step: int, logs: dict[str, Tensor], content: Tensor | None, real: Tensor | None,
                  fake: Tensor, dcond: dict[str, Any]) -> None:
        """One discriminator update on (real, fake); its figures go into `logs`."""
        c = self.c
        assert real is not None and c.disc is not None and self.opt_d is not None
        self._fake = fake  # for naming the generator if this update goes bad
        with self.autocast():
            lr_, lf = self._judge(real, fake, dcond)
        parts = {"d_adv": cast(AdversarialLoss, c.adv).d_loss(lr_.float(), lf.float())}
        ctx = StepContext(fake=fake, real=real, content=content, target=real if self.pairs is not None else None,
                          paired=self.family == IMAGE, logits_real=lr_.float(), logits_fake=lf.float(), step=step)
        for n, t in self.d_terms.items():  # .to: a plugin's constant term may come back on the CPU
            parts[n] = t.weight * t(ctx).to(fake.device)
        if c.gp is not None:
            parts[self.rc.gp] = c.gp(c.disc, real, fake, **dcond)
        loss_d = cast(Tensor, sum(parts.values()))
        self.opt_d.zero_grad(set_to_none=True)
        if self._backward("discriminator", loss_d, parts, c.disc, logs):
            self.opt_d.step()
        logs.update({f"d/{k}": v for k, v in parts.items()})
        logs["d/loss"] = loss_d
        logs["d/real"] = lr_.float().mean()
        logs["d/fake"] = lf.float().mean()

    def train_step(self, step: int) -> dict[str, float]:
        """One discriminator update then one generator update; returns the logged figures."""
        torch.manual_seed(_seed(self.t.seed, 11, step, self.rank))  # penalties' noise, dropout
        self._set_lr(step)
        self._step_bad: list[str] = []
        t_data = time.perf_counter()
        content, real, gin = self.batch(step)
        self.data_s = time.perf_counter() - t_data  # the wait for this step's images (logged as time/data_s)
        gcond, dlabel, real = self.cond.draw(self, step, real)  # style= / label= for conditional generators
        target = real if self.pairs is not None else None
        dcond = {"condition": content} if self.cond_disc else {}  # D judges (input, image) pairs
        dcond |= dlabel
        logs: dict[str, Tensor] = {}  # turned into floats at the end of the step, in one device sync
        c = self.c
        train_d = c.disc is not None and c.adv is not None and self.opt_d is not None
        for j in range(1, self.t.d_steps if train_d else 1):  # extra critic updates, each on a fresh batch
            self._d_update(step, logs, *self._extra_d_batch(step, j))
        with self.autocast():
            fake = self.gen_fwd(gin, **gcond)
        self._fake = fake.detach()  # for naming the generator when a step goes bad (checked only then)
        if train_d:  # ---- discriminator: the last update sees the batch the generator then trains on
            self._d_update(step, logs, content, real, fake.detach(), dcond)
        # ---- generator
        feats: dict[str, dict[str, Tensor]] = {}
        with self.autocast():
            if c.feat is not None and self.layers["fake"]:
                feats["fake"] = self.features(fake, self.layers["fake"])
            if c.feat is not None and self.layers["content"]:
                ref = content if content is not None else real
                assert ref is not None
                with torch.no_grad():
                    feats["content"] = self.features(ref, self.layers["content"])
            if c.feat is not None and self.layers["target"]:
                assert target is not None
                with torch.no_grad():
                    feats["target"] = self.features(target, self.layers["target"])
            logits_fake = None
            if c.disc is not None and c.adv is not None:
                c.disc.requires_grad_(False)
                assert self.disc_plain is not None
                logits_fake = self._logits(self.disc_plain(fake, **dcond))
                c.disc.requires_grad_(True)
        ctx = StepContext(fake=fake, real=real, content=content if self.family == IMAGE else real, target=target,
                          paired=self.family == IMAGE, feats=feats, step=step, cond=self.cond.step_cond(self, gcond),
                          logits_fake=logits_fake.float() if logits_fake is not None else None)
        parts_g: dict[str, Tensor] = {}
        if logits_fake is not None and c.adv is not None:
            parts_g["g_adv"] = cast(float, c.adv.weight) * cast(AdversarialLoss, c.adv).g_loss(logits_fake.float())
        for n, t in self.g_terms.items():
            parts_g[n] = t.weight * t(ctx).float().to(fake.device)
        loss_g = cast(Tensor, sum(parts_g.values())) if parts_g else fake.float().mean() * 0
        self.opt_g.zero_grad(set_to_none=True)
        ok = self._backward("generator", loss_g, parts_g, c.gen, logs)
        if ok:
            self.opt_g.step()
            if self.ema is not None:
                self.ema.update()
        logs.update({f"g/{k}": v for k, v in parts_g.items()})
        logs["g/loss"] = loss_g
        self._count_bad()
        return self._floats(logs)

    def _judge(self, real: Tensor, fake: Tensor, cond: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """The discriminator's logits on the real and the fake batch.

        One call on their concatenation when D judges each image alone (`per_sample`, no batch norm):
        PatchGAN's forward and backward took 18 instead of 27 ms at 64 px, batch 4, bf16.
        """
        assert self.disc_fwd is not None and self.disc_plain is not None
        n = real.shape[0]
        if (self.joint_d and real.shape[1:] == fake.shape[1:]
                and all(isinstance(v, Tensor) and v.shape[:1] == (n,) for v in cond.values())):
            both = self.disc_fwd(torch.cat([real, fake]), **{k: torch.cat([v, v]) for k, v in cond.items()})
            both = self._logits(both)
            return both[:n], both[n:]
        return self._logits(self.disc_fwd(real, **cond)), self._logits(self.disc_plain(fake, **cond))

    def _logits(self, out: Tensor) -> Tensor:
        """The discriminator's output, refused unless it is one logit per image or a one-channel patch map: the
        adversarial losses average whatever they get, so (N, 2) logits would train with the wrong meaning."""
        if out.ndim >= 2 and out.shape[1] != 1:
            raise PluginError(f"{self.rc.disc} returned a tensor of shape {tuple(out.shape)}: a discriminator returns "
                              "one logit per image, (N,) or (N, 1), or a one-channel patch map (N, 1, h, w); its last "
                              "layer should have one output channel (a bug to report to the plugin).")
        return out

    def lr_factor(self, step: int) -> float:
        """The learning-rate multiplier at `step`: 1, then a linear fall over the last `lr_decay` of the steps."""
        total, frac = self.t.steps, self.t.lr_decay
        start = total * (1.0 - frac)
        if frac <= 0 or step < start:
            return 1.0
        return max(0.0, (total - step) / (total - start))

    def _set_lr(self, step: int) -> None:
        """Both optimisers' learning rates for `step`, a pure function of it (a resumed run repeats them)."""
        f = self.lr_factor(step)
        for opt, base in ((self.opt_g, self.t.lr), (self.opt_d, self.t.lr_d or self.t.lr)):
            if opt is not None:
                for g in opt.param_groups:
                    g["lr"] = base * f

    def _floats(self, logs: dict[str, Tensor]) -> dict[str, float]:
        """The step's scalars as floats in one transfer; averaged over the processes when distributed."""
        if not logs:
            return {}
        vals = torch.stack([v.detach().float().reshape(()) for v in logs.values()])
        return dict(zip(logs, D.mean_across(vals).tolist()))

    def _backward(self, who: str, loss: Tensor, parts: dict[str, Tensor], module: nn.Module,
                  logs: dict[str, Tensor]) -> bool:
        """Backward with a NaN/Inf guard: a bad loss or gradient skips the update and is recorded.

        The gradient norm is logged (grad/gen, grad/disc). Distributed, every rank runs the backward (DDP
        averages gradients inside it) and all take the same decision, so their weights never drift apart.
        """
        for name, v in parts.items():
            if v.numel() != 1:
                raise PluginError(f"{name} returned a tensor of shape {tuple(v.shape)}, not one number: a loss "
                                  "term's forward must return a scalar (reduce it, e.g. with .mean()).")
        finite = bool(torch.isfinite(torch.stack([v.detach().float().reshape(()) for v in parts.values()])).all()) \
            if parts else True
        norm = None
        if finite or self.world > 1:
            loss.backward()
            grads = [p.grad for p in module.parameters() if p.grad is not None]
            if grads:
                norm = torch.nn.utils.get_total_norm(grads, foreach=True)  # one fused pass, no per-tensor sync
                logs[f"grad/{'gen' if module is self.c.gen else 'disc'}"] = norm
        grads_ok = norm is None or bool(torch.isfinite(norm))
        ok = finite and grads_ok
        if (ok if self.world == 1 else not D.any_rank(not ok, self.device)):
            return True
        bad = [n for n, v in parts.items() if not torch.isfinite(v.detach()).all()]
        fake = getattr(self, "_fake", None)
        if bad and fake is not None and not bool(torch.isfinite(fake.detach()).all()):
            bad = [f"the generator's output ({self.rc.gen}), so"] + bad  # the terms follow from it
        if not bad:
            bad = [f"{who} gradients" if not grads_ok else "another process's loss or gradients"]
        self._step_bad.append(f"{who}: {', '.join(bad)}")
        module.zero_grad(set_to_none=True)
        return False

    def _check_data_wait(self, window: int = 10, share: float = 0.2) -> None:
        """Warn once when waiting for images took over `share` of the step (median of `window` steps after
        the first two): the data loading, not the model, then sets the pace."""
        hist = self.history[2:]
        if self._data_warned or self.rank != 0 or len(hist) < window:
            return
        wait = sorted(h["time/data_s"] for h in hist[-window:])[window // 2]
        step = sorted(h["time/step_s"] for h in hist[-window:])[window // 2]
        if wait <= share * step:
            return
        self._data_warned = True
        sets = [s for s in (self.content, self.real) if s is not None and s.lazy]
        hint = ("Keep the images decoded in memory with --set data.cache_mb="
                f"{math.ceil(max(s.decoded_mb for s in sets) * 1.1)} (they are decoded at every draw now), or "
                "shrink them towards train.size beforehand." if sets else
                "The images are already cached in memory: check what else loads this machine.")
        log.warning("waiting for training images takes %.0f%% of each step (%.1f of %.1f ms, median of %d steps). %s",
                    100 * wait / step, wait * 1e3, step * 1e3, window, hint)

    def _count_bad(self) -> None:
        """Stop the run after `max_bad_steps` consecutive steps whose update was skipped."""
        if not self._step_bad:
            self.bad_steps = 0
            self.good_steps += 1
            return
        self.bad_steps += 1
        self.last_bad = "; ".join(self._step_bad)
        if self.bad_steps >= self.t.max_bad_steps:
            # the bad steps' updates were skipped, so the weights now are the last good ones: fit() saves them
            kept = (f"The bad updates were skipped, and the weights saved in {self.out / 'last.safetensors'}"
                    if self.has_good_weights() else "No step had trained, so nothing was saved")
            raise TrainingDiverged(
                f"Stopped at step {self.step + 1}: {self.bad_steps} consecutive steps with a NaN/Inf in "
                f"{self.last_bad}. {kept}. In a new run, lower the learning rate or that loss's weight, or try "
                "--set train.precision=fp32."
            )

    def checked_step(self, step: int) -> dict[str, float]:
        """`train_step`, with an exception raised inside a component in this session's first step reported
        as one line naming it (fit and `run --dry-run` go through here)."""
        try:
            return self.train_step(step)
        except Exception as e:
            out_of_memory = isinstance(e, (MemoryError, torch.OutOfMemoryError)) or "out of memory" in str(e) \
                or "not enough memory" in str(e)  # a size or batch too large, not a component's settings
            blamed = None if self.good_steps or self.bad_steps or out_of_memory or \
                isinstance(e, (StylezooError, OSError)) else self._first_step_error(e)
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
                "saved. Lower the learning rate or that loss's weight, or try --set train.precision=fp32.")
        if self.rank == 0:
            log.warning("the last %d step(s) had a NaN/Inf in %s; their updates were skipped, so the weights saved "
                        "are those of step %d", self.bad_steps, self.last_bad, self.step - self.bad_steps)

    def _first_step_error(self, e: Exception) -> StylezooError | None:
        """One line for an exception raised inside a component in a run's first step, naming it (found in the
        traceback: the innermost frame whose `self` is one of the run's components); None if none was."""
        c = self.c
        named = {id(m): n for n, m in (("gen", c.gen), ("disc", c.disc), ("feat", c.feat), ("adv", c.adv),
                                       ("gp", c.gp), *c.losses.items()) if m is not None}
        # the innermost: a penalty or a loss that calls the discriminator blames the discriminator's own fault
        who = next((named[id(f.f_locals["self"])] for f, _ in reversed(list(traceback.walk_tb(e.__traceback__)))
                    if id(f.f_locals.get("self")) in named), None)
        name = getattr(self.rc, who) if who in ROLE_NAMES else who
        msg = " ".join(str(e).split())[:400].rstrip(".") or "no message"
        if name is None:
            return None
        role = f"{who}." if who in ROLE_NAMES else f"{name}."
        return CompositionError(f"{name} failed in the first training step: {type(e).__name__}: {msg}. Check the "
                                f"values given with --set {role}* (`stylezoo info {name}` lists its fields); for a "
                                "plugin's component, this may be a bug to report to the plugin.")

    def has_good_weights(self) -> bool:
        """Whether the weights now are worth saving: some step trained, or they came from a checkpoint."""
        return self.good_steps > 0 or self.resumed_from is not None

    # -- samples, checkpoints ------------------------------------------------------------------------------
    @property
    def infer_gen(self) -> nn.Module:
        """The generator that samples and evaluation use: the weight average when `train.ema` is on."""
        return self.ema.module if self.ema is not None else self.c.gen

    @torch.no_grad()
    def samples(self) -> Tensor:
        gen = self.infer_gen
        gen.eval()
        with self.autocast():
            out = gen(self._mf(self.fixed_input) if self.family == IMAGE else self.fixed_input.to(self.device))
        self.c.gen.train()
        return out.float().cpu()

    def save_samples(self, name: str) -> Path:
        from ..files.images import save_grid

        if self.cond.kind != "none":  # content | style | output, or content and a row per label
            return save_grid(self.cond.sample_rows(self), self.out / "samples" / f"{name}.png", step=self.step)
        out = self.samples()
        rows = [self.fixed_input, out] if self.family == IMAGE else [out]
        if self.fixed_target is not None:
            rows.append(self.fixed_target)  # input | output | true target
        return save_grid(rows, self.out / "samples" / f"{name}.png", step=self.step)

    def meta(self) -> dict[str, Any]:
        """The metadata that rebuilds this run (core/training/trainstate.py)."""
        return run_meta(self)

    def names(self) -> list[str]:
        """The registered names this run is composed of."""
        return component_names(self)

    def save_checkpoint(self, keep: bool) -> Path:
        """Write last.safetensors (and, with `keep`, checkpoints/step-N.safetensors); returns the first."""
        tensors, meta = run_state(self)
        last = ckpt.save(self.out / "last.safetensors", tensors, meta)
        if keep:
            ckpt.save(self.out / "checkpoints" / f"step-{self.step:07d}.safetensors", tensors, meta)
        return last

    def load_state(self, path: Path) -> None:
        """Load a checkpoint of this composition (weights, optimizers, step); core/training/trainstate.py."""
        load_run_state(self, path)

    def describe(self) -> str:
        """One line saying what this run trains, on what, for how long and where it writes."""
        rc, t = self.rc, self.t
        parts = [rc.gen]
        if rc.disc:
            parts.append(f"{rc.disc} ({', '.join(n for n in (rc.adv, rc.gp) if n)})")
        if rc.feat:
            parts.append(rc.feat)
        terms = ", ".join(f"{n.split('/', 1)[1]} {t_.weight:g}" for n, t_ in sorted(self.c.losses.items()))
        start = f"from step {self.step} to {t.steps}" if self.resumed_from is not None else f"{t.steps} steps"
        world = f" x {self.world} processes" if self.world > 1 else ""
        return (f"{' + '.join(parts)}; losses {terms or 'none'} | {t.size} px, batch {t.batch}, {start} | "
                f"{self.device}{world}, {'bf16 autocast' if self.amp else 'fp32'} | {self.out}")

    # -- the loop --------------------------------------------------------------------------------------------
    def nothing_to_train(self, run: Path | None = None) -> bool:
        """Whether a resumed run is already at its `train.steps` (then logged, naming `run`, by default the
        output folder, and what to do); fit and `run --dry-run` train nothing then."""
        if self.resumed_from is None or self.step < self.t.steps:
            return False
        log.warning("%s is already at step %d (of --steps %d): nothing to train; give a larger --steps to "
                    "continue it.", run or self.out, self.step, self.t.steps)
        return True

    def fit(self) -> Path:
        """Train until `train.steps`; returns the path of the last checkpoint."""
        if self.nothing_to_train():  # write nothing: the run is as it was
            assert self.resumed_from is not None
            return self.resumed_from
        if self.rank == 0:
            log.info("%s %s", "resuming" if self.resumed_from is not None else "training", self.describe())
            self.out.mkdir(parents=True, exist_ok=True)
            write_config(self.out / "config.toml", self.rc)
        log_f = (self.out / "metrics.jsonl").open("a") if self.rank == 0 else None
        last = self.out / "last.safetensors"
        signals = _StopAtStepEnd().install()
        self._mid_step = False
        try:
            t_last = time.perf_counter()
            while self.step < self.t.steps:
                signals.busy = True
                t0 = time.perf_counter()
                self._mid_step = True
                logs = self.checked_step(self.step)
                self.step += 1
                self._mid_step = False
                dt = time.perf_counter() - t0
                logs |= {"step": self.step, "time/step_s": dt, "time/data_s": self.data_s,
                         "time/images_per_s": self.t.batch / max(dt, 1e-9)}
                self._check_data_wait()
                evaluated = self._evaluate(logs)
                self.history.append(logs)
                if self.progress is not None:
                    self.progress(self.step, self.t.steps, logs)
                if log_f and (evaluated or self.step % self.t.log_every == 0 or self.step == self.t.steps
                              or self.step == 1):
                    try:
                        log_f.write(json.dumps(logs) + "\n")
                        log_f.flush()
                    except OSError as e:
                        if e.errno in ckpt.NO_SPACE:
                            raise ckpt.no_space_error(self.out / "metrics.jsonl") from None
                        raise
                if self.rank == 0:
                    if self.t.sample_every and self.step % self.t.sample_every == 0:
                        self.save_samples(f"step-{self.step:07d}")
                    if self.t.ckpt_every and self.step % self.t.ckpt_every == 0:
                        last = self.save_checkpoint(keep=True)
                t_last = time.perf_counter()
                signals.busy = False
                if signals.pending is not None:
                    raise KeyboardInterrupt
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
            if log_f:
                with contextlib.suppress(OSError):  # a full disk was reported above
                    log_f.close()
        del t_last
        if self.rank == 0:
            last = self.save_checkpoint(keep=True)
            self.save_samples("final")
            plot_losses(self.out / "metrics.jsonl", self.out / "loss.png")
            self._write_report()
        return last

    # -- evaluation and report hooks (the logic lives in core/evaluation/evaluate.py and core/evaluation/report.py) ------------------
    def _train_content(self, spec: str) -> Any:
        """The content files to train on: with `eval_every`, `eval_holdout` of them are held aside."""
        self.eval_files: list[Path] = []
        if not self.t.eval_every or self.family != IMAGE:
            return spec
        from ..evaluation.evaluate import split_holdout

        train, self.eval_files = split_holdout(spec, self.t.eval_holdout)
        if self.eval_files and len(self.eval_files) < self.t.eval_holdout and self.rank == 0:
            log.warning("eval: holding %d of %d content images aside for evaluation, not %d (at most half)",
                        len(self.eval_files), len(train) + len(self.eval_files), self.t.eval_holdout)
        return train

    def _make_evaluator(self) -> Any:
        if not self.t.eval_every or self.rank != 0:
            return None
        from ..evaluation.evaluate import RunEval

        return RunEval(self)

    def _evaluate(self, logs: dict[str, Any]) -> bool:
        """Every `eval_every` steps and at the last: add eval/ metrics to `logs`, keep best.safetensors."""
        if self.evaluator is None or (self.step % self.t.eval_every and self.step != self.t.steps):
            return False
        logs |= self.evaluator(self)
        return True

    def _write_report(self) -> None:
        from ..evaluation.report import write_report

        try:
            write_report(self.out)
        except Exception as e:  # the run is saved already; a plotting problem must not fail it
            log.warning("could not write %s (%s: %s); rebuild it with `stylezoo report %s`",
                        self.out / "report.html", type(e).__name__, e, self.out)


def fuse_adam(opt: torch.optim.Optimizer | None, device: torch.device) -> None:
    """Adam's fused kernel on CPU and CUDA (measured 4-7x faster than the per-tensor loop on CPU).

    Set on the param groups after construction and after a resume, so checkpoints saved without it load.
    """
    if opt is None or device.type not in ("cpu", "cuda"):
        return
    if all(p.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64)
           for g in opt.param_groups for p in g["params"]):
        for g in opt.param_groups:
            g["foreach"], g["fused"] = False, True


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
    if rc is None:
        from ..runs.runconfig import resolve

        rc = resolve(registry or default_registry())
    if resume is None and steps is not None:  # as `stylezoo run --steps N`: the run's length, epochs or not
        rc = dataclasses.replace(rc, train=with_steps(rc.train, steps))
    with D.session(rc.train.device) as env:  # under torchrun: join the process group (any process count)
        if resume_from is not None and env.rank == 0:
            assert resume is not None  # resume_from was read from it
            _truncate_metrics(Path(resume) / "metrics.jsonl", int(ckpt.read_meta(resume_from)["step"]))
        if out is None:  # rank 0's clock names the run directory for all
            out = D.broadcast_text(str(default_out(rc)), D.local_device(rc.train.device, env))
        trainer = Trainer(rc, out, registry=registry, resume_from=resume_from, progress=progress)
        # only now that the new run is set up (data, weights, modules): a typo must not cost the old run
        if overwrite and resume is None and env.rank == 0 and holds_run(Path(out)):
            log.warning("--overwrite: deleting the run in %s", out)
            clear_run(Path(out))
        return trainer.fit()
