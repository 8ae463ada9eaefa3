"""Bodies produced while they are sent, and the response a runtime streams.

A route may answer with a ``Stream`` instead of a whole body: an iterator of
chunks plus how to end it when producing fails part-way. The request core
(``lambda_common.app``) turns it into a ``StreamingResponse``: the media type,
the chunks, and for a Function URL event the HTTP prelude (status, headers,
cookies). Only the runtime loop (``lambda_common.lambda_runtime``) knows how
Lambda frames that on the wire; the core never writes a prelude or a NUL.

Where the runtime cannot stream (the AWS runtime client, a Function URL in
BUFFERED mode) the core drains the stream into a whole body instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from lambda_common.errors import ErrorFamily, InternalError, RequestError

_logger = logging.getLogger(__name__)

ErrorChunk = Callable[[RequestError, int], bytes]
"""Renders an error that ended a stream as the stream's own last chunk (e.g. an SSE error event)."""


class StreamAborted(Exception):
    """Producing a stream failed after its first byte: the runtime reports it in the response trailers."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class Stream:
    """A body produced while it is sent.

    ``chunks`` yields text or bytes; ``media_type`` is its content type;
    ``on_error`` renders a RequestError raised while producing as a last chunk
    in the stream's own format, with the HTTP status the error would have had.
    Closing the stream (a client that went away) closes ``chunks``, which stops
    the work behind it.
    """

    def __init__(
        self,
        chunks: Iterable[bytes | str],
        *,
        media_type: str,
        on_error: ErrorChunk | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._chunks = chunks
        self.media_type = media_type
        self.on_error = on_error
        self.headers = dict(headers or {})
        self.family: ErrorFamily | None = None
        """The error family of the route that answered (set by the core): the status an error would get."""

    def status_of(self, error: RequestError) -> int:
        return self.family.status(error) if self.family is not None else 500

    def chunks(self) -> Iterator[bytes]:
        """The chunks as bytes; an error ends the stream with its error chunk, then StreamAborted."""
        iterator = iter(self._chunks)
        try:
            for chunk in iterator:
                data = chunk.encode("utf-8") if isinstance(chunk, str) else chunk
                if data:
                    yield data
        except RequestError as error:
            yield from self._end(error)
        except Exception as exc:
            _logger.exception("producing a streamed answer failed")
            yield from self._end(InternalError(f"internal error while answering: {type(exc).__name__}"))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def _end(self, error: RequestError) -> Iterator[bytes]:
        if self.on_error is not None:
            yield self.on_error(error, self.status_of(error))
        raise StreamAborted(type(error).__name__, error.message)

    def drain(self) -> bytes:
        """The whole body (for a runtime that cannot stream); a RequestError propagates as raised."""
        parts: list[bytes] = []
        for chunk in self._chunks:
            parts.append(chunk.encode("utf-8") if isinstance(chunk, str) else chunk)
        return b"".join(parts)


@dataclass
class StreamingResponse:
    """What a handler returns to a runtime that streams: the chunks and how to frame them.

    ``prelude`` is set for Function URL events: ``{"statusCode", "headers",
    "cookies"}``, which the runtime sends first in Lambda's HTTP-integration
    framing. Direct invokes stream the chunks alone, with ``content_type``.
    """

    content_type: str
    chunks: Iterator[bytes]
    prelude: dict[str, Any] | None = None

    def close(self) -> None:
        """Stop producing (the caller went away): closes the chunk generator."""
        close = getattr(self.chunks, "close", None)
        if close is not None:
            close()
