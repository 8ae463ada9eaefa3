"""The request plumbing and runtime facts both handlers share (lambda_common)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field

from lambda_common.http import (
    ApiError,
    ApiKeyGuard,
    decode_json_body,
    is_function_url_event,
    parse_model,
    route_error,
)
from lambda_common.runtime import default_threads, resolve_threads
from tests.conftest import function_url_event

KEY = "k" * 20 + "-secret"


class Sample(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1)
    n: int = Field(default=1, ge=1, le=10)


@pytest.mark.parametrize(
    ("memory_mb", "cpus", "expected"),
    [
        (128, 2, 1),  # a fraction of a vCPU still gets one thread
        (1769, 2, 1),
        (3538, 3, 2),
        (3538, 2, 1),  # one visible CPU stays free for everything else
        (8192, 5, 4),  # 4.6 vCPU of time: four threads, not five
        (8845, 5, 4),  # 5.0 vCPU of time, 5 visible: one left free
        (10240, 6, 5),
        (10240, 2, 1),  # never more than the CPUs visible, less one
        (None, 3, 2),  # not on Lambda: every visible CPU but one
        (None, 1, 1),
    ],
)
def test_default_threads_follows_cpu_share(memory_mb: int | None, cpus: int, expected: int) -> None:
    assert default_threads(memory_mb, cpus) == expected


def test_thread_override_wins_and_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "8192")
    assert resolve_threads(3) == 3
    with pytest.raises(ValueError, match="at least 1"):
        resolve_threads(0)


def test_bad_memory_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "lots")
    with pytest.raises(ValueError, match="AWS_LAMBDA_FUNCTION_MEMORY_SIZE"):
        resolve_threads(None)


def test_function_url_events_are_told_from_direct_payloads() -> None:
    assert is_function_url_event(function_url_event("POST", "/", "{}"))
    assert not is_function_url_event({"prompt": "llamas are", "n-generate": 1})
    assert not is_function_url_event({"inputs": ["a"], "rawPath": "/"})
    assert not is_function_url_event(["not", "a", "mapping"])


@pytest.mark.parametrize(
    ("raw", "status", "fragment"),
    [
        ("", 400, "empty"),
        ("{not json", 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        ("x" * 101, 413, "limit is 100 bytes"),
    ],
)
def test_bad_bodies_are_refused_with_a_reason(raw: str | bytes, status: int, fragment: str) -> None:
    with pytest.raises(ApiError) as caught:
        decode_json_body(raw, max_bytes=100)
    assert caught.value.status == status
    assert fragment in caught.value.message


def test_validation_errors_name_the_field() -> None:
    with pytest.raises(ApiError) as caught:
        parse_model(Sample, {"prompt": "hi", "n": 99})
    assert caught.value.status == 400
    assert caught.value.param == "n"
    assert caught.value.message.startswith("n: ")

    with pytest.raises(ApiError) as unknown:
        parse_model(Sample, {"prompt": "hi", "colour": "red"})
    assert unknown.value.message == "colour: unknown field"

    with pytest.raises(ApiError, match="must be a JSON object, got list"):
        parse_model(Sample, ["hi"])

    assert parse_model(Sample, {"prompt": "hi"}).n == 1


def test_openai_error_body_shape() -> None:
    body = ApiError(400, "too long", param="messages", code="context_length_exceeded").openai_body()
    assert body == {
        "error": {
            "message": "too long",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }


def test_unknown_path_is_404_and_wrong_method_is_405() -> None:
    routes = {"/health": frozenset({"GET"}), "/v1/completions": frozenset({"POST"})}
    missing = route_error("/nope", "GET", routes)
    assert missing.status == 404
    assert "GET /health" in missing.message
    wrong = route_error("/v1/completions", "GET", routes)
    assert wrong.status == 405
    assert "allowed: POST" in wrong.message


def test_api_key_guard_checks_bearer_tokens() -> None:
    guard = ApiKeyGuard(KEY)
    assert guard.enabled
    assert guard.authorized({"Authorization": f"Bearer {KEY}"})
    assert guard.authorized({"authorization": f"bearer {KEY}"})
    assert not guard.authorized({"authorization": f"Bearer {KEY}x"})
    assert not guard.authorized({"authorization": KEY})
    assert not guard.authorized({})
    assert ApiKeyGuard(None).authorized({})
    with pytest.raises(ValueError, match="16 characters"):
        ApiKeyGuard("short")


def test_api_key_comes_from_secrets_manager_when_an_arn_is_set() -> None:
    # Secrets Manager itself is AWS and cannot exist here: a fake fetch stands in for it.
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:llm-api-key-AbCdEf"
    fetched: list[str] = []

    def fake_fetch(secret_id: str) -> str:
        fetched.append(secret_id)
        return KEY + "\n"

    guard = ApiKeyGuard.from_environment({"API_KEY_SECRET_ARN": arn, "API_KEY": "ignored" * 3}, fake_fetch)
    assert fetched == [arn]
    assert guard.authorized({"Authorization": f"Bearer {KEY}"})
    assert not ApiKeyGuard.from_environment({}).enabled
    assert ApiKeyGuard.from_environment({"API_KEY": KEY}).authorized({"authorization": f"Bearer {KEY}"})


class FakeSecret:
    """Stands in for Secrets Manager (AWS itself cannot exist here): a value that can be
    rotated or made to fail, and a count of reads."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.reads = 0
        self.failing = False

    def fetch(self, secret_id: str) -> str:
        self.reads += 1
        if self.failing:
            raise RuntimeError("Secrets Manager unavailable")
        return self.value


