"""The ASGI app: ``GET /`` (the upload page), ``GET /health``, ``POST /predict``; every limit and every error here.

Limits, each answered at once with one line of JSON (``{"error": ...}``), never a traceback:
- concurrency: at most ``max_concurrent`` requests in ``/predict`` at a time; one more is 503 at
  once (no queue). A slot is freed when its work has really ended, so a request that timed out
  still holds its slot until its decoding or model call returns: the bound holds for the work,
  not only for the answers.
- body: 413 beyond ``max_bytes`` (declared or sent); 415 for a type that is not an image or a
  form; 400 for an empty or malformed one or an image the decoders refuse (format, pixel count).
- time: 504 when receiving, decoding and classifying take longer than ``timeout`` seconds (a
  client sending its body slowly included).
- ``Host``: on loopback only ``localhost``/``127.0.0.1``/``[::1]`` are answered (421 otherwise), so
  a web page rebinding its name to this machine cannot read the answers.
Anything else (a bug) is a 500 with one line; its traceback goes to ``on_error``, the server's console.
FastAPI is imported at the top: this module is imported only once ``require_serve_extra`` passed.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from trainer.errors import BadInputError, TrainerError
from trainer.serve.classifier import Classifier
from trainer.serve.settings import DEFAULT_TOP_K, MAX_TOP_K, ServeSettings, is_local_host_header
from trainer.serve.uploads import UploadError, decode_upload, read_body, upload_from_body

ROUTES = "GET /, GET /health and POST /predict"
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


class Slots:
    """How many requests are being served; taken without waiting (None when all are busy), given back once."""

    def __init__(self, limit: int):
        self.limit, self.busy = limit, 0

    def take(self) -> bool:
        if self.busy >= self.limit:
            return False
        self.busy += 1
        return True

    def give_back(self) -> None:
        self.busy -= 1


def parse_top_k(value: str | None, num_classes: int) -> int:
    """``?top_k=`` as a whole number 1..``MAX_TOP_K`` (more than the classes lists them all, as ``trainer predict`` does)."""
    if value is None:
        return min(DEFAULT_TOP_K, num_classes)
    text = value.strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_TOP_K:
        raise UploadError(400, f"top_k: expected a whole number from 1 to {MAX_TOP_K}; got {value[:40]!r}.")
    return int(text)


def build_app(classifier: Classifier, settings: ServeSettings, *, on_notice: Callable[[str], None] | None = None,
              on_error: Callable[[BaseException], None] | None = None):
    """The FastAPI app serving ``classifier`` within ``settings``' bounds; ``on_notice`` gets each distinct conversion
    notice once, ``on_error`` each unexpected exception (a bug) with its traceback."""
    from trainer.secrets import mask_url
    from trainer.serve.page import CONTENT_SECURITY_POLICY, PAGE

    settings = settings.check()
    slots = Slots(settings.max_concurrent)
    workers = concurrent.futures.ThreadPoolExecutor(max_workers=settings.max_concurrent, thread_name_prefix="trainer-serve")
    noticed: set[str] = set()

    def error(status: int, message: str) -> JSONResponse:
        line = " ".join(mask_url(message).split())  # one line, whatever the message held
        return JSONResponse({"error": line}, status_code=status, headers=SECURITY_HEADERS)

    app = FastAPI(title="trainer serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.workers = workers

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={**SECURITY_HEADERS, "Content-Security-Policy": CONTENT_SECURITY_POLICY})

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({
            "status": "ok", "model": classifier.source.name, "format": classifier.kind, "classes": len(classifier.class_names),
            "class_names": classifier.class_names, "input_shape": list(classifier.input_shape),
            "busy": slots.busy, "max_concurrent": slots.limit, "max_bytes": settings.max_bytes, "timeout": settings.timeout,
        }, headers=SECURITY_HEADERS)

    def classify(upload: Any, top_k: int) -> dict[str, Any]:  # in a worker thread
        inputs = decode_upload(upload, classifier.input_shape)
        record = classifier.classify(inputs, top_k)[0]
        return {**record, "notice": " ".join(inputs.notices) or None}

    def finished(future: "asyncio.Future[Any]") -> None:
        slots.give_back()
        if not future.cancelled():
            future.exception()  # retrieved here, so asyncio does not log it again

    def report_bug(future: "asyncio.Future[Any]") -> None:
        """A bug in a request the client stopped waiting for: still on the server's console."""
        if not future.cancelled() and future.exception() is not None and not isinstance(future.exception(), TrainerError) and on_error:
            on_error(future.exception())

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        if not slots.take():
            return error(503, f"busy: {slots.limit} request(s) are being classified (--max-concurrent {slots.limit}); try again shortly.")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.timeout
        handed_over = False
        try:
            top_k = parse_top_k(request.query_params.get("top_k"), len(classifier.class_names))
            body = await asyncio.wait_for(read_body(request.headers, request.stream(), settings.max_bytes), settings.timeout)
            upload = upload_from_body(request.headers.get("content-type"), body)
            work = loop.run_in_executor(workers, classify, upload, top_k)
            handed_over = True
            work.add_done_callback(finished)
            record = await asyncio.wait_for(asyncio.shield(work), max(deadline - loop.time(), 0.001))
        except ClientDisconnect:
            return error(400, "the client closed the connection before its body arrived.")
        except asyncio.TimeoutError:
            if handed_over:
                work.add_done_callback(report_bug)
            return error(504, f"the request took longer than {settings.timeout:g} s (--timeout) to arrive and be classified; it was abandoned.")
        except UploadError as refused:
            return error(refused.status, str(refused))
        except BadInputError as refused:  # the decoders' refusals: format, pixel count, unreadable bytes
            return error(400, str(refused))
        except Exception as exc:  # noqa: BLE001 - a bug: one line to the client, the traceback to the console (once)
            if on_error is not None:
                on_error(exc)
            return error(500, f"internal error ({type(exc).__name__}) in trainer serve; the server's console has the traceback.")
        finally:
            if not handed_over:
                slots.give_back()
        if record.get("notice") and record["notice"] not in noticed and on_notice is not None:
            noticed.add(record["notice"])
            on_notice(record["notice"])
        return JSONResponse(record, headers=SECURITY_HEADERS)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error(404, f"no such page: {request.method} {request.url.path[:200]}; this server answers {ROUTES}.")
        if exc.status_code == 405:
            return error(405, f"{request.method} is not allowed on {request.url.path[:200]}; this server answers {ROUTES}.")
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(400, f"bad request to {request.url.path[:200]}; this server answers {ROUTES}.")

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        if on_error is not None:
            on_error(exc)
        return error(500, f"internal error ({type(exc).__name__}) in trainer serve; the server's console has the traceback.")

    return LoopbackHostOnly(app) if settings.loopback else app


class LoopbackHostOnly:
    """ASGI wrapper: a server on loopback answers only requests whose ``Host`` names loopback (421 otherwise)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            host = next((value.decode("latin-1") for name, value in scope.get("headers", ()) if name == b"host"), "")
            if not is_local_host_header(host):
                message = (f"Host {host[:100]!r} is not this server's: it listens on loopback and answers requests to localhost, "
                           "127.0.0.1 or [::1] only (start it with --host to serve other names).")
                await JSONResponse({"error": message}, status_code=421, headers=SECURITY_HEADERS)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)
