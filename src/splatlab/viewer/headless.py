"""Drive a headless chromium against a running viewer: screenshots, camera drags, frame rate.

Used by the browser test (tests/test_viewer.py) and the viewer benchmark
(benchmarks/bench_viewer.py); not needed to use the viewer. Chromium is Debian's
(scripts/install_test_browser.sh), run with software WebGL (SwiftShader: the CPU draws the
splats) and reaching nothing but localhost; it is driven over the Chrome DevTools Protocol
with the `websockets` client that viser already depends on.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional

import numpy as np

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--hide-scrollbars", "--mute-audio",
    "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
]  # fmt: skip

# Counts the animation frames in which WebGL drew something (viser renders on demand), with
# their times, so that a frame rate can be read while the camera moves.
_FRAME_COUNTER = """
(() => {
  const times = [];
  window.__splatlabFrames = times;
  let tick = 0, counted = -1;
  const loop = () => { tick += 1; requestAnimationFrame(loop); };
  requestAnimationFrame(loop);
  for (const proto of [WebGL2RenderingContext.prototype, WebGLRenderingContext.prototype]) {
    for (const name of ["drawArrays", "drawElements", "drawArraysInstanced", "drawElementsInstanced"]) {
      const original = proto[name];
      if (!original) continue;
      proto[name] = function (...args) {
        if (counted !== tick) { counted = tick; times.push(performance.now()); }
        return original.apply(this, args);
      };
    }
  }
})();
"""

# Hides every element that is neither the WebGL canvas nor one of its ancestors (the GUI panel,
# titles, notifications), so that a screenshot shows only what the 3D view draws.
_HIDE_OVERLAYS = """
(() => {
  const canvas = [...document.querySelectorAll('canvas')].sort(
      (a, b) => b.width * b.height - a.width * a.height)[0];
  if (!canvas) return false;
  const keep = new Set();
  for (let e = canvas; e; e = e.parentElement) keep.add(e);
  for (const e of document.body.querySelectorAll('*')) {
    if (!keep.has(e) && !e.contains(canvas)) e.style.setProperty('visibility', 'hidden', 'important');
  }
  return true;
})()
"""


def find_chromium() -> Optional[str]:
    """$SPLATLAB_CHROMIUM, /usr/bin/chromium or `chromium` on the PATH, if executable."""
    for candidate in (os.environ.get("SPLATLAB_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


class HeadlessBrowser:
    """One headless chromium page at width x height CSS pixels (device scale 1).

        with HeadlessBrowser(chromium, 800, 600, log=path) as page:
            page.goto(viewer.url)
            png = page.screenshot()
    """

    def __init__(self, chromium: str, width: int = 800, height: int = 600, log: Optional[Path] = None) -> None:
        self.width, self.height = width, height
        self._profile = Path(tempfile.mkdtemp(prefix="splatlab-chromium-"))
        self._log = open(log, "wb") if log is not None else subprocess.DEVNULL
        self._proc = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--window-size={width},{height}", f"--user-data-dir={self._profile}",
             "--remote-debugging-port=0", "about:blank"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        self._ws = None
        self._next_id = 0
        try:
            self._connect(log)
        except BaseException:
            self.close()
            raise

    def _connect(self, log: Optional[Path]) -> None:
        from websockets.sync.client import connect

        active = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (active.exists() and len(active.read_text().split()) >= 2):
            if self._proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self._proc.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not open its DevTools port within 30 s; see {log}")
            time.sleep(0.1)
        port = int(active.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        self._ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                  deviceScaleFactor=1, mobile=False)
        self.call("Page.addScriptToEvaluateOnNewDocument", source=_FRAME_COUNTER)

    def call(self, method: str, timeout: float = 30.0, **params):
        """Send one DevTools command and return its result (events in between are skipped)."""
        self._next_id += 1
        self._ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self._ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if msg.get("id") == self._next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def screenshot_png(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def screenshot(self) -> np.ndarray:
        """[H, W, 3] uint8 of the page as shown."""
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(self.screenshot_png())).convert("RGB"))

    def hide_overlays(self) -> bool:
        """Hide the GUI and every other element over the 3D view (until the page reloads)."""
        return bool(self.evaluate(_HIDE_OVERLAYS))

    def drag(self, x0: float, y0: float, x1: float, y1: float, steps: int = 30, seconds: float = 1.0) -> float:
        """A left-button drag across the canvas (viser's orbit control), as a user's mouse does it.
        Returns the frame rate while it lasted: frames WebGL drew per second, between press and release."""
        start = self.page_time()
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x0, y=y0)
        self.call("Input.dispatchMouseEvent", type="mousePressed", x=x0, y=y0, button="left", clickCount=1)
        for i in range(1, steps + 1):
            t = i / steps
            self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x0 + t * (x1 - x0), y=y0 + t * (y1 - y0),
                      button="left", buttons=1)
            time.sleep(seconds / steps)
        self.call("Input.dispatchMouseEvent", type="mouseReleased", x=x1, y=y1, button="left", clickCount=1)
        end = self.page_time()
        frames = [t for t in self.frame_times() if start <= t <= end]
        return (len(frames) - 1) / ((frames[-1] - frames[0]) / 1000.0) if len(frames) > 1 else 0.0

    def frame_times(self) -> list[float]:
        """Times (ms, page clock) of the animation frames in which WebGL drew, since the page loaded."""
        return list(self.evaluate("window.__splatlabFrames || []") or [])

    def page_time(self) -> float:
        return float(self.evaluate("performance.now()"))

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._log is not subprocess.DEVNULL:
            self._log.close()
            self._log = subprocess.DEVNULL
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "HeadlessBrowser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) between two uint8 (or [0, 1] float) images of the same shape."""
    a = a.astype(np.float64) / (255.0 if a.dtype == np.uint8 else 1.0)
    b = b.astype(np.float64) / (255.0 if b.dtype == np.uint8 else 1.0)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)
