"""Lambda's own limits, defined once for both functions, the local runner and the tests."""

from __future__ import annotations

LAMBDA_PAYLOAD_LIMIT = 6 * 1024 * 1024
"""Largest buffered request or response payload of an invocation (6 MB = 6,291,456 bytes)."""

MB_PER_VCPU = 1769
"""Memory that buys one vCPU of CPU time on Lambda (AWS Lambda developer guide)."""
