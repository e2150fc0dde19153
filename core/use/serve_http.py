"""`stylezoo serve`'s web side: the Starlette app of a `Service` (core/use/serve.py), its one page
(core/use/serve_page.py), and the uvicorn server that runs it.

The web stack is Starlette (routing, multipart forms through python-multipart) on uvicorn: small, typed,
maintained, and no UI framework for one page. Routes:
  GET  /              the page (inline CSS and JS; a Content-Security-Policy forbids anything from elsewhere)
  GET  /api/models    {"models": [...], "limits": {...}}
  POST /api/stylize   multipart: model, image, [style, alpha] (gen/adain), [labels: JSON {name: weight}] (gen/cin)
                      -> image/png; errors -> {"error": "..."} with 400, 404, 413, 415 or 503
The request's bytes are counted as the body arrives and refused past `Limits.max_upload_bytes` (413).
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from ..errors import StylezooError, UsageError
from .serve import ServeError, Service

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
WEB_STACK = ("starlette", "uvicorn", "multipart")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SECURITY_HEADERS = {
    # the page is inline; images are blob: URLs it makes; nothing may come from elsewhere
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def require_web_stack() -> None:
    """Refuse, in one line naming the extra, when the web stack is not installed."""
    import importlib.util

    missing = [m for m in WEB_STACK if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError("stylezoo serve needs "
                         f"{', '.join('python-multipart' if m == 'multipart' else m for m in missing)}: "
                         "pip install 'stylezoo[serve]'.")


# ------------------------------------------------------------------------------------------------ HTTP
async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) past `limit` bytes; a larger body is drained a little so the client can
    read the answer, then the connection is dropped."""
    too_big = ServeError(413, f"The upload is larger than the limit of {limit / 1e6:g} MB (--max-upload-mb).")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > 4 * limit:
        raise too_big
    chunks: list[bytes] = []
    n = 0
    async for chunk in request.stream():
        n += len(chunk)
        if n <= limit:
            chunks.append(chunk)
        elif n > 4 * limit:
            break
    if n > limit:
        raise too_big
    return b"".join(chunks)


def _float(value: Any, what: str, lo: float, hi: float) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ServeError(400, f"The {what} must be a number, got {str(value)[:40]!r}.") from None
    if not (math.isfinite(x) and lo <= x <= hi):
        raise ServeError(400, f"The {what} must be between {lo:g} and {hi:g}, got {x:g}.")
    return x


def _labels(value: Any) -> dict[str, float]:
    try:
        mix = json.loads(str(value))
    except ValueError:
        raise ServeError(400, "The style mix must be JSON: {\"label\": weight, ...}.") from None
    if not isinstance(mix, dict) or not mix:
        raise ServeError(400, "The style mix must name at least one label: {\"label\": weight, ...}.")
    return {str(k): _float(v, f"weight of {k!r}", 0.0, 1e6) for k, v in mix.items()}


def create_app(service: Service) -> Starlette:
    """The Starlette application of `service`."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    from .serve_page import PAGE

    def error(status: int, message: str) -> Response:
        return JSONResponse({"error": message}, status_code=status, headers=SECURITY_HEADERS)

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE, headers=SECURITY_HEADERS)

    async def models(request: Request) -> Response:
        return JSONResponse(service.catalogue(), headers=SECURITY_HEADERS)

    async def stylize(request: Request) -> Response:
        try:
            body = await _read_body(request, service.limits.max_upload_bytes)

            async def replay() -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}

            try:
                form = await Request(request.scope, replay).form(max_files=2, max_fields=8)
            except MultiPartException as e:
                raise ServeError(400, f"Not a valid upload form ({e}).") from None
            image = form.get("image")
            if not isinstance(image, UploadFile):
                raise ServeError(400, "Choose a photo first (the form field 'image' holds no file).")
            style = form.get("style")
            if style is not None and not isinstance(style, UploadFile):
                raise ServeError(400, "The style reference must be an image file.")
            alpha = form.get("alpha")
            labels = form.get("labels")
            kwargs: dict[str, Any] = {
                "filename": image.filename or "photo",
                "style": await style.read() if isinstance(style, UploadFile) else None,
                "style_name": (style.filename or "style") if isinstance(style, UploadFile) else "style",
                "alpha": _float(alpha, "strength (alpha)", 0.0, 1.0) if alpha not in (None, "") else None,
                "labels": _labels(labels) if labels not in (None, "") else None,
            }
            data = await image.read()
            if not service.pending.acquire(blocking=False):
                raise ServeError(503, f"Busy with {service.limits.max_pending} photos already; try again in a moment.")
            try:
                result = await run_in_threadpool(service.restyle, str(form.get("model") or ""), data, **kwargs)
            finally:
                service.pending.release()
        except ServeError as e:
            return error(e.status, str(e))
        except StylezooError as e:  # a bad label name, weights that sum to 0, ...
            return error(400, str(e))
        headers = {**SECURITY_HEADERS, "X-Stylezoo-Seconds": f"{result.seconds:g}",
                   "X-Stylezoo-Filename": result.filename,
                   "Content-Disposition": f'inline; filename="{result.filename}"'}
        if result.note:
            headers["X-Stylezoo-Note"] = result.note
        return Response(result.png, media_type="image/png", headers=headers)

    return Starlette(routes=[Route("/", page), Route("/api/models", models),
                             Route("/api/stylize", stylize, methods=["POST"])])


# ------------------------------------------------------------------------------------------------ running it
def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); port 0 picks a free one. A port in use is a UsageError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UsageError(f"--host {host}: not an address here ({e.strerror}).") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise UsageError(f"Cannot listen on {host}:{port} ({e.strerror}); another program may use that port: "
                         "give another --port.") from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


def _server(service: Service) -> Any:
    import uvicorn

    config = uvicorn.Config(create_app(service), log_level="warning", access_log=False, lifespan="off",
                            timeout_keep_alive=5, server_header=False)
    return uvicorn.Server(config)


def run(service: Service, sock: socket.socket) -> None:
    """Serve until Ctrl-C (uvicorn handles the signals)."""
    _server(service).run(sockets=[sock])


class BackgroundServer:
    """The server in a thread of this process, for tests and scripts: `with BackgroundServer(service) as url:`."""

    def __init__(self, service: Service, host: str = DEFAULT_HOST, port: int = 0) -> None:
        self.service = service
        self.sock = bind(host, port)
        self.url = url_of(self.sock)
        self.server = _server(service)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()

