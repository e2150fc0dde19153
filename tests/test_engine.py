"""The training engine end to end on tiny images: both families, every adversarial loss and penalty,
resume equivalence, checkpoints that load with no flags, composition errors, the CLI."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import tomllib
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from stylezoo.core.cli import app
from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import CompositionError, ConfigError, UnknownComponentError
from stylezoo.core.files import checkpoint as ckpt
from stylezoo.core.runs.runconfig import RunConfig, resolve
from stylezoo.core.runs.rundir import newest_valid_checkpoint
from stylezoo.core.training.api import train
from stylezoo.core.training.engine import Trainer
from stylezoo.core.use.stylizer import load_generator

TINY = {"size": 32, "batch": 2, "steps": 2, "sample_every": 0, "ckpt_every": 0, "log_every": 1, "num_samples": 2}
NOISE = {"gen": "dcgan", "disc": "dcgan", "feat": "", "gp": "none", "train": TINY}
IMAGE = {"gen": "encdec", "disc": "patch", "feat": "", "gp": "none", "train": TINY,
         "set": {"gen": {"channels": 8, "n_res": 1}, "disc": {"n_layers": 2, "channels": 8}}}


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


def tiny(reg: Registry, base: dict, *, losses: list[str] | None = None, sets: list[str] | None = None,
         **over: object) -> RunConfig:
    cli = {**base, **over}
    return resolve(reg, cli=cli, losses=losses if losses is not None else ["tv"], sets=sets)


@pytest.mark.parametrize("adv", ["bce", "lsgan", "hinge", "wgan"])
@pytest.mark.parametrize("gp", ["none", "r1", "wgan-gp", "dragan"])
def test_every_adversarial_loss_and_penalty_trains(reg: Registry, tmp_path: Path, adv: str, gp: str) -> None:
    try:
        rc = tiny(reg, NOISE, adv=adv, gp=gp)
    except CompositionError as e:  # a documented incompatibility is refused before any work
        assert gp in str(e) and adv in str(e)
        return
    tr = Trainer(rc, tmp_path, registry=reg)
    before = [p.detach().clone() for p in tr.components.disc.parameters()]
    last = tr.fit()
    assert last.is_file()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["d/loss"])) and torch.isfinite(torch.tensor(r["g/loss"])) for r in rows)
    if gp != "none":
        assert f"d/gp/{gp}" in rows[0]
    after = list(tr.components.disc.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after)), "the discriminator did not learn"


def test_image_family_with_perceptual_losses_writes_everything(reg: Registry, tmp_path: Path) -> None:
    rc = tiny(reg, IMAGE, feat="vgg16", losses=["content", "gram:1000", "tv"],
              sets=["feat.weights=random", "train.sample_every=1", "train.ckpt_every=1"])
    Trainer(rc, tmp_path, registry=reg).fit()
    for f in ("config.toml", "metrics.jsonl", "last.safetensors", "loss.png", "samples/final.png",
              "samples/step-0000001.png", "checkpoints/step-0000002.safetensors"):
        assert (tmp_path / f).is_file(), f
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("g/loss/content", "g/loss/gram", "g/loss/tv", "g/g_adv", "d/d_adv", "d/real", "d/fake",
                "time/step_s", "time/data_s", "time/images_per_s"):
        assert key in row
    # config.toml reproduces the run
    again = RunConfig.from_dict(tomllib.loads((tmp_path / "config.toml").read_text()))
    assert again.to_dict() == rc.to_dict()


def test_style_targets_computed_once_and_extractor_frozen(reg: Registry, tmp_path: Path) -> None:
    rc = tiny(reg, IMAGE, feat="vgg16", losses=["content", "gram:1000"], sets=["feat.weights=random"])
    tr = Trainer(rc, tmp_path, registry=reg)
    calls: list[tuple[int, tuple[str, ...]]] = []
    real_forward = tr.components.feat.forward

    def counting(x: torch.Tensor, layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
        calls.append((x.shape[0], tuple(layers)))
        return real_forward(x, layers)

    tr.components.feat.forward = counting  # type: ignore[method-assign]
    tr.train_step(0)
    # one pass for the fakes, one for the content images; none for the style image (cached at set-up)
    assert len(calls) == 2
    assert all(not p.requires_grad for p in tr.components.feat.parameters())
    gram = tr.components.losses["loss/gram"]
    assert any(b.numel() > 0 for b in gram.buffers()), "style targets are cached as buffers"


def test_noise_family_with_gram_loss_the_design_card_command(tmp_path: Path) -> None:
    """`stylezoo run --gen dcgan --loss gram` (with tiny settings) through the CLI."""
    result = CliRunner().invoke(app, [
        "run", "--gen", "dcgan", "--loss", "gram", "--disc", "dcgan", "--feat", "vgg16", "--set", "feat.weights=random",
        "--size", "32", "--batch", "2", "--steps", "2", "--out", str(tmp_path / "r"), "--quiet"])
    assert result.exit_code == 0, result.output
    meta = ckpt.read_meta(tmp_path / "r" / "last.safetensors")
    assert meta["composition"]["gen"] == "gen/dcgan" and meta["composition"]["losses"] == ["loss/gram"]


def test_resume_reproduces_the_uninterrupted_run(reg: Registry, tmp_path: Path) -> None:
    rc = tiny(reg, NOISE, adv="hinge", gp="r1", train={**TINY, "steps": 4})
    full = Trainer(rc, tmp_path / "full", registry=reg)
    full.fit()
    half = resolve(reg, cli={**NOISE, "adv": "hinge", "gp": "r1", "train": {**TINY, "steps": 2}}, losses=["tv"])
    train(half, out=tmp_path / "half", registry=reg)
    train(resume=tmp_path / "half", steps=4, registry=reg)
    a = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for k in ("d/loss", "g/loss"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-5), (ra["step"], k)
    ta, _ = ckpt.load(tmp_path / "full" / "last.safetensors")
    tb, _ = ckpt.load(tmp_path / "half" / "last.safetensors")
    for k in ta:
        if k.startswith("gen."):
            torch.testing.assert_close(ta[k], tb[k], rtol=1e-4, atol=1e-5)


def test_checkpoint_loads_with_no_flags(reg: Registry, tmp_path: Path) -> None:
    rc = tiny(reg, IMAGE)
    tr = Trainer(rc, tmp_path, registry=reg)
    tr.fit()
    loaded = load_generator(tmp_path, registry=reg)  # the run dir is enough
    assert loaded.name == "gen/encdec" and loaded.family == "image"
    x = torch.rand(1, 3, 32, 32, device=tr.device) * 2 - 1  # the trainer's device: cuda where there is one
    tr.components.gen.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.module.to(tr.device)(x), tr.components.gen(x))
    with safe_open(str(tmp_path / "last.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["stylezoo"])
    assert meta["configs"]["gen"]["channels"] == 8 and meta["step"] == 2
    assert {"stylezoo", "torch"} <= set(meta["versions"])


def test_newest_valid_checkpoint_skips_a_torn_file(reg: Registry, tmp_path: Path) -> None:
    rc = tiny(reg, NOISE, train={**TINY, "steps": 2, "ckpt_every": 1})
    Trainer(rc, tmp_path, registry=reg).fit()
    last = tmp_path / "last.safetensors"
    last.write_bytes(last.read_bytes()[:100])  # torn
    assert newest_valid_checkpoint(tmp_path).name == "step-0000002.safetensors"


@pytest.mark.parametrize("over,losses,err,fragment", [
    ({"adv": "bce", "disc": ""}, ["tv"], CompositionError, "needs a discriminator"),
    ({"gen": "encdec", "data": {"content": ""}}, ["tv"], CompositionError, "--content"),
    ({"feat": ""}, ["gram"], CompositionError, "feature extractor"),
    ({"adv": "gram"}, ["tv"], CompositionError, "not an adversarial loss"),
    ({}, ["bce"], CompositionError, "--adv"),
    ({"gen": "dcgn"}, ["tv"], UnknownComponentError, "gen/dcgan"),
    ({"adv": "wgan", "gp": "none"}, ["tv"], CompositionError, "needs a gradient penalty, not gp/none: add --gp dragan"),
    ({"adv": "wgan", "gp": "gp/none"}, ["tv"], CompositionError,
     "needs a gradient penalty, not gp/none: add --gp dragan"),
])
def test_bad_compositions_are_refused_before_work(reg: Registry, over: dict, losses: list[str], err: type,
                                                   fragment: str) -> None:
    base = {**NOISE, "adv": "bce", **over}
    with pytest.raises(err, match=None) as e:
        resolve(reg, cli=base, losses=losses)
    assert fragment in str(e.value)


@pytest.mark.parametrize("sets,fragment", [
    (["gen.chanels=8"], "channels"),
    (["gen.channels=wide"], "integer"),
    (["train.lr=0"], "lr"),
    (["train.batch=0"], "batch"),
    (["loss/tv.weight=-1"], "weight"),
])
def test_bad_overrides_are_refused_before_work(reg: Registry, sets: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        resolve(reg, cli={**NOISE, "adv": "bce"}, losses=["tv"], sets=sets)
    assert fragment in str(e.value)


def test_set_weight_of_a_loss_is_the_last_word(reg: Registry) -> None:
    """`--set loss/NAME.weight` wins over --loss NAME:W, which wins over a lower layer's weight."""
    from stylezoo.core.runs.runconfig import component_config

    base = {**NOISE, "adv": "bce"}
    for losses, sets, want in ((["tv:2"], ["loss/tv.weight=5"], 5.0), (["tv"], ["tv.weight=5"], 5.0),
                               (["tv:3"], None, 3.0)):
        rc = resolve(reg, cli=base, losses=losses, sets=sets)
        assert rc.losses["loss/tv"] == want, (losses, sets)
        assert component_config(reg, rc, "loss/tv").weight == want
        assert "weight" not in rc.set.get("loss/tv", {})  # one source of truth: rc.losses
    lower = {**base, "losses": {"loss/tv": 1.0}, "set": {"loss/tv": {"weight": 9}}}  # as a recipe or --config
    assert resolve(reg, cli=lower).losses["loss/tv"] == 9.0
    assert resolve(reg, cli=lower, losses=["tv:3"]).losses["loss/tv"] == 3.0
    assert resolve(reg, cli=lower, losses=["tv"]).losses["loss/tv"] == 9.0
    with pytest.raises(ConfigError, match="must be a number"):
        resolve(reg, cli=base, losses=["tv"], sets=["tv.weight=abc"])


