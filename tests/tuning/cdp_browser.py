"""Headless Chromium driven over the Chrome DevTools protocol, for the browser tests.

``HeadlessChromium`` starts Debian's ``chromium`` with a fresh profile, attaches to its one
page over a websocket (``websocket-client``) and records what the page does: every
request it makes, JavaScript exceptions, console errors and browser log errors.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
)


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_chromium() -> str:
    """Chromium's path; without it the test skips, or fails under SNN_REQUIRE_BROWSER=1 (as .ci/run sets)."""
    import pytest

    path = chromium_path()
    if path is None:
        message = "no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)"
        if os.environ.get("SNN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{message}, and SNN_REQUIRE_BROWSER=1 requires the browser tests to run")
        pytest.skip(message)
    return path


class HeadlessChromium:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, profile_dir: Path, width: int = 1280, height: int = 900, timeout: float = 30.0):
        self.profile_dir, self.width, self.height, self.timeout = Path(profile_dir), width, height, timeout
        self.requests: list[str] = []  # every URL the page asked for, in order
        self.errors: list[str] = []  # JS exceptions, console.error calls, browser log errors
        self._events: list[dict[str, Any]] = []
        self._next_id = 0

    def __enter__(self) -> HeadlessChromium:
        import websocket  # websocket-client

        self.profile_dir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                chromium_path(),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={self.profile_dir}",
                f"--window-size={self.width},{self.height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port = self._devtools_port()
            page = self._wait(
                lambda: next((t for t in self._targets(port) if t["type"] == "page"), None), "Chromium's page target"
            )
            self._ws = websocket.create_connection(
                page["webSocketDebuggerUrl"], timeout=self.timeout, suppress_origin=True
            )
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.send(f"{domain}.enable")
            self.send(
                "Emulation.setDeviceMetricsOverride",
                width=self.width,
                height=self.height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if getattr(self, "_ws", None) is not None:
            self._ws.close()
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    # --- the protocol ---

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Call one DevTools method and return its result; events that arrive meanwhile are recorded."""
        self._next_id += 1
        call_id = self._next_id
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = self._receive()
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def navigate(self, url: str) -> None:
        """Open ``url`` and wait for its load event."""
        self._events.clear()
        self.send("Page.navigate", url=url)
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self._events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not finish loading in {self.timeout} s")
            self._receive()

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None) -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression!r} still falsy after {timeout or self.timeout} s")
            time.sleep(0.1)

    def screenshot(self, path: Path, full_page: bool = True, scale: float = 1.0) -> Path:
        """Save a PNG of the page (all of it when ``full_page``), scaled by ``scale``."""
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        if full_page or scale != 1.0:
            size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            height = size[1] if full_page else self.height
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": height, "scale": scale}
        data = self.send("Page.captureScreenshot", **params)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def _receive(self) -> dict[str, Any]:
        message = json.loads(self._ws.recv())
        if "method" in message:
            self._events.append(message)
            self._record(message["method"], message.get("params", {}))
        return message

    def _record(self, method: str, params: dict[str, Any]) -> None:
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(
                "console.error: "
                + " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            )
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.errors.append(f"log: {params['entry'].get('text')} ({params['entry'].get('url', '')})")

    def _devtools_port(self) -> int:
        port_file = self.profile_dir / "DevToolsActivePort"

        def port() -> int | None:
            if self._process.poll() is not None:
                raise RuntimeError(f"chromium exited with code {self._process.returncode} before it listened")
            lines = port_file.read_text().splitlines() if port_file.exists() else []
            return int(lines[0]) if lines and lines[0].isdigit() else None

        return self._wait(port, "Chromium's DevToolsActivePort file")

    @staticmethod
    def _targets(port: int) -> list[dict[str, Any]]:
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with no_proxy.open(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
            return json.load(response)

    def _wait(self, probe, what: str) -> Any:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            value = probe()
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"{what} not there after {self.timeout} s")
