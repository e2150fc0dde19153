"""One training step: the discriminator update(s), then the generator update. Losses and penalties are plugins;
this module only decides what to compute and in which order.

Per step: the discriminator update (adversarial d_loss + disc-side terms + gradient penalty), then the
generator update (adversarial g_loss + content/style/tv/... terms). The extractor runs once per image
batch per step, only up to the deepest layer any term needs; style targets were computed once per run.
Everything random derives from (seed, step), so a resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import time
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..components.kinds import AdversarialLoss, StepContext
from ..errors import PluginError
from ..files.data import _seed
from ..runs.runconfig import RunConfig, TrainConfig
from ..runtime import distributed as dist
from .assembly import IMAGE, NOISE, Components, DataPlan, FeaturePlan, Placement
from .conditioning import Conditioning
from .ema import GeneratorEMA


class TrainStep:
    """The step of one run, built once its parts are assembled (core/training/engine.py's Trainer does).

    After each `train_step`, `bad` names what had a NaN/Inf (its update was skipped) and `data_s` is the wait
    for that step's images.
    """

    def __init__(self, rc: RunConfig, train: TrainConfig, comps: Components, placement: Placement,
                 plan: FeaturePlan, data: DataPlan, cond: Conditioning, *, opt_g: torch.optim.Optimizer,
                 opt_d: torch.optim.Optimizer | None, ema: GeneratorEMA | None, family: str, cond_disc: bool,
                 rank: int, world: int) -> None:
        self.rc, self.train, self.comps, self.placement, self.plan = rc, train, comps, placement, plan
        self.data, self.cond, self.opt_g, self.opt_d, self.ema = data, cond, opt_g, opt_d, ema
        self.family, self.cond_disc, self.rank, self.world = family, cond_disc, rank, world
        self.device = placement.device
        self.bad: list[str] = []
        self.gen_nan = False  # the generator itself made NaN/Inf in a bad step (not a loss term)
        self.data_s = 0.0
        self.last_fake: Tensor | None = None  # for naming the generator when a step goes bad

    # -- inputs ------------------------------------------------------------------------------------------------
    def batch(self, step: int, seed: int | None = None) -> tuple[Tensor | None, Tensor | None, Tensor]:
        """(content, real, generator input) for a step; pure function of (seed, step), seed the run's by default.

        With paired data: (inputs, targets, inputs); the targets are the discriminator's real images.
        """
        b, seed = self.train.batch, self.train.seed if seed is None else seed
        place, data, rank, world = self.placement.place, self.data, self.rank, self.world
        if data.pairs is not None:
            x, y = data.pairs.batch(step, b, seed, rank=rank, world=world)
            x = place(x)
            return x, place(y), x
        content = place(data.content.batch(step, b, seed, rank=rank, world=world)) \
            if data.content is not None else None
        real = place(data.real.batch(step, b, seed, rank=rank, world=world)) if data.real is not None else None
        if self.family == NOISE:
            g = torch.Generator().manual_seed(_seed(seed, 7, step))  # the global batch's noise, this rank's rows
            per = b // world
            z = torch.randn(b, cast(int, self.comps.gen.latent_dim), generator=g)[rank * per:(rank + 1) * per]
            return content, real, z.to(self.device)
        assert content is not None
        return content, real, content

    def _extra_d_batch(self, step: int, j: int) -> tuple[Tensor | None, Tensor | None, Tensor, dict[str, Any]]:
        """(content, real, fake, D kwargs) for extra update j >= 1 of `train.d_steps`: its own images and fakes."""
        seed = _seed(self.train.seed, 17, j)  # another draw of the same step; every rank agrees on it
        t_data = time.perf_counter()
        content, real, gin = self.batch(step, seed)
        self.data_s += time.perf_counter() - t_data
        gcond, dlabel, real = self.cond.draw(step, real, seed)
        with torch.no_grad(), self.placement.autocast():
            fake = self.placement.gen_fwd(gin, **gcond)
        return content, real, fake, ({"condition": content} if self.cond_disc else {}) | dlabel

    def features(self, x: Tensor, layers: tuple[str, ...]) -> dict[str, Tensor]:
        """The run's extractor's features of `x` at `layers`."""
        assert self.comps.feat is not None
        return self.placement.features(self.comps.feat, x, layers)

    # -- the step ------------------------------------------------------------------------------------------------
    def train_step(self, step: int) -> dict[str, float]:
        """One discriminator update then one generator update; returns the logged figures."""
        torch.manual_seed(_seed(self.train.seed, 11, step, self.rank))  # penalties' noise, dropout
        self._set_lr(step)
        self.bad, self.gen_nan = [], False
        t_data = time.perf_counter()
        content, real, gin = self.batch(step)
        self.data_s = time.perf_counter() - t_data  # the wait for this step's images (logged as time/data_s)
        gcond, dlabel, real = self.cond.draw(step, real)  # style= / label= for conditional generators
        target = real if self.data.pairs is not None else None
        dcond = {"condition": content} if self.cond_disc else {}  # D judges (input, image) pairs
        dcond |= dlabel
        logs: dict[str, Tensor] = {}  # turned into floats at the end of the step, in one device sync
        c, autocast = self.comps, self.placement.autocast
        train_d = c.disc is not None and c.adv is not None and self.opt_d is not None
        for j in range(1, self.train.d_steps if train_d else 1):  # extra critic updates, each on a fresh batch
            self._d_update(step, logs, *self._extra_d_batch(step, j))
        with autocast():
            fake = self.placement.gen_fwd(gin, **gcond)
        self.last_fake = fake.detach()
        if train_d:  # ---- discriminator: the last update sees the batch the generator then trains on
            self._d_update(step, logs, content, real, fake.detach(), dcond)
        # ---- generator
        layers = self.plan.layers
        feats: dict[str, dict[str, Tensor]] = {}
        with autocast():
            if c.feat is not None and layers["fake"]:
                feats["fake"] = self.features(fake, layers["fake"])
            if c.feat is not None and layers["content"]:
                ref = content if content is not None else real
                assert ref is not None
                with torch.no_grad():
                    feats["content"] = self.features(ref, layers["content"])
            if c.feat is not None and layers["target"]:
                assert target is not None
                with torch.no_grad():
                    feats["target"] = self.features(target, layers["target"])
            logits_fake = None
            if c.disc is not None and c.adv is not None:
                c.disc.requires_grad_(False)
                assert self.placement.disc_plain is not None
                logits_fake = self._logits(self.placement.disc_plain(fake, **dcond))
                c.disc.requires_grad_(True)
        ctx = StepContext(fake=fake, real=real, content=content if self.family == IMAGE else real, target=target,
                          paired=self.family == IMAGE, feats=feats, step=step,
                          cond=self.cond.step_cond(gcond, self._style_features() if "style" in gcond else None),
                          logits_fake=logits_fake.float() if logits_fake is not None else None)
        parts_g: dict[str, Tensor] = {}
        if logits_fake is not None and c.adv is not None:
            parts_g["g_adv"] = cast(float, c.adv.weight) * cast(AdversarialLoss, c.adv).g_loss(logits_fake.float())
        for n, t in self.plan.g_terms.items():
            parts_g[n] = t.weight * t(ctx).float().to(fake.device)
        loss_g = cast(Tensor, sum(parts_g.values())) if parts_g else fake.float().mean() * 0
        self.opt_g.zero_grad(set_to_none=True)
        if self._backward("generator", loss_g, parts_g, c.gen, logs):
            self.opt_g.step()
            if self.ema is not None:
                self.ema.update()
        logs.update({f"g/{k}": v for k, v in parts_g.items()})
        logs["g/loss"] = loss_g
        return self._floats(logs)

    def _style_features(self) -> Any:
        """The features of a batch of reference styles (ctx.cond["style_feats"]), or None when no term reads them."""
        if self.comps.feat is None or not self.plan.layers["style"]:
            return None

        @torch.no_grad()
        def of(style: Tensor) -> dict[str, Tensor]:
            with self.placement.autocast():
                return self.features(style, self.plan.layers["style"])
        return of

    def _d_update(self, step: int, logs: dict[str, Tensor], content: Tensor | None, real: Tensor | None,
                  fake: Tensor, dcond: dict[str, Any]) -> None:
        """One discriminator update on (real, fake); its figures go into `logs`."""
        c = self.comps
        assert real is not None and c.disc is not None and self.opt_d is not None
        self.last_fake = fake
        with self.placement.autocast():
            lr_, lf = self._judge(real, fake, dcond)
        parts = {"d_adv": cast(AdversarialLoss, c.adv).d_loss(lr_.float(), lf.float())}
        ctx = StepContext(fake=fake, real=real, content=content, target=real if self.data.pairs is not None else None,
                          paired=self.family == IMAGE, logits_real=lr_.float(), logits_fake=lf.float(), step=step)
        for n, t in self.plan.d_terms.items():  # .to: a plugin's constant term may come back on the CPU
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

    def _judge(self, real: Tensor, fake: Tensor, cond: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """The discriminator's logits on the real and the fake batch: one call on their concatenation when D
        judges each image alone (`per_sample`, no batch norm), which is faster than two calls."""
        pl = self.placement
        assert pl.disc_fwd is not None and pl.disc_plain is not None
        n = real.shape[0]
        if (pl.joint_d and real.shape[1:] == fake.shape[1:]
                and all(isinstance(v, Tensor) and v.shape[:1] == (n,) for v in cond.values())):
            both = self._logits(pl.disc_fwd(torch.cat([real, fake]), **{k: torch.cat([v, v]) for k, v in cond.items()}))
            return both[:n], both[n:]
        return self._logits(pl.disc_fwd(real, **cond)), self._logits(pl.disc_plain(fake, **cond))

    def _logits(self, out: Tensor) -> Tensor:
        """The discriminator's output, refused unless it is one logit per image or a one-channel patch map: the
        adversarial losses average whatever they get, so (N, 2) logits would train with the wrong meaning."""
        if out.ndim >= 2 and out.shape[1] != 1:
            raise PluginError(f"{self.rc.disc} returned a tensor of shape {tuple(out.shape)}: a discriminator returns "
                              "one logit per image, (N,) or (N, 1), or a one-channel patch map (N, 1, h, w); its last "
                              "layer should have one output channel (a bug to report to the plugin).")
        return out

    # -- learning rates, numbers -----------------------------------------------------------------------------
    def lr_factor(self, step: int) -> float:
        """The learning-rate multiplier at `step`: 1, then a linear fall over the last `lr_decay` of the steps."""
        total, frac = self.train.steps, self.train.lr_decay
        start = total * (1.0 - frac)
        if frac <= 0 or step < start:
            return 1.0
        return max(0.0, (total - step) / (total - start))

    def _set_lr(self, step: int) -> None:
        """Both optimisers' learning rates for `step`, a pure function of it (a resumed run repeats them)."""
        f = self.lr_factor(step)
        for opt, base in ((self.opt_g, self.train.lr), (self.opt_d, self.train.lr_d or self.train.lr)):
            if opt is not None:
                for g in opt.param_groups:
                    g["lr"] = base * f

    def _floats(self, logs: dict[str, Tensor]) -> dict[str, float]:
        """The step's scalars as floats in one transfer; averaged over the processes when distributed."""
        if not logs:
            return {}
        vals = torch.stack([v.detach().float().reshape(()) for v in logs.values()])
        return dict(zip(logs, dist.mean_across(vals).tolist()))

    def _backward(self, who: str, loss: Tensor, parts: dict[str, Tensor], module: nn.Module,
                  logs: dict[str, Tensor]) -> bool:
        """Backward with a NaN/Inf guard: a bad loss or gradient skips the update and is recorded in `bad`.

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
                logs[f"grad/{'gen' if module is self.comps.gen else 'disc'}"] = norm
        grads_ok = norm is None or bool(torch.isfinite(norm))
        ok = finite and grads_ok
        if (ok if self.world == 1 else not dist.any_rank(not ok, self.device)):
            return True
        bad = [n for n, v in parts.items() if not torch.isfinite(v.detach()).all()]
        fake = self.last_fake
        if fake is not None and not bool(torch.isfinite(fake.detach()).all()):  # the terms follow from it
            self.gen_nan = True
            bad = [f"the generator's output ({self.rc.gen})" + (f", and so {', '.join(bad)}" if bad else "")]
        if not bad:
            bad = [f"{who} gradients" if not grads_ok else "another process's loss or gradients"]
        self.bad.append(f"the {who} step: {', '.join(bad)}")
        module.zero_grad(set_to_none=True)
        return False


def fuse_adam(opt: torch.optim.Optimizer | None, device: torch.device) -> None:
    """Adam's fused kernel on CPU and CUDA (faster than the per-tensor loop; docs/benchmarks.md).

    Set on the param groups after construction and after a resume, so checkpoints saved without it load.
    """
    if opt is None or device.type not in ("cpu", "cuda"):
        return
    if all(p.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64)
           for g in opt.param_groups for p in g["params"]):
        for g in opt.param_groups:
            g["foreach"], g["fused"] = False, True