def test_config_file_with_its_own_losses_drops_the_recipes_overrides_of_other_terms(reg: Registry,
                                                                                     tmp_path: Path) -> None:
    # the default recipe sets loss/content.layers and loss/gram.layers; a file keeping only tv was refused
    # with "'loss/content' is not part of this run"
    f = tmp_path / "run.toml"
    f.write_text('losses = { tv = 2.0 }\n[set.tv]\nweight = 4.0\n')
    rc = resolve(reg, recipe="default", config_file=f)
    assert rc.losses == {"loss/tv": 4.0} and set(rc.set) <= {"gen", "disc", "adv"}


def test_set_values_are_kept_as_their_fields_types(reg: Registry, tmp_path: Path) -> None:
    from stylezoo.core.runs.rundir import write_config

    rc = resolve(reg, recipe="default", sets=["gen.channels=8", "gram.layers=relu1_1,relu2_1", "adv.weight=0.2"])
    assert rc.set["gen"]["channels"] == 8 and rc.set["loss/gram"]["layers"] == ["relu1_1", "relu2_1"]
    assert rc.set["adv"]["weight"] == 0.2
    write_config(tmp_path / "config.toml", rc)
    text = (tmp_path / "config.toml").read_text()
    assert "channels = 8" in text and 'channels = "8"' not in text
    again = resolve(reg, config_file=tmp_path / "config.toml")
    assert again.set == rc.set and again.losses == rc.losses


