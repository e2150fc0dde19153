"""The same checks on every device: the CPU always, CUDA where a GPU is visible.

The rest of the suite runs on the CPU (conftest.py hides GPUs). On a GPU machine `make test-cuda` runs this
file with the GPU visible. Each check here is one that failed, or could only be seen, on a GPU: a resume
under fused Adam with channels_last moments, a loss term returning a CPU tensor, stylize and the benchmark
helpers on the device.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import TrainingDiverged
from stylezoo.core.files import checkpoint as ckpt
from stylezoo.core.runs.runconfig import resolve
from stylezoo.core.runtime.devices import bf16_supported
from stylezoo.core.training.api import train
from stylezoo.core.training.engine import Trainer
from stylezoo.core.use.stylizer import Stylizer

TINY = {"size": 32, "batch": 2, "steps": 2, "sample_every": 0, "ckpt_every": 0, "log_every": 1, "num_samples": 2}
SMALL = {"gen": {"channels": 8, "n_res": 1}, "disc": {"n_layers": 2, "channels": 8}}
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="no GPU visible (make test-cuda on a GPU machine)")),
]


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


@pytest.mark.parametrize("device", DEVICES)
def test_train_resume_and_stylize(reg: Registry, tmp_path: Path, device: str) -> None:
    """A perceptual run with a gradient penalty trains, resumes to a new total and stylizes on `device`."""
    rc = resolve(reg, cli={"gen": "encdec", "disc": "patch", "feat": "vgg16", "gp": "r1",
                           "train": {**TINY, "device": device}, "set": SMALL},
                 losses=["content", "gram:1000", "tv"], sets=["feat.weights=random", "loss/content.layers=relu2_2",
                                                             "loss/gram.layers=relu1_1,relu2_1"])
    tr = Trainer(rc, tmp_path, registry=reg)
    assert tr.device.type == device
    assert tr.placement.channels_last is (device == "cuda")  # the "auto" defaults
    assert tr.placement.amp is bf16_supported(tr.device)
    tr.fit()
    last = train(resume=tmp_path, steps=4, registry=reg)  # fused Adam, moments loaded from the checkpoint
    assert ckpt.read_meta(last)["step"] == 4
    again = Trainer(rc, tmp_path / "again", registry=reg, resume_from=last)
    for p in again.components.gen.parameters():
        assert p.device.type == device and torch.isfinite(p).all()
        assert again.opt_g.state[p]["exp_avg"].stride() == p.stride()
    st = Stylizer.load(tmp_path, device=device, registry=reg)
    x = torch.rand(1, 3, 40, 56) * 2 - 1  # any size: padded to the generator's multiple and cropped back
    y = st.forward(x)
    assert y.shape == x.shape and y.device == x.device
    assert torch.isfinite(y).all() and y.abs().max() <= 1


@pytest.mark.parametrize("device", DEVICES)
def test_a_nan_term_stops_the_run_and_keeps_weights(reg: Registry, tmp_path: Path, device: str) -> None:
    """A plugin's term that comes back as a CPU tensor is guarded like any other, on any device."""
    rc = resolve(reg, cli={"gen": "dcgan", "disc": "dcgan", "feat": "", "gp": "none", "adv": "bce",
                           "train": {**TINY, "steps": 10, "max_bad_steps": 3, "device": device},
                           "set": {"gen": {"channels": 8, "latent_dim": 16}, "disc": {"channels": 8}}},
                 losses=["tv"])
    tr = Trainer(rc, tmp_path, registry=reg)
    tr.train_step(0)
    tr.components.losses["loss/tv"].forward = lambda ctx: torch.tensor(float("nan"))  # type: ignore[method-assign]
    snapshot = {k: v.clone() for k, v in tr.components.gen.state_dict().items()}
    with pytest.raises(TrainingDiverged, match="loss/tv"):
        tr.fit()
    for k, v in tr.components.gen.state_dict().items():
        if v.is_floating_point() and "running" not in k:
            assert torch.equal(v, snapshot[k]), k


@pytest.mark.parametrize("device", DEVICES)
def test_benchmark_helpers_time_the_device(reg: Registry, device: str) -> None:
    """make bench's inference table and matmul peak run on `device` (figures come from make bench)."""
    from stylezoo.benchmarks import speed

    dev = torch.device(device)
    row = speed._conditional_latency(reg, "gen/encdec", [32], 1, dev)["sizes"]["32"]
    assert row["stylize_ms"] > 0 and row["eager_fp32_ms"] > 0 and row["condition"] == "none"
    noise = speed._noise_latency(reg, "gen/dcgan", [32], 1, dev)["sizes"]["32"]
    assert noise["stylize_path"].startswith("stylezoo default (")
    assert speed.matmul_peak(torch.float32, dev, n=256, reps=2) > 0


def test_the_rest_of_the_suite_runs_on_the_cpu() -> None:
    """conftest.py hides GPUs (and subprocesses inherit that) unless make test-cuda asks for them."""
    import os

    if os.environ.get("STYLEZOO_TEST_CUDA") == "1":
        pytest.skip("make test-cuda: GPUs are visible on purpose")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "" and not torch.cuda.is_available()
