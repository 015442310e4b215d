"""Open the report in headless Chromium: no console error, no network request, every section shown.

The browser is driven over the Chrome DevTools Protocol (CDP) through its
``--remote-debugging-port`` websocket, with a minimal RFC 6455 client below (standard
library only, so no test dependency). CDP reports every request the page makes
(``Network.requestWillBeSent``), every console message, exception and browser log entry
(CSP violations included), and whether an ``alert`` dialog opened.

Screenshots (first screen and full page) and a PDF of the print layout are saved to
``test-artifacts/``. Runs once with JavaScript and once with
``--blink-settings=scriptEnabled=false``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
MAX_RENDER_S = 2.0
MAX_REPORT_BYTES = 5 * 1024 * 1024
STEP_TIMEOUT_S = 30.0


# ----------------------------------------------------------------------------- CDP client


class _WebSocket:
    """Just enough of RFC 6455 for CDP: text frames, fragmentation, ping/pong, close."""

    _GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, url: str, timeout: float) -> None:
        m = re.fullmatch(r"ws://([^/:]+):(\d+)(/.*)", url)
        assert m, url
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, "connection closed during the websocket handshake"
            head += chunk
        head, self._buf = head.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        assert " 101 " in lines[0], lines[0]
        accept = base64.b64encode(hashlib.sha1((key + self._GUID).encode()).digest()).decode()
        assert any(ln.lower() == f"sec-websocket-accept: {accept}".lower() for ln in lines)

    def _recv_exact(self, n: int) -> bytes:
        out = bytearray(self._buf[:n])
        self._buf = self._buf[n:]
        while len(out) < n:
            chunk = self.sock.recv(max(65536, n - len(out)))
            if not chunk:
                raise ConnectionError("websocket closed")
            out += chunk
        if len(out) > n:
            self._buf = bytes(out[n:]) + self._buf
            del out[n:]
        return bytes(out)

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytearray([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header.append(0x80 | n)
        elif n < 65536:
            header.append(0x80 | 126)
            header += n.to_bytes(2, "big")
        else:
            header.append(0x80 | 127)
            header += n.to_bytes(8, "big")
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes(header) + mask + body)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode("utf-8"))

    def recv(self) -> str:
        parts: list[bytes] = []
        while True:
            b0, b1 = self._recv_exact(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._recv_exact(2), "big")
            elif n == 127:
                n = int.from_bytes(self._recv_exact(8), "big")
            mask = self._recv_exact(4) if b1 & 0x80 else None
            data = self._recv_exact(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == 0x9:
                self._send_frame(0xA, data)
                continue
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the browser")
            if opcode in (0x0, 0x1, 0x2):
                parts.append(data)
                if b0 & 0x80:
                    return b"".join(parts).decode("utf-8")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send_frame(0x8, b"")
        self.sock.close()


class _CDP:
    """Commands with results, and every event kept in order."""

    def __init__(self, ws_url: str) -> None:
        self.ws = _WebSocket(ws_url, STEP_TIMEOUT_S)
        self.events: list[dict[str, Any]] = []
        self._next = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        my_id = self._next
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self._record(msg)
        raise TimeoutError(method)

    def _record(self, msg: dict[str, Any]) -> None:
        self.events.append(msg)
        if msg["method"] == "Page.javascriptDialogOpening":
            # Recorded as an error; dismissed so that the page can go on loading.
            self._next += 1
            self.ws.send(
                json.dumps(
                    {
                        "id": self._next,
                        "method": "Page.handleJavaScriptDialog",
                        "params": {"accept": True},
                    }
                )
            )

    def wait_event(self, name: str) -> dict[str, Any]:
        for ev in self.events:
            if ev["method"] == name:
                return ev
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self._record(msg)
                if msg["method"] == name:
                    return msg
        raise TimeoutError(name)

    def drain(self, seconds: float) -> None:
        """Collect events for a little while (late console errors, stray requests)."""
        self.ws.sock.settimeout(seconds)
        try:
            while True:
                msg = json.loads(self.ws.recv())
                if "method" in msg:
                    self._record(msg)
        except TimeoutError:
            pass
        finally:
            self.ws.sock.settimeout(STEP_TIMEOUT_S)


def _launch(user_dir: Path, *, javascript: bool) -> tuple[subprocess.Popen, str, Path]:
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
        "--mute-audio",
        f"--user-data-dir={user_dir}",
        "--remote-debugging-port=0",
        "--window-size=1280,900",
    ]
    if not javascript:
        args.append("--blink-settings=scriptEnabled=false")
    args.append("about:blank")
    log = user_dir.parent / "chromium.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=fh)
    port_file = user_dir / "DevToolsActivePort"
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while time.monotonic() < deadline:
        if port_file.exists():
            lines = port_file.read_text().split()
            if len(lines) >= 2:
                break
        if proc.poll() is not None:
            pytest.fail(f"Chromium exited with {proc.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("Chromium did not open its DevTools port")
    port = int(lines[0])
    # The test's own request to the DevTools endpoint, not the page's; bypass any proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/json/list", timeout=STEP_TIMEOUT_S) as resp:
        targets = json.load(resp)
    page = next(t for t in targets if t["type"] == "page")
    return proc, page["webSocketDebuggerUrl"], log


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    """A realistic report (several sections, figures, every status, hostile strings)."""
    from _report_factory import build_report

    return build_report().save(tmp_path_factory.mktemp("report"))


@pytest.fixture
def chromium_available() -> None:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(
            f"headless Chromium is not installed ({CHROMIUM} is missing); "
            ".ci/run installs it with `apt-get install -y chromium`"
        )


def _section_ids(html: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)"', html)


class _Visit:
    """One page load in a fresh headless Chromium, with what CDP saw during it."""

    def __init__(self, cdp: _CDP, url: str, render_s: float) -> None:
        self.cdp, self.url, self.render_s = cdp, url, render_s

    @property
    def requests(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.cdp.events
            if e["method"] == "Network.requestWillBeSent"
        ]

    @property
    def foreign_requests(self) -> list[str]:
        """Every request but the page itself and inline data: URLs."""
        return [u for u in self.requests if u != self.url and not u.startswith("data:")]

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Exceptions, alert dialogs, console errors and browser log errors (CSP included)."""
        return [
            e["params"]
            for e in self.cdp.events
            if e["method"] in ("Runtime.exceptionThrown", "Page.javascriptDialogOpening")
            or (
                e["method"] == "Runtime.consoleAPICalled"
                and e["params"]["type"] in ("error", "assert")
            )
            or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
        ]


