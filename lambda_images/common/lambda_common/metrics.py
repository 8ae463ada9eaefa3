"""Per-request CloudWatch metrics of both functions, in the embedded metric format (EMF).

Each invocation's figures are collected while it runs and written to standard
output as EMF lines when it ends (a streamed answer: when its last chunk is
sent). Lambda sends standard output to CloudWatch Logs, which turns the lines
into metrics: no CloudWatch API call on the request path. The records are
serialised and validated by powertools Metrics' EMF provider.

What is written, under the namespace ``POWERTOOLS_METRICS_NAMESPACE`` (the
stack sets it; ``LlmInference`` when unset) with the dimension ``service``
(``POWERTOOLS_SERVICE_NAME``: ``llama`` or ``embeddings``):

one record per invocation, dimensions ``[service]``
    ``ColdStart`` (Count, 1 for the first invocation of a new environment, else 0);
    ``Restore`` (Count, 1 for the first invocation after a SnapStart restore, else 0;
    only written by a SnapStart function); ``ServerErrors`` (Count, 1 when the answer was
    a 5xx refusal, else 0); and, when the invocation generated or embedded:
    generator: ``PromptTokens``, ``CompletionTokens`` (Count), ``TimeToFirstToken``
    (Milliseconds), ``TokensPerSecond`` (Count/Second, with two tokens or more),
    ``DeadlineStops`` (Count, 1 when generation stopped at the deadline, else 0);
    embeddings: ``Inputs``, ``InputTokens`` (Count), ``BatchLatency`` (Milliseconds).
one record per generation, dimensions ``[service, finish_reason]``
    ``Generations`` (Count 1), finish_reason ``stop``, ``length`` or ``deadline``.
one record per refusal, dimensions ``[service, error_code]``
    ``Refusals`` (Count 1), error_code the refusal's machine-readable code
    (``invalid_value``, ``too_large``, ``invalid_api_key``, ...).

The dimensions are few on purpose: each distinct (name, dimensions) pair is a
custom metric, billed per month (docs/observability.md has the count and the
price). ``POWERTOOLS_METRICS_DISABLED=true`` (the stack's ``metrics_enabled``
false) turns all of it off: nothing is collected or written.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.metric_properties import MetricUnit

from lambda_common.lifecycle import StartKind

NAMESPACE_VARIABLE = "POWERTOOLS_METRICS_NAMESPACE"
DEFAULT_NAMESPACE = "LlmInference"
"""The namespace when POWERTOOLS_METRICS_NAMESPACE is unset (make local): the default stack name."""

SERVICE = "service"
FINISH_REASON = "finish_reason"
ERROR_CODE = "error_code"

COLD_START = "ColdStart"
RESTORE = "Restore"
SERVER_ERRORS = "ServerErrors"
PROMPT_TOKENS = "PromptTokens"
COMPLETION_TOKENS = "CompletionTokens"
TIME_TO_FIRST_TOKEN = "TimeToFirstToken"  # noqa: S105  (a metric name)
TOKENS_PER_SECOND = "TokensPerSecond"
DEADLINE_STOPS = "DeadlineStops"
INPUTS = "Inputs"
INPUT_TOKENS = "InputTokens"
BATCH_LATENCY = "BatchLatency"
GENERATIONS = "Generations"
REFUSALS = "Refusals"

COUNT = MetricUnit.Count
MILLISECONDS = MetricUnit.Milliseconds
COUNT_PER_SECOND = MetricUnit.CountPerSecond


@dataclass
class Record:
    """The figures of one invocation, until it ends."""

    figures: list[tuple[str, MetricUnit, float]] = field(default_factory=list)
    server_error: bool = False
    dimensioned: list[tuple[str, str, str]] = field(default_factory=list)
    """(metric name, dimension name, dimension value) of the one-metric records (Count 1 each)."""


class RequestMetrics:
    """One function's per-invocation metrics: ``begin``, figures, ``flush`` (see the module docstring)."""

    def __init__(
        self,
        service: str,
        *,
        namespace: str | None = None,
        enabled: bool | None = None,
        snap_start: bool | None = None,
        out: Callable[[], TextIO] | None = None,
    ) -> None:
        self.service = service
        self.namespace = namespace or os.environ.get(NAMESPACE_VARIABLE) or DEFAULT_NAMESPACE
        self.enabled = (not is_metrics_disabled()) if enabled is None else enabled
        """Read once: with metrics off, every method returns at once."""
        self.snap_start = (
            os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "snap-start"
            if snap_start is None
            else snap_start
        )
        self._out = out or (lambda: sys.stdout)
        self.current: Record | None = None

    # ------------------------------------------------------------------ an invocation

    def begin(self, start: StartKind) -> Record | None:
        """Open the record of a new invocation (writing any the last one left open)."""
        if not self.enabled:
            return None
        if self.current is not None:
            self.flush()
        record = self.current = Record()
        record.figures.append((COLD_START, COUNT, 1.0 if start == "cold" else 0.0))
        if self.snap_start:
            record.figures.append((RESTORE, COUNT, 1.0 if start == "restored" else 0.0))
        return record

    def refusal(self, code: str, status: int) -> None:
        """A refused request (or a stream ended by an error), by its error code."""
        record = self.current
        if record is None:
            return
        record.dimensioned.append((REFUSALS, ERROR_CODE, code))
        if status >= 500:
            record.server_error = True

    def generation(
        self,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        time_to_first_token_ms: float,
        tokens_per_second: float | None,
        finish_reason: str,
    ) -> None:
        """One finished generation (the generator calls this where it logs the generation)."""
        record = self.current
        if record is None:
            return
        record.figures += [
            (PROMPT_TOKENS, COUNT, float(prompt_tokens)),
            (COMPLETION_TOKENS, COUNT, float(completion_tokens)),
            (TIME_TO_FIRST_TOKEN, MILLISECONDS, float(time_to_first_token_ms)),
            (DEADLINE_STOPS, COUNT, 1.0 if finish_reason == "deadline" else 0.0),
        ]
        if tokens_per_second:
            record.figures.append((TOKENS_PER_SECOND, COUNT_PER_SECOND, float(tokens_per_second)))
        record.dimensioned.append((GENERATIONS, FINISH_REASON, finish_reason))

    def embedding(self, *, inputs: int, tokens: int, latency_ms: float) -> None:
        """One embedded batch (the embeddings function calls this where it logs the batch)."""
        record = self.current
        if record is None:
            return
        record.figures += [
            (INPUTS, COUNT, float(inputs)),
            (INPUT_TOKENS, COUNT, float(tokens)),
            (BATCH_LATENCY, MILLISECONDS, float(latency_ms)),
        ]

    def flush(self, record: Record | None = None) -> None:
        """Write the open record as EMF lines (``record``: only if that one is still open)."""
        current = self.current
        if current is None or (record is not None and record is not current):
            return
        self.current = None
        lines = [self._serialise([*current.figures, (SERVER_ERRORS, COUNT, float(current.server_error))])]
        lines += [
            self._serialise([(name, COUNT, 1.0)], {dimension: value})
            for name, dimension, value in current.dimensioned
        ]
        out = self._out()
        out.write("\n".join(lines) + "\n")
        out.flush()

    def _serialise(
        self, figures: list[tuple[str, MetricUnit, float]], dimensions: dict[str, str] | None = None
    ) -> str:
        provider = AmazonCloudWatchEMFProvider(namespace=self.namespace, service=self.service)
        provider.add_dimension(SERVICE, self.service)
        for dimension, label in (dimensions or {}).items():
            provider.add_dimension(dimension, label)
        for name, unit, value in figures:
            provider.add_metric(name=name, unit=unit, value=value)
        return json.dumps(provider.serialize_metric_set(), separators=(",", ":"))
