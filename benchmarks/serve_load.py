"""Load on ``trainer serve``: sequential and concurrent requests, requests/s, p50/p99 latency, the server's memory.

    python3 benchmarks/serve_load.py RUN [--sequential 200] [--concurrent 50] [--warmup 20] [--images examples/digits]

Starts ``python -m trainer serve RUN --port 0 --max-concurrent N`` (N = --concurrent, so the
concurrent phase is all served, none refused), sends --warmup requests, reads the server's
resident memory (VmRSS), sends --sequential requests one after the other and then --concurrent at
once (threads released together), and reads the memory again after each phase. Prints one JSON
object: per phase requests/s, p50/p99 latency in ms, errors, and the memory growth after warm-up.
Standard library only (the tests import its helpers). Results: docs/serve.md.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def start_server(target: str | Path, *args: str, log: Path, env: dict[str, str] | None = None, cwd: Path | None = None,
                 wait: float = 180.0) -> tuple[subprocess.Popen, str]:
    """``trainer serve TARGET --port 0 ARGS`` in a subprocess writing to ``log``; returns it and its URL once it answers."""
    environment = dict(os.environ if env is None else env)
    environment["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + environment.get("PYTHONPATH", "")
    environment.setdefault("PYTHONUNBUFFERED", "1")
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "trainer", "serve", str(target), "--port", "0", *args],
                                   stdout=out, stderr=subprocess.STDOUT, env=environment, cwd=cwd)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        text = Path(log).read_text(errors="replace")
        found = re.search(r"listening on (http://\S+?/)", text)
        if found:
            return process, found.group(1)
        if process.poll() is not None:
            raise RuntimeError(f"trainer serve exited with {process.returncode}:\n{text}")
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"trainer serve did not start within {wait:g} s:\n{Path(log).read_text(errors='replace')}")


def stop_server(process: subprocess.Popen) -> int:
    """Ctrl-C, as a user stops it; killed after 20 s. Returns the exit code."""
    import signal

    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def multipart(data: bytes, filename: str, field: str = "file", content_type: str = "application/octet-stream") -> tuple[bytes, str]:
    """A multipart/form-data body holding one file field, and its Content-Type header."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def request(url: str, body: bytes | None = None, content_type: str | None = None, method: str | None = None,
            headers: dict[str, str] | None = None, timeout: float = 60.0) -> tuple[int, dict]:
    """(status, JSON answer) of one request; an HTTP error's JSON body is returned too, not raised."""
    sent = dict(headers or {})
    if content_type:
        sent["Content-Type"] = content_type
    call = urllib.request.Request(url, data=body, headers=sent, method=method or ("POST" if body is not None else "GET"))
    try:
        with urllib.request.urlopen(call, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def post_image(url: str, path: Path, top_k: int = 3) -> tuple[int, dict]:
    body, content_type = multipart(Path(path).read_bytes(), Path(path).name)
    return request(f"{url}predict?top_k={top_k}", body, content_type)


def rss_bytes(pid: int) -> int:
    """A process's resident memory (``VmRSS`` in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def timed(url: str, path: Path) -> tuple[float, int]:
    start = time.perf_counter()
    status, _ = post_image(url, path)
    return time.perf_counter() - start, status


def phase(url: str, images: list[Path], count: int, concurrent: bool) -> dict:
    """``count`` requests one after the other, or all at once: requests/s, p50/p99 latency (ms), non-200 answers."""
    results: list[tuple[float, int]] = []
    start = time.perf_counter()
    if concurrent:
        gate = threading.Barrier(count)
        lock = threading.Lock()

        def one(index: int) -> None:
            gate.wait()
            result = timed(url, images[index % len(images)])
            with lock:
                results.append(result)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        start = time.perf_counter()
        for thread in threads:
            thread.join()
    else:
        results = [timed(url, images[i % len(images)]) for i in range(count)]
    wall = time.perf_counter() - start
    latencies = sorted(r[0] * 1000 for r in results)
    return {
        "requests": count, "errors": sum(1 for r in results if r[1] != 200), "requests_per_s": round(count / wall, 1),
        "p50_ms": round(statistics.median(latencies), 1), "p99_ms": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1),
    }


def load(url: str, pid: int, images: list[Path], *, warmup: int, sequential: int, concurrent: int) -> dict:
    """Warm-up, then the sequential and the concurrent phase, with the server's memory after each."""
    for i in range(warmup):
        post_image(url, images[i % len(images)])
    baseline = rss_bytes(pid)
    report = {"warmup": warmup, "rss_after_warmup_mib": round(baseline / 2**20, 1)}
    report["sequential"] = phase(url, images, sequential, concurrent=False)
    report["rss_after_sequential_mib"] = round(rss_bytes(pid) / 2**20, 1)
    report["concurrent"] = phase(url, images, concurrent, concurrent=True)
    final = rss_bytes(pid)
    report["rss_after_concurrent_mib"] = round(final / 2**20, 1)
    report["rss_growth"] = round(final / baseline - 1, 4)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run directory (or export) trainer serve takes")
    parser.add_argument("--images", default=str(REPO_ROOT / "examples" / "digits"), help="a folder of images to send in turn")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--log", default="/tmp/serve_load.log", help="the server's output")
    args = parser.parse_args()
    images = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    process, url = start_server(args.run, "--max-concurrent", str(args.concurrent), "--timeout", "60", log=Path(args.log))
    try:
        report = load(url, process.pid, images, warmup=args.warmup, sequential=args.sequential, concurrent=args.concurrent)
    finally:
        stop_server(process)
    report["backend"] = os.environ.get("KERAS_BACKEND", "tensorflow")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
