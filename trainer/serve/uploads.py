"""A request body into the model's input: its size bounded as it arrives, multipart or raw image bytes, decoded as
``trainer predict`` decodes a file.

Uploads are untrusted. The body is read into memory only up to ``max_bytes`` (a larger declared
``Content-Length`` is refused before a byte is read); a multipart body is split by python-multipart's
parser into memory (never a temporary file: Starlette's form parser would spool a part over 1 MiB to
disk); the image goes through ``trainer.data.folder.decode_image``, the decoder of folder datasets
and ``trainer predict``: formats allow-listed, the pixel count checked from the header before
decoding, the first frame of an animation only, 16-bit and float images scaled, the same colour and
size conversions with the same notice. The upload's file name is only ever echoed back, never used
as a path. Every refusal is an ``UploadError`` with an HTTP status and one line.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, AsyncIterator

from trainer.errors import BadInputError

FILE_FIELD = "file"
MAX_PARTS = 16  # fields in one multipart body; the page sends one
MAX_NAME = 200  # characters of an upload's file name echoed back
RAW_TYPES = "image/* (image/png, image/jpeg, ...) or application/octet-stream"


class UploadError(BadInputError):
    """A request the server refuses: ``status`` (4xx) and one line saying what was received and what is allowed."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Upload:
    """One image as received: its bytes and the name it is known by in answers (the multipart file name, or ``<body>``)."""

    data: bytes
    name: str


class NamedImageBytes(io.BytesIO):
    """An upload's bytes as the file object the decoders open; messages name it as ``upload 'NAME'``, not a path."""

    def __init__(self, upload: Upload):
        super().__init__(upload.data)
        self.label = f"upload {upload.name!r}" if upload.name != "<body>" else "the request body"

    def __str__(self) -> str:
        return self.label

    __repr__ = __str__


async def read_body(headers: Any, chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    """The whole body, refused (413) as soon as it declares or sends more than ``max_bytes``."""
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise UploadError(400, f"Content-Length: expected a whole number of bytes; got {declared[:40]!r}.")
        if int(declared) > max_bytes:
            raise too_large(int(declared), max_bytes, "declares")
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > max_bytes:
            raise too_large(len(body), max_bytes, "sent more than")
    return bytes(body)


def too_large(size: int, max_bytes: int, verb: str) -> UploadError:
    shown = f"{size:,} bytes" if verb == "declares" else f"{max_bytes:,} bytes"
    return UploadError(413, f"the request {verb} {shown}; this server takes bodies of at most {max_bytes:,} bytes (--max-bytes).")


def upload_from_body(content_type: str | None, body: bytes) -> Upload:
    """The image a request carries: the ``file`` field of a multipart form, or the raw body of an image content type."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "multipart/form-data":
        upload = _multipart_file(content_type or "", body)
    elif media.startswith("image/") or media == "application/octet-stream":
        upload = Upload(body, "<body>")
    else:
        raise UploadError(
            415, f"Content-Type {media or '(none)'!r} is not an image; send multipart/form-data with the image in the field "
            f"'{FILE_FIELD}', or the raw image bytes with Content-Type {RAW_TYPES}.",
        )
    if not upload.data:
        where = "the request body is empty" if upload.name == "<body>" else f"the field '{FILE_FIELD}' holds no bytes"
        raise UploadError(400, f"{where}; expected an image (PNG, JPEG, BMP, GIF, TIFF, WebP or PPM).")
    return upload


def _multipart_file(content_type: str, body: bytes) -> Upload:
    """The ``file`` field of a multipart/form-data body, split in memory."""
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError(400, "Content-Type multipart/form-data without a boundary; expected what a browser or HTTP client sends for a form upload.")
    parts: list[dict[str, Any]] = []
    header: dict[str, bytearray] = {}

    def part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise UploadError(400, f"the multipart body holds more than {MAX_PARTS} fields; send the image alone in the field '{FILE_FIELD}'.")
        parts.append({"headers": {}, "data": bytearray()})

    def header_field(data: bytes, start: int, end: int) -> None:
        header.setdefault("field", bytearray()).extend(data[start:end])

    def header_value(data: bytes, start: int, end: int) -> None:
        header.setdefault("value", bytearray()).extend(data[start:end])

    def header_end() -> None:
        name = bytes(header.pop("field", b"")).decode("latin-1").lower()
        parts[-1]["headers"][name] = bytes(header.pop("value", b"")).decode("utf-8", "replace")

    def part_data(data: bytes, start: int, end: int) -> None:
        parts[-1]["data"].extend(data[start:end])

    callbacks = {"on_part_begin": part_begin, "on_header_field": header_field, "on_header_value": header_value,
                 "on_header_end": header_end, "on_part_data": part_data}
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except UploadError:
        raise
    except (FormParserError, ValueError) as exc:
        raise UploadError(400, f"not a valid multipart/form-data body ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}); "
                               f"expected a form upload with the image in the field '{FILE_FIELD}'.") from None
    names = []
    for part in parts:
        _, disposition = parse_options_header(part["headers"].get("content-disposition", ""))
        field = disposition.get(b"name", b"").decode("utf-8", "replace")
        names.append(field)
        if field == FILE_FIELD:
            filename = disposition.get(b"filename", b"").decode("utf-8", "replace") or "<file>"
            return Upload(bytes(part["data"]), _shown_name(filename))
    found = ", ".join(repr(n) for n in names[:5]) or "no fields"
    raise UploadError(400, f"the multipart body has no field '{FILE_FIELD}' (found {found}); send the image as the form field '{FILE_FIELD}'.")


def _shown_name(filename: str) -> str:
    """The file name as the client sent it, cut to ``MAX_NAME`` characters: echoed in answers, never used as a path."""
    return filename if len(filename) <= MAX_NAME else filename[:MAX_NAME] + "..."


def decode_upload(upload: Upload, input_shape: tuple[int, ...]):
    """The upload as ``trainer.inference.predict.Inputs`` of one image, with predict's conversion notice."""
    import numpy as np

    from trainer.data.folder import decode_image
    from trainer.inference.predict import Inputs, conversion_notice

    height, width, channels = input_shape
    changes: list[str] = []
    pixels = decode_image(NamedImageBytes(upload), (height, width), "grayscale" if channels == 1 else "rgb", changes)  # type: ignore[arg-type]
    return Inputs(pixels[np.newaxis].astype(np.float32), [(upload.name, None)], conversion_notice(changes, 1, input_shape))