def test_a_rotated_key_is_taken_up_and_the_old_one_retired_without_a_restart() -> None:
    # Given a guard holding the key from (fake) Secrets Manager, and a clock we move
    secret = FakeSecret(KEY)
    now = [1000.0]
    environ = {"API_KEY_SECRET_ARN": "arn:fake"}
    guard = ApiKeyGuard.from_environment(environ, secret.fetch, clock=lambda: now[0])
    new_key = "n" * 32
    assert secret.reads == 1
    # When the key is rotated in Secrets Manager
    secret.value = new_key
    # Then a caller with the new key is let in once the short retry interval has passed
    now[0] += 1
    assert not guard.authorized({"authorization": f"Bearer {new_key}"})
    assert secret.reads == 1  # a wrong key within the retry interval costs no read
    now[0] += ApiKeyGuard.RETRY_S
    assert guard.authorized({"authorization": f"Bearer {new_key}"})
    assert secret.reads == 2
    # And the old key no longer works
    assert not guard.authorized({"authorization": f"Bearer {KEY}"})


def test_a_warm_guard_rereads_the_key_when_it_is_old_and_keeps_it_when_reading_fails() -> None:
    secret = FakeSecret(KEY)
    now = [0.0]
    environ = {"API_KEY_SECRET_ARN": "arn:fake"}
    guard = ApiKeyGuard.from_environment(environ, secret.fetch, clock=lambda: now[0])
    # Given the key was rotated while no wrong key was presented
    secret.value = "r" * 32
    now[0] += ApiKeyGuard.MAX_AGE_S - 1
    # Then the old key still works until the key is MAX_AGE_S old ...
    assert guard.authorized({"authorization": f"Bearer {KEY}"})
    now[0] += 1
    # ... and not after: the guard read the secret again
    assert not guard.authorized({"authorization": f"Bearer {KEY}"})
    assert guard.authorized({"authorization": f"Bearer {'r' * 32}"})
    # And when Secrets Manager fails, the key held so far stays in force
    secret.failing = True
    now[0] += ApiKeyGuard.MAX_AGE_S
    reads = secret.reads
    assert guard.authorized({"authorization": f"Bearer {'r' * 32}"})
    assert secret.reads == reads + 1
    # And a local API_KEY (no Secrets Manager) is never re-read
    local = ApiKeyGuard.from_environment({"API_KEY": KEY}, secret.fetch, clock=lambda: now[0])
    now[0] += 10 * ApiKeyGuard.MAX_AGE_S
    assert local.authorized({"authorization": f"Bearer {KEY}"})
    assert secret.reads == reads + 1
