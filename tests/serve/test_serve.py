"""``trainer serve`` (issue 28 item 3): a real server on 127.0.0.1 in a subprocess, a real HTTP client, the upload page in
headless Chromium; its answers equal ``trainer predict``'s, and every bad upload is a 4xx in one line of JSON.

The fast lane covers the refusals before anything loads (bounds, the missing extra) and the upload parsing; the
servers (``slow``) are started by module fixtures on a free port (``--port 0``) and stopped with Ctrl-C after.
"""
from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import REPO_ROOT, run_cli, tiny_config
from tests.datagen import write_mnist_npz
from tests.hostile.test_hostile_decoders import png_declaring

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import serve_load  # noqa: E402 - the benchmark's stdlib helpers: one way to start the server and send requests

DIGITS = sorted((REPO_ROOT / "examples" / "digits").glob("*.png"))
SCREENSHOT_ENV = "TRAINER_DOC_SCREENSHOTS"  # =1: the upload page test also writes docs/images/serve.png
SCREENSHOT_RUN_ENV = "TRAINER_DOC_SCREENSHOT_RUN"  # ... of a server on this run (a real MNIST run) instead of the tiny one


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def hostile_images(folder: Path) -> dict[str, Path]:
    """Odd but valid images: colour and off-size, one pixel, 16-bit greyscale, an animated GIF of 1,000 frames."""
    from PIL import Image

    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    files = {}
    files["colour"] = folder / "colour.png"
    Image.fromarray(rng.integers(0, 255, (40, 64, 3), dtype=np.uint8)).save(files["colour"])
    files["one_pixel"] = folder / "one-pixel.png"
    Image.new("L", (1, 1), 200).save(files["one_pixel"])
    files["sixteen_bit"] = folder / "sixteen-bit.png"
    Image.fromarray((rng.integers(0, 65535, (28, 28))).astype(np.uint16)).save(files["sixteen_bit"])
    files["gif"] = folder / "frames.gif"
    frames = [Image.fromarray(np.full((28, 28), i % 256, np.uint8)) for i in range(1000)]
    frames[0].save(files["gif"], save_all=True, append_images=frames[1:], duration=10)
    return files


# --------------------------------------------------------------------------- fast: refusals before anything loads


@pytest.mark.parametrize("args, named", [
    (["--port", "70000"], "--port"),
    (["--max-bytes", "0"], "--max-bytes"),
    (["--max-bytes", str(2**40)], "--max-bytes"),
    (["--max-concurrent", "0"], "--max-concurrent"),
    (["--timeout", "0"], "--timeout"),
    (["--timeout", "nan"], "--timeout"),
    (["--host", " "], "--host"),
])
def test_out_of_bounds_options_are_one_line_and_exit_2(cli, tmp_path, args, named):
    result = cli("serve", tmp_path / "no-run", *args)
    assert result.exit_code == 2, result.output
    assert result.text.startswith(f"error: {named}:") and "expected" in result.text and "Traceback" not in result.output


def test_without_the_serve_extra_it_names_the_install_command(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "python_multipart", None)  # the import system's "not installed"
    result = cli("serve", tmp_path)
    assert result.exit_code == 2
    assert "pip install -e '.[serve]'" in result.text and len(result.output.strip().splitlines()) <= 2


@pytest.mark.parametrize("header, local", [
    ("127.0.0.1:8000", True), ("localhost:8000", True), ("localhost", True), ("[::1]:8000", True), ("127.1.2.3", True),
    ("evil.example:8000", False), ("127.0.0.1.evil.example", False), ("", False), ("0.0.0.0:8000", False), ("[::ffff:1.2.3.4]", False),
])
def test_a_loopback_server_answers_only_loopback_host_headers(header, local):
    from trainer.serve.settings import is_local_host_header

    assert is_local_host_header(header) is local