@pytest.mark.parametrize("recipe", ["default", "original", "portrait-sketch"])
def test_a_runs_own_config_toml_resolves_to_the_same_run(reg: Registry, tmp_path: Path, recipe: str) -> None:
    """`run --config RUN/config.toml` repeats the run: the file's recipe is its base, not `default`."""
    from stylezoo.core.runs.rundir import write_config

    rc = resolve(reg, recipe=recipe, cli={"gen": "encdec", "disc": "patch"}, sets=["train.size=32"])
    write_config(tmp_path / "config.toml", rc)
    assert resolve(reg, config_file=tmp_path / "config.toml") == rc


def test_set_beats_a_config_file_whichever_name_form_each_uses(reg: Registry, tmp_path: Path) -> None:
    f = tmp_path / "short.toml"
    f.write_text('[set.gram]\nlayers = ["relu1_1"]\nweight = 3.0\n')
    for key in ("loss/gram", "gram"):
        rc = resolve(reg, config_file=f, sets=[f"{key}.weight=7", f"{key}.layers=relu2_1"])
        assert rc.losses["loss/gram"] == 7.0 and rc.set["loss/gram"]["layers"] == ["relu2_1"], key
    f.write_text('[set."loss/gram"]\nweight = 3.0\n')
    assert resolve(reg, config_file=f, sets=["gram.weight=7"]).losses["loss/gram"] == 7.0


def test_set_of_an_unknown_role_names_what_roles_exist(reg: Registry) -> None:
    with pytest.raises(ConfigError) as e:
        resolve(reg, cli={**NOISE, "adv": "bce"}, losses=["tv"], sets=["nosuchrole.x=1"])
    msg = str(e.value)
    assert "neither a role" in msg and "gen, disc" in msg and "stylezoo list --kind loss" in msg
    assert "Did you mean" not in msg
    with pytest.raises(ConfigError, match="Did you mean 'loss/gram'"):
        resolve(reg, cli={**NOISE, "adv": "bce"}, losses=["tv"], sets=["gra.layers=relu1_1"])


