"""One caller of one emulated function: invokes go through here one at a time.

Lambda runs concurrent requests in separate execution environments. The
Runtime Interface Emulator has one environment and crashes (a Go nil-pointer
panic after ``ReserveFailed: AlreadyReserved``) when a second invoke arrives
while the first is running, so every path into a local function (the Function
URL front and the Invoke API pass-through) shares one lock per function: a
burst of requests queues instead of killing the emulator.

The emulator also reports failures less precisely than Lambda: a function
error comes back as HTTP 200 with the runtime's error object and no
``X-Amz-Function-Error`` header, a timeout as HTTP 200 with the plain text
``Task timed out after N seconds``, a runtime that exited as HTTP 502.
``InvokeOutcome.function_error`` recovers Lambda's distinction from that.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

TIMEOUT_PREFIX = b"Task timed out after"


@dataclass(frozen=True)
class InvokeOutcome:
    """What the emulator answered to one invoke, classified as Lambda would."""

    status: int
    """HTTP status of the emulator's answer (200 unless the runtime died)."""
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    function_error: str | None = None
    """``Unhandled`` when the function failed (raised, timed out, crashed), else None."""
    duration_ms: float = 0.0
    """Wall time of the invoke, queueing excluded."""

    def payload(self) -> Any:
        """The response payload as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None


def classify(status: int, body: bytes) -> str | None:
    """``Unhandled`` for an emulator answer that Lambda would flag as a function error."""
    if status != 200:
        return "Unhandled"
    if body.startswith(TIMEOUT_PREFIX):
        return "Unhandled"
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    # The runtime's error object (awslambdaric posts it to /invocation/error).
    if (
        isinstance(payload, dict)
        and "errorType" in payload
        and "errorMessage" in payload
        and "statusCode" not in payload
    ):
        return "Unhandled"
    return None


class FunctionInvoker:
    """Serialised invokes of the function behind ``invoke_url``."""

    def __init__(self, invoke_url: str, *, timeout_s: float) -> None:
        parts = urlsplit(invoke_url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"invoke URL needs a host and a port: {invoke_url}")
        self.host = parts.hostname
        self.port = parts.port
        self.path = parts.path
        # The emulator enforces the function timeout itself; allow for its own
        # overhead and an init that runs inside the first invoke.
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self.invocations = 0

    def invoke(
        self, payload: bytes, headers: Mapping[str, str] | None = None, *, path: str | None = None
    ) -> InvokeOutcome:
        """POST one payload to the emulator, waiting for any invoke in flight first."""
        with self._lock:
            started = time.perf_counter()
            connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            try:
                connection.request("POST", path or self.path, body=payload, headers=dict(headers or {}))
                response = connection.getresponse()
                body = response.read()
                status = response.status
                answer_headers = dict(response.getheaders())
            except (OSError, http.client.HTTPException) as exc:
                # The emulator died or hung: Lambda would call it a service error.
                body = json.dumps(
                    {"errorType": "Local.EmulatorUnreachable", "errorMessage": str(exc) or type(exc).__name__}
                ).encode()
                status, answer_headers = 502, {"Content-Type": "application/json"}
            finally:
                connection.close()
                self.invocations += 1
            duration_ms = (time.perf_counter() - started) * 1000
        return InvokeOutcome(
            status=status,
            body=body,
            headers=answer_headers,
            function_error=classify(status, body),
            duration_ms=duration_ms,
        )