def multipart_body(fields: list[tuple[str, str, bytes]], boundary: str = "b0und4ry") -> tuple[bytes, str]:
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n\r\n'.encode() + data + b"\r\n"
                    for name, filename, data in fields) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("case, status, words", [
    ("empty raw body", 400, "the request body is empty"),
    ("empty file field", 400, "the field 'file' holds no bytes"),
    ("text content type", 415, "is not an image"),
    ("no content type", 415, "'(none)' is not an image"),
    ("no file field", 400, "no field 'file' (found 'picture')"),
    ("no boundary", 400, "without a boundary"),
    ("garbled multipart", 400, "not a valid multipart/form-data body"),
    ("too many fields", 400, "more than 16 fields"),
])
def test_bad_request_bodies_are_one_4xx_line(case, status, words):
    pytest.importorskip("python_multipart", reason="the [serve] extra (python-multipart) is not installed")
    from trainer.serve.uploads import UploadError, upload_from_body

    body, content_type = {
        "empty raw body": (b"", "image/png"),
        "empty file field": multipart_body([("file", "x.png", b"")]),
        "text content type": (b"hello", "text/plain"),
        "no content type": (b"hello", None),
        "no file field": multipart_body([("picture", "x.png", b"\x89PNG")]),
        "no boundary": (b"--x\r\n", "multipart/form-data"),
        "garbled multipart": (b"--b0und4ry\r\nno headers end here" + b"\xff" * 20, "multipart/form-data; boundary=b0und4ry"),
        "too many fields": multipart_body([(f"f{i}", "x", b"1") for i in range(17)]),
    }[case]
    with pytest.raises(UploadError) as refused:
        upload_from_body(content_type, body)
    assert refused.value.status == status and words in str(refused.value) and "\n" not in str(refused.value)


def test_the_upload_name_is_only_echoed_never_a_path():
    pytest.importorskip("python_multipart", reason="the [serve] extra (python-multipart) is not installed")
    from trainer.serve.uploads import upload_from_body

    body, content_type = multipart_body([("note", "", b"hi"), ("file", "../../etc/passwd", b"\x89PNG")])
    upload = upload_from_body(content_type, body)
    assert upload.name == "../../etc/passwd" and upload.data == b"\x89PNG"


