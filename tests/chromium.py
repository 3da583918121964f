"""A real browser for tests: headless Chromium (Debian's ``chromium``) driven over the Chrome
DevTools Protocol through ``--remote-debugging-pipe`` — no WebDriver, no Playwright download, no
network. Records every console message, uncaught exception and failed load of the page."""

import base64
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """One headless browser with one page. ``errors`` collects the console's errors, uncaught
    exceptions and failed loads; ``console`` every console message."""

    def __init__(self, width: int = 1300, height: int = 1800, timeout: float = 60.0):
        exe = chromium_path()
        if exe is None:
            raise RuntimeError("no chromium on PATH")
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="tlln-chromium-")
        args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--remote-debugging-pipe", f"--user-data-dir={self._profile}",
                f"--window-size={width},{height}", "about:blank"]
        # the protocol runs over fds 3 (commands in) and 4 (replies out): our stdin/stdout pipes
        cmd = " ".join(_quote(a) for a in args) + " 3<&0 4>&1 0</dev/null 1>/dev/null"
        self.proc = subprocess.Popen(["bash", "-c", "exec " + cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self._next, self._replies, self.events = 0, {}, queue.Queue()
        self._cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.console: list[dict] = []
        self.errors: list[str] = []
        self.requests: list[str] = []  # every URL the page asked for
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=True)
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                          "mobile": False}, session=True)

    def _read(self) -> None:
        buf = b""
        while True:
            chunk = self.proc.stdout.read1(1 << 16)
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cv:
                        self._replies[msg["id"]] = msg
                        self._cv.notify_all()
                else:
                    self.events.put(msg)

    def send(self, method: str, params: dict | None = None, session: bool = False) -> dict:
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        self.proc.stdin.write(json.dumps(msg).encode() + b"\0")
        self.proc.stdin.flush()
        deadline = time.time() + self.timeout
        with self._cv:
            while self._next not in self._replies:
                if not self._cv.wait(timeout=max(0.0, deadline - time.time())):
                    raise TimeoutError(f"no reply to {method}")
            reply = self._replies.pop(self._next)
        self._drain()
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def _drain(self) -> list[dict]:
        out = []
        while True:
            try:
                ev = self.events.get_nowait()
            except queue.Empty:
                return out
            out.append(ev)
            method, p = ev.get("method"), ev.get("params", {})
            if method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                self.console.append({"type": p.get("type"), "text": text})
                if p.get("type") in ("error", "assert"):
                    self.errors.append(f"console.{p.get('type')}: {text}")
            elif method == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                self.errors.append("uncaught: " + str(d.get("exception", {}).get("description") or d.get("text")))
            elif method == "Network.requestWillBeSent":
                self.requests.append(p.get("request", {}).get("url", ""))
            elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                e = p["entry"]
                self.errors.append(f"log: {e.get('text')} {e.get('url', '')}".strip())

    def open(self, url: str) -> None:
        """Navigate and wait for the load event."""
        self.send("Page.navigate", {"url": url}, session=True)
        self.wait_for("document.readyState === 'complete'")

    def eval(self, expression: str):
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression: str) -> None:
        deadline = time.time() + self.timeout
        while not self.eval(f"!!({expression})"):
            if time.time() > deadline:
                raise TimeoutError(f"waited for {expression}")
            time.sleep(0.05)
        self._drain()

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the middle of the element."""
        box = self.eval(f"(function () {{ var e = document.querySelector({json.dumps(selector)}); "
                        "e.scrollIntoView({block: 'center'}); var r = e.getBoundingClientRect(); "
                        "return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left",
                                                   "clickCount": 1}, session=True)

    def screenshot(self, path: str) -> None:
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False}, session=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data["data"]))

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:  # noqa: BLE001 - it may already be gone
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)
