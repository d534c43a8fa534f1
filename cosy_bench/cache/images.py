"""Synthetic images that carry their own checksum.

Each PNG written by the synthesis pass holds a ``tEXt`` chunk ``cosy-sha256`` right after
its header: the SHA-256 of the image's *key* (prompt, index and seed of its work item) and of
the PNG's bytes without that chunk. Checking an image (:func:`check_png`) reads and hashes
the file, without decoding it: a truncated, damaged or replaced image (another picture, or
another cached image copied over it) does not verify, is moved aside with a warning and
generated again. A second ``tEXt`` chunk ``cosy-key`` holds the key itself (JSON, ASCII), so
that an audit that knows only the file (``bench faults``) can verify its digest
(:func:`recorded_key`); the reader never trusts it: it checks against the key it expects.
Images written before the key chunk existed verify as before. Image viewers and Pillow
ignore the extra chunks.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zlib
from pathlib import Path

from PIL import Image

from cosy_bench.cache.checked import move_aside
from cosy_bench.cache.store import atomic_path

KEYWORD = b"cosy-sha256"
KEY_KEYWORD = b"cosy-key"
_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _digest(key: str, body: bytes) -> bytes:
    return hashlib.sha256(key.encode("utf-8") + b"\x00" + body).hexdigest().encode()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(image: Image.Image, key: str) -> bytes:
    """The PNG file of ``image`` with its checksum chunk for ``key``."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    plain = buf.getvalue()
    ihdr_end = 8 + 8 + struct.unpack(">I", plain[8:12])[0] + 4
    named = _chunk(b"tEXt", KEY_KEYWORD + b"\x00" + json.dumps(key).encode("ascii"))
    body = plain[:ihdr_end] + named + plain[ihdr_end:]
    return body[:ihdr_end] + _chunk(b"tEXt", KEYWORD + b"\x00" + _digest(key, body)) + body[ihdr_end:]


def recorded_key(data: bytes) -> str | None:
    """The key a PNG of this cache records in its ``cosy-key`` chunk; None if it has none."""
    pos = 8
    while pos + 12 <= len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        end = pos + 12 + length
        if data[pos + 4:pos + 8] == b"tEXt" and data[pos + 8:end - 4].startswith(KEY_KEYWORD + b"\x00"):
            try:
                key = json.loads(data[pos + 8 + len(KEY_KEYWORD) + 1:end - 4])
            except ValueError:
                return None
            return key if isinstance(key, str) else None
        if data[pos + 4:pos + 8] == b"IDAT":
            return None
        pos = end
    return None


def save_png(image: Image.Image, path: str | os.PathLike, key: str) -> None:
    """Write ``image`` with its checksum atomically (temporary file, then rename)."""
    data = png_bytes(image, key)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def png_problem(data: bytes, key: str) -> str | None:
    """Why ``data`` is not the intact PNG written for ``key``; None when it is."""
    if not data.startswith(_SIGNATURE):
        return "not a PNG file"
    pos, recorded, body = 8, None, data
    while pos + 12 <= len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        end = pos + 12 + length
        if data[pos + 4:pos + 8] == b"tEXt" and data[pos + 8:end - 4].startswith(KEYWORD + b"\x00"):
            recorded = data[pos + 8 + len(KEYWORD) + 1:end - 4]
            body = data[:pos] + data[end:]
            break
        pos = end
    if recorded is None:
        return "no checksum chunk (not written by this cache, or replaced)"
    if _digest(key, body) != recorded:
        return "checksum mismatch (damaged, truncated or replaced)"
    return None


def check_png(path: str | os.PathLike, key: str, move: bool = True) -> bool:
    """Is the image at ``path`` the intact one written for ``key``? A file that is there but
    does not verify is moved aside (warning naming it) when ``move``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return False
    problem = png_problem(data, key)
    if problem is not None and move:
        move_aside(path, problem)
    return problem is None
