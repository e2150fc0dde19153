"""`stylezoo run`: train a composition picked by name (a thin layer over stylezoo.core.training.engine)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from .messages import printable
from .progress import StepProgress

err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)  # paths stay whole and literal


def run_cmd(
    gen: Annotated[str | None, typer.Option("--gen", help="Generator, e.g. dcgan, encdec.")] = None,
    disc: Annotated[str | None, typer.Option("--disc", help="Discriminator (or none).")] = None,
    feat: Annotated[str | None, typer.Option("--feat", help="Feature extractor (or none).")] = None,
    adv: Annotated[str | None, typer.Option("--adv", help="Adversarial loss: bce, lsgan, hinge, wgan, none.")] = None,
    gp: Annotated[str | None, typer.Option("--gp", help="Gradient penalty: none, r1, wgan-gp, dragan.")] = None,
    loss: Annotated[list[str] | None, typer.Option(
        "--loss", help="NAME[:weight], repeatable; replaces the recipe's terms (none: no terms, adversarial loss "
        "only).")] = None,
    recipe: Annotated[str | None, typer.Option("--recipe", help="Named recipe from registry.toml.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="A TOML file with the recipe schema.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="ROLE.FIELD=VALUE override, repeatable.")] = None,
    data: Annotated[str | None, typer.Option("--data", help="Real / style-domain images (folder, file, glob).")] = None,
    style: Annotated[str | None, typer.Option("--style", help="Style image(s) for the style losses.")] = None,
    content: Annotated[str | None, typer.Option(
        "--content", help="Content images for image-to-image generators.")] = None,
    pairs: Annotated[str | None, typer.Option(
        "--pairs",
        help="Paired data: a folder with photo/ and sketch/ (or two sub-folders), matched by file name.")] = None,
    input_: Annotated[str | None, typer.Option(
        "--input", help="Paired data: folder of generator inputs (with --target).")] = None,
    target: Annotated[str | None, typer.Option(
        "--target", help="Paired data: folder of targets, same file names as --input.")] = None,
    size: Annotated[int | None, typer.Option("--size")] = None,
    batch: Annotated[int | None, typer.Option("--batch")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Total steps (also when resuming).")] = None,
    epochs: Annotated[float | None, typer.Option("--epochs")] = None,
    lr: Annotated[float | None, typer.Option("--lr")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:1 ...")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="fp32, bf16 or auto.")] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Refuse unreadable images instead of skipping them.")] = False,
    log: Annotated[list[str] | None, typer.Option(
        "--log", help="Also log to: tensorboard (RUN/tb/: losses, metrics, sample grids, the config; pip install "
        "'stylezoo[tensorboard]'). metrics.jsonl is always written.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Run directory (default runs/<time>-<recipe>).")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue the run in this directory.")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace the run already in --out: its files, eval log and default exports are deleted "
        "first; other files stay.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Build everything, run one step, report; write nothing.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar; log lines instead.")] = False,
    nproc: Annotated[int | None, typer.Option(
        "--nproc", help="Train in N processes on this machine (DistributedDataParallel, started with torchrun; gloo "
        "on CPU, NCCL on GPUs). For several machines run torchrun yourself: docs/distributed.md.")] = None,
) -> None:
    """Train a GAN-based style-transfer model from components picked by name."""
    from ..components.registry import default_registry
    from ..runs.runconfig import resolve
    from ..runs.rundir import default_out, resume_config
    from ..runtime import distributed as dist
    from ..training.api import train
    from ..training.engine import Trainer

    env = dist.from_env()  # under torchrun: this worker's rank; only rank 0 shows progress and reports
    dist.quiet_worker_output()  # started by --nproc: ranks other than 0 write to files the launcher reads on failure
    quiet = quiet or env.rank != 0
    from .messages import log_to_stderr

    log_to_stderr(logging.INFO if not quiet else logging.WARNING)
    reg = default_registry()
    resume_from = None
    moved: dict[str, str] = {}
    if overwrite and resume is not None:
        from ..errors import UsageError

        raise UsageError("--overwrite replaces the run in --out with a new one; it does not go with --resume.")
    if resume is not None:
        given = {f"--{k.rstrip('_').replace('_', '-')}": v for k, v in dict(
            gen=gen, disc=disc, feat=feat, adv=adv, gp=gp, loss=loss, recipe=recipe, config=config, set_=set_,
            size=size, batch=batch, epochs=epochs, lr=lr, seed=seed, device=device, precision=precision,
            log=log, out=out).items() if v not in (None, [], ())}
        # data that moved since the run was trained may be given its new place (rundir.relocate_data)
        moved = {k: str(v) for k, v in dict(data=data, style=style, content=content, pairs=pairs, input=input_,
                                            target=target).items() if v is not None}
        if strict:
            given["--strict"] = True
        if given:  # they used to be ignored without a word: the checkpoint's own configuration decides
            from ..errors import UsageError

            raise UsageError(f"{', '.join(given)} cannot change a resumed run: --resume continues {resume} as its "
                             "checkpoint describes it (only --steps, the new total, may be given, and the new "
                             "place of data that moved). To train with other settings, start a new run (--out DIR).")
        # checked here, before any work; train() (here or in --nproc's workers) reads it again and says then
        # that data moved, so the warning prints once: here only for a dry run, which calls no train()
        rc, resume_from = resume_config(resume, steps, moved=moved, warn=dry_run)
    else:
        if steps is not None and epochs is not None:
            from ..errors import UsageError

            raise UsageError("Give the run's length as --steps or as --epochs, not both (--steps would win).")
        cli: dict[str, Any] = {k: v for k, v in dict(gen=gen, disc=disc, feat=feat, adv=adv, gp=gp).items()
                               if v is not None}
        train_opts = {k: v for k, v in dict(size=size, batch=batch, steps=steps, epochs=epochs, lr=lr, seed=seed,
                                             device=device, precision=precision, log=log).items() if v is not None}
        data_opts: dict[str, Any] = {k: v for k, v in dict(data=data, style=style, content=content, pairs=pairs,
                                                           input=input_, target=target).items() if v is not None}
        if strict:
            data_opts["strict"] = True
        if train_opts:
            cli["train"] = train_opts
        if data_opts:
            cli["data"] = data_opts
        rc = resolve(reg, recipe=recipe, config_file=config, cli=cli, sets=list(set_ or []), losses=list(loss or []))
    if dry_run:
        if nproc is not None and nproc > 1:
            from ..training.assembly import check_batch_split

            check_batch_split(rc.train.batch, nproc)
        _dry_run(rc, resume_from, resume)
        return
    if nproc is not None and nproc != 1 and not env.distributed:  # the same command in nproc workers
        _preflight(rc, nproc, out if resume is None and not overwrite else None, resume_from)
        raise typer.Exit(dist.launch(nproc, _without_nproc(sys.argv[1:])))
    # distributed with no --out: rank 0 names the directory (engine.train broadcasts it)
    out_dir = resume if resume is not None else (out or (None if env.distributed else default_out(rc)))
    previous = _sigterm_as_interrupt()
    try:
        with StepProgress("train", plain=quiet) as update:
            last = train(rc if resume is None else None, out=out_dir, resume=resume, steps=steps, registry=reg,
                         overwrite=overwrite, data=moved if resume is not None else None,
                         progress=((lambda step, total, logs: update(step, total, _fmt(logs)))
                                   if env.rank == 0 else None))
        out_dir = last.parent
    except KeyboardInterrupt as e:  # 130 for Ctrl-C, 143 for SIGTERM (errors.Interrupted)
        if env.rank == 0:
            err.print(f"[yellow]interrupted[/]: {escape(printable(_saved_where(out_dir)))}")
        raise typer.Exit(getattr(e, "exit_code", 130)) from None
    except RuntimeError as e:
        lost = dist.peer_lost(e) if env.distributed else None
        if lost is None:
            raise
        from ..errors import PeerLost

        raise PeerLost(f"rank {env.rank} lost its connection to another worker ({lost}), which most likely failed "
                       "first: its error says why (under torchrun yourself: look in every node's output).") from None
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGTERM, previous)
    if env.rank == 0:  # a run whose samples failed (core/training/health.py) said why above: not a plain `done`
        done = "[yellow]done, but the samples failed (warning above)[/]" if _samples_failed(last) else "[green]done[/]"
        Console(highlight=False).print(f"{done}: {last}  samples: {Path(out_dir) / 'samples' / 'final.png'}")
    del Trainer


def _samples_failed(last: Path) -> bool:
    """Whether the run's final checkpoint records a warning about its samples."""
    from ..errors import StylezooError
    from ..files.checkpoint import read_meta

    try:
        samples = read_meta(last).get("samples")
    except (StylezooError, OSError):
        return False
    return isinstance(samples, dict) and bool(samples.get("warning"))