@contextlib.contextmanager
def _visit(path: Path, tmp_path: Path, *, javascript: bool) -> Iterator[_Visit]:
    url = path.resolve().as_uri()
    user_dir = tmp_path / f"profile-{'js' if javascript else 'nojs'}"
    user_dir.mkdir()
    proc, ws_url, _log = _launch(user_dir, javascript=javascript)
    cdp = None
    try:
        cdp = _CDP(ws_url)
        for domain in ("Page", "Runtime", "Log", "Network", "DOM"):
            cdp.call(f"{domain}.enable")
        t0 = time.perf_counter()
        nav = cdp.call("Page.navigate", url=url)
        assert "errorText" not in nav, nav
        cdp.wait_event("Page.loadEventFired")
        render_s = time.perf_counter() - t0
        cdp.drain(0.5)  # late console messages and stray requests
        yield _Visit(cdp, url, render_s)
    finally:
        if cdp is not None:
            cdp.ws.close()
        _stop(proc)
        shutil.rmtree(user_dir, ignore_errors=True)


# ----------------------------------------------------------------------------- the tests


def test_harness_sees_requests_console_errors_and_dialogs(chromium_available, tmp_path):
    """The checks below could not pass vacuously: a page that misbehaves is caught."""
    canary = tmp_path / "canary.html"
    canary.write_text(
        "<!DOCTYPE html><html><head><title>canary</title></head><body>"
        '<img src="http://127.0.0.1:9/leak.png" alt="">'
        '<script>console.error("canary error"); alert("canary");</script>'
        "</body></html>",
        encoding="utf-8",
    )
    with _visit(canary, tmp_path, javascript=True) as v:
        assert v.url in v.requests  # the Network domain sees the page's own load
        assert "http://127.0.0.1:9/leak.png" in v.foreign_requests
        kinds = {json.dumps(e)[:200] for e in v.errors}
        assert any("canary error" in k for k in kinds), kinds
        assert any('"type": "alert"' in k for k in kinds), kinds


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "nojs"])
@pytest.mark.parametrize("which", ["report_dir", "demo_report_dir", "committed_demo_report_dir"])
def test_report_in_headless_chromium(request, chromium_available, tmp_path, which, javascript):
    try:
        rdir = Path(request.getfixturevalue(which))
    except pytest.FixtureLookupError:
        pytest.skip(f"fixture {which!r} is not defined (the demo report comes from conftest)")
    index = rdir / "index.html"
    size = index.stat().st_size
    assert size < MAX_REPORT_BYTES, f"report is {size / 1e6:.1f} MB"
    html = index.read_text(encoding="utf-8")
    sections = _section_ids(html)
    assert sections[0] == "summary"
    assert {"model-card", "methods", "reproducibility"} <= set(sections)

    with _visit(index, tmp_path, javascript=javascript) as v:
        cdp = v.cdp
        # --- nothing went wrong while loading
        assert not v.foreign_requests, f"the page made requests: {v.foreign_requests[:5]}"
        assert not v.errors, f"console errors: {json.dumps(v.errors)[:2000]}"

        # --- the summary and every section are rendered (laid out with a size)
        root = cdp.call("DOM.getDocument", depth=0)["root"]["nodeId"]
        for sid in sections:
            node = cdp.call("DOM.querySelector", nodeId=root, selector=f"#{sid}")["nodeId"]
            assert node, f"section #{sid} missing from the DOM"
            quad = cdp.call("DOM.getBoxModel", nodeId=node)["model"]
            assert quad["width"] > 100 and quad["height"] > 20, (sid, quad)
        dom = cdp.call("DOM.getOuterHTML", nodeId=root)["outerHTML"]
        assert "Executive summary" in dom
        imgs = cdp.call("DOM.querySelectorAll", nodeId=root, selector="img")["nodeIds"]
        assert imgs == [], "an <img> element exists: a user string became markup"
        figs = cdp.call("DOM.querySelectorAll", nodeId=root, selector="figure[role=img] svg")
        assert len(figs["nodeIds"]) == html.count('<figure class="fig')
        # Progressive enhancement: sorting buttons exist exactly when scripts run.
        buttons = cdp.call("DOM.querySelectorAll", nodeId=root, selector="button.sort")["nodeIds"]
        assert bool(buttons) is javascript

        # --- artifacts: first screen, full page, print layout
        ARTIFACTS.mkdir(exist_ok=True)
        stem = f"report-{which}-{'js' if javascript else 'nojs'}"
        shot = cdp.call("Page.captureScreenshot", format="png")
        (ARTIFACTS / f"{stem}.png").write_bytes(base64.b64decode(shot["data"]))
        size_css = cdp.call("Page.getLayoutMetrics")["cssContentSize"]
        full = cdp.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={
                "x": 0,
                "y": 0,
                "width": size_css["width"],
                "height": min(size_css["height"], 16000),
                "scale": 1,
            },
        )
        (ARTIFACTS / f"{stem}-full.png").write_bytes(base64.b64decode(full["data"]))
        if javascript:
            pdf = cdp.call("Page.printToPDF", printBackground=True)
            data = base64.b64decode(pdf["data"])
            assert data.startswith(b"%PDF")
            (ARTIFACTS / f"{stem}.pdf").write_bytes(data)
        (ARTIFACTS / f"{stem}-timing.json").write_text(
            json.dumps({"render_s": round(v.render_s, 3), "bytes": size}) + "\n"
        )
    assert v.render_s < MAX_RENDER_S, f"the page took {v.render_s:.2f} s to load"


