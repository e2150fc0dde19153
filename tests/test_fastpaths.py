"""The engine's fast paths keep the training the same: extractor passes, cached targets, no gradient through
targets, bfloat16 autocast with a float32 gradient penalty, fused Adam, memory format, zero padding in
gen/encdec, each rank's slice of the global batch, lazily decoded data. Speed itself is measured by
benchmarks/speed.py, never here."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from stylezoo.core.components.registry import Registry
from stylezoo.core.files.data import ImageSet
from stylezoo.core.runs.runconfig import SAMPLES, resolve
from stylezoo.core.training.engine import Trainer

TINY = {"size": 32, "batch": 2, "steps": 2, "sample_every": 0, "ckpt_every": 0, "log_every": 1, "num_samples": 2}
IMAGE = {"gen": "encdec", "disc": "patch", "feat": "", "gp": "none", "train": TINY,
         "set": {"gen": {"channels": 8, "n_res": 1}, "disc": {"n_layers": 2, "channels": 8}}}
NOISE = {"gen": "dcgan", "disc": "dcgan", "feat": "", "gp": "none", "train": TINY,
         "set": {"gen": {"channels": 8, "latent_dim": 16}, "disc": {"channels": 8}}}


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


def _perceptual(reg: Registry, **train: object):  # noqa: ANN202
    return resolve(reg, cli={**IMAGE, "feat": "vgg16", "train": {**TINY, **train}},
                   losses=["content", "gram:1000", "tv"], sets=["feat.weights=random", "loss/content.layers=relu2_2",
                                                               "loss/gram.layers=relu1_1,relu3_1"])


def test_one_extractor_pass_per_batch_stopping_at_the_deepest_layer(reg: Registry, tmp_path: Path) -> None:
    tr = Trainer(_perceptual(reg), tmp_path, registry=reg)
    names = tr.components.feat.layer_names
    ran: list[int] = []
    hooks = [m.register_forward_hook(lambda mod, i, o, k=k: ran.append(k))
             for k, m in enumerate(tr.components.feat.features)]
    grad_on: list[bool] = []
    forward = tr.components.feat.forward

    def spy(x: torch.Tensor, layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
        grad_on.append(torch.is_grad_enabled())
        return forward(x, layers)

    tr.components.feat.forward = spy  # type: ignore[method-assign]
    prepared = {n: getattr(t, "prepare") for n, t in tr.components.losses.items() if hasattr(t, "prepare")}
    calls = []
    for n, t in tr.components.losses.items():
        if hasattr(t, "prepare"):
            t.prepare = lambda *a, n=n, **k: calls.append(n)  # type: ignore[method-assign]
    tr.train_step(0)
    tr.train_step(1)
    for h in hooks:
        h.remove()
    assert grad_on == [True, False, True, False]  # per step: the fakes with grad, the content without
    deepest = names.index("relu3_1")  # the deepest of relu2_2 (content) and relu1_1/relu3_1 (Gram)
    assert max(ran) == deepest and ran.count(0) == 4  # never beyond it; each pass starts once
    assert calls == [] and prepared  # the style targets were computed once, at set-up


def test_gradient_penalty_is_float32_and_matches_under_bf16_autocast(reg: Registry) -> None:
    """The penalty's pass runs in float32 with autocast off: same value and D gradients as without autocast."""
    torch.manual_seed(0)
    disc = reg.build("disc/patch", {"n_layers": 2, "channels": 8})
    real, fake = torch.rand(4, 3, 32, 32) * 2 - 1, torch.rand(4, 3, 32, 32) * 2 - 1
    for name in ("gp/wgan-gp", "gp/r1", "gp/dragan"):
        gp = reg.build(name)
        results = []
        for amp in (False, True):
            torch.manual_seed(1)
            disc.zero_grad()
            with torch.autocast("cpu", torch.bfloat16, enabled=amp):
                value = gp(disc, real, fake)
            assert value.dtype == torch.float32 and torch.isfinite(value)
            value.backward()
            results.append((value.detach(), [torch.zeros_like(p) if p.grad is None else p.grad.clone()
                                             for p in disc.parameters()]))
        (v32, g32), (v16, g16) = results
        torch.testing.assert_close(v16, v32, rtol=1e-5, atol=1e-6, msg=name)
        for a, b in zip(g16, g32):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
    # what the float32 pass prevents: the same penalty's input gradient taken in bfloat16 is far off
    x = ((real + fake) / 2).requires_grad_(True)
    with torch.autocast("cpu", torch.bfloat16):
        (g,) = torch.autograd.grad(disc(x).sum(), x)
    x32 = x.detach().requires_grad_(True)
    (g32,) = torch.autograd.grad(disc(x32).sum(), x32)
    assert (g.float() - g32).abs().max() > 1e-4


