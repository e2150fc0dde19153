"""`stylezoo serve`: a local web page to try trained models on photos (a thin layer over stylezoo.core.use.serve
and serve_http)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ..use.serve import DEFAULT_MAX_MEGAPIXELS, DEFAULT_MAX_PENDING, DEFAULT_MAX_UPLOAD_MB, DEFAULT_SIZE
from ..use.serve_http import DEFAULT_HOST, DEFAULT_PORT

err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def serve_cmd(
    models: Annotated[list[Path], typer.Argument(
        help="Run folders, .safetensors checkpoints or exports (.onnx, .pt) to offer; the page lists them when there "
        "are several.")],
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on. The default answers this machine only; another address lets anyone who "
        "reaches it use the page (there is no login).")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option("--port", help="Port (0: any free one).")] = DEFAULT_PORT,
    size: Annotated[int, typer.Option(
        "--size", help="Reduce photos whose shorter side is larger to this first, as stylize --size does (0: full "
        "resolution).")] = DEFAULT_SIZE,
    max_upload_mb: Annotated[float, typer.Option(
        "--max-upload-mb", help="Largest upload (photo and style image together), in MB.")] = DEFAULT_MAX_UPLOAD_MB,
    max_megapixels: Annotated[float, typer.Option(
        "--max-megapixels",
        help="Largest image, in megapixels (refused from its header, before decoding).")] = DEFAULT_MAX_MEGAPIXELS,
    style_size: Annotated[int, typer.Option(
        "--style-size", help="Reduce style images' shorter side to this first.")] = 512,
    max_pending: Annotated[int, typer.Option(
        "--max-pending",
        help="Photos restyled or waiting at once; more are asked to try again.")] = DEFAULT_MAX_PENDING,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="fp32, bf16 or auto, as for stylize.")] = "auto",
    ema: Annotated[bool, typer.Option(
        "--ema/--no-ema", help="Use the checkpoint's generator weight average when it has one; --no-ema: the raw "
        "trained weights.")] = True,
) -> None:
    """Open a local web page to try models: drop a photo, pick a style reference (adain) or a label mix (cin), see
    and download the result.

    Photos are restyled as `stylezoo stylize` restyles them. Uploads are kept in a temporary folder only while
    they are restyled; the page loads nothing from the internet. Ctrl-C stops the server.
    """
    from ..use.serve import Limits, Service, load_models
    from ..use.serve_http import bind, is_loopback, require_web_stack, run, url_of

    require_web_stack()
    limits = Limits(max_upload_bytes=int(max_upload_mb * 1e6), max_pixels=int(max_megapixels * 1e6),
                    size=size or None, style_size=style_size, max_pending=max_pending)
    sock = bind(host, port)
    previous = _sigterm_as_interrupt()
    try:
        loaded = load_models(models, device=device, precision=precision, ema=ema)
        with Service(loaded, limits) as service:  # its temporary folder goes when the server stops
            if not is_loopback(host):
                err.print(f"[yellow]warning:[/] --host {escape(host)}: anyone who can reach this machine on port "
                          f"{sock.getsockname()[1]} can use the page and upload images to it; there is no login.")
            out = Console(highlight=False)
            names = ", ".join(m.name for m in loaded)
            out.print(f"stylezoo serve: [bold]{escape(url_of(sock))}[/] ({escape(names)}; Ctrl-C stops)")
            run(service, sock)
    except KeyboardInterrupt:  # uvicorn stops on Ctrl-C or SIGTERM, then raises the signal again once it is done
        pass
    finally:
        sock.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _sigterm_as_interrupt() -> Any:
    """SIGTERM (a service manager, `timeout`, a test) stops the server as Ctrl-C does, so the temporary folder
    is removed; returns the previous handler (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
