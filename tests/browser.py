"""Headless Chromium for the tests that look at a page as a person would (report.html, `stylezoo serve`).

Debian's `chromium` is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages
ending in a NUL byte on file descriptors 3 and 4), so nothing beyond the browser is needed: no driver, no
websocket package, no browser download. A test calls `need_browser()` first: it skips with the reason when
no chromium is installed (a laptop without it), and fails instead when STYLEZOO_REQUIRE_BROWSER=1 (set by
.ci/run, so CI can never pass with these checks skipped).

    with Browser(tmp_path) as b:
        page = b.new_page()
        page.goto(url, offline=True)
        page.eval("document.images.length"); page.screenshot(); page.errors()
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
REQUIRE = "STYLEZOO_REQUIRE_BROWSER"  # "1": a missing browser fails the test instead of skipping it (CI)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--mute-audio", "--hide-scrollbars")


def find_browser() -> str | None:
    """The path of an installed Chromium (or Chrome), or None."""
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def need_browser() -> str:
    """The browser to use; else skip the test with the reason, or fail it where STYLEZOO_REQUIRE_BROWSER=1."""
    path = find_browser()
    if path is not None:
        return path
    why = "no chromium installed (Debian: apt-get install chromium); the headless-browser checks need one"
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{why}, and {REQUIRE}=1 (CI) requires them to run")
    pytest.skip(why)


class BrowserError(RuntimeError):
    """The browser answered a command with an error, or did not answer in time."""


class Browser:
    """One headless Chromium process with a fresh profile under `tmp`; a context manager."""

    def __init__(self, tmp: Path, *, width: int = 1280, height: int = 900, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.width, self.height = width, height
        profile = Path(tmp) / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        self.log_path = Path(tmp) / "chromium.log"
        # the protocol's pipes become the child's descriptors 3 and 4. posix_spawn does that without running
        # Python in the child (a preexec_fn may deadlock when other threads run, as the test server's do)
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # first above 10, so that neither end of one pipe sits on 3 or 4 when the other is put there
        r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
        w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_browser_r)
        os.close(from_browser_w)
        path = need_browser()
        argv = [path, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}",
                f"--window-size={width},{height}", "about:blank"]
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                   (os.POSIX_SPAWN_OPEN, 1, str(self.log_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
                   (os.POSIX_SPAWN_DUP2, 1, 2), (os.POSIX_SPAWN_DUP2, r, 3), (os.POSIX_SPAWN_DUP2, w, 4)]
        self.pid: int | None = None
        try:
            self.pid = os.posix_spawn(path, argv, os.environ, file_actions=actions)
        finally:
            os.close(r)
            os.close(w)
        self._next_id = 0
        self._lock = threading.Condition()
        self._replies: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []  # every event, in order: {"method", "params", "sessionId"?}
        self._closed = False
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()
        try:
            self.call("Browser.getVersion")
        except Exception:
            self.close()
            raise

    # -- the protocol ------------------------------------------------------------------------------------------
    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._lock:
                    self._closed = True
                    self._lock.notify_all()
                return
            buf += chunk
            *messages, buf = buf.split(b"\0")
            with self._lock:
                for raw in messages:
                    msg = json.loads(raw)
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                self._lock.notify_all()

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        """Send one command and wait for its result (BrowserError for an error or no answer)."""
        with self._lock:
            self._next_id += 1
            mid = self._next_id
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._lock:
            while mid not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise BrowserError(f"{method}: no answer from the browser "
                                       f"({'it exited' if self._closed else 'timed out'}; see {self.log_path})")
                self._lock.wait(left)
            reply = self._replies.pop(mid)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    def wait_event(self, pred: Callable[[dict[str, Any]], bool], timeout: float | None = None,
                   start: int = 0) -> dict[str, Any]:
        """The first event from index `start` on for which `pred` holds, waiting for it."""
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._lock:
            while True:
                for ev in self.events[start:]:
                    if pred(ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise BrowserError("timed out waiting for a browser event")
                self._lock.wait(left)

    def new_page(self) -> Page:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        return Page(self, session)

    def close(self) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGTERM)
                deadline = time.monotonic() + 10
                while os.waitpid(self.pid, os.WNOHANG) == (0, 0):
                    if time.monotonic() > deadline:
                        os.kill(self.pid, signal.SIGKILL)
                        os.waitpid(self.pid, 0)
                        break
                    time.sleep(0.05)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.pid = None
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Page:
    """One tab: navigation, script evaluation, screenshots, file inputs, and what the page reported."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.b, self.session = browser, session
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", {"width": browser.width, "height": browser.height,
                                                         "deviceScaleFactor": 1, "mobile": False})

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        return self.b.call(method, params, session=self.session, timeout=timeout)

    def _events(self) -> list[dict[str, Any]]:
        with self.b._lock:
            return [e for e in self.b.events if e.get("sessionId") == self.session]

    def goto(self, url: str, *, offline: bool = False, timeout: float | None = None) -> None:
        """Open `url` and wait for its load event; `offline`: with the network cut off, as on a plane."""
        self.call("Network.emulateNetworkConditions", {"offline": offline, "latency": 0, "downloadThroughput": -1,
                                                       "uploadThroughput": -1})
        start = len(self.b.events)
        nav = self.call("Page.navigate", {"url": url})
        if nav.get("errorText"):
            raise BrowserError(f"{url}: {nav['errorText']}")
        self.b.wait_event(lambda e: e.get("sessionId") == self.session and e["method"] == "Page.loadEventFired",
                          timeout, start)

    def eval(self, expression: str, *, await_promise: bool = False, timeout: float | None = None) -> Any:
        """The value of a JavaScript expression (JSON-able); a thrown exception is a BrowserError."""
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": await_promise}, timeout)
        if "exceptionDetails" in res:
            raise BrowserError(f"{expression[:80]}: "
                               f"{res['exceptionDetails'].get('exception', res['exceptionDetails'])}")
        return res.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60.0, every: float = 0.1) -> Any:
        """Poll a JavaScript expression until it is truthy; its value (BrowserError after `timeout` s)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out after {timeout} s waiting for {expression[:120]}")
            time.sleep(every)

    def screenshot(self, clip: dict[str, float] | None = None) -> Image.Image:
        """The page (the viewport, or `clip` {x, y, width, height} in CSS pixels of the document) as RGB."""
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": clip is not None}
        if clip is not None:
            params["clip"] = {**clip, "scale": 1}
        data = self.call("Page.captureScreenshot", params)["data"]
        return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")

    def element_shot(self, selector: str, index: int = 0) -> Image.Image:
        """A screenshot of the `index`-th element matching `selector`, as it appears on the page."""
        rect = self.eval(f"""(() => {{ const el = document.querySelectorAll({json.dumps(selector)})[{index}];
            el.scrollIntoView(); const r = el.getBoundingClientRect();
            return {{x: r.left + window.scrollX, y: r.top + window.scrollY,
                     width: r.width, height: r.height}}; }})()""")
        if not rect or rect["width"] < 1 or rect["height"] < 1:
            raise BrowserError(f"{selector}[{index}] has no area on the page: {rect}")
        return self.screenshot(rect)

    def set_files(self, selector: str, paths: list[Path]) -> None:
        """Choose files in an <input type=file>, as a person does in the file dialog (its change event fires)."""
        obj = self.call("Runtime.evaluate", {"expression": f"document.querySelector({json.dumps(selector)})"})
        object_id = obj["result"].get("objectId")
        if object_id is None:
            raise BrowserError(f"no element matches {selector}")
        self.call("DOM.enable")
        self.call("DOM.setFileInputFiles", {"files": [str(Path(p).resolve()) for p in paths], "objectId": object_id})

    def errors(self) -> list[str]:
        """What the page reported as errors: uncaught exceptions, console.error/assert, failed loads and the like."""
        out = []
        for e in self._events():
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(f"console.{p['type']}: " + " ".join(str(a.get("value", a.get("description", "")))
                                                                for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}".rstrip())
        return out

    def requests(self) -> list[str]:
        """The URL of every request the page made (data: URLs included), in order."""
        return [e["params"]["request"]["url"] for e in self._events() if e["method"] == "Network.requestWillBeSent"]


def blank(im: Image.Image, *, min_std: float = 4.0, min_colours: int = 16) -> bool:
    """Whether a screenshot region looks empty: one flat colour (or nearly), as an undecoded image shows."""
    import numpy as np
    from PIL import ImageStat

    small = im.convert("RGB").resize((min(im.width, 256), min(im.height, 256)))
    colours = len(np.unique(np.asarray(small).reshape(-1, 3), axis=0))
    return max(ImageStat.Stat(small).stddev) < min_std or colours < min_colours