def test_cli_dry_run_reports_composition(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--gen", "encdec", "--disc", "patch", "--feat", "none", "--loss", "tv",
                                      "--size", "32", "--batch", "2", "--set", "gen.channels=8", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "gen/encdec" in result.output and "parameters" in result.output and "(2, 3, 32, 32)" in result.output


def test_cli_dry_run_of_a_resume_starts_from_the_checkpoint(tmp_path: Path) -> None:
    args = ["run", "--gen", "encdec", "--disc", "patch", "--feat", "none", "--loss", "tv", "--size", "32",
            "--batch", "2", "--set", "gen.channels=8", "--set", "gen.n_res=1"]
    assert CliRunner().invoke(app, [*args, "--steps", "2", "--out", str(tmp_path), "--quiet"]).exit_code == 0
    before = (tmp_path / "last.safetensors").read_bytes()
    fresh = CliRunner().invoke(app, [*args, "--dry-run"])
    resumed = CliRunner().invoke(app, ["run", "--resume", str(tmp_path), "--steps", "4", "--dry-run"])
    assert fresh.exit_code == 0 and resumed.exit_code == 0, resumed.output
    assert "at step 2" in resumed.output and "resumed from" in resumed.output
    one_step = [r.output.split("one step:", 1)[1] for r in (fresh, resumed)]
    assert one_step[0] != one_step[1]  # trained weights, not fresh ones
    assert (tmp_path / "last.safetensors").read_bytes() == before  # a dry run writes nothing
    r = CliRunner().invoke(app, [*args, "--batch", "3", "--nproc", "2", "--dry-run"])
    assert r.exit_code == 2 and "does not split over 2 processes" in r.output
    r = CliRunner().invoke(app, [*args, "--set", "disc.in_channels=1", "--dry-run"])
    assert (r.exit_code == 2 and "disc/patch failed in the first training step" in r.output
            and "Traceback" not in r.output)


def test_cli_unknown_set_key_exits_2_without_traceback() -> None:
    result = CliRunner().invoke(app, ["run", "--set", "gen.chanels=8", "--dry-run"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "channels" in result.output


def test_cli_errors_print_paths_verbatim_not_as_emoji(tmp_path: Path) -> None:
    missing = tmp_path / "my:fire:pic.jpg"
    result = CliRunner().invoke(app, ["run", "--style", str(missing), "--dry-run"])
    assert result.exit_code == 1 and str(missing) in result.output and "\U0001f525" not in result.output


def test_cli_resume_continues_to_the_new_total(tmp_path: Path) -> None:
    args = ["run", "--gen", "dcgan", "--disc", "dcgan", "--adv", "lsgan", "--feat", "none", "--loss", "tv",
            "--size", "32", "--batch", "2", "--steps", "2", "--out", str(tmp_path), "--quiet"]
    assert CliRunner().invoke(app, args).exit_code == 0
    r = CliRunner().invoke(app, ["run", "--resume", str(tmp_path), "--steps", "4", "--quiet"])
    assert r.exit_code == 0, r.output
    assert ckpt.read_meta(tmp_path / "last.safetensors")["step"] == 4


def test_a_bad_new_length_on_resume_is_one_line(tmp_path: Path, reg: Registry) -> None:
    args = ["run", "--gen", "dcgan", "--disc", "dcgan", "--adv", "lsgan", "--feat", "none", "--loss", "tv",
            "--size", "32", "--batch", "2", "--steps", "1", "--out", str(tmp_path), "--quiet"]
    assert CliRunner().invoke(app, args).exit_code == 0
    for steps in ("0", "-3"):
        r = CliRunner().invoke(app, ["run", "--resume", str(tmp_path), "--steps", steps, "--quiet"])
        assert r.exit_code == 2 and "Traceback" not in r.output and "train.steps must be at least 1" in r.output
    for call in ({"resume": tmp_path}, {"out": tmp_path / "new"}):
        with pytest.raises(ConfigError, match="at least 1"):
            train(**call, steps=0, registry=reg)  # type: ignore[arg-type]


def test_a_run_config_made_in_python_may_use_short_names(reg: Registry, tmp_path: Path) -> None:
    """RunConfig(gen="encdec", losses={"tv": 1e-4}) trains as the resolved full names would, and is validated."""
    from stylezoo.core.runs.runconfig import DataConfig, TrainConfig

    data = DataConfig(content="samples:content", style="samples:style/starry_night.jpg")
    rc = RunConfig(gen="encdec", disc="patch", adv="lsgan", gp="none", feat="", losses={"tv": 1e-4},
                   set={"gen": {"channels": "8", "n_res": 1}, "tv": {}}, train=TrainConfig(**TINY), data=data)
    tr = Trainer(rc, tmp_path / "run", registry=reg)
    assert tr.rc.set["gen"] == {"channels": 8, "n_res": 1}  # typed as resolve() types them
    assert (tr.rc.gen, tr.rc.gp, list(tr.rc.losses), list(tr.rc.set)) == ("gen/encdec", "gp/none", ["loss/tv"],
                                                                       ["gen", "loss/tv"])
    assert "losses tv 0.0001" in tr.describe()
    with pytest.raises(CompositionError, match="needs a discriminator"):  # validated as resolve() validates
        Trainer(RunConfig(gen="encdec", disc="", adv="lsgan", feat="", losses={}, data=data), tmp_path / "x",
                registry=reg)


def test_a_new_run_into_a_folder_holding_a_run_is_refused(tmp_path: Path, reg: Registry) -> None:
    args = ["run", "--gen", "dcgan", "--disc", "dcgan", "--adv", "lsgan", "--feat", "none", "--loss", "tv",
            "--size", "32", "--batch", "2", "--steps", "2", "--out", str(tmp_path), "--quiet"]
    assert CliRunner().invoke(app, args).exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    r = CliRunner().invoke(app, [*args[:2], "encdec", *args[3:]])  # another generator, same --out
    assert r.exit_code == 2 and "already holds a run" in r.output and f"--resume {tmp_path}" in r.output
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before  # untouched
    assert "gen/dcgan" in (tmp_path / "config.toml").read_text()
    with pytest.raises(ConfigError, match="already holds a run"):
        train(tiny(reg, NOISE, adv="bce"), out=tmp_path, registry=reg)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "samples" / "mine.png").write_text("mine")  # a user's file in a run's folder stays too
    r = CliRunner().invoke(app, [*args, "--data", str(tmp_path / "nowhere"), "--overwrite"])  # a typo
    assert r.exit_code != 0 and "nowhere" in r.output
    assert ckpt.read_meta(tmp_path / "last.safetensors")["step"] == 2  # the old run is still there
    about_old = ["eval.jsonl", "last.onnx", "last.onnx.parity.json", "best.torchscript"]  # eval's and export's
    for name in about_old:
        (tmp_path / name).write_text("about the old run")
    r = CliRunner().invoke(app, [*args[:2], "encdec", *args[3:], "--overwrite"])
    assert r.exit_code == 0, r.output
    assert "gen/encdec" in (tmp_path / "config.toml").read_text() and (tmp_path / "notes.txt").read_text() == "mine"
    assert not [n for n in about_old if (tmp_path / n).exists()]  # the new run's report shows no stale scores
    assert (tmp_path / "samples" / "mine.png").read_text() == "mine"
    assert ckpt.read_meta(tmp_path / "last.safetensors")["composition"]["gen"] == "gen/encdec"
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 2  # the old run's lines are gone, not appended to
    old = [p for p in (tmp_path / "checkpoints").glob("*.safetensors")
           if ckpt.read_meta(p)["composition"]["gen"] != "gen/encdec"]
    assert not old
    r = CliRunner().invoke(app, ["run", "--resume", str(tmp_path), "--overwrite"])
    assert r.exit_code == 2 and "does not go with --resume" in r.output
    r = CliRunner().invoke(app, ["run", "--resume", str(tmp_path), "--lr", "1e-5", "--set", "gen.channels=4",
                                 "--steps", "9"])  # were ignored without a word
    assert r.exit_code == 2 and "--set, --lr cannot change a resumed run" in r.output
    assert ckpt.read_meta(tmp_path / "last.safetensors")["step"] == 2  # nothing ran
    empty = tmp_path.parent / "empty-out"
    empty.mkdir()  # an empty folder is fine
    assert train(tiny(reg, NOISE, adv="bce"), out=empty, registry=reg) == empty / "last.safetensors"


def test_resume_at_its_total_trains_nothing_writes_nothing_and_says_so(tmp_path: Path, reg: Registry,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    last = train(tiny(reg, NOISE, adv="bce"), out=tmp_path, registry=reg)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    for steps in (1, 2):
        with caplog.at_level("WARNING", logger="stylezoo"):
            assert train(resume=tmp_path, steps=steps, registry=reg) == last
        assert "nothing to train" in caplog.text and "larger --steps" in caplog.text
        caplog.clear()
    for steps in ("1", "2"):  # a dry run of it says the same and runs no step either
        with caplog.at_level("WARNING", logger="stylezoo"):
            r = CliRunner().invoke(app, ["run", "--resume", str(tmp_path), "--steps", steps, "--dry-run"])
        assert r.exit_code == 0 and "one step" not in r.output, r.output
        assert f"{tmp_path} is already at step 2" in caplog.text and "nothing to train" in caplog.text
        caplog.clear()
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before
    assert ckpt.read_meta(last)["step"] == 2
    with pytest.raises(ConfigError, match="not both"):
        train(tiny(reg, NOISE, adv="bce"), resume=tmp_path, registry=reg)


def test_stylize_of_a_folder_without_a_checkpoint_says_what_to_give(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["stylize", str(tmp_path), str(tmp_path), "-o", str(tmp_path / "out")])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "resume" not in r.output and "stylezoo run" in r.output and ".safetensors" in r.output


def test_lr_decay_falls_linearly_over_the_last_steps(reg: Registry, tmp_path: Path) -> None:
    rc = tiny(reg, NOISE, train={**TINY, "steps": 10, "lr": 1e-3, "lr_d": 4e-3, "lr_decay": 0.5})
    tr = Trainer(rc, tmp_path, registry=reg)
    assert [tr.stepper.lr_factor(s) for s in (0, 4, 5, 6, 9)] == pytest.approx([1.0, 1.0, 1.0, 0.8, 0.2])
    seen: list[tuple[float, float]] = []
    step_g = tr.opt_g.step

    def recording(*a: object, **k: object) -> object:
        seen.append((tr.opt_g.param_groups[0]["lr"], tr.opt_d.param_groups[0]["lr"]))
        return step_g(*a, **k)

    tr.opt_g.step = recording  # type: ignore[method-assign]
    tr.fit()
    assert [g for g, _ in seen] == pytest.approx([1e-3] * 6 + [8e-4, 6e-4, 4e-4, 2e-4])
    assert [d for _, d in seen] == pytest.approx([4 * g for g, _ in seen])
    with pytest.raises(ConfigError, match="lr_decay"):
        tiny(reg, NOISE, train={**TINY, "lr_decay": 1.5})
    const = Trainer(tiny(reg, NOISE, train={**TINY, "steps": 10}), tmp_path / "c", registry=reg)
    assert all(const.stepper.lr_factor(s) == 1.0 for s in range(10))


def _registry_with_gen(name: str, forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Registry:
    """The built-ins plus one inline plugin registering an image generator `name` whose output is forward(x, w)."""
    import dataclasses

    @dataclasses.dataclass
    class Cfg:
        size: int = 32

    class Gen(torch.nn.Module):
        family = "image"

        def __init__(self, cfg: Cfg) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return forward(x, self.w)

    return _one_component_registry(name, Gen, Cfg)


def _one_component_registry(name: str, cls: type, cfg: type) -> Registry:
    """The built-ins plus one inline plugin registering `cls` (config `cfg`) as `name`."""
    import types

    from stylezoo.core.components.hookspecs import hookimpl

    plug = types.ModuleType(name.replace("/", "_"))

    @hookimpl
    def register_components(register):
        register(name, cls, config=cfg)

    plug.register_components = register_components
    return Registry(plugins=(plug,), entry_points=False)


def _exploding(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    raise KeyError("tiny forward exploded")  # not a ValueError/RuntimeError: it used to escape as a traceback


@pytest.mark.parametrize("forward,err,fragment", [
    (lambda x, w: (x * w)[:, :1], "PluginError", "must return RGB images"),
    (_exploding, "CompositionError", "failed on a (1, 3, 32, 32) input"),
    (lambda x, w: (x * w)[..., :16, :], "CompositionError", "makes (16, 32) images"),
], ids=["gray", "raise", "half"])
def test_a_generator_that_cannot_make_training_images_is_named_before_work(forward, err: str, fragment: str,
                                                                           tmp_path: Path) -> None:
    from stylezoo.core import errors

    reg = _registry_with_gen("gen/bad", forward)
    rc = resolve(reg, cli={**IMAGE, "gen": "gen/bad", "set": {"disc": IMAGE["set"]["disc"]}}, losses=["tv"])
    with pytest.raises(getattr(errors, err)) as e:
        Trainer(rc, tmp_path, registry=reg)
    assert fragment in str(e.value) and "gen/bad" in str(e.value)
    assert ("--size" in str(e.value)) == (err != "PluginError")  # a channel error is not blamed on the size


def _registry_with_disc(name: str, head: Callable[[torch.Tensor], torch.Tensor]) -> Registry:
    """The built-ins plus one inline plugin registering a discriminator `name` whose output is head(2-channel map)."""
    import dataclasses

    @dataclasses.dataclass
    class Cfg:
        size: int = 32

    class Disc(torch.nn.Module):
        def __init__(self, cfg: Cfg) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 3, stride=4)

        def forward(self, image: torch.Tensor, **cond: object) -> torch.Tensor:
            return head(self.conv(image))

    return _one_component_registry(name, Disc, Cfg)


@pytest.mark.parametrize("head,shape", [
    (lambda y: y.mean((2, 3)), "(2, 2)"),  # two logits per image: trained as if each were an image's
    (lambda y: y, "(2, 2, 8, 8)"),  # a two-channel patch map
    (lambda y: y[:, :1], None), (lambda y: y[:, :1].mean((2, 3)), None), (lambda y: y[:, 0].mean((1, 2)), None),
], ids=["n2", "n2hw", "n1hw", "n1", "n"])
def test_a_discriminator_with_more_than_one_logit_channel_is_refused_naming_it(head, shape: str | None,
                                                                              tmp_path: Path) -> None:
    from stylezoo.core.errors import PluginError

    reg = _registry_with_disc("disc/two", head)
    rc = resolve(reg, cli={**IMAGE, "disc": "disc/two", "set": {"gen": IMAGE["set"]["gen"]}}, losses=["tv"])
    tr = Trainer(rc, tmp_path, registry=reg)
    if shape is None:  # one logit per image, (N,) or (N, 1), or a one-channel patch map: trains
        assert tr.fit().is_file()
        return
    with pytest.raises(PluginError) as e:
        tr.fit()
    assert "disc/two" in str(e.value) and shape in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "last.safetensors").exists()


def test_a_generator_making_nan_is_named_and_no_checkpoint_is_claimed(tmp_path: Path) -> None:
    from stylezoo.core.errors import TrainingDiverged

    reg = _registry_with_gen("gen/nan", lambda x, w: x * w * float("nan"))
    rc = resolve(reg, cli={**IMAGE, "gen": "gen/nan", "set": {"disc": IMAGE["set"]["disc"]},
                           "train": {**TINY, "steps": 5, "max_bad_steps": 2}}, losses=["tv"])
    with pytest.raises(TrainingDiverged) as e:
        train(rc, out=tmp_path / "run", registry=reg)
    msg = str(e.value)
    assert "the generator's output (gen/nan)" in msg and "No step had trained, so nothing was saved" in msg
    assert ", so," not in msg and "The generator gen/nan itself produced NaN/Inf" in msg
    assert "lower the learning rate" not in msg  # a learning rate is not why a generator multiplies by NaN
    assert not (tmp_path / "run" / "last.safetensors").exists()  # untrained weights are not passed off as a run
    # --dry-run applies the check the real first step applies: it fails too, naming the generator
    from typer.testing import CliRunner

    import stylezoo.core.components.registry as registry_mod
    from stylezoo.core.cli import app

    old, registry_mod._default = registry_mod._default, reg
    try:
        r = CliRunner().invoke(app, ["run", "--gen", "gen/nan", "--disc", "patch", "--feat", "none", "--gp", "none",
                                     "--loss", "tv", "--size", "32", "--batch", "2", "--set", "disc.n_layers=2",
                                     "--set", "disc.channels=8", "--content", "samples:content",
                                     "--style", "samples:style", "--dry-run"])
    finally:
        registry_mod._default = old
    assert (r.exit_code == 1 and "--dry-run: the first step had a NaN/Inf" in r.output
            and "gen/nan" in r.output), r.output


def test_progress_line_shows_the_data_wait_only_when_it_matters() -> None:
    from stylezoo.core.cli.run import _fmt

    logs = {"g/loss": 1.0, "time/images_per_s": 10.0, "time/step_s": 0.2}
    assert "data" not in _fmt(logs | {"time/data_s": 0.01})  # 5%
    assert _fmt(logs | {"time/data_s": 0.1}).endswith("10.0 img/s (data 50%)")


def test_progress_bar_appears_at_the_first_step_and_logs_get_whole_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import re

    from rich.console import Console

    from stylezoo.core.cli import progress as P

    def console(terminal: bool) -> io.StringIO:
        buf = io.StringIO()
        monkeypatch.setattr(P, "err", Console(file=buf, force_terminal=terminal, width=80, highlight=False))
        return buf

    buf = console(True)
    with P.StepProgress("train"):
        pass  # set-up failed before step 1: nothing was drawn (it used to leave an empty line before the error)
    assert buf.getvalue() == ""
    long = " ".join(f"loss{i}=1.23e+04" for i in range(12))
    with P.StepProgress("train") as update:
        for step in range(1, 6):
            update(step, 5, long)
    last = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", buf.getvalue()).replace("\r", "\n").strip().splitlines()[-1]
    assert "5/5" in last and "━" in last and "loss0=" in last and last.endswith("…") and len(last) <= 80
    buf = console(False)  # a log file or CI: plain lines, whatever their length
    with P.StepProgress("train") as update:
        for step in range(1, 26):
            update(step, 25, long)
    lines = buf.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["1/25", "10/25", "20/25", "25/25"]
    assert all(line.endswith(long) for line in lines)


def test_a_length_in_steps_beats_epochs_and_resume_can_extend_an_epoch_run(reg: Registry, tmp_path: Path) -> None:
    """--steps on a recipe sized in epochs sets the length; a run sized in epochs resumes to a new --steps."""
    assert resolve(reg, recipe="portrait-sketch").train.epochs > 0
    for kw in ({"cli": {"train": {"steps": 7}}}, {"sets": ["train.steps=7"]}):
        t = resolve(reg, recipe="portrait-sketch", **kw).train
        assert (t.steps, t.epochs) == (7, 0), kw
    assert resolve(reg, recipe="portrait-sketch", cli={"train": {"epochs": 2}}).train.epochs == 2
    r = CliRunner().invoke(app, ["run", "--steps", "3", "--epochs", "4", "--dry-run"])  # --epochs was dropped silently
    assert r.exit_code == 2 and "not both" in r.output
    noise = {"gen": "dcgan", "disc": "dcgan", "feat": "", "gp": "none",
             "set": {"gen": {"channels": 8, "latent_dim": 16}, "disc": {"channels": 8}},
             "train": {**TINY, "epochs": 1}, "data": {"data": "samples:content"}}
    rc = resolve(reg, cli=noise, losses=["tv"])
    n = len(list((Path(rc.data.resolved().data)).iterdir()))
    last = train(rc, out=tmp_path / "run", registry=reg)
    meta = ckpt.read_meta(last)
    assert meta["step"] == -(-n // 2)  # one epoch of batch 2
    assert (meta["run"]["train"]["steps"], meta["run"]["train"]["epochs"]) == (meta["step"], 0)  # as trained
    last = train(resume=tmp_path / "run", steps=meta["step"] + 2, registry=reg)
    assert ckpt.read_meta(last)["step"] == meta["step"] + 2
    # steps= sets a new run's length in Python too, as --steps does on the command line
    assert ckpt.read_meta(train(rc, out=tmp_path / "api", steps=3, registry=reg))["step"] == 3


def test_a_length_given_both_ways_on_the_command_line_is_refused_set_or_flag(reg: Registry) -> None:
    """--steps with --set train.epochs (or any mix of the flags and --set) let epochs win without a word."""
    for kw in ({"cli": {"train": {"steps": 3}}, "sets": ["train.epochs=4"]},
               {"cli": {"train": {"epochs": 4}}, "sets": ["train.steps=3"]},
               {"sets": ["train.steps=3", "train.epochs=4"]}):
        with pytest.raises(ConfigError, match="not both"):
            resolve(reg, recipe="portrait-sketch", **kw)  # type: ignore[arg-type]
    r = CliRunner().invoke(app, ["run", "--steps", "3", "--set", "train.epochs=4", "--dry-run"])
    assert r.exit_code == 2 and "not both" in r.output and "--set train.epochs" in r.output, r.output
    t = resolve(reg, recipe="portrait-sketch", cli={"train": {"steps": 3}}, sets=["train.lr=1e-4"]).train
    assert (t.steps, t.epochs) == (3, 0)  # other --set train.* values still go with --steps


def test_loss_terms_are_summed_in_name_order_whatever_order_they_were_given(reg: Registry, tmp_path: Path) -> None:
    """Checkpoints keep the losses as a sorted table; summing in that order makes a resumed run add its terms
    in the same order as the run it continues."""
    rc = resolve(reg, cli={"gen": "encdec", "disc": "patch", "feat": "vgg16", "gp": "none", "train": TINY,
                           "set": {"gen": {"channels": 8, "n_res": 1}, "disc": {"n_layers": 2},
                                   "feat": {"weights": "random"}}},
                 losses=["tv", "gram", "content"])
    assert list(rc.losses) == ["loss/tv", "loss/gram", "loss/content"]
    tr = Trainer(rc, tmp_path, registry=reg)
    assert list(tr.plan.g_terms) == ["loss/content", "loss/gram", "loss/tv"]


def test_a_noise_generator_says_when_content_is_not_what_it_learns(reg: Registry, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """faces-dcgan-gram sets data = the bundled photos; --content FACES alone would be ignored in silence."""
    from stylezoo.core.runs.runconfig import SAMPLES

    run = {"gen": "dcgan", "disc": "dcgan", "feat": "", "gp": "none", "train": TINY,
           "set": {"gen": {"channels": 8, "latent_dim": 16}, "disc": {"channels": 8}},
           "data": {"data": str(SAMPLES / "content"), "content": str(SAMPLES / "style")}}
    with caplog.at_level("WARNING"):
        tr = Trainer(resolve(reg, cli=run, losses=["tv"]), tmp_path / "a", registry=reg)
    assert "--content" in caplog.text and "give --data" in caplog.text
    assert tr.data.real is not None
    assert all(f.parent == SAMPLES / "content" for f in tr.data.real.files)  # it learns --data, as it said
    caplog.clear()
    with caplog.at_level("WARNING"):
        Trainer(resolve(reg, cli={**run, "data": {"data": str(SAMPLES / "content")}}, losses=["tv"]), tmp_path / "b",
                registry=reg)
    assert "--content" not in caplog.text


def test_a_streak_of_bad_steps_goes_on_across_a_resume(reg: Registry, tmp_path: Path) -> None:
    """Otherwise a run stopped and resumed in the middle of NaN steps would get max_bad_steps more chances."""
    tr = Trainer(tiny(reg, IMAGE), tmp_path, registry=reg)
    tr.train_step(0)
    tr.step, tr.bad_steps = 1, 2
    tr.save_checkpoint(keep=False)
    assert ckpt.read_meta(tmp_path / "last.safetensors")["bad_steps"] == 2
    again = Trainer(tiny(reg, IMAGE), tmp_path / "again", registry=reg, resume_from=tmp_path / "last.safetensors")
    assert again.bad_steps == 2
    tr.bad_steps = 0
    tr.save_checkpoint(keep=False)  # no streak: nothing stored, old checkpoints read as 0
    assert "bad_steps" not in ckpt.read_meta(tmp_path / "last.safetensors")


@pytest.mark.parametrize("base", [NOISE, IMAGE], ids=["noise", "image"])
def test_each_extra_discriminator_update_draws_its_own_batch(reg: Registry, tmp_path: Path, base: dict) -> None:
    rc = tiny(reg, base, sets=["train.d_steps=3"])
    tr = Trainer(rc, tmp_path, registry=reg)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    judge = tr.stepper._judge
    tr.stepper._judge = lambda real, fake, cond: (seen.append((real.clone(), fake.clone())), judge(real, fake, cond))[1]
    d_before = [p.detach().clone() for p in tr.components.disc.parameters()]
    tr.train_step(0)
    assert len(seen) == 3
    for a in range(3):
        for b in range(a + 1, 3):
            assert not torch.equal(seen[a][0], seen[b][0]), "two critic updates saw the same real images"
            assert not torch.equal(seen[a][1], seen[b][1]), "two critic updates saw the same fakes"
    # the last update is on the step's own batch, the one the generator then trains on
    assert torch.equal(seen[-1][0], tr.stepper.batch(0)[1])
    assert any(not torch.equal(a, b) for a, b in zip(d_before, tr.components.disc.parameters()))
    seen.clear()
    tr.stepper.train = dataclasses.replace(tr.stepper.train, d_steps=1)
    tr.train_step(1)
    assert len(seen) == 1 and torch.equal(seen[0][0], tr.stepper.batch(1)[1])


def test_relative_data_paths_are_stored_absolute_so_a_resume_from_elsewhere_trains_on_the_same_images(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from stylezoo.core.runs.runconfig import SAMPLES

    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    shutil.copytree(SAMPLES / "content", here / "photos")
    (elsewhere / "photos").mkdir(parents=True)
    shutil.copy(SAMPLES / "style" / "starry_night.jpg", elsewhere / "photos")  # same relative name, other images
    monkeypatch.chdir(here)
    args = ["run", "--gen", "encdec", "--disc", "none", "--adv", "none", "--feat", "none", "--loss", "tv",
            "--set", "gen.channels=8", "--set", "gen.n_res=1", "--content", "photos", "--size", "32",
            "--batch", "2", "--steps", "2", "--out", str(tmp_path / "run"), "--quiet"]
    assert CliRunner().invoke(app, args).exit_code == 0
    stored = tomllib.loads((tmp_path / "run" / "config.toml").read_text())["data"]["content"]
    assert stored == str(here / "photos")
    monkeypatch.chdir(elsewhere)
    tr = Trainer(RunConfig.from_dict(tomllib.loads((tmp_path / "run" / "config.toml").read_text())),
                 tmp_path / "run2")
    assert tr.data.content is not None and all(f.parent == here / "photos" for f in tr.data.content.files)
    r = CliRunner().invoke(app, ["run", "--resume", str(tmp_path / "run"), "--steps", "3", "--quiet"])
    assert r.exit_code == 0, r.output
    # and the Python API makes a hand-built config absolute too
    rc = RunConfig.from_dict(tomllib.loads((tmp_path / "run" / "config.toml").read_text()))
    rc = dataclasses.replace(rc, data=dataclasses.replace(rc.data, content="photos"))
    assert Trainer(rc, tmp_path / "run3").rc.data.content == str(elsewhere / "photos")


def test_a_run_whose_data_moved_resumes_from_its_new_place_and_only_then(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    from stylezoo.core.runs.runconfig import SAMPLES

    shutil.copytree(SAMPLES / "content", tmp_path / "photos")
    run = tmp_path / "run"
    args = ["run", "--gen", "encdec", "--disc", "none", "--adv", "none", "--feat", "none", "--loss", "tv",
            "--set", "gen.channels=8", "--set", "gen.n_res=1", "--content", str(tmp_path / "photos"), "--size", "32",
            "--batch", "2", "--steps", "1", "--out", str(run), "--quiet"]
    assert CliRunner().invoke(app, args).exit_code == 0
    # still in place: the data cannot change, and a flag it was trained without cannot be added
    r = CliRunner().invoke(app, ["run", "--resume", str(run), "--steps", "2", "--content", str(SAMPLES / "content")])
    assert r.exit_code == 2 and "still at" in r.output
    r = CliRunner().invoke(app, ["run", "--resume", str(run), "--steps", "2", "--pairs", str(SAMPLES / "style")])
    assert r.exit_code == 2 and "trained without it" in r.output
    (tmp_path / "photos").rename(tmp_path / "moved")
    r = CliRunner().invoke(app, ["run", "--resume", str(run), "--steps", "2"])
    assert r.exit_code == 1 and "no longer there" in r.output and f"--resume {run} --content NEW_PLACE" in r.output
    for dry in (["--dry-run"], []):  # the warning that the data moved, once (it was printed twice)
        caplog.clear()
        with caplog.at_level("WARNING", logger="stylezoo"):
            r = CliRunner().invoke(app, ["run", "--resume", str(run), "--steps", "2", "--content",
                                         str(tmp_path / "moved"), "--quiet", *dry])
        assert r.exit_code == 0, r.output
        said = [m for m in caplog.messages if "is no longer there" in m]
        assert len(said) == 1 and str(tmp_path / "moved") in said[0], said
    assert ckpt.read_meta(run / "last.safetensors")["run"]["data"]["content"] == str(tmp_path / "moved")
    # the Python API agrees (paths as Path or str)
    assert train(resume=run, steps=3, data={"content": tmp_path / "moved"}) == run / "last.safetensors"  # type: ignore[dict-item]
    # a folder whose name holds glob characters is a folder, not a pattern that matches nothing
    (tmp_path / "moved").rename(tmp_path / "photos [2023]")
    train(resume=run, steps=4, data={"content": str(tmp_path / "photos [2023]")})
    assert train(resume=run, steps=5) == run / "last.safetensors"


def test_a_run_says_in_one_line_what_it_trains_on_what_and_where(reg: Registry, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    rc = tiny(reg, NOISE, adv="wgan", gp="r1", losses=["tv:0.5"], sets=["train.precision=fp32"])
    with caplog.at_level("INFO", logger="stylezoo"):
        Trainer(rc, tmp_path, registry=reg).fit()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("training ")]
    assert lines == [f"training gen/dcgan + disc/dcgan (loss/wgan, gp/r1); losses tv 0.5 | 32 px, batch 2, 2 steps | "
                     f"cpu, fp32 | {tmp_path}"]
    caplog.clear()
    with caplog.at_level("INFO", logger="stylezoo"):
        train(resume=tmp_path, steps=3, registry=reg)
    assert any(r.getMessage().startswith("resuming ") and "from step 2 to 3" in r.getMessage()
               for r in caplog.records)


def test_a_generator_whose_output_never_matches_its_input_is_named_not_sent_to_another_size(tmp_path: Path) -> None:
    """'Choose another --size' only where another size works; a generator that halves every input is a bug."""
    from stylezoo.core.errors import CompositionError, PluginError

    halves = _registry_with_gen("gen/halves", lambda x, w: torch.nn.functional.avg_pool2d(x * w, 2))
    rc = resolve(halves, cli={**IMAGE, "gen": "gen/halves", "set": {"disc": IMAGE["set"]["disc"]}}, losses=["tv"])
    with pytest.raises(PluginError) as e:
        Trainer(rc, tmp_path / "a", registry=halves)
    assert "gen/halves" in str(e.value) and "does not follow its declared sizes" in str(e.value)
    assert "another --size" not in str(e.value)
    # a generator that works at other sizes (multiples of 8 here) still hears it
    crops = _registry_with_gen("gen/crops", lambda x, w: (x * w)[..., : x.shape[-2] // 8 * 8, : x.shape[-1] // 8 * 8])
    crops.get("gen/crops").factory.size_multiple = 8
    rc = resolve(crops, cli={**IMAGE, "gen": "gen/crops", "set": {"disc": IMAGE["set"]["disc"]},
                             "train": {**TINY, "size": 30}}, losses=["tv"])
    with pytest.raises(CompositionError, match=r"Choose another --size \(a multiple of 8\)"):
        Trainer(rc, tmp_path / "b", registry=crops)