def test_bf16_training_step_with_gradient_penalty_stays_finite(reg: Registry, tmp_path: Path) -> None:
    rc = resolve(reg, cli={**NOISE, "adv": "wgan", "gp": "wgan-gp", "train": {**TINY, "precision": "bf16"}},
                 losses=["tv"])
    tr = Trainer(rc, tmp_path, registry=reg)
    assert tr.placement.amp
    before = [p.detach().clone() for p in tr.components.disc.parameters()]
    for step in range(2):
        logs = tr.train_step(step)
        assert all(torch.isfinite(torch.tensor(v)) for v in logs.values()), logs
    assert logs["d/gp/wgan-gp"] > 0 and logs["grad/disc"] > 0 and logs["grad/gen"] > 0
    assert tr.bad_steps == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.components.disc.parameters()))


def test_precision_auto_picks_bf16_where_supported(reg: Registry, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from stylezoo.core.training import engine

    rc = resolve(reg, cli={**IMAGE, "train": {**TINY, "precision": "auto"}}, losses=["tv"])
    monkeypatch.setattr(engine, "bf16_supported", lambda device: True)
    assert Trainer(rc, tmp_path / "a", registry=reg).placement.amp
    monkeypatch.setattr(engine, "bf16_supported", lambda device: False)
    assert not Trainer(rc, tmp_path / "b", registry=reg).placement.amp


def test_fused_adam_is_used_and_matches_the_stock_loop(reg: Registry, tmp_path: Path) -> None:
    tr = Trainer(resolve(reg, cli=IMAGE, losses=["tv"]), tmp_path, registry=reg)
    assert all(g["fused"] for g in tr.opt_g.param_groups + tr.opt_d.param_groups)
    torch.manual_seed(0)
    a = [nn.Parameter(torch.randn(64, 32)) for _ in range(3)]
    b = [nn.Parameter(p.detach().clone()) for p in a]
    fused, stock = torch.optim.Adam(a, lr=1e-2, betas=(0.5, 0.999)), torch.optim.Adam(b, lr=1e-2, betas=(0.5, 0.999))
    from stylezoo.core.training.engine import fuse_adam

    fuse_adam(fused, torch.device("cpu"))
    for _ in range(3):
        g = [torch.randn(64, 32) for _ in a]
        for p, q, gi in zip(a, b, g):
            p.grad, q.grad = gi.clone(), gi.clone()
        fused.step()
        stock.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_checkpoint_from_an_unfused_optimizer_resumes(reg: Registry, tmp_path: Path) -> None:
    """Runs saved before fused Adam (param groups with fused=None) still resume, and then run fused."""
    from stylezoo.core.training.api import train

    rc = resolve(reg, cli=IMAGE, losses=["tv"])
    tr = Trainer(rc, tmp_path, registry=reg)
    for opt in (tr.opt_g, tr.opt_d):
        for g in opt.param_groups:
            g["fused"], g["foreach"] = None, None
    tr.fit()
    train(resume=tmp_path, steps=3, registry=reg)
    again = Trainer(rc, tmp_path / "x", registry=reg, resume_from=tmp_path / "last.safetensors")
    assert again.step == 3 and all(g["fused"] for g in again.opt_g.param_groups)


@pytest.mark.parametrize("setting,expect", [("auto", None), (True, True), (False, False)])
def test_channels_last_setting(reg: Registry, tmp_path: Path, setting: object, expect: bool | None) -> None:
    """auto = contiguous on CPU (measured faster there) and channels_last on CUDA."""
    tr = Trainer(resolve(reg, cli={**IMAGE, "train": {**TINY, "channels_last": setting}}, losses=["tv"]), tmp_path,
                 registry=reg)
    if expect is None:
        expect = tr.device.type == "cuda"
    assert tr.placement.channels_last is expect
    conv = next(m for m in tr.components.gen.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) is expect
    content = tr.stepper.batch(0)[0]
    assert content.is_contiguous(memory_format=torch.channels_last) is expect
    assert torch.isfinite(torch.tensor(tr.train_step(0)["g/loss"]))


def test_encdec_zero_padding_option(reg: Registry) -> None:
    reflect = reg.build("gen/encdec", {"channels": 8, "n_res": 1})
    zeros = reg.build("gen/encdec", {"channels": 8, "n_res": 1, "padding": "zeros"})
    assert any(isinstance(m, nn.ReflectionPad2d) for m in reflect.modules())
    assert not any(isinstance(m, nn.ReflectionPad2d) for m in zeros.modules())
    # the reflect layout keeps the parameter names of checkpoints written before the option existed
    assert {"stem.1.weight", "head.1.weight", "head.1.bias", "res.0.body.1.weight"} <= set(reflect.state_dict())
    x = torch.rand(2, 3, 36, 36) * 2 - 1
    y = zeros(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    y.sum().backward()
    assert all(p.grad is not None for p in zeros.parameters())
    ident = reg.build("gen/encdec", {"channels": 8, "n_res": 1, "padding": "zeros", "residual": True})
    torch.testing.assert_close(ident(x.clamp(-0.9, 0.9)), x.clamp(-0.9, 0.9), rtol=1e-4, atol=1e-4)
    from stylezoo.core.errors import ConfigError

    with pytest.raises(ConfigError, match="padding"):
        reg.make_config("gen/encdec", {"padding": "circular"})


def test_each_rank_draws_its_slice_of_the_global_batch(reg: Registry, tmp_path: Path) -> None:
    """Data and noise are pure functions of (seed, step): the ranks' slices put together are the global batch."""
    for base in (IMAGE, NOISE):
        rc = resolve(reg, cli={**base, "train": {**TINY, "batch": 4}}, losses=["tv"])
        one = Trainer(rc, tmp_path / "one", registry=reg, rank=0, world=1).stepper.batch(3)
        parts = [Trainer(rc, tmp_path / f"r{r}", registry=reg, rank=r, world=2).stepper.batch(3) for r in (0, 1)]
        for k in range(3):
            if one[k] is None:
                continue
            torch.testing.assert_close(torch.cat([parts[0][k], parts[1][k]]), one[k])


def test_lazy_decoding_draws_the_same_batches(tmp_path: Path) -> None:
    spec = str(SAMPLES / "content")
    cached, lazy = ImageSet(spec, 32), ImageSet(spec, 32, cache_mb=0)
    assert not cached.lazy and lazy.lazy and len(lazy) == len(cached)
    for step in range(3):
        torch.testing.assert_close(lazy.batch(step, 4, 7, rank=1, world=2), cached.batch(step, 4, 7, rank=1, world=2))
    assert lazy.images.pending  # the next step's images are being decoded
    torch.testing.assert_close(lazy.fixed(2), cached.fixed(2))


def test_lazy_decoding_decodes_an_image_drawn_twice_in_a_batch_once(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from stylezoo.core.files.data import LazyImages

    one = ImageSet(str(SAMPLES / "style" / "starry_night.jpg"), 32, cache_mb=0)
    assert one.lazy and len(one) == 1
    calls: list[int] = []
    decode = LazyImages._decode
    monkeypatch.setattr(LazyImages, "_decode", lambda self, i: calls.append(i) or decode(self, i))
    for step in range(3):
        before = len(calls)
        out = one.batch(step, 4, 0)  # the one image, four times
        one.images.pending[0].result()  # the next step's decode, started in the background
        assert out.shape == (4, 3, 32, 32) and len(calls) - before == 1 + (step == 0)


def test_large_jpegs_decode_at_a_reduced_scale_that_keeps_the_resized_pixels(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from stylezoo.core.files.images import DRAFT_MARGIN, open_image, resize_short

    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    big = Image.fromarray(smooth).resize((1600, 1200), Image.Resampling.BICUBIC)
    big.save(tmp_path / "big.jpg", quality=92)
    short = 64
    full, fast = open_image(tmp_path / "big.jpg"), open_image(tmp_path / "big.jpg", short=short)
    assert full.size == (1600, 1200)
    assert fast.size == (400, 300) and min(fast.size) >= DRAFT_MARGIN * short  # decoded at 1/4 scale
    a, b = (np.asarray(resize_short(im, short), dtype=np.float64) for im in (full, fast))
    assert a.shape == b.shape == (64, 85, 3)
    assert np.abs(a - b).mean() < 1.0 and np.abs(a - b).max() <= 8  # 8-bit levels
    assert open_image(tmp_path / "big.jpg", short=200).size == (1600, 1200)  # 1/2 would go under 4 x 200
    big.save(tmp_path / "big.png")
    assert open_image(tmp_path / "big.png", short=short).size == (1600, 1200)  # JPEG only


def test_lazy_decoding_skips_an_unreadable_file(tmp_path: Path) -> None:
    import shutil

    for f in sorted((SAMPLES / "content").iterdir())[:2]:
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    lazy = ImageSet(str(tmp_path), 32, cache_mb=0)
    out = torch.stack([lazy.images[i] for i in range(len(lazy))])
    assert out.shape[0] == 3 and len(lazy.images.bad) == 1
    strict = ImageSet(str(tmp_path), 32, cache_mb=0, strict=True)
    from stylezoo.core.errors import DataError

    with pytest.raises(DataError, match="strict"):
        [strict.images[i] for i in range(len(strict))]


def test_compile_option_wraps_lazily(reg: Registry, tmp_path: Path) -> None:
    """train.compile wraps G and D with torch.compile (compiled on the first step, whose time is logged)."""
    rc = resolve(reg, cli={**IMAGE, "train": {**TINY, "compile": True}}, losses=["tv"])
    tr = Trainer(rc, tmp_path, registry=reg)
    assert isinstance(tr.placement.gen_fwd, torch._dynamo.eval_frame.OptimizedModule)
    assert tr.placement.disc_plain is tr.placement.disc_fwd and tr.components.gen is not tr.placement.gen_fwd
    assert dataclasses.asdict(tr.train_cfg)["compile"] is True




def test_extractor_channels_last_keeps_one_layout_through_its_backward(reg: Registry, tmp_path: Path) -> None:
    """channels_last "extractor": the extractor alone is channels_last, its ReLU backwards see one layout
    (mixed layouts ran several times slower), and the step's figures match the contiguous run's. Not the
    default ("auto" keeps the CPU contiguous)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    cl = torch.channels_last
    auto = Trainer(_perceptual(reg, precision="bf16", channels_last="extractor"), tmp_path / "auto", registry=reg)
    plain = Trainer(_perceptual(reg, precision="bf16"), tmp_path / "plain", registry=reg)
    assert auto.placement.feat_cl and not plain.placement.feat_cl
    assert not auto.placement.channels_last and not plain.placement.channels_last
    w = auto.components.feat.features[0].weight
    assert w.is_contiguous(memory_format=cl) and not w.is_contiguous()
    assert next(auto.components.gen.parameters()).is_contiguous()  # the generator stays contiguous

    class ReluBackwards(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.layouts: list[tuple[bool, ...]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
            if func is torch.ops.aten.threshold_backward.default:
                self.layouts.append(tuple(a.is_contiguous(memory_format=cl) for a in args[:2]))
            return func(*args, **(kwargs or {}))

    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = auto.features(x, auto.plan.layers["fake"])
    with ReluBackwards() as spy:
        sum(torch.nn.functional.mse_loss(f.float(), torch.zeros(f.shape)) for f in feats.values()).backward()
    assert spy.layouts and all(a == b for a, b in spy.layouts), spy.layouts
    assert all(f.is_contiguous(memory_format=cl) for f in feats.values())
    a, b = auto.train_step(0), plain.train_step(0)
    for k in ("d/loss", "g/loss", "g/loss/content", "g/loss/gram"):
        assert a[k] == pytest.approx(b[k], rel=2e-2), k


def _has_cxx() -> bool:
    import shutil

    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


@pytest.mark.slow
@pytest.mark.skipif(not _has_cxx(), reason="torch.compile on the CPU needs a C++ compiler")
def test_compiled_steps_train_as_eager_and_recompile_for_a_second_size(reg: Registry, tmp_path: Path) -> None:
    """Compiled steps give eager's losses (fp32), and a second compiled Trainer at another size in the same
    process compiles its own graphs: torch's automatic dynamic shapes failed there inside inductor."""
    torch._dynamo.reset()
    eager, compiled = ({**IMAGE, "train": {**TINY, "precision": "fp32", "compile": c}} for c in (False, True))
    runs = [Trainer(resolve(reg, cli=cli, losses=["tv"]), tmp_path / str(i), registry=reg)
            for i, cli in enumerate((eager, compiled))]
    logs = [[tr.train_step(s) for s in range(2)] for tr in runs]
    for step, (a, b) in enumerate(zip(*logs)):  # after an Adam step, fused kernels' rounding shows more
        for k in ("d/loss", "g/loss"):
            assert b[k] == pytest.approx(a[k], rel=1e-5 if step == 0 else 1e-3), (step, k)
    other = {**IMAGE, "train": {**TINY, "size": 64, "precision": "fp32", "compile": True}}
    tr = Trainer(resolve(reg, cli=other, losses=["tv"]), tmp_path / "64", registry=reg)
    out = tr.train_step(0)
    assert math.isfinite(out["g/loss"]) and math.isfinite(out["d/loss"])
    torch._dynamo.reset()



def test_compile_without_a_cxx_compiler_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No C++ compiler: refused at set-up, exit 2, saying what to install, not inductor's traceback at step 1."""
    from typer.testing import CliRunner

    from stylezoo.core.cli import app

    inductor = pytest.importorskip("torch._inductor.config")
    monkeypatch.setattr(inductor.cpp, "cxx", ("stylezoo-no-such-cxx",))
    result = CliRunner().invoke(app, ["run", "--gen", "encdec", "--disc", "patch", "--feat", "none", "--loss", "tv",
                                      "--size", "32", "--batch", "2", "--steps", "1", "--device", "cpu",
                                      "--set", "gen.channels=8", "--set", "train.compile=true",
                                      "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "C++ compiler" in result.stderr and "apt install g++" in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "run" / "last.safetensors").exists()


_FAULTS = """
import resource, sys, torch
from stylezoo.core.runtime.cpu_memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.ones(1)
for _ in range(10):  # warm-up: glibc's free chunks settle after a few rounds
    torch.ones(16, 2**20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # a 64 MiB tensor written and freed, as a step's activations are
    torch.ones(16, 2**20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not (__import__("platform").system() == "Linux"
                         and __import__("platform").libc_ver()[0] == "glibc"), reason="glibc's malloc only")
def test_keep_freed_memory_stops_the_page_faults_of_reallocated_tensors() -> None:
    import subprocess
    import sys

    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
        return int(out.stdout.strip())

    default, kept = faults("default"), faults("keep")
    assert default > 10 * 16_384 * 0.9  # 64 MiB is 16,384 pages: glibc's default maps them afresh each time
    assert kept < 1_000  # reused: nothing to fault in


def test_trainer_keeps_freed_memory_on_the_cpu_unless_switched_off(reg: Registry, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import stylezoo.core.training.engine as engine

    calls: list[int] = []
    monkeypatch.setattr(engine, "keep_freed_memory", lambda: calls.append(1) or True)
    Trainer(resolve(reg, cli=IMAGE, losses=["tv"]), tmp_path / "a", registry=reg)
    assert calls == [1]
    Trainer(resolve(reg, cli=IMAGE, losses=["tv"], sets=["train.keep_freed_memory=false"]), tmp_path / "b",
            registry=reg)
    assert calls == [1]


def test_keep_freed_memory_is_a_no_op_off_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    from stylezoo.core.runtime import cpu_memory

    monkeypatch.setattr(cpu_memory.platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(cpu_memory.ctypes, "CDLL", lambda *a: pytest.fail("libc must not be touched"))
    assert cpu_memory.keep_freed_memory() is False


def _d_batches(tr: Trainer) -> list[int]:
    seen: list[int] = []
    tr.components.disc.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    tr.train_step(0)
    return seen


def test_per_sample_discriminator_judges_real_and_fake_in_one_call(reg: Registry, tmp_path: Path) -> None:
    rc = resolve(reg, cli={**IMAGE, "train": {**TINY, "precision": "fp32"}}, losses=["tv"])
    joint = Trainer(rc, tmp_path / "a", registry=reg)
    split = Trainer(rc, tmp_path / "b", registry=reg)
    assert joint.placement.joint_d
    split.stepper.placement = dataclasses.replace(split.placement, joint_d=False)
    b = TINY["batch"]
    # D step: one call on [real; fake]; generator step: one call on the fakes
    assert _d_batches(joint) == [2 * b, b]
    assert _d_batches(split) == [b, b, b]
    # the same update either way (same seed, float32): one call is only a faster way to the same logits
    for (name, p), q in zip(joint.components.disc.named_parameters(), split.components.disc.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)


def test_discriminators_without_per_sample_or_with_batch_norm_are_called_per_batch(
        reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stylezoo.core.training.assembly import judges_each_image_alone
    from stylezoo.plugins.patchgan import PatchDiscriminator

    class PerSample(nn.Sequential):
        per_sample = True

    assert judges_each_image_alone(PerSample(nn.Conv2d(3, 4, 3)))
    assert not judges_each_image_alone(PerSample(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    assert not judges_each_image_alone(nn.Sequential(nn.Conv2d(3, 4, 3)))  # not declared
    assert not judges_each_image_alone(None)
    monkeypatch.setattr(PatchDiscriminator, "per_sample", False)
    tr = Trainer(resolve(reg, cli=IMAGE, losses=["tv"]), tmp_path, registry=reg)
    assert not tr.placement.joint_d and _d_batches(tr) == [TINY["batch"]] * 3


def test_resumed_adam_moments_take_the_parameters_memory_layout(reg: Registry, tmp_path: Path) -> None:
    """Checkpoints store contiguous moments; a channels_last run (the CUDA default) gets channels_last moments
    back, since fused Adam on CUDA refuses moments whose strides differ from the parameter's."""
    rc = resolve(reg, cli={**IMAGE, "train": {**TINY, "channels_last": True}}, losses=["tv"])
    Trainer(rc, tmp_path, registry=reg).fit()
    again = Trainer(rc, tmp_path / "x", registry=reg, resume_from=tmp_path / "last.safetensors")
    convs = 0
    for opt in (again.opt_g, again.opt_d):
        for p in (p for g in opt.param_groups for p in g["params"]):
            for k in ("exp_avg", "exp_avg_sq"):
                assert opt.state[p][k].stride() == p.stride(), k
            convs += p.dim() == 4 and not p.is_contiguous()
    assert convs > 0  # there were channels_last parameters to match
    assert torch.isfinite(torch.tensor(again.train_step(again.step)["g/loss"]))


def test_slow_data_is_logged_and_named_with_its_fix(reg: Registry, tmp_path: Path, monkeypatch, caplog) -> None:  # noqa: ANN001
    """time/data_s is the wait for each step's images; when it is a large share of the step, one warning says
    which setting keeps the images decoded in memory."""
    import json
    import logging
    import time

    from stylezoo.core.files.data import LazyImages

    slow = LazyImages._decode

    def decode(self, i):  # noqa: ANN001, ANN202
        time.sleep(0.1)  # far longer than a tiny step, even though the next batch decodes during it
        return slow(self, i)

    monkeypatch.setattr(LazyImages, "_decode", decode)
    rc = resolve(reg, cli={**IMAGE, "train": {**TINY, "steps": 14}}, losses=["tv"], sets=["data.cache_mb=0"])
    tr = Trainer(rc, tmp_path, registry=reg)
    assert tr.data.content.lazy
    with caplog.at_level(logging.WARNING, logger="stylezoo"):
        tr.fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["time/data_s"] <= r["time/step_s"] for r in rows)
    assert sorted(r["time/data_s"] for r in rows)[len(rows) // 2] >= 0.02
    (warning,) = [r.getMessage() for r in caplog.records if "waiting for training images" in r.getMessage()]
    import math

    need = max(s.decoded_mb for s in (tr.data.content, tr.data.real) if s is not None and s.lazy)
    assert f"--set data.cache_mb={math.ceil(need * 1.1)} " in warning


def test_the_data_wait_warning_needs_a_large_share_over_several_steps(reg: Registry, tmp_path: Path, caplog) -> None:  # noqa: ANN001
    import logging

    tr = Trainer(resolve(reg, cli=IMAGE, losses=["tv"]), tmp_path, registry=reg)
    assert not tr.data.content.lazy

    def run(waits: list[float]) -> list[str]:
        tr.history, tr._data_warned = [{"time/data_s": w, "time/step_s": 0.1} for w in waits], False
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="stylezoo"):
            tr._check_data_wait()
        return [r.getMessage() for r in caplog.records]

    assert run([0.015] * 12) == []  # 15% of the step: fine
    assert run([0.05] * 11) == []  # too few steps after the first two to judge
    assert run([0.5, 0.5] + [0.01] * 10) == []  # the first two steps (warm-up) are not counted
    (msg,) = run([0.05] * 12)
    assert "50%" in msg and "already cached in memory" in msg
    caplog.clear()
    tr._check_data_wait()  # once per run
    assert tr._data_warned and not caplog.records
