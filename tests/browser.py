"""Headless Chromium (Debian's ``chromium`` package) driven over the DevTools
protocol, for tests that look at our pages as a browser renders them.

Why this way: the protocol gives the rendered layout (sizes, overflow), real
input events (typing, a click) and screenshots, which ``--dump-dom`` does not;
and spoken over ``--remote-debugging-pipe`` (NUL-separated JSON on file
descriptors 3 and 4) it needs no WebSocket library, no port and no npm: this
module is the whole client. Every read has a deadline, so a stuck browser
fails the test instead of hanging it.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
# Chromium without a network of its own: no first-run, sync, component or
# background requests (the machine has no internet; without these switches
# Chromium tries to reach Google).
SWITCHES = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
            "--font-render-hinting=none"]


class BrowserError(AssertionError):
    pass


class Browser:
    """One Chromium process; ``page()`` opens a tab with a given viewport."""

    def __init__(self, timeout: float = 30.0):
        if not Path(CHROMIUM).exists():
            raise BrowserError(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does it)")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def descriptors() -> None:  # in the child: the protocol's fds 3 (it reads) and 4 (it writes)
            read_end, write_end = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.log_path = Path(self.profile) / "chromium.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [CHROMIUM, *SWITCHES, f"--user-data-dir={self.profile}", "--remote-debugging-pipe", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=descriptors, close_fds=False,
            )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict[str, Any]] = []

    # --- the protocol ---------------------------------------------------------------------------

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        reply = self._wait(lambda m: m.get("id") == self._next_id, f"the answer to {method}")
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def wait_event(self, method: str, session: str | None = None) -> dict[str, Any]:
        def wanted(m: dict[str, Any]) -> bool:
            return m.get("method") == method and (session is None or m.get("sessionId") == session)

        for i, event in enumerate(self.events):
            if wanted(event):
                del self.events[i]
                return event
        return self._wait(wanted, f"the event {method}", keep_others=True)

    def _wait(self, wanted: Any, what: str, keep_others: bool = True) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if wanted(message):
                    return message  # type: ignore[no-any-return]
                if "method" in message and keep_others:
                    self.events.append(message)
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise BrowserError(f"no {what} from Chromium within {self.timeout}s:\n{self.log()[-2000:]}")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium closed the pipe while waiting for {what}:\n{self.log()[-2000:]}")
                self._buffer += chunk

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # --- pages ----------------------------------------------------------------------------------

    def page(self, width: int, height: int, mobile: bool = False) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}, session)
        if mobile:
            self.send("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 1}, session)
        return Page(self, session, width, height)

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self.send("Browser.close")
                except BrowserError:
                    pass
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            for fd in (self._to_browser, self._from_browser):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Page:
    def __init__(self, browser: Browser, session: str, width: int, height: int):
        self.browser = browser
        self.session = session
        self.width = width
        self.height = height

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.send(method, params, self.session)

    def goto(self, url: str) -> None:
        """Navigate and wait until the page (images included) has loaded."""
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"{url}: {result['errorText']}")
        self.browser.wait_event("Page.loadEventFired", self.session)

    def evaluate(self, expression: str) -> Any:
        """Evaluate in the page, from the DevTools side (the page's CSP forbids its own scripts, not this)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:200]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def type_into(self, selector: str, text: str) -> None:
        """Focus a field with a tap on it and type text, as a person would."""
        self.tap(selector)
        self.send("Input.insertText", {"text": text})

    def tap(self, selector: str) -> None:
        """A mouse click at the middle of the element (scrolled into view first)."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        if box is None:
            raise BrowserError(f"no element {selector} on {self.evaluate('location.href')}")
        x, y = box
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def screenshot(self, path: Path, full_height_limit: int = 0) -> None:
        """A PNG of the viewport (or of the page down to ``full_height_limit`` pixels)."""
        params: dict[str, Any] = {"format": "png"}
        if full_height_limit:
            height = min(int(self.evaluate("document.documentElement.scrollHeight")), full_height_limit)
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1})
        data = self.send("Page.captureScreenshot", params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
