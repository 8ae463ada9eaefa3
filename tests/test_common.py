"""The pieces of the shared request core that stand alone (lambda_common): body decoding, error
families, the API key, the deadline, the lifecycle flags, streams, thread sizing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import BaseModel, ConfigDict, Field

from lambda_common.app import is_function_url_event
from lambda_common.auth import ApiKeyGuard
from lambda_common.body import MAX_DEPTH, decode_json, parse_model
from lambda_common.cpu import default_threads, resolve_threads
from lambda_common.deadline import Deadline
from lambda_common.errors import (
    OPENAI,
    ContextLengthExceeded,
    ErrorFamily,
    InternalError,
    InvalidBody,
    InvalidRequest,
    ModelNotFound,
    RequestError,
    TooLarge,
    Unauthorized,
    Unavailable,
    direct_error_body,
)
from lambda_common.lifecycle import Lifecycle
from lambda_common.streaming import Stream, StreamAborted
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


# ------------------------------------------------------------------ body decoding


@pytest.mark.parametrize(
    ("raw", "error", "fragment"),
    [
        ("", InvalidBody, "empty"),
        ("{not json", InvalidBody, "not valid JSON"),
        (b"\xff\xfe", InvalidBody, "not UTF-8"),
        (b'{"a": "\xed\xa0\x80"}', InvalidBody, "not UTF-8"),  # CESU-8: a surrogate encoded as bytes
        ("x" * 2000, TooLarge, "limit is 1,000 bytes"),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), InvalidBody, f"deeper than {MAX_DEPTH} levels"),
        ("[" * 400 + "]" * 400, InvalidBody, f"deeper than {MAX_DEPTH} levels"),
        ('{"n": 1' + "0" * 500 + "}", InvalidBody, "numbers may have at most"),
        ('{"n": 1e999}', InvalidBody, "out of range"),
        ('{"n": NaN}', InvalidBody, "NaN is not JSON"),
        ('{"n": -Infinity}', InvalidBody, "-Infinity is not JSON"),
    ],
)
def test_bad_bodies_are_refused_with_a_reason(
    raw: str | bytes, error: type[RequestError], fragment: str
) -> None:
    # Given a body no route could use, When it is decoded, Then the refusal names the problem
    with pytest.raises(error) as caught:
        decode_json(raw, max_bytes=1000)
    assert fragment in caught.value.message


def test_nesting_past_pythons_recursion_limit_and_huge_integers_are_client_errors() -> None:
    # json.loads alone raises RecursionError and ValueError (int over 4,300 digits): both must be 400s
    with pytest.raises(InvalidBody, match="deeper than"):
        decode_json("[" * 100_000 + "]" * 100_000, max_bytes=1 << 20)
    with pytest.raises(InvalidBody, match="numbers may have at most"):
        decode_json('{"n": 1' + "0" * 5000 + "}", max_bytes=1 << 20)


def test_good_bodies_decode_at_the_depth_and_sizes_allowed() -> None:
    nested = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert decode_json(nested, max_bytes=1 << 20) is not None
    assert decode_json('{"n": 18446744073709551615, "f": -1.5e300}', max_bytes=100) == {
        "n": 2**64 - 1,
        "f": -1.5e300,
    }
    assert decode_json(b'{"t": "caf\xc3\xa9"}', max_bytes=100) == {"t": "caf\u00e9"}


def test_validation_errors_name_the_field() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_model(Sample, {"prompt": "hi", "n": 99})
    assert caught.value.param == "n"
    assert caught.value.message.startswith("n: ")

    with pytest.raises(InvalidRequest) as unknown:
        parse_model(Sample, {"prompt": "hi", "colour": "red"})
    assert unknown.value.message == "colour: unknown field"

    with pytest.raises(InvalidBody, match="must be a JSON object, got array"):
        parse_model(Sample, ["hi"])

    assert parse_model(Sample, {"prompt": "hi"}).n == 1


def test_a_lone_surrogate_in_a_bounded_string_is_refused_by_name() -> None:
    # json.loads turns "\\ud800" into a str no encoder can write back; the length bound refuses it
    payload = decode_json('{"prompt": "a\\ud800b"}', max_bytes=100)
    with pytest.raises(InvalidRequest) as caught:
        parse_model(Sample, payload)
    assert caught.value.param == "prompt"
    assert "lone UTF-16 surrogate" in caught.value.message


# ------------------------------------------------------------------ errors


def test_each_error_kind_has_its_status_and_a_family_can_override_it() -> None:
    assert OPENAI.status(InvalidRequest("x")) == 400
    assert OPENAI.status(ContextLengthExceeded("x")) == 400
    assert OPENAI.status(TooLarge("x")) == 413
    assert OPENAI.status(ModelNotFound("x")) == 404
    assert OPENAI.status(Unauthorized("x")) == 401
    assert OPENAI.status(Unavailable("x")) == 503
    assert OPENAI.status(InternalError("x")) == 500
    strict = ErrorFamily("strict", statuses={InvalidRequest: 422, InvalidBody: 400})
    assert strict.status(InvalidRequest("x")) == 422
    assert strict.status(ContextLengthExceeded("x")) == 422  # the nearest class in the MRO decides
    assert strict.status(InvalidBody("x")) == 400
    assert strict.status(TooLarge("x")) == 413


def test_openai_and_direct_error_shapes() -> None:
    error = ContextLengthExceeded("too long", param="messages")
    assert OPENAI.body(error, 400) == {
        "error": {
            "message": "too long",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    assert direct_error_body(InternalError("boom"), 500) == {
        "error": {
            "message": "boom",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
            "status": 500,
        }
    }


# ------------------------------------------------------------------ API key


def allowed(guard: ApiKeyGuard, key: str | None) -> bool:
    try:
        guard.check({"Authorization": f"Bearer {key}"} if key is not None else {})
    except Unauthorized:
        return False
    return True


def test_api_key_guard_checks_bearer_tokens() -> None:
    guard = ApiKeyGuard(key=KEY)
    assert guard.enabled
    assert allowed(guard, KEY)
    guard.check({"authorization": f"bearer {KEY}"})
    assert not allowed(guard, KEY + "x")
    assert not allowed(guard, None)
    with pytest.raises(Unauthorized):
        guard.check({"authorization": KEY})
    ApiKeyGuard().check({})  # off: everything passes
    with pytest.raises(ValueError, match="16 characters"):
        ApiKeyGuard(key="short")


def test_api_key_comes_from_secrets_manager_when_an_arn_is_set() -> None:
    # Secrets Manager itself is AWS and cannot exist here: a fake fetch stands in for it.
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:llm-api-key-AbCdEf"
    fetched: list[str] = []

    def fake_fetch(secret_id: str) -> str:
        fetched.append(secret_id)
        return KEY + "\n"

    guard = ApiKeyGuard.from_environment({"API_KEY_SECRET_ARN": arn, "API_KEY": "ignored" * 3}, fake_fetch)
    assert fetched == [arn]
    assert allowed(guard, KEY)
    assert not ApiKeyGuard.from_environment({}).enabled
    assert allowed(ApiKeyGuard.from_environment({"API_KEY": KEY}), KEY)


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


def guard_with(secret: FakeSecret, now: list[float]) -> ApiKeyGuard:
    return ApiKeyGuard.from_environment(
        {"API_KEY_SECRET_ARN": "arn:fake"}, secret.fetch, clock=lambda: now[0]
    )


def test_a_rotated_key_is_taken_up_and_the_old_one_retired_without_a_restart() -> None:
    # Given a guard holding the key from (fake) Secrets Manager, and a clock we move
    secret, now = FakeSecret(KEY), [1000.0]
    guard = guard_with(secret, now)
    new_key = "n" * 32
    assert secret.reads == 1
    # When the key is rotated in Secrets Manager
    secret.value = new_key
    # Then a caller with the new key is let in once the short retry interval has passed
    now[0] += 1
    assert not allowed(guard, new_key)
    assert secret.reads == 1  # a wrong key within the retry interval costs no read
    now[0] += ApiKeyGuard.RETRY_S
    assert allowed(guard, new_key)
    assert secret.reads == 2
    # And the old key no longer works
    assert not allowed(guard, KEY)


def test_an_old_key_stops_working_within_max_age_and_failed_reads_fail_closed() -> None:
    secret, now = FakeSecret(KEY), [0.0]
    guard = guard_with(secret, now)
    # Given the key was rotated while no wrong key was presented
    rotated = "r" * 32
    secret.value = rotated
    now[0] += ApiKeyGuard.MAX_AGE_S - 1
    # Then the old key still works until the key is MAX_AGE_S old ...
    assert allowed(guard, KEY)
    now[0] += 1
    # ... and not after: the guard read the secret again
    assert not allowed(guard, KEY)
    assert allowed(guard, rotated)
    # When Secrets Manager fails, the key held so far stays in force for a bounded number of reads ...
    secret.failing = True
    for failures in range(1, ApiKeyGuard.MAX_FAILURES):
        now[0] += ApiKeyGuard.MAX_AGE_S
        assert allowed(guard, rotated), failures
    # ... then every key is refused with 503 until a read succeeds
    now[0] += ApiKeyGuard.MAX_AGE_S
    with pytest.raises(Unavailable):
        guard.check({"authorization": f"Bearer {rotated}"})
    assert secret.reads == 2 + ApiKeyGuard.MAX_FAILURES
    # And reads stay at most one per RETRY_S while it is down
    with pytest.raises(Unavailable):
        guard.check({"authorization": f"Bearer {rotated}"})
    assert secret.reads == 2 + ApiKeyGuard.MAX_FAILURES
    secret.failing = False
    now[0] += ApiKeyGuard.RETRY_S
    assert allowed(guard, rotated)


def test_a_snapshot_does_not_keep_the_key_and_a_restore_reads_it_again() -> None:
    secret, now = FakeSecret(KEY), [0.0]
    guard = guard_with(secret, now)
    guard.forget()  # before a SnapStart snapshot
    secret.value = "s" * 32
    guard.reload()  # after the restore
    assert secret.reads == 2
    assert allowed(guard, "s" * 32)
    assert not allowed(guard, KEY)


def test_a_local_key_is_never_reread() -> None:
    secret, now = FakeSecret(KEY), [0.0]
    local = ApiKeyGuard.from_environment({"API_KEY": KEY}, secret.fetch, clock=lambda: now[0])
    now[0] += 10 * ApiKeyGuard.MAX_AGE_S
    assert allowed(local, KEY)
    assert secret.reads == 0


# ------------------------------------------------------------------ deadline, lifecycle


def test_deadline_keeps_its_margin() -> None:
    deadline = Deadline(5000, 1000, now=100.0)
    assert deadline.at == pytest.approx(104.0)
    assert Deadline.none().remaining_ms() is None
    assert not Deadline.none().passed()
    assert Deadline(500, 1000).passed()


def test_lifecycle_tells_cold_restored_and_warm_invocations() -> None:
    life = Lifecycle()
    assert life.take_start() == "cold"
    assert life.take_start() == "warm"
    life.mark_restored(12.5)
    assert life.take_start() == "restored"
    assert life.restore_ms == 12.5
    assert life.take_start() == "warm"


def test_the_warm_up_runs_before_a_snapshot_and_not_in_an_on_demand_init() -> None:
    # Given an app whose handler offers a warm-up (the registries are snapshot_restore_py's own,
    # which the runtime loop reads: before-snapshot hooks run only when Lambda takes a snapshot)
    import snapshot_restore_py

    from lambda_common.app import FunctionApp

    before = list(snapshot_restore_py.get_before_snapshot())
    after = list(snapshot_restore_py.get_after_restore())
    warmed: list[str] = []
    app = FunctionApp(service="probe", native=OPENAI)
    # When its init ends
    app.ready(warm_up=lambda: warmed.append("warm"))
    # Then nothing ran during the init itself
    assert warmed == []
    # and the warm-up is a before-snapshot hook, run ahead of the "before snapshot" log line
    added = snapshot_restore_py.get_before_snapshot()[len(before) :]
    assert len(added) == 2
    for hook, args, kwargs in reversed(added):  # the runtime runs them last-registered first
        hook(*args, **kwargs)
    assert warmed == ["warm"]
    del snapshot_restore_py.get_before_snapshot()[len(before) :]
    del snapshot_restore_py.get_after_restore()[len(after) :]


# ------------------------------------------------------------------ streams


def test_a_stream_yields_bytes_and_ends_an_error_with_its_own_event_then_aborts() -> None:
    closed: list[bool] = []

    def produce() -> Iterator[str]:
        try:
            yield "one"
            yield ""
            yield "two"
            raise TooLarge("over the limit")
        finally:
            closed.append(True)

    def render(error: RequestError, status: int) -> bytes:
        return f"error {status}: {error.message}".encode()

    stream = Stream(produce(), media_type="text/plain", on_error=render)
    stream.family = OPENAI
    chunks = stream.chunks()
    assert next(chunks) == b"one"
    assert next(chunks) == b"two"  # empty pieces are not sent
    assert next(chunks) == b"error 413: over the limit"
    with pytest.raises(StreamAborted) as aborted:
        next(chunks)
    assert aborted.value.error_type == "TooLarge"
    assert closed == [True]


def test_a_drained_stream_raises_its_error_for_the_core_to_map() -> None:
    def produce() -> Iterator[bytes]:
        yield b"partial"
        raise InternalError("boom")

    with pytest.raises(InternalError):
        Stream(produce(), media_type="text/plain").drain()
    assert Stream(iter(["a", b"b"]), media_type="text/plain").drain() == b"ab"