# ----------------------------------------------------------------------------- phone and paper

PHONE_WIDTH = 420
# Chromium prints on US Letter with 0.4 in margins by default: 7.7 in of 96 px.
PRINT_WIDTH = 739


def _eval(cdp: _CDP, expr: str) -> Any:
    res = cdp.call("Runtime.evaluate", expression=expr, returnByValue=True)
    assert "exceptionDetails" not in res, res
    return res["result"]["value"]


_CHECK_ROW_OVERFLOW = """
(() => {
  const w = document.documentElement.clientWidth;
  const bad = [];
  document.querySelectorAll('tr.check, tr.check td').forEach(el => {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && (r.right > w + 1 || r.left < -1)) bad.push(el.className + ' ' + r.right);
  });
  return {width: w, scroll: document.documentElement.scrollWidth, bad: bad.slice(0, 5),
          cards: document.querySelectorAll('tr.check').length,
          display: document.querySelector('tr.check') ?
                   getComputedStyle(document.querySelector('tr.check')).display : null};
})()
"""

_PRINT_COLUMNS = """
(() => {
  const w = document.documentElement.clientWidth;
  const visible = el => el.getClientRects().length > 0;
  const out = {width: w, overflow: [], missing: []};
  const byTitle = {};
  document.querySelectorAll('table.data').forEach(t => {
    const cap = t.querySelector('caption');
    const title = cap ? cap.textContent.replace(/ \\(columns .*\\)$/, '').trim() : '';
    const heads = Array.from(t.querySelectorAll('thead th')).map(th => th.textContent.trim());
    const e = byTitle[title] || (byTitle[title] = {all: new Set(), printed: new Set()});
    if (!t.classList.contains('print-part')) heads.forEach(h => e.all.add(h));
    if (visible(t)) {
      heads.forEach(h => e.printed.add(h));
      t.querySelectorAll('thead th').forEach(th => {
        const r = th.getBoundingClientRect();
        if (r.right > w + 1) out.overflow.push(title + ': ' + th.textContent.trim());
      });
    }
  });
  for (const [title, e] of Object.entries(byTitle)) {
    for (const h of e.all) if (!e.printed.has(h)) out.missing.push(title + ': ' + h);
  }
  out.tables = Object.keys(byTitle).length;
  return out;
})()
"""


