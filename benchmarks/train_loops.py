"""The two reference training steps benchmarks/speed.py times beside the engine: the plain float32 loop and
the naive step of the original design notes. Both reuse a Trainer's modules and data, never its step."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor

from stylezoo.core.components.kinds import StepContext
from stylezoo.core.ops.stats import gram
from stylezoo.core.training.engine import IMAGE, Trainer


class PlainLoop:
    """The same composition trained the plain way: float32, contiguous, no autocast, stock Adam.

    It is careful where any careful loop is (one extractor pass per image batch, cached style targets,
    frozen extractor) and plain where the engine adds fast paths. Data and modules come from a Trainer
    built with fp32 and contiguous memory; its own optimisers are not used.
    """

    def __init__(self, tr: Trainer) -> None:
        self.tr, c = tr, tr.components
        lr, betas = tr.train_cfg.lr, tuple(tr.train_cfg.betas)
        self.opt_g = torch.optim.Adam(c.gen.parameters(), lr=lr, betas=betas)
        self.opt_d = torch.optim.Adam(c.disc.parameters(), lr=tr.train_cfg.lr_d or lr, betas=betas) if c.disc else None

    def step(self, i: int) -> float:
        tr, c = self.tr, self.tr.components
        content, real, gin = tr.stepper.batch(i)
        image = tr.family == IMAGE
        fake = c.gen(gin)
        if c.disc is not None and c.adv is not None and self.opt_d is not None:
            lr_, lf = c.disc(real), c.disc(fake.detach())
            ctx = StepContext(fake=fake.detach(), real=real, content=content, logits_real=lr_, logits_fake=lf)
            loss_d = c.adv.d_loss(lr_, lf) + sum(t.weight * t(ctx) for t in tr.plan.d_terms.values())
            if c.gp is not None:
                loss_d = loss_d + c.gp(c.disc, real, fake.detach())
            self.opt_d.zero_grad()
            loss_d.backward()
            self.opt_d.step()
        feats: dict[str, dict[str, Tensor]] = {}
        if c.feat is not None and tr.plan.layers["fake"]:
            feats["fake"] = c.feat(fake, tr.plan.layers["fake"])
        if c.feat is not None and tr.plan.layers["content"]:
            with torch.no_grad():
                feats["content"] = c.feat(content if content is not None else real, tr.plan.layers["content"])
        loss_g = fake.new_zeros(())
        logits = None
        if c.disc is not None and c.adv is not None:
            c.disc.requires_grad_(False)
            logits = c.disc(fake)
            c.disc.requires_grad_(True)
            loss_g = loss_g + c.adv.weight * c.adv.g_loss(logits)
        ctx = StepContext(fake=fake, real=real, content=content if image else real, paired=image, feats=feats,
                          logits_fake=logits)
        loss_g = loss_g + sum(t.weight * t(ctx) for t in tr.plan.g_terms.values())
        self.opt_g.zero_grad()
        loss_g.backward()
        self.opt_g.step()
        return float(loss_g.detach())


class NaiveLoop:
    """The step as the original design notes write it (see the module docstring): no caching, no sharing.

    Built from a Trainer's modules (fp32, contiguous); the extractor is a trainable copy run in full.
    """

    def __init__(self, tr: Trainer) -> None:
        self.tr, c = tr, tr.components
        lr, betas = tr.train_cfg.lr, tuple(tr.train_cfg.betas)
        self.opt_g = torch.optim.Adam(c.gen.parameters(), lr=lr, betas=betas)
        self.opt_d = torch.optim.Adam(c.disc.parameters(), lr=tr.train_cfg.lr_d or lr, betas=betas) if c.disc else None
        self.vgg = copy.deepcopy(c.feat) if c.feat is not None else None
        if self.vgg is not None:
            self.vgg.requires_grad_(True)  # the notes never freeze it
        self.terms = {n: t for n, t in tr.plan.g_terms.items() if n not in ("loss/content", "loss/gram")}
        self.content = tr.components.losses.get("loss/content")
        self.gram = tr.components.losses.get("loss/gram")
        self.style = tr.data.style_images.to(tr.device) if tr.data.style_images is not None else None

    def full(self, x: Tensor) -> dict[str, Tensor]:
        """Every layer of the extractor (the notes' `vgg(img)[layer]`)."""
        assert self.vgg is not None
        return self.vgg(x, self.vgg.layer_names)

    def _input(self, i: int, gin: Tensor) -> Tensor:
        if self.tr.family == IMAGE:
            return gin
        return torch.randn_like(gin)  # the notes draw fresh noise for every generator call

    def step(self, i: int) -> float:
        tr, c = self.tr, self.tr.components
        content, real, gin = tr.stepper.batch(i)
        image = tr.family == IMAGE
        if c.disc is not None and c.adv is not None and self.opt_d is not None:
            self.opt_d.zero_grad()
            with torch.no_grad():
                fake_d = c.gen(self._input(i, gin))
            lr_, lf = c.disc(real), c.disc(fake_d)
            ctx = StepContext(fake=fake_d, real=real, content=content, logits_real=lr_, logits_fake=lf)
            (c.adv.d_loss(lr_, lf) + sum(t.weight * t(ctx) for t in tr.plan.d_terms.values())).backward()
            if c.gp is not None:
                c.gp(c.disc, real, fake_d).backward()  # its own backward, as in the notes
            self.opt_d.step()
        self.opt_g.zero_grad()
        fake = c.gen(self._input(i, gin))  # the generator again
        loss = fake.new_zeros(())
        if c.disc is not None and c.adv is not None:
            loss = loss + c.adv.weight * c.adv.g_loss(c.disc(fake))  # D not frozen: its grads are computed too
        ref = content if image else real
        if self.content is not None:
            for layer in self.content.layers:  # the extractor twice per content layer
                a, b = self.full(fake)[layer], self.full(ref)[layer]
                if not image:
                    a, b = a.mean(0), b.mean(0)
                loss = loss + self.content.weight * F.mse_loss(a, b)
        if self.gram is not None and self.style is not None:
            for layer, w in zip(self.gram.layers, self.gram._layer_weights()):  # twice per style layer
                target = gram(self.full(self.style)[layer]).mean(0, keepdim=True)  # recomputed every step
                g = gram(self.full(fake)[layer])
                loss = loss + self.gram.weight * w * F.mse_loss(g, target.expand_as(g))
        ctx = StepContext(fake=fake, real=real, content=ref, paired=image)
        loss = loss + sum(t.weight * t(ctx) for t in self.terms.values())
        loss.backward()
        self.opt_g.step()
        if self.vgg is not None:
            self.vgg.zero_grad(set_to_none=True)
        return float(loss.detach())
