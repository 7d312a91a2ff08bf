"""Small images as ``data:image/png`` URIs, encoded here (zlib and struct; Pillow is not a dependency)."""
from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

THUMBNAIL = 64  # pixels on the longer side of an image shown in a page


def as_uint8(image: np.ndarray) -> np.ndarray:
    """An image (H, W[, C]) as 0..255 bytes: 0..1 floats scaled, anything else clipped; 1 or 3 channels kept, others reduced."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] not in (3, 4):
        array = array[..., 0]
    array = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    if array.size and array.max() <= 1.0 and array.min() >= 0.0 and np.issubdtype(np.asarray(image).dtype, np.floating):
        array = array * 255.0
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def downscale(image: np.ndarray, side: int = THUMBNAIL) -> np.ndarray:
    """Every n-th pixel so that the longer side is at most ``side`` (a thumbnail; the browser scales it up crisply)."""
    step = max(1, -(-max(image.shape[:2]) // side))
    return image[::step, ::step]


def png_bytes(image: np.ndarray) -> bytes:
    """A PNG of a (H, W) grey or (H, W, 3|4) colour uint8 image."""
    image = np.ascontiguousarray(image)
    height, width = image.shape[:2]
    colour = {2: 0, 3: {3: 2, 4: 6}.get(image.shape[-1] if image.ndim == 3 else 0, 0)}[image.ndim]
    rows = image.reshape(height, -1)
    raw = b"".join(b"\x00" + rows[row].tobytes() for row in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def data_uri(image: np.ndarray, side: int = THUMBNAIL) -> str:
    """``data:image/png;base64,...`` of the image, downscaled to at most ``side`` pixels a side."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(downscale(as_uint8(image), side))).decode("ascii")
