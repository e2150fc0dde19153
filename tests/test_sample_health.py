"""A run whose samples failed (a constant image, saturated pixels, one output for every input) ends with a
warning saying so and what to try, recorded in metrics.jsonl and the final checkpoint; a normal run does not."""

from __future__ import annotations

import dataclasses
import json
import logging
import types
from pathlib import Path

import pytest
import torch
from cli_results import invoke

from stylezoo.core.components import registry as registry_module
from stylezoo.core.components.hookspecs import hookimpl
from stylezoo.core.components.registry import Registry
from stylezoo.core.files.checkpoint import read_meta
from stylezoo.core.runs.runconfig import resolve
from stylezoo.core.training.engine import Trainer
from stylezoo.core.training.health import check_samples

TINY = {"size": 32, "batch": 2, "steps": 2, "sample_every": 0, "ckpt_every": 0, "log_every": 1, "num_samples": 2}
DATA = {"content": "samples:content", "style": "samples:style/starry_night.jpg"}
MAGENTA = torch.tensor([1.0, -1.0, 1.0]).view(1, 3, 1, 1)


def images(n: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 1.6 - 0.8


def test_each_symptom_is_named_and_ordinary_outputs_pass() -> None:
    x = images()
    assert check_samples([images(seed=1)], x).problems() == []
    constant = check_samples([MAGENTA.expand(4, 3, 16, 16)], x)
    assert constant.std < 0.02 and [p.split(" (")[0] for p in constant.problems()] == [
        "the samples are a constant image", "100% of pixels saturated at -1/1"]
    saturated = check_samples([images(seed=2).sign()], x)
    assert saturated.problems() == ["100% of pixels saturated at -1/1"]
    same = check_samples([images(n=1, seed=3).expand(4, 3, 16, 16)], x)
    assert len(same.problems()) == 1 and "outputs for different inputs are identical" in same.problems()[0]
    # the same output for the same input is not a symptom: identical inputs are left out
    assert check_samples([images(n=1, seed=3).expand(4, 3, 16, 16)], x[:1].expand(4, 3, 16, 16)).spread is None


@dataclasses.dataclass
class ConstCfg:
    size: int = 32


class ConstantGen(torch.nn.Module):
    """A generator that has diverged: magenta whatever its input."""

    family = "image"

    def __init__(self, cfg: ConstCfg) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return MAGENTA.to(x.dtype).expand_as(x) + 0 * self.w


@pytest.fixture(scope="module")
def reg() -> Registry:
    plug = types.ModuleType("magenta")

    @hookimpl
    def register_components(register):
        register("gen/magenta", ConstantGen, config=ConstCfg)

    plug.register_components = register_components  # type: ignore[attr-defined]
    return Registry(plugins=(plug,), entry_points=False)


def run(reg: Registry, gen: str, out: Path, caplog: pytest.LogCaptureFixture) -> tuple[Path, dict, str]:
    rc = resolve(reg, cli={"gen": gen, "disc": "", "adv": "", "feat": "", "train": TINY, "data": DATA,
                           "set": {"gen": {"channels": 8, "n_res": 1}} if gen == "encdec" else {}}, losses=["tv"])
    with caplog.at_level(logging.WARNING, logger="stylezoo"):
        last = Trainer(rc, out, registry=reg).fit()
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return last, row, caplog.text


def test_a_constant_generator_ends_with_a_warning_recorded_in_the_run(reg: Registry, tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    last, row, text = run(reg, "gen/magenta", tmp_path, caplog)
    assert "samples are a constant image (std 0" in text and "100% of pixels saturated" in text
    assert "--lr 0.0001" in text and "--recipe" in text  # what to try: the default recipe's lr 1e-3, a tenth
    assert row["step"] == 2 and row["samples/std"] < 0.02 and row["samples/saturated"] == 1.0
    recorded = read_meta(last)["samples"]
    assert "constant image" in recorded["warning"] and recorded["std"] == row["samples/std"]
    assert (tmp_path / "samples" / "final.png").is_file()


def test_a_normal_tiny_run_does_not_warn(reg: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    last, row, text = run(reg, "encdec", tmp_path, caplog)
    assert "samples" not in text and "training failed" not in text
    assert row["samples/std"] > 0.05 and row["samples/saturated"] < 0.5 and row["samples/spread"] > 0.05
    assert read_meta(last)["samples"]["warning"] is None
    # figures only in the last line; earlier lines are as before
    first = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 1 and not any(k.startswith("samples/") for k in first)


def test_cli_does_not_say_a_plain_done(reg: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_default", reg)
    with caplog.at_level(logging.WARNING, logger="stylezoo"):
        result = invoke("run", "--gen", "magenta", "--disc", "none", "--adv", "none", "--feat", "none", "--loss", "tv",
                        "--content", "samples:content", "--size", "32", "--batch", "2", "--steps", "1", "--quiet",
                        "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "done, but the samples failed (warning above)" in result.output
    assert "constant image" in caplog.text
