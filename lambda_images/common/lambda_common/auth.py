"""The optional API key of Function URLs with auth type NONE (``function_url_auth=API_KEY``).

The key lives in Secrets Manager; the stack passes only the secret's ARN
(``API_KEY_SECRET_ARN``) and grants read access to that one secret. ``API_KEY``
is accepted for local runs, where there is no Secrets Manager; the stack never
sets it. Without either the guard is off (IAM-authenticated URLs).

When a key held from Secrets Manager is read again:

* when it is older than ``max_age_s`` (5 minutes): a key rotated out stops
  working in every warm environment within that time;
* when a request presents another key and the last read is older than
  ``retry_s`` (10 s): a newly stored key works within seconds, and a flood of
  wrong keys costs at most one read per ``retry_s``.

Reads happen on the request path, so they are short (1 s to connect, 2 s to
read) and never retried by boto3. A failed read keeps the key held so far, for
at most ``max_failures`` failed reads in a row (3, at most one per
``retry_s``); then every key is refused with 503 until a read succeeds: the
guard fails closed rather than honouring a key it cannot check.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from lambda_common.errors import Unauthorized, Unavailable

_logger = logging.getLogger(__name__)

MIN_KEY_LENGTH = 16


def _checked(key: str) -> bytes:
    key = key.strip()
    if len(key) < MIN_KEY_LENGTH:
        raise ValueError(f"an API key must be at least {MIN_KEY_LENGTH} characters long")
    return key.encode()


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (any header-name case)."""
    for name, value in headers.items():
        if name.lower() == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


class ApiKeyGuard:
    """Checks ``Authorization: Bearer <key>`` against the current key."""

    MAX_AGE_S = 300.0
    RETRY_S = 10.0
    MAX_FAILURES = 3

    def __init__(
        self,
        *,
        key: str | None = None,
        fetch: Callable[[], str] | None = None,
        max_age_s: float = MAX_AGE_S,
        retry_s: float = RETRY_S,
        max_failures: int = MAX_FAILURES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if key is not None and fetch is not None:
            raise ValueError("give a fixed key or a way to fetch it, not both")
        self._fixed = _checked(key) if key is not None else None
        self._fetch = fetch
        self._max_age_s = max_age_s
        self._retry_s = retry_s
        self._max_failures = max_failures
        self._clock = clock
        self._key: bytes | None = None
        self._read_at = float("-inf")
        self._tried_at = float("-inf")
        self._failures = 0
        if fetch is not None:
            self.reload()

    @property
    def enabled(self) -> bool:
        return self._fixed is not None or self._fetch is not None

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str] = os.environ,
        fetch_secret: Callable[[str], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> ApiKeyGuard:
        arn = environ.get("API_KEY_SECRET_ARN", "").strip()
        if arn:
            read = fetch_secret or _fetch_secret
            return cls(fetch=lambda: read(arn), clock=clock)
        local = environ.get("API_KEY", "").strip()
        return cls(key=local or None, clock=clock)

    # ---------------------------------------------------------------- lifecycle

    def reload(self) -> None:
        """Read the key now (init, and after a SnapStart restore); a failure here fails the init."""
        if self._fetch is None:
            return
        self._key = _checked(self._fetch())
        self._read_at = self._tried_at = self._clock()
        self._failures = 0

    def forget(self) -> None:
        """Drop the key held and the connections that read it (before a snapshot: a credential
        must not be persisted in it, and restored copies must not share a connection)."""
        if self._fetch is not None:
            self._key = None
            self._read_at = self._tried_at = float("-inf")
            close_clients()

    # ---------------------------------------------------------------- the check

    def check(self, headers: Mapping[str, str]) -> None:
        """Return when the request may go on; raise Unauthorized (401) or Unavailable (503)."""
        if not self.enabled:
            return
        presented = bearer_token(headers)
        if presented is None:
            raise Unauthorized("missing API key: send the header `Authorization: Bearer <key>`")
        if hmac.compare_digest(presented.encode(), self._current()):
            return
        if (
            self._fetch is not None
            and self._since_try() >= self._retry_s
            and self._read()
            and self._key is not None
            and hmac.compare_digest(presented.encode(), self._key)
        ):
            return
        raise Unauthorized(
            "wrong API key: send the header `Authorization: Bearer <key>` with the current key"
        )

    def _since_try(self) -> float:
        return self._clock() - self._tried_at

    def _current(self) -> bytes:
        if self._fixed is not None:
            return self._fixed
        stale = self._clock() - self._read_at >= self._max_age_s
        if (self._key is None or stale) and self._since_try() >= self._retry_s:
            self._read()
        if self._key is None or self._failures >= self._max_failures:
            raise Unavailable(
                "the API key cannot be checked right now (Secrets Manager did not answer); "
                "no request is accepted until it does",
                code="api_key_unavailable",
            )
        return self._key

    def _read(self) -> bool:
        """Read the key again; False (and the key held so far kept) when the read fails."""
        assert self._fetch is not None
        self._tried_at = self._clock()
        try:
            key = _checked(self._fetch())
        except Exception:
            self._failures += 1
            _logger.warning(
                "re-reading the API key failed (%d in a row; at %d every key is refused)",
                self._failures,
                self._max_failures,
                exc_info=True,
            )
            return False
        self._key, self._read_at, self._failures = key, self._tried_at, 0
        return True


def _fetch_secret(arn: str) -> str:
    # Imported here: only API-key deployments pay for loading boto3.
    from aws_lambda_powertools.utilities import parameters
    from botocore.config import Config

    provider = _providers.get(arn)
    if provider is None:
        config = Config(connect_timeout=1, read_timeout=2, retries={"total_max_attempts": 1})
        provider = _providers[arn] = parameters.SecretsProvider(boto_config=config)
    # force_fetch: the guard decides when to read again; powertools' cache must not answer.
    value = provider.get(arn, force_fetch=True)
    if isinstance(value, bytes):
        value = value.decode()
    if not isinstance(value, str) or not value:
        raise RuntimeError(f"secret {arn} holds no string value")
    return value


_providers: dict[str, Any] = {}


def close_clients() -> None:
    """Close the Secrets Manager clients (their connection pools); the next read makes a new one."""
    while _providers:
        _, provider = _providers.popitem()
        client = getattr(provider, "client", None)
        close = getattr(client, "close", None)
        if callable(close):
            close()