# --------------------------------------------------------------------------- slow: real servers


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished tiny MLP run on 28x28 greyscale digits."""
    pytest.importorskip("python_multipart", reason="the [serve] extra (python-multipart) is not installed")
    root = tmp_path_factory.mktemp("serve-run")
    data = write_mnist_npz(root / "mnist.npz", n_train=256, n_test=64, seed=0)
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data, train={"epochs": 2})))
    result = run_cli("run", config, "--run-dir", root / "run")
    assert result.exit_code == 0, result.output
    return root / "run"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    return hostile_images(tmp_path_factory.mktemp("serve-images"))


class Server:
    def __init__(self, process: subprocess.Popen, url: str, log: Path, cwd: Path, tmp: Path):
        self.process, self.url, self.log, self.cwd, self.tmp = process, url, log, cwd, tmp
        self.host, self.port = "127.0.0.1", int(url.rstrip("/").rsplit(":", 1)[1])

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start(run_dir: Path, root: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    """A server in its own empty working and temporary folders (so any file it wrote would show)."""
    pytest.importorskip("python_multipart", reason="the [serve] extra (python-multipart) is not installed")
    cwd, tmp = root / "cwd", root / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    environment = {**os.environ, "TMPDIR": str(tmp), **(env or {})}
    process, url = serve_load.start_server(run_dir, *args, log=root / "server.log", env=environment, cwd=cwd)
    return Server(process, url, root / "server.log", cwd, tmp)


@pytest.fixture(scope="module")
def server(run_dir, tmp_path_factory):
    """The everyday server, with a small body limit so that 'too large' is cheap to send."""
    running = start(run_dir, tmp_path_factory.mktemp("server"), "--max-bytes", "300000", "--max-concurrent", "8", "--timeout", "20")
    yield running
    assert serve_load.stop_server(running.process) in (0, 130, -2)


@pytest.fixture(scope="module")
def tight_server(run_dir, tmp_path_factory):
    """One request at a time, 1.5 s each: the 503 and 504 cases."""
    running = start(run_dir, tmp_path_factory.mktemp("tight"), "--max-concurrent", "1", "--timeout", "1.5")
    yield running
    serve_load.stop_server(running.process)


def post(server: Server, path: Path | bytes, top_k: int = 3, name: str | None = None) -> tuple[int, dict]:
    data = path if isinstance(path, bytes) else Path(path).read_bytes()
    body, content_type = serve_load.multipart(data, name or (Path(path).name if not isinstance(path, bytes) else "upload.png"))
    return serve_load.request(f"{server.url}predict?top_k={top_k}", body, content_type)


def raw_exchange(server: Server, head: bytes, body_parts: list[bytes] = (), pause: float = 0.0) -> tuple[int, dict, float]:
    """Send a request by hand (headers, then body parts with pauses; a refused send is ignored): (status, JSON, seconds)."""
    start_time = time.monotonic()
    sock = socket.create_connection((server.host, server.port), timeout=30)
    try:
        sock.sendall(head)
        for part in body_parts:
            time.sleep(pause)
            try:
                sock.sendall(part)
            except OSError:
                break
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        return answer.status, json.loads(answer.read()), time.monotonic() - start_time
    finally:
        sock.close()


def head_of(server: Server, content_type: str = "image/png", length: int | None = None, chunked: bool = False) -> bytes:
    lines = [b"POST /predict HTTP/1.1", f"Host: 127.0.0.1:{server.port}".encode(), f"Content-Type: {content_type}".encode()]
    lines.append(b"Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


@pytest.mark.slow
def test_answers_equal_trainer_predicts_on_the_same_files(server, run_dir, images, tmp_path):
    files = [*DIGITS, *images.values()]
    out = tmp_path / "predictions.json"
    result = run_cli("predict", run_dir, *files, "--top-k", "3", "--output", out)
    assert result.exit_code == 0, result.output
    expected = {Path(r["input"]).name: r for r in json.loads(out.read_text())}
    for path in files:
        status, answer = post(server, path)
        assert status == 200, answer
        want = expected[path.name]
        assert (answer["input"], answer["predicted"], answer["name"]) == (path.name, want["predicted"], want["name"])
        assert answer["probability"] == pytest.approx(want["probability"], abs=1e-5)
        assert [t["class"] for t in answer["top_k"]] == [t["class"] for t in want["top_k"]]
        assert [t["probability"] for t in answer["top_k"]] == pytest.approx([t["probability"] for t in want["top_k"]], abs=1e-5)


@pytest.mark.slow
def test_a_converted_image_carries_predicts_notice_and_the_console_shows_it_once(server, run_dir, images):
    notices = {}
    for key in ("colour", "colour", "one_pixel"):
        status, answer = post(server, images[key])
        assert status == 200
        notices[key] = answer["notice"]
    assert "colour to greyscale" in notices["colour"] and "resized to 28x28" in notices["colour"]
    assert "colour" not in notices["one_pixel"] and "resized to 28x28" in notices["one_pixel"]
    alone = run_cli("predict", run_dir, images["colour"])
    assert f"notice: {notices['colour']}" in alone.text  # word for word what trainer predict says about that file
    status, plain = post(server, DIGITS[0])
    assert plain["notice"] is None
    console = " ".join(server.output().split())
    assert console.count(notices["colour"]) == 1 and console.count(notices["one_pixel"]) == 1


@pytest.mark.slow
def test_raw_image_bytes_and_top_k(server):
    status, answer = serve_load.request(f"{server.url}predict?top_k=10", DIGITS[7].read_bytes(), "image/png")
    assert status == 200 and answer["input"] == "<body>" and len(answer["top_k"]) == 10
    assert sum(t["probability"] for t in answer["top_k"]) == pytest.approx(1.0, abs=1e-5)
    status, clamped = post(server, DIGITS[7], top_k=1000)  # more than the classes: all of them, as trainer predict does
    assert status == 200 and len(clamped["top_k"]) == 10


@pytest.mark.slow
def test_health_names_the_model_and_the_limits(server):
    status, health = serve_load.request(f"{server.url}health")
    assert status == 200
    assert health["status"] == "ok" and health["classes"] == 10 and health["input_shape"] == [28, 28, 1] and health["format"] == "keras"
    assert health["max_bytes"] == 300000 and health["max_concurrent"] == 8 and health["busy"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("case", [
    "undecodable", "empty", "text type", "decompression bomb", "eps named png", "too large declared", "too large chunked",
    "top_k zero", "top_k word", "unknown page", "wrong method", "foreign host",
])
def test_bad_requests_are_4xx_one_line_of_json(server, case):
    status, answer = {
        "undecodable": lambda: post(server, b"\x89PNG\r\n\x1a\n" + os.urandom(300)),
        "empty": lambda: serve_load.request(f"{server.url}predict", b"", "image/png"),
        "text type": lambda: serve_load.request(f"{server.url}predict", b"hello", "text/plain"),
        "decompression bomb": lambda: post(server, png_declaring(20_000, 20_000)),
        "eps named png": lambda: post(server, b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", name="x.png"),
        "too large declared": lambda: raw_exchange(server, head_of(server, length=10**9))[:2],
        "too large chunked": lambda: raw_exchange(server, head_of(server, chunked=True),
                                                  [b"%x\r\n" % 100_000 + b"\0" * 100_000 + b"\r\n"] * 5)[:2],
        "top_k zero": lambda: post(server, DIGITS[0], top_k=0),
        "top_k word": lambda: serve_load.request(f"{server.url}predict?top_k=many", DIGITS[0].read_bytes(), "image/png"),
        "unknown page": lambda: serve_load.request(f"{server.url}../../etc/passwd"),
        "wrong method": lambda: serve_load.request(f"{server.url}predict", method="GET"),
        "foreign host": lambda: serve_load.request(f"{server.url}health", headers={"Host": "rebound.example:80"}),
    }[case]()
    expected = {"undecodable": 400, "empty": 400, "text type": 415, "decompression bomb": 400, "eps named png": 400,
                "too large declared": 413, "too large chunked": 413, "top_k zero": 400, "top_k word": 400, "unknown page": 404,
                "wrong method": 405, "foreign host": 421}[case]
    assert status == expected, answer
    assert set(answer) == {"error"} and "\n" not in answer["error"] and "Traceback" not in answer["error"]
    if case == "decompression bomb":
        assert "refused" in answer["error"] and "decompression bomb" in answer["error"]
    if case.startswith("too large"):
        assert "300,000 bytes" in answer["error"] and "--max-bytes" in answer["error"]
    status, health = serve_load.request(f"{server.url}health")
    assert status == 200 and health["busy"] == 0  # every refusal gave its slot back


@pytest.mark.slow
def test_beyond_the_concurrency_limit_503_at_once_and_a_slow_body_times_out_504(tight_server):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        # slowloris: declares 1,000 bytes, sends 10 a second; it holds the one slot until the timeout
        slow = pool.submit(raw_exchange, tight_server, head_of(tight_server, length=1000), [b"x" * 10] * 30, 0.1)
        time.sleep(0.5)
        began = time.monotonic()
        status, answer = post(tight_server, DIGITS[0])
        assert status == 503 and "--max-concurrent 1" in answer["error"], answer
        assert time.monotonic() - began < 1.0  # refused at once, not queued
        slow_status, slow_answer, took = slow.result(timeout=30)
    assert slow_status == 504 and "--timeout" in slow_answer["error"] and 1.4 <= took < 5, (slow_answer, took)
    status, answer = post(tight_server, DIGITS[0])
    assert status == 200, answer  # the slot came back


@pytest.mark.slow
def test_the_server_writes_no_file(server, images):
    from PIL import Image

    def files() -> list[Path]:
        return sorted(p for folder in (server.cwd, server.tmp) for p in folder.rglob("*"))

    before = files()
    big = png_bytes(Image.fromarray(np.random.default_rng(1).integers(0, 255, (280, 280, 3), dtype=np.uint8)))
    assert 200_000 < len(big) < 300_000  # near this server's --max-bytes
    for data in (big, images["gif"].read_bytes(), images["sixteen_bit"].read_bytes()):
        status, answer = post(server, data)
        assert status == 200, answer
    assert files() == before == []


@pytest.mark.slow
def test_a_port_in_use_is_one_line_and_exit_2(run_dir, subprocess_env):
    pytest.importorskip("python_multipart", reason="the [serve] extra (python-multipart) is not installed")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "trainer", "serve", str(run_dir), "--port", str(port)],
                              capture_output=True, text=True, env=subprocess_env, timeout=180)
    assert done.returncode == 2, done.stderr
    assert f"--port {port}: cannot listen there" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_network_address_is_announced_as_reachable(run_dir, tmp_path):
    running = start(run_dir, tmp_path, "--host", "0.0.0.0")
    try:
        header = " ".join(running.output().split())
        assert "REACHABLE FROM THE NETWORK" in header and "no authentication" in header
        status, health = serve_load.request(f"http://127.0.0.1:{running.port}/health", headers={"Host": "my-laptop.lan"})
        assert status == 200  # named hosts are answered when the user chose to listen beyond loopback
    finally:
        serve_load.stop_server(running.process)


@pytest.mark.slow
def test_load_no_errors_and_no_memory_growth(server):
    report = serve_load.load(server.url, server.process.pid, DIGITS, warmup=20, sequential=60, concurrent=8)
    assert report["sequential"]["errors"] == 0 and report["concurrent"]["errors"] == 0, report
    assert report["rss_growth"] < 0.10, report


@pytest.mark.slow
def test_jax_backend_serves_the_same_answers(run_dir, tmp_path):
    pytest.importorskip("jax", reason="the [jax] extra is not installed")
    out = tmp_path / "predictions.json"
    assert run_cli("predict", run_dir, *DIGITS[:4], "--output", out).exit_code == 0
    expected = {Path(r["input"]).name: r for r in json.loads(out.read_text())}
    running = start(run_dir, tmp_path, env={"KERAS_BACKEND": "jax"})
    try:
        for path in DIGITS[:4]:
            status, answer = post(running, path)
            assert status == 200 and answer["predicted"] == expected[path.name]["predicted"]
            assert answer["probability"] == pytest.approx(expected[path.name]["probability"], abs=1e-5)
    finally:
        serve_load.stop_server(running.process)


@pytest.mark.slow
def test_an_onnx_export_is_served_under_predicts_trust_rules(run_dir, tmp_path):
    pytest.importorskip("onnxruntime", reason="the [onnx] extra is not installed")
    export = tmp_path / "export" / "model.onnx"
    result = run_cli("export", run_dir, "--format", "onnx", "--output", export)
    assert result.exit_code == 0, result.output
    out = tmp_path / "predictions.json"
    assert run_cli("predict", export, *DIGITS[:3], "--output", out).exit_code == 0
    expected = {Path(r["input"]).name: r for r in json.loads(out.read_text())}
    (tmp_path / "onnx").mkdir()
    running = start(export, tmp_path / "onnx")
    try:
        status, health = serve_load.request(f"{running.url}health")
        assert health["format"] == "onnx"
        for path in DIGITS[:3]:
            status, answer = post(running, path)
            assert status == 200 and answer["predicted"] == expected[path.name]["predicted"]
            assert answer["probability"] == pytest.approx(expected[path.name]["probability"], abs=1e-5)
    finally:
        serve_load.stop_server(running.process)
    export.with_name("model.onnx").write_bytes(export.read_bytes() + b"\0")  # no longer what was signed
    refused = subprocess.run([sys.executable, "-m", "trainer", "serve", str(export), "--port", "0"], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=120)
    assert refused.returncode == 2 and "--trust-export" in refused.stderr and "Traceback" not in refused.stderr


# --------------------------------------------------------------------------- the upload page in headless Chromium


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium (tests/browser.py installs it when missing, as root; skipped, saying why, only when that fails)."""
    from tests.browser import chromium_binary

    return chromium_binary()