@pytest.mark.parametrize("which", ["report_dir", "committed_demo_report_dir"])
def test_phone_width_turns_check_rows_into_cards_without_overflow(
    request, chromium_available, tmp_path, which
):
    rdir = Path(request.getfixturevalue(which))
    with _visit(rdir / "index.html", tmp_path, javascript=True) as v:
        cdp = v.cdp
        cdp.call(
            "Emulation.setDeviceMetricsOverride",
            width=PHONE_WIDTH,
            height=900,
            deviceScaleFactor=1,
            mobile=True,
        )
        got = _eval(cdp, _CHECK_ROW_OVERFLOW)
        assert got["width"] <= PHONE_WIDTH and got["cards"] > 0
        assert got["display"] == "block", "check rows are not cards at phone width"
        assert not got["bad"], f"check rows overflow the screen: {got['bad']}"
        assert got["scroll"] <= PHONE_WIDTH + 1, f"the page scrolls sideways: {got['scroll']} px"
        ARTIFACTS.mkdir(exist_ok=True)
        shot = cdp.call("Page.captureScreenshot", format="png")
        (ARTIFACTS / f"phone-{which}.png").write_bytes(base64.b64decode(shot["data"]))


@pytest.mark.parametrize("which", ["report_dir", "committed_demo_report_dir"])
def test_print_keeps_every_column_of_every_table(request, chromium_available, tmp_path, which):
    rdir = Path(request.getfixturevalue(which))
    doc = json.loads((rdir / "audit.json").read_text(encoding="utf-8"))
    with _visit(rdir / "index.html", tmp_path, javascript=True) as v:
        cdp = v.cdp
        cdp.call("Emulation.setEmulatedMedia", media="print")
        cdp.call(
            "Emulation.setDeviceMetricsOverride",
            width=PRINT_WIDTH,
            height=1000,
            deviceScaleFactor=1,
            mobile=False,
        )
        got = _eval(cdp, _PRINT_COLUMNS)
        n_tables = sum(len(s["tables"]) for s in doc["sections"].values())
        assert got["tables"] >= n_tables
        assert not got["missing"], f"columns missing in print: {got['missing'][:5]}"
        assert not got["overflow"], f"columns beyond the page: {got['overflow'][:5]}"
        cdp.call("Emulation.setEmulatedMedia", media="")
        pdf = base64.b64decode(cdp.call("Page.printToPDF", printBackground=True)["data"])
    assert pdf.startswith(b"%PDF")
    pdftotext = shutil.which("pdftotext")
    if pdftotext is None:  # poppler-utils: optional; the layout check above holds anyway
        return
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    text = subprocess.run(
        [pdftotext, str(path), "-"], capture_output=True, text=True, check=True
    ).stdout
    import html as html_lib

    # A header may wrap inside its narrow printed column, so each of its words must be there.
    printed = set(re.findall(r"[^\s\[\](),;:]+", text))
    heads = set(re.findall(r'<th scope="col"[^>]*>(.*?)</th>', (rdir / "index.html").read_text()))
    for h in heads:
        words = re.findall(r"[^\s\[\](),;:]+", html_lib.unescape(re.sub(r"<[^>]+>", "", h)))
        missing = [w for w in words if w not in printed]
        assert not missing, f"column {h!r} is not in the PDF (missing {missing})"
