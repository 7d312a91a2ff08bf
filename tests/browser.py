"""Open a page in headless Chromium as a person would, and say what happened: console messages, requests, a screenshot.

Debian's ``chromium`` is used (installed by ``chromium_binary`` when missing and possible). Every
request the browser makes to a host goes through a proxy that is a recorder on 127.0.0.1 (it
answers 404 and forwards nothing), so a request that leaves the page is seen, never sent. Chromium
itself talks to a few of Google's hosts whatever the page (``BROWSER_OWN_DOMAINS``); those are
left out of a page's requests (trainer's pages also forbid every request by their CSP, which the
console check would report).
Console messages come from ``--enable-logging=stderr``: trainer's pages run no script, so any
message at all (a Content-Security-Policy violation, an error) is a finding.
"""
from __future__ import annotations

import http.server
import os
import re
import shutil
import tempfile
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest


def chromium_binary() -> str:
    """The chromium executable; installed with apt-get when missing (as root; one installer at a time across pytest-xdist's
    workers, under a lock file; ``apt-get update`` once if the first try fails); the test skips with the reason otherwise."""
    import fcntl

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get): apt-get install -y chromium")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with open(Path(tempfile.gettempdir()) / "trainer-tests-chromium.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other worker waits here, then finds it installed
        result = None
        for command in (["apt-get", "install", "-y", "-q", "chromium"], ["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
            if shutil.which("chromium"):
                break
            result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=environment)
    found = shutil.which("chromium")
    if not found:
        detail = f"exit {result.returncode}: {result.stderr.strip()[-300:]}" if result is not None else "not found after installing"
        pytest.skip(f"chromium could not be installed (apt-get install -y chromium: {detail})")
    return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get): apt-get install -y chromium")
    result = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, text=True, timeout=900,
                            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    found = shutil.which("chromium")
    if not found:
        pytest.skip(f"chromium could not be installed (apt-get install -y chromium: exit {result.returncode}: {result.stderr.strip()[-300:]})")
    return found


@dataclass
class PageVisit:
    console: list[str]
    requests: list[str]
    screenshot: Path
    stderr: str = field(repr=False, default="")


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def _record(self) -> None:
        type(self).seen.append(f"{self.command} {self.path}")
        self.send_response(404)
        self.end_headers()

    do_GET = do_POST = do_HEAD = do_CONNECT = do_PUT = do_OPTIONS = _record  # noqa: N815

    def log_message(self, *args) -> None:  # quiet
        pass


def visit(binary: str, page: Path, screenshot: Path, profile: Path, width: int = 1280, height: int = 2400) -> PageVisit:
    """Load ``page`` from disk in headless Chromium, take a screenshot, return what it logged and requested."""
    recorder = type("Recorder", (_Recorder,), {"seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        command = [
            binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={width},{height}",
            f"--screenshot={screenshot}", "--enable-logging=stderr", "--log-level=0", f"--user-data-dir={profile}",
            f"--proxy-server=http://127.0.0.1:{server.server_address[1]}", "--proxy-bypass-list=<-loopback>",
            "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync",
            "--disable-default-apps", "--no-pings", "--virtual-time-budget=3000",
            page.resolve().as_uri(),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    console = [line for line in result.stderr.splitlines() if re.search(r":CONSOLE[(:]", line)]
    assert screenshot.is_file(), f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    return PageVisit(console, list(recorder.seen), screenshot, result.stderr)


# Chromium's own services (sign-in, GCM, updates, time): it contacts them whatever the page, and which of them
# varies from visit to visit (measured: a blank page's visits saw www., accounts. and android.clients.google.com).
BROWSER_OWN_DOMAINS = ("google.com", "gvt1.com", "googleapis.com", "gstatic.com")


def host_of(request: str) -> str:
    """The host of a recorded request: ``CONNECT www.google.com:443`` or ``GET http://example.com/x.png``."""
    target = request.split(" ", 1)[1]
    if "://" in target:
        target = target.split("://", 1)[1]
    return target.split("/", 1)[0].split(":", 1)[0]


def page_requests(visit_: PageVisit) -> list[str]:
    """The requests of a visit other than Chromium's own services': those the page made."""
    def own(host: str) -> bool:
        return any(host == domain or host.endswith("." + domain) for domain in BROWSER_OWN_DOMAINS)

    return [request for request in visit_.requests if not own(host_of(request))]


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium binary for the page tests (installed when missing; the test skips with the reason when it cannot be)."""
    return chromium_binary()


def colour_pixels(png: Path, colour: tuple[int, int, int], tolerance: int = 12) -> int:
    """Pixels of the screenshot within ``tolerance`` of ``colour`` (a chart line's colour, say)."""
    from PIL import Image
    import numpy as np

    with Image.open(png) as image:
        rgb = np.asarray(image.convert("RGB")).astype(int)
    return int((np.abs(rgb - np.array(colour)).max(axis=2) <= tolerance).sum())


def write_docs_image(screenshot: Path, name: str, width: int = 900, height: int | None = None) -> None:
    """With TRAINER_DOCS_IMAGES=1, the screenshot (its top ``height`` pixels, scaled to ``width``) becomes docs/images/NAME."""
    if os.environ.get("TRAINER_DOCS_IMAGES") != "1":
        return
    from PIL import Image

    target = Path(__file__).resolve().parents[1] / "docs" / "images" / name
    target.parent.mkdir(exist_ok=True)
    with Image.open(screenshot) as image:
        if height is not None:
            image = image.crop((0, 0, image.width, min(height, image.height)))
        scaled = image.convert("RGB").resize((width, round(image.height * width / image.width)), Image.LANCZOS)
        scaled.quantize(colors=128).save(target, optimize=True)


def region_colours(png: Path, box: tuple[float, float, float, float]) -> tuple[int, float]:
    """(distinct colours, share of non-white pixels) in a box given as fractions (left, top, right, bottom) of the screenshot."""
    from PIL import Image
    import numpy as np

    with Image.open(png) as image:
        rgb = np.asarray(image.convert("RGB"))
    h, w = rgb.shape[:2]
    part = rgb[int(box[1] * h): int(box[3] * h), int(box[0] * w): int(box[2] * w)].reshape(-1, 3)
    if not len(part):
        return 0, 0.0
    return len(np.unique(part, axis=0)), float((part.min(axis=1) < 245).mean())