@pytest.mark.slow
def test_the_upload_page_shows_the_prediction_in_chromium(server, chromium, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the [dev] extra) is not installed")
    from PIL import Image

    documented = os.environ.get(SCREENSHOT_RUN_ENV)
    if documented:
        (tmp_path / "documented").mkdir()
        server = start(Path(documented), tmp_path / "documented")
    status, expected = post(server, DIGITS[3])
    problems, requests = [], []
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 640, "height": 520})
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(server.url)
            page.locator("#model", has_text="10 classes").wait_for(timeout=20_000)  # the page's own script ran under its CSP
            page.set_input_files("#file", str(DIGITS[3]))
            page.locator("#result", has_text="prediction:").wait_for(timeout=20_000)
            shown = page.inner_text("#result")
            rows = page.locator("#scores tr").count()
            shot = tmp_path / "serve.png"
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert shown == f"prediction: {expected['name']} ({100 * expected['probability']:.1f}%)"
    assert rows == 3 and problems == []
    assert requests and all(url.startswith(server.url) or url.startswith("blob:") for url in requests), requests
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (520, 640) and pixels.std() > 10 and len(np.unique(pixels)) > 20  # drawn, not blank
    if os.environ.get(SCREENSHOT_ENV) == "1":
        target = REPO_ROOT / "docs" / "images" / "serve.png"
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, target)
    if documented:
        serve_load.stop_server(server.process)


