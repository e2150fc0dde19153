"""`stylezoo stylize`: apply a trained generator to images, folders and globs (or sample a noise generator)."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from .messages import printable

err = Console(stderr=True, highlight=False, soft_wrap=True)


def stylize_cmd(
    checkpoint: Annotated[str | None, typer.Argument(
        help="A .safetensors checkpoint or a run directory (its newest checkpoint); with --model, the first input.",
        show_default=False)] = None,
    inputs: Annotated[list[str] | None, typer.Argument(
        help="Image files, folders (recursive) or globs. Images in folders and globs that stylize wrote (earlier "
        "outputs, marked in their EXIF) are skipped; name such a file itself to stylize it again.")] = None,
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Output folder (names and sub-folders kept), or a file for one input.")] = Path("stylized"),
    size: Annotated[int | None, typer.Option(
        "--size", help="Resize the shorter side to this first (default: keep the input size; an input smaller than "
        "the checkpoint's training size is stylized at that size and resized back).")] = None,
    batch: Annotated[int, typer.Option("--batch", help="Run up to this many same-size images at once.")] = 1,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    precision: Annotated[str, typer.Option(
        "--precision", help="fp32, bf16 or auto (see benchmarks/inference.py).")] = "auto",
    backend: Annotated[str, typer.Option(
        "--backend", help="torch, onnxruntime or auto (onnxruntime for 16+ images when the precision is fp32; auto "
        "precision is bf16 on CPUs with fast bfloat16, which stays on torch).")] = "auto",
    ext: Annotated[str | None, typer.Option(
        "--ext", help="Output format for a folder, e.g. png (default: the input's).")] = None,
    num: Annotated[int, typer.Option("--num", "-n", help="Noise generators: how many samples to write.")] = 8,
    seed: Annotated[int, typer.Option("--seed", help="Noise generators: the same seed gives the same images.")] = 0,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Refuse (write nothing) if any input is unreadable.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace existing images in the output folder even when stylize cannot tell they are its "
        "own (it never replaces a user's image without this).")] = False,
    keep_mode: Annotated[bool, typer.Option(
        "--keep-mode", help="Write each image in its input's mode (grey in, grey out; palette, CMYK, 16-bit) instead "
        "of colour.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    style: Annotated[list[str] | None, typer.Option(
        "--style", help="Reference-guided generators (adain): a style image; repeat to mix several.")] = None,
    style_weight: Annotated[list[float] | None, typer.Option(
        "--style-weight", help="Weight of each --style, in order (default equal).")] = None,
    alpha: Annotated[float | None, typer.Option(
        "--alpha", help="Style strength with --style: 0 = content, 1 = full style.")] = None,
    style_size: Annotated[int, typer.Option(
        "--style-size", help="Reduce --style images' shorter side to this first.")] = 512,
    style_label: Annotated[list[str] | None, typer.Option(
        "--style-label", help="Label-conditioned generators (cin): NAME, or NAME:WEIGHT repeated to mix.")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="A shipped, trained model by name (`stylezoo models`) instead of a checkpoint: every "
        "positional argument is then an input.")] = None,
    ema: Annotated[bool, typer.Option(
        "--ema/--no-ema", help="Use the checkpoint's generator weight average (runs trained with train.ema) when it "
        "has one; --no-ema: the raw trained weights.")] = True,
) -> None:
    """Restyle images with a trained generator; its composition comes from the checkpoint, no flags needed.

    Outputs keep each input's size (any size works: it is padded to the generator's multiple and cropped
    back; one whose shorter side is under the training size is stylized at that size and resized back, with a
    note, unless --size is given), EXIF orientation and alpha channel. They are colour (RGB, RGBA with alpha),
    grey inputs included: --keep-mode writes each in its input's mode instead (see
    stylezoo.core.files.images.output_mode).
    Unreadable inputs are skipped with a warning; the exit status is non-zero only if nothing was written.
    Earlier outputs (EXIF Software: stylezoo) found in input folders or globs are skipped with a note; an
    input that names such a file itself is stylized again.
    Reference-guided models take --style REF (repeat with --style-weight to mix, --alpha for strength);
    label-conditioned models take --style-label NAME (or NAME:WEIGHT, repeated, to mix styles).
    --model NAME uses a model shipped with stylezoo (`stylezoo models`): `stylize photo.jpg --model starry-night`;
    the any-style model needs --style REF.
    """
    from ..errors import UsageError
    from ..use.stylizer import Stylizer

    if size is not None and size < 1:
        raise UsageError(f"--size must be >= 1, got {size}.")
    if model is not None:
        from ..use.shipped import get_model, load_model

        if get_model(model).takes_style and not style:  # an unknown name is refused first, with a did-you-mean
            raise UsageError(f"The model {model!r} restyles in any style and needs a style image: add --style "
                             "REF.jpg (a painting or any picture).")
        inputs = [*([checkpoint] if checkpoint is not None else []), *(inputs or [])]
        st = load_model(model, device=device, precision=precision, backend=backend)
    elif checkpoint is None:
        raise UsageError("Give a checkpoint (a .safetensors file or a run folder) and then images, or --model NAME "
                         "and images. Run `stylezoo models` to see the shipped models.")
    else:
        st = Stylizer.load(Path(checkpoint), device=device, precision=precision, backend=backend, ema=ema)
    if st.family == "noise":
        if inputs:
            raise UsageError(f"{st.name} makes images from noise and takes no inputs; use --num N and --seed S.")
        if style or style_label:
            raise UsageError(f"{st.name} makes images from noise; it takes no --style or --style-label.")
        if size is not None:
            err.print(f"[yellow]warning:[/] --size is ignored: {escape(printable(st.name))} makes "
                      f"{escape(printable(str(getattr(st.module, 'size', '?'))))} px images.")
        if num < 1:
            raise UsageError(f"--num must be >= 1, got {num}.")
        with _Bar(num, quiet or num < 2, "sample") as bar:
            paths = st.write_samples(out, num, seed=seed, ext=ext or "png", batch=max(batch, 1), progress=bar.advance)
        Console(highlight=False).print(f"[green]wrote {len(paths)} sample(s)[/] from {escape(printable(st.name))} "
                                       f"(seed {seed}) to {escape(printable(str(paths[0].parent)))}")
        return
    if not inputs:
        after = f"--model {model}" if model is not None else "the checkpoint"
        raise UsageError(f"{st.name} restyles images: give image files, folders or globs after {after}.")
    if style:
        st.set_style(style, style_weight or None, alpha=1.0 if alpha is None else alpha, size=style_size)
    elif style_weight or alpha is not None:
        raise UsageError("--style-weight and --alpha go with --style REF (a reference style image).")
    if style_label:
        st.set_labels(style_label)
    note = st.condition_note()
    if note:
        err.print(f"[yellow]note:[/] {escape(printable(note))}")

    def on_skip(path: str, why: str) -> None:
        err.print(f"[yellow]warning:[/] skipped {escape(printable(why))}")

    from ..use.stylizer import plan_outputs

    total = len(plan_outputs(inputs, out, ext, overwrite=overwrite)[0]) if not quiet else 0
    with _Bar(total, quiet or total < 2, "stylize") as bar:
        report = st.stylize_files(inputs, out, size=size, batch=batch, ext=ext, strict=strict, keep_mode=keep_mode,
                                  overwrite=overwrite, progress=bar.advance, on_skip=on_skip)
    for note in report.notes:
        err.print(f"[yellow]note:[/] {escape(printable(note))}")
    where = report.written[0] if len(report.written) == 1 else out
    skipped = f", skipped {len(report.skipped)} unreadable input(s)" if report.skipped else ""
    Console(highlight=False).print(f"[green]wrote {len(report.written)} image(s)[/] to "
                                   f"{escape(printable(str(where)))}{skipped}"
                                   f" ({st.backend}, {st.precision}, {st.device})")


class _Bar:
    """A rich progress bar on stderr (nothing when disabled)."""

    def __init__(self, total: int, disabled: bool, what: str) -> None:
        self.total, self.disabled, self.what = total, disabled, what

    def __enter__(self) -> _Bar:
        if not self.disabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.p = Progress(TextColumn(f"[bold]{self.what}"), BarColumn(), MofNCompleteColumn(),
                              TimeRemainingColumn(), TextColumn("{task.fields[name]}"), console=err, transient=True)
            self.p.__enter__()
            self.task = self.p.add_task(self.what, total=self.total, name="")
        return self

    def advance(self, path: Path, ok: bool) -> None:
        if not self.disabled:
            self.p.update(self.task, advance=1, name=escape(Path(path).name))

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if not self.disabled:
            self.p.__exit__(kind, exc, tb)


def register(app: typer.Typer) -> None:
    app.command("stylize")(stylize_cmd)
