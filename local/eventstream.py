"""The AWS event-stream framing that ``InvokeWithResponseStream`` answers with.

The HTTP answer has the content type ``application/vnd.amazon.eventstream``
and its body is a sequence of binary messages (the format botocore's
``botocore.eventstream`` decodes for boto3 and the AWS CLI)::

    total length   uint32, big-endian: the whole message, these 4 bytes and the final CRC included
    headers length uint32, big-endian
    prelude CRC    uint32: CRC-32 of the 8 bytes above
    headers        per header: name length (uint8), name (UTF-8), type (uint8; 7 = string),
                   value length (uint16, big-endian), value (UTF-8)
    payload        bytes
    message CRC    uint32: CRC-32 of everything before it

Lambda's stream (botocore's service model, ``InvokeWithResponseStreamResponseEvent``)
carries ``PayloadChunk`` events, whose payload is a piece of the function's
response as it was produced, and ends with one ``InvokeComplete`` event, whose
JSON payload holds ``ErrorCode`` and ``ErrorDetails`` when the invoke failed
(and ``LogResult`` when the log tail was asked for). Every event has the
headers ``:event-type``, ``:content-type`` and ``:message-type: event``.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator, Mapping

CONTENT_TYPE = "application/vnd.amazon.eventstream"
MAX_CHUNK_BYTES = 1024 * 1024
"""A larger piece of the response is split over several PayloadChunk events (botocore accepts 24 MB)."""

_STRING = 7
_PRELUDE = struct.Struct("!II")
_UINT32 = struct.Struct("!I")


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode("utf-8"), value.encode("utf-8")
    if len(raw_name) > 255 or len(raw_value) > 65535:
        raise ValueError(f"event-stream header {name!r} is too long")
    return (
        bytes([len(raw_name)]) + raw_name + bytes([_STRING]) + struct.pack("!H", len(raw_value)) + raw_value
    )


def _headers(headers: Mapping[str, str]) -> bytes:
    return b"".join(_header(name, value) for name, value in headers.items())


def _framed(header_bytes: bytes, payload: bytes) -> bytes:
    total = _PRELUDE.size + _UINT32.size + len(header_bytes) + len(payload) + _UINT32.size
    prelude = _PRELUDE.pack(total, len(header_bytes))
    framed = prelude + _UINT32.pack(zlib.crc32(prelude)) + header_bytes + payload
    return framed + _UINT32.pack(zlib.crc32(framed))


def message(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One event-stream message with string headers."""
    return _framed(_headers(headers), payload)


def _event_headers(event_type: str, content_type: str) -> bytes:
    return _headers({":event-type": event_type, ":content-type": content_type, ":message-type": "event"})


_PAYLOAD_CHUNK = _event_headers("PayloadChunk", "application/octet-stream")
"""The headers of every PayloadChunk event, encoded once."""


def payload_chunks(data: bytes) -> Iterator[bytes]:
    """``PayloadChunk`` events carrying ``data`` (nothing for no data)."""
    for start in range(0, len(data), MAX_CHUNK_BYTES):
        yield _framed(_PAYLOAD_CHUNK, data[start : start + MAX_CHUNK_BYTES])


def invoke_complete(
    *, error_code: str | None = None, error_details: str | None = None, log_result: str | None = None
) -> bytes:
    """The ``InvokeComplete`` event that ends the stream (its error fields set when the invoke failed)."""
    fields = {"ErrorCode": error_code, "ErrorDetails": error_details, "LogResult": log_result}
    body = json.dumps({name: value for name, value in fields.items() if value is not None})
    return _framed(_event_headers("InvokeComplete", "application/json"), body.encode("utf-8"))