def _saved_where(out_dir: Any) -> str:
    """What an interrupted run left to resume from, for the message after Ctrl-C or SIGTERM."""
    from ..errors import StylezooError
    from ..files.checkpoint import read_meta
    from ..runs.rundir import newest_valid_checkpoint

    try:
        path = newest_valid_checkpoint(Path(out_dir)) if out_dir else None
        step = read_meta(path)["step"] if path else None
    except (StylezooError, OSError, KeyError):
        path = step = None
    if path is None:
        return ("stopped before a first step was saved; nothing to resume (start it again with --overwrite, or "
                "give another --out).")
    return f"the run is saved at step {step} in {path}; continue with `stylezoo run --resume {out_dir}`."


def _preflight(rc: Any, nproc: int, out: Path | None, resume_from: Path | None) -> None:
    """What every worker would refuse, checked once here before torchrun starts `nproc` of them: the batch
    split, the output folder, then a whole set-up on the CPU (components, weights, data, the checkpoint to
    resume). One line here instead of a worker set-up per rank failing the same way."""
    import dataclasses
    import tempfile

    from ..runs.rundir import check_new_out
    from ..runtime.devices import pick_device
    from ..training.assembly import check_batch_split
    from ..training.engine import Trainer

    if nproc < 1:
        from ..errors import ConfigError

        raise ConfigError(f"--nproc {nproc}: give the number of processes, 1 or more.")
    check_batch_split(rc.train.batch, nproc)
    pick_device(rc.train.device)  # the set-up below runs on the CPU: check the device asked for here
    if out is not None:
        check_new_out(out)
    cpu = dataclasses.replace(rc, train=dataclasses.replace(rc.train, device="cpu", compile=False))
    with tempfile.TemporaryDirectory() as tmp:
        Trainer(cpu, tmp, resume_from=resume_from, rank=0, world=1)


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line minus `--nproc N` / `--nproc=N` (what each torchrun worker runs)."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def _sigterm_as_interrupt() -> Any:
    """Treat SIGTERM (a scheduler or `timeout` stopping the job) like Ctrl-C: save, then exit.

    Returns the previous handler (None when not on the main thread, where signals cannot be set)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        from ..errors import Interrupted

        raise Interrupted(signum)

    return signal.signal(signal.SIGTERM, handler)


def _dry_run(rc: Any, resume_from: Path | None = None, run: Path | None = None) -> None:
    """Build everything (from the checkpoint of the run `run` when resuming), run one step, print a table;
    nothing is written. A resume already at its --steps runs no step: it says so, as the real one does."""
    import tempfile

    from rich.table import Table

    from ..training.engine import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(rc, tmp, resume_from=resume_from)
        if tr.nothing_to_train(run):
            return
        gin = tr.stepper.batch(tr.step)[2]
        logs = tr.checked_step(tr.step)
        if tr.stepper.bad:  # a real run would skip this update: the dry run fails as the run would end
            from ..errors import TrainingDiverged

            raise TrainingDiverged(f"--dry-run: the first step had a NaN/Inf in {'; '.join(tr.stepper.bad)}, so its "
                                   f"update would be skipped. {tr._nan_advice()}")
        fake = tr.components.gen(gin)
    where = f", resumed from {resume_from} at step {tr.step}" if resume_from is not None else ""
    table = Table(title=f"dry run: recipe {rc.recipe}{where}")
    for col in ("role", "component", "parameters", "notes"):
        table.add_column(col)
    for role in ("gen", "disc", "feat", "adv", "gp"):
        m = getattr(tr.components, role)
        if m is None:
            continue
        n = sum(p.numel() for p in m.parameters())
        note = ""
        if role == "gen":
            note = f"in {tuple(gin.shape)} -> out {tuple(fake.shape)}"
            if tr.ema is not None:
                note += f"; weight average (ema {tr.train_cfg.ema:g}) for samples and stylize"
        if role == "feat":
            note = (f"weights {getattr(m, 'weights', '?')}; "
                    f"layers {', '.join(sorted(set(sum(tr.plan.layers.values(), ()))))}")
        table.add_row(role, getattr(rc, role), f"{n:,}", note)
    for name, t in tr.components.losses.items():
        table.add_row("loss", name, "", f"weight {t.weight:g}")
    c = Console(highlight=False)
    c.print(table)
    c.print("one step: " + ", ".join(f"{k}={v:.4g}" for k, v in logs.items()))


def _fmt(logs: dict[str, float]) -> str:
    parts = [f"D={logs['d/loss']:.3g}"] if "d/loss" in logs else []
    parts.append(f"G={logs.get('g/loss', 0.0):.3g}")
    parts += [f"{k.split('/')[-1]}={logs[k]:.3g}" for k in logs if k.startswith("g/") and k != "g/loss"][:5]
    s = " ".join(parts) + f" {logs.get('time/images_per_s', 0):.1f} img/s"
    wait, step = logs.get("time/data_s", 0.0), logs.get("time/step_s", 0.0)
    return s + (f" (data {100 * wait / step:.0f}%)" if step > 0 and wait > 0.1 * step else "")


def register(app: typer.Typer) -> None:
    app.command("run")(run_cmd)
