"""A checksummed container for key files and payloads, validated before anything is parsed.

Layout (all integers little-endian)::

    magic (8 bytes) | version (u16) | header length (u32) | header (UTF-8 JSON object)
    | blob 0 | blob 1 | ... | BLAKE2b-256 of everything before

The header lists the blob sizes. :func:`unframe` checks size limits, magic, version, lengths and
the checksum before it decodes a single byte of JSON, so truncated, extended or bit-flipped input
fails with :class:`~secagg.errors.PayloadError` and never reaches a native parser. The checksum
detects corruption, not forgery: anyone can recompute it (signatures are a separate layer).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence
from typing import Any

from .errors import PayloadError, PayloadTooLargeError, UnsupportedVersionError

_PREFIX = struct.Struct("<8sHI")
_DIGEST_SIZE = 32
MAX_HEADER_BYTES = 4 * 1024 * 1024


def _digest(data: bytes | memoryview) -> bytes:
    return hashlib.blake2b(data, digest_size=_DIGEST_SIZE).digest()


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON encoding (sorted keys, no spaces) used for headers and hashes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def frame(magic: bytes, version: int, header: dict[str, Any], blobs: Sequence[bytes | memoryview]) -> bytes:
    """Serialise ``header`` and ``blobs`` into one checksummed container."""
    header = dict(header, blob_sizes=[len(b) for b in blobs])
    head = canonical_json(header)
    parts = [_PREFIX.pack(magic, version, len(head)), head, *blobs]
    body = b"".join(parts)
    return body + _digest(body)


def unframe(
    data: bytes | bytearray | memoryview,
    *,
    magic: bytes,
    version: int,
    what: str,
    max_bytes: int | None = None,
) -> tuple[dict[str, Any], list[memoryview]]:
    """Validate a container and return its header and blob views.

    Raises:
        PayloadTooLargeError: ``data`` exceeds ``max_bytes``.
        UnsupportedVersionError: the container was written by another format version.
        PayloadError: anything else that is wrong (type, magic, lengths, checksum, header).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PayloadError(f"{what} must be bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    size = view.nbytes
    if max_bytes is not None and size > max_bytes:
        raise PayloadTooLargeError(
            f"{what} of {size} bytes exceeds the limit of {max_bytes} bytes; raise max_bytes if the "
            "sender is trusted to send updates this large"
        )
    if size < _PREFIX.size + _DIGEST_SIZE:
        raise PayloadError(f"{what} is truncated: {size} bytes is shorter than any valid one")
    got_magic, got_version, head_len = _PREFIX.unpack_from(view, 0)
    if got_magic != magic:
        raise PayloadError(f"not a {what}: it does not start with {magic!r}; check what was sent")
    if got_version != version:
        raise UnsupportedVersionError(
            f"{what} has format version {got_version}, this secfl reads version {version}; "
            "upgrade the older party so both use the same secfl release"
        )
    if head_len > MAX_HEADER_BYTES or _PREFIX.size + head_len + _DIGEST_SIZE > size:
        raise PayloadError(f"{what} is truncated or malformed: header length {head_len} does not fit")
    body_end = size - _DIGEST_SIZE
    if _digest(view[:body_end]) != bytes(view[body_end:]):
        raise PayloadError(f"{what} is corrupted: checksum mismatch (truncated, extended or altered in transit)")
    header = parse_json_object(view[_PREFIX.size:_PREFIX.size + head_len], what=f"{what} header")
    sizes = header.get("blob_sizes")
    if not isinstance(sizes, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in sizes):
        raise PayloadError(f"{what} header has no valid blob_sizes list")
    offset = _PREFIX.size + head_len
    if offset + sum(sizes) != body_end:
        raise PayloadError(f"{what} blob sizes ({sum(sizes)} bytes) do not match its body ({body_end - offset} bytes)")
    blobs = []
    for s in sizes:
        blobs.append(view[offset:offset + s])
        offset += s
    return header, blobs


def frame_signed(magic: bytes, version: int, header: dict[str, Any], body: bytes | memoryview) -> bytes:
    """A container whose integrity comes from a signature inside ``header`` (which names the
    body's digest), so it carries no checksum of its own: ``magic | version | header length |
    header | body``."""
    return b"".join([frame_signed_head(magic, version, header), body])  # one copy of the body, not two


def frame_signed_head(magic: bytes, version: int, header: dict[str, Any]) -> bytes:
    """What precedes the body in :func:`frame_signed`'s container (to stream a body after it)."""
    head = canonical_json(header)
    return _PREFIX.pack(magic, version, len(head)) + head


def unframe_signed(
    data: bytes | bytearray | memoryview, *, magic: bytes, version: int, what: str, max_bytes: int | None = None,
    max_header: int = MAX_HEADER_BYTES,
) -> tuple[dict[str, Any], memoryview]:
    """Validate a :func:`frame_signed` container's size, magic, version and header length, then
    parse its header (a JSON object) and return it with a view of the body. Nothing is trusted yet:
    the caller verifies the signature inside the header and the body's digest.

    Raises:
        PayloadTooLargeError, UnsupportedVersionError, PayloadError: as :func:`unframe`; a header
            nested too deeply for the parser is a PayloadError too.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PayloadError(f"{what} must be bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    size = view.nbytes
    if max_bytes is not None and size > max_bytes:
        raise PayloadTooLargeError(
            f"{what} of {size} bytes exceeds the limit of {max_bytes} bytes; raise max_bytes if the "
            "sender is trusted to send updates this large"
        )
    if size < _PREFIX.size:
        raise PayloadError(f"{what} is truncated: {size} bytes is shorter than any valid one")
    got_magic, got_version, head_len = _PREFIX.unpack_from(view, 0)
    if got_magic != magic:
        raise PayloadError(f"not a {what}: it does not start with {magic!r}; check what was sent")
    if got_version != version:
        raise UnsupportedVersionError(
            f"{what} has format version {got_version}, this secfl reads version {version}; "
            "upgrade the older party so both use the same secfl release"
        )
    if head_len > max_header or _PREFIX.size + head_len > size:
        raise PayloadError(f"{what} is truncated or malformed: header length {head_len} does not fit")
    header = parse_json_object(view[_PREFIX.size:_PREFIX.size + head_len], what=f"{what} header")
    return header, view[_PREFIX.size + head_len:]


def parse_json_object(raw: bytes | memoryview, *, what: str) -> dict[str, Any]:
    """A JSON object from untrusted bytes: malformed, non-object, absurdly nested input or absurdly long
    numbers are a PayloadError."""
    try:
        value = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"{what} is not valid JSON ({type(exc).__name__} at position "
                           f"{getattr(exc, 'pos', getattr(exc, 'start', '?'))})") from None
    except ValueError:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise PayloadError(f"{what} holds a number too long to be a secfl header field") from None
    except RecursionError:  # the C parser guards its recursion: a nesting attack ends here, not in a crash
        raise PayloadError(f"{what} is nested too deeply to be a secfl header") from None
    if not isinstance(value, dict):
        raise PayloadError(f"{what} must be a JSON object")
    return value
