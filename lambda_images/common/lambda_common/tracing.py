"""Optional X-Ray spans around the parts of a request: parsing it, the route (the model call), the stream.

Off unless the stack turns tracing on (``tracing_enabled``), which sets
``TRACING_ENABLED=true`` beside Lambda's active tracing. Off, ``span`` is a
no-op and nothing is imported for it, at init or on the request path. On, the
handler's init imports powertools Tracer (with the AWS X-Ray SDK), and each
span becomes an X-Ray subsegment of the invocation's trace, sent as a UDP
datagram to the X-Ray daemon Lambda runs beside the function (no network wait
on the request path). docs/observability.md says why this is the X-Ray SDK and
not OpenTelemetry, and what each choice costs at cold start.

Spans (subsegments): ``parse request`` (decoding and validating the body),
``route`` (the route's work: for a generation or embedding route, the model
call; annotated with the path), and ``stream`` (a streamed answer: tokens are
generated while they are sent, after the handler has returned).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

TRACING_VARIABLE = "TRACING_ENABLED"
"""``true`` when the function is deployed with active X-Ray tracing (the stack sets it)."""


class Tracing:
    """No tracing: every span is a no-op (the default)."""

    enabled = False

    def span(self, name: str, **annotations: str) -> AbstractContextManager[Any]:
        return contextlib.nullcontext()


class XRayTracing(Tracing):
    """Spans as X-Ray subsegments, through powertools Tracer (imported only when this is made)."""

    enabled = True

    def __init__(self, service: str) -> None:
        from aws_lambda_powertools import Tracer

        # No auto-patching: the runtime loop's own HTTP calls to the Runtime API happen between
        # invocations, outside any trace, and must not be recorded.
        self.tracer = Tracer(service=service, auto_patch=False)

    @contextlib.contextmanager
    def _span(self, name: str, annotations: dict[str, str]) -> Iterator[Any]:
        with self.tracer.provider.in_subsegment(name=name) as subsegment:
            for key, value in annotations.items():
                subsegment.put_annotation(key, value)
            yield subsegment

    def span(self, name: str, **annotations: str) -> AbstractContextManager[Any]:
        return self._span(name, annotations)


def enabled_by_environment() -> bool:
    return os.environ.get(TRACING_VARIABLE, "").strip().lower() == "true"


def from_environment(service: str) -> Tracing:
    """X-Ray spans when ``TRACING_ENABLED`` is true, else the no-op."""
    return XRayTracing(service) if enabled_by_environment() else Tracing()
