"""Both real functions through SnapStart's lifecycle under the local runner, with a real checkpoint.

Each function runs as `make local --snap-start KEY --checkpoint` runs it: initialised once
with ``AWS_LAMBDA_INITIALIZATION_TYPE=snap-start``; its before-snapshot hooks run; CRIU
checkpoints the runtime while it waits on ``/runtime/restore/next`` (``local.snapstart``);
every execution environment after that is a copy restored from that one image, which runs
its after-restore hooks and serves. The function is in API-key mode with its key in
Secrets Manager, which moto's server stands in for (AWS itself cannot exist here).

What is checked, for the generator and the embeddings function alike:

- the lifecycle's order in the function's own log: model loaded, before-snapshot hooks,
  the snapshot, the after-restore hooks, then requests;
- a restored environment answers the seed payload and reports ``restored`` (and never
  an init of its own);
- the API key is not kept in the snapshot: a key rotated after the snapshot is the one a
  restored copy accepts;
- two environments restored from the one image do not share random state (two unseeded
  generations differ) and do not initialise again; a third still streams through its
  Function URL.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from local.functions import LocalOptions, build_plans
from local.snapstart import CriuSnapshots
from local.stack import LocalStack, RunningFunction
from tests.conftest import function_url_event, local_aws_client

pytestmark = pytest.mark.slow

FIRST_KEY = "first-key-0123456789abcdef"
ROTATED_KEY = "rotated-key-0123456789abcdef"
SEEDS = {
    "llama": {"prompt": "llamas are", "n-generate": 1},
    "embeddings": {"inputs": ["First text", "Second text"]},
}


@pytest.fixture(scope="module")
def secrets(criu: None) -> Iterator[tuple[str, str, Any]]:
    """moto's server as Secrets Manager (an AWS stand-in), holding the first API key."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
    client = local_aws_client("secretsmanager", endpoint)
    arn = client.create_secret(Name="llm-api-key", SecretString=FIRST_KEY)["ARN"]
    yield endpoint, arn, client
    server.stop()


def snapstart_function(key: str, secrets: tuple[str, str, Any], log_dir: Path) -> LocalStack:
    endpoint, arn, _ = secrets
    environment = {
        "API_KEY_SECRET_ARN": arn,
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "DEFAULT_MAX_TOKENS": "8",
    }
    options = LocalOptions(
        only=key,  # type: ignore[arg-type]
        snap_start={key: True},
        llama_invoke_port=0,
        llama_url_port=0,
        embeddings_invoke_port=0,
        embeddings_url_port=0,
        extra_environment={key: environment},
    )
    return LocalStack(
        build_plans(options, echo=lambda line: None),
        echo=lambda line: None,
        log_dir=log_dir,
        snapshots=CriuSnapshots,
    )


def url(function: RunningFunction, path: str, key: str, body: Any = None) -> tuple[int, Any]:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    data = b"" if body is None else json.dumps(body).encode()
    status, raw, _ = function.call("POST" if body is not None else "GET", path, data, headers)
    return status, json.loads(raw) if raw else None


def log_messages(function: RunningFunction) -> list[str]:
    """The function's log as its events: powertools' messages and the platform's own lines."""
    events = []
    for line in function.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"message"' in line:
            try:
                events.append(str(json.loads(line)["message"]))
            except (ValueError, KeyError):
                continue
        elif line.startswith(("INIT_REPORT", "REPORT")):
            events.append(line.split(" ", 1)[0])
    return events


def kill_environment(function: RunningFunction) -> None:
    """End the current execution environment, as Lambda does with an idle one, and wait until the
    stand-in has seen it go (the next invoke then gets a new environment)."""
    pids = function.runtime_pids()
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while function.runtime_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not function.runtime_pids()


@pytest.mark.parametrize("key", ["llama", "embeddings"])
def test_snapstart_lifecycle_of_the_real_function(
    key: str, secrets: tuple[str, str, Any], tmp_path: Path
) -> None:
    _, arn, client = secrets
    client.put_secret_value(SecretId=arn, SecretString=FIRST_KEY)
    with snapstart_function(key, secrets, tmp_path / "logs") as stack:
        function = stack.functions[key]
        # Given the function initialised once and checkpointed (the first request triggers the init)
        # When the key is rotated after that first environment came up, and it is replaced
        status, health = url(function, "/health", FIRST_KEY)
        assert status == 200, health
        client.put_secret_value(SecretId=arn, SecretString=ROTATED_KEY)
        kill_environment(function)
        # Then a restored copy answers the seed payload directly, as a restore and not an init
        seed = function.function.invoke(json.dumps(SEEDS[key]).encode()).result()
        assert seed.error is None, seed.body
        answer = seed.payload()
        if key == "llama":
            assert answer["usage"]["completion_tokens"] == 1
            assert answer["timings"]["start"] == "restored"
            assert answer["timings"]["init_ms"] is None
            assert answer["timings"]["restore_ms"] is not None
        else:
            assert len(answer) == 2
        # And it read the key again after its restore: the rotated key works, the old one does not
        assert url(function, "/v1/models", ROTATED_KEY)[0] == 200
        assert url(function, "/v1/models", FIRST_KEY)[0] == 401
        # And the lifecycle happened in order, once: init, before-snapshot, restores, requests
        events = log_messages(function)
        assert events.count("model loaded") == 1
        assert events.count("before snapshot: the init's state is what every copy starts from") == 1
        assert events.count("INIT_REPORT") == 1
        loaded = events.index("model loaded")
        snapshot = events.index("before snapshot: the init's state is what every copy starts from")
        first_restore = events.index("restored")
        assert loaded < snapshot < first_restore
        assert events.count("restored") == 2  # one copy per environment, no second init
        assert function.function.environments == 2


def test_restored_copies_of_the_generator_do_not_share_random_state_and_still_stream(
    secrets: tuple[str, str, Any], tmp_path: Path
) -> None:
    _, arn, client = secrets
    client.put_secret_value(SecretId=arn, SecretString=FIRST_KEY)
    unseeded = {"prompt": "Once upon a time", "max_tokens": 12, "temperature": 1.5, "top_k": 0, "top_p": 1.0}
    with snapstart_function("llama", secrets, tmp_path / "logs") as stack:
        function = stack.functions["llama"]
        texts = []
        for _ in range(2):
            # Given two environments restored from the same image (same memory, same RNG state)
            answer = function.function.invoke(json.dumps(unseeded).encode()).result().payload()
            assert answer["timings"]["start"] == "restored"
            texts.append(answer["text"])
            kill_environment(function)
        # Then their unseeded generations differ
        assert texts[0] != texts[1]
        assert function.function.environments == 2
        # And a restored copy still streams through its Function URL (RESPONSE_STREAM); one more
        # copy from the same image (the checkpoint is made once per function)
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": True}
        event = function_url_event(
            "POST",
            "/v1/chat/completions",
            json.dumps(body),
            headers={"authorization": f"Bearer {FIRST_KEY}"},
        )
        outcome = function.function.invoke(json.dumps(event).encode()).result()
        assert outcome.error is None
        assert b"data: [DONE]" in outcome.body
        assert b"chat.completion.chunk" in outcome.body
        assert function.function.environments == 3
        assert log_messages(function).count("restored") == 3