# --------------------------------------------------------------------------- the app around a stand-in model (no TensorFlow)


class StandIn:
    """A model that sleeps, or raises a bug, instead of classifying."""

    def __init__(self, sleep: float = 0.0, bug: bool = False):
        self.sleep, self.bug, self.calls, self.finished = sleep, bug, 0, 0

    def predict(self, images, batch_size=256, verbose=0):
        self.calls += 1
        if self.bug:
            raise RuntimeError("a bug in the model call")
        time.sleep(self.sleep)
        self.finished += 1
        return np.full((len(images), 3), 1 / 3)


@pytest.fixture
def stand_in_server():
    """``build_app`` around a stand-in model, served by uvicorn on a thread; yields (url, model, errors seen by on_error)."""
    pytest.importorskip("python_multipart", reason="the [serve] extra (python-multipart) is not installed")
    import threading

    import uvicorn

    from trainer.serve.app import build_app
    from trainer.serve.classifier import Classifier
    from trainer.serve.server import bind
    from trainer.serve.settings import ServeSettings

    started = []

    def start_app(model: StandIn, **limits):
        settings = ServeSettings(port=0, **limits)
        errors: list[BaseException] = []
        classifier = Classifier(model, "softmax", ["a", "b", "c"], (28, 28, 1), Path("stand-in"), "stand-in")
        app = build_app(classifier, settings, on_error=errors.append)
        listening = bind(settings)
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="critical", access_log=False, lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listening.sock]}, daemon=True)
        thread.start()
        started.append((server, thread, listening))
        while not server.started:
            time.sleep(0.02)
        return listening.url, errors

    yield start_app
    for server, thread, listening in started:
        server.should_exit = True
        thread.join(10)
        listening.sock.close()


@pytest.mark.slow
def test_a_slow_model_call_is_504_and_keeps_its_slot_until_it_returns(stand_in_server):
    model = StandIn(sleep=1.5)
    url, _ = stand_in_server(model, max_concurrent=1, timeout=0.5)
    body, content_type = serve_load.multipart(DIGITS[0].read_bytes(), "slow.png")
    began = time.monotonic()
    status, answer = serve_load.request(f"{url}predict", body, content_type)
    assert status == 504 and "--timeout" in answer["error"] and time.monotonic() - began < 1.2
    status, answer = serve_load.request(f"{url}predict", body, content_type)
    assert status == 503  # the abandoned call still runs: its slot is not free yet
    deadline = time.monotonic() + 10
    while serve_load.request(f"{url}health")[1]["busy"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert serve_load.request(f"{url}health")[1]["busy"] == 0 and model.finished == 1


@pytest.mark.slow
def test_a_bug_is_a_500_in_one_line_and_its_traceback_goes_to_the_console(stand_in_server):
    url, errors = stand_in_server(StandIn(bug=True))
    body, content_type = serve_load.multipart(DIGITS[0].read_bytes(), "x.png")
    status, answer = serve_load.request(f"{url}predict", body, content_type)
    assert status == 500 and set(answer) == {"error"} and "RuntimeError" in answer["error"] and "a bug" not in answer["error"]
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert serve_load.request(f"{url}health")[1]["busy"] == 0
