"""`make local` end to end: both real handlers under their images' runtimes on the Runtime API
stand-in, called by the AWS CLI, boto3 and plain HTTP as users call them.

AWS itself cannot exist here: the AWS CLI and boto3 sign every request, so they
get dummy credentials and a region, which the local Invoke API ignores.
"""

from __future__ import annotations

import http.client
import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local.rie import ROOT, free_port
from local.stack import LocalStack, RunningFunction
from tests.conftest import lambda_client
from tests.harness import API_KEY, shared_stack

pytestmark = pytest.mark.slow

LLAMA_SEED = {"prompt": "llamas are", "n-generate": 1}
EMBEDDINGS_SEED = {"inputs": ["First text", "Second text"]}
AWS = str(Path(sys.executable).parent / "aws")


def aws_cli_invoke(endpoint: str, payload: Any, out: Path, env: dict[str, str]) -> dict[str, Any]:
    """``aws lambda invoke`` with an inline JSON payload.

    The CLI from PyPI is v1, which sends an inline payload as it is and has no
    ``--cli-binary-format`` option; v2 needs ``--cli-binary-format raw-in-base64-out``
    for the same command (or ``--payload fileb://file.json``, which both accept).
    """
    argument = payload if isinstance(payload, str) else json.dumps(payload)
    result = subprocess.run(
        [
            AWS,
            "lambda",
            "invoke",
            "--endpoint-url",
            endpoint,
            "--function-name",
            "function",
            "--payload",
            argument,
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def http_call(
    function: RunningFunction,
    method: str,
    target: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", function.url_front.port, timeout=120)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


# --- the AWS CLI with the seeds' exact payloads ----------------------------------------------


def test_aws_cli_invokes_the_generator_with_the_seed_payload(
    llama: RunningFunction, aws_env: dict[str, str], tmp_path: Path
) -> None:
    # Given the seed payload, exactly as the README shows it
    out = tmp_path / "out.json"
    # When the AWS CLI invokes the local function
    answer = aws_cli_invoke(llama.endpoint, LLAMA_SEED, out, aws_env)
    # Then the invoke succeeds and generates exactly one token
    assert answer["StatusCode"] == 200
    assert "FunctionError" not in answer
    body = json.loads(out.read_text())
    assert body["usage"]["completion_tokens"] == 1
    assert isinstance(body["text"], str)
    assert body["finish_reason"] in ("length", "stop")


def test_aws_cli_invokes_the_embeddings_with_the_seed_payload(
    embeddings: RunningFunction, aws_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out.json"
    answer = aws_cli_invoke(embeddings.endpoint, EMBEDDINGS_SEED, out, aws_env)
    assert answer["StatusCode"] == 200
    assert "FunctionError" not in answer
    vectors = json.loads(out.read_text())
    # Then two 384-dimension (MiniLM) vectors, normalized as TEI normalizes by default
    assert len(vectors) == 2
    assert all(len(vector) == 384 for vector in vectors)
    assert all(math.isclose(math.fsum(x * x for x in vector), 1.0, rel_tol=1e-3) for vector in vectors)
    assert vectors[0] != vectors[1]


def test_aws_cli_payload_from_a_file_works_in_cli_v1_and_v2_alike(
    embeddings: RunningFunction, aws_env: dict[str, str], tmp_path: Path
) -> None:
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(EMBEDDINGS_SEED))
    out = tmp_path / "out.json"
    answer = aws_cli_invoke(embeddings.endpoint, f"fileb://{payload}", out, aws_env)
    assert answer["StatusCode"] == 200
    assert len(json.loads(out.read_text())) == 2


def test_aws_cli_gets_a_structured_error_for_a_bad_payload(
    llama: RunningFunction, aws_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out.json"
    answer = aws_cli_invoke(llama.endpoint, {"prompt": "x", "n-generate": "one"}, out, aws_env)
    # A refused request is an answer, not a crash: no FunctionError, an error naming the field
    assert answer["StatusCode"] == 200
    assert "FunctionError" not in answer
    error = json.loads(out.read_text())["error"]
    assert error["status"] == 400
    assert "n-generate" in error["message"]


# --- boto3 ----------------------------------------------------------------------------------------


def test_boto3_invokes_both_functions(llama: RunningFunction, embeddings: RunningFunction) -> None:
    generated = lambda_client(llama.endpoint, read_timeout=300).invoke(
        FunctionName="function", Payload=json.dumps({"prompt": "The capital of France is", "n-generate": 3})
    )
    assert generated["StatusCode"] == 200
    assert json.loads(generated["Payload"].read())["usage"]["completion_tokens"] <= 3
    embedded = lambda_client(embeddings.endpoint, read_timeout=300).invoke(
        FunctionName="function", Payload=json.dumps({"inputs": "one text"})
    )
    assert embedded["StatusCode"] == 200
    vectors = json.loads(embedded["Payload"].read())
    assert len(vectors) == 1
    assert len(vectors[0]) == 384


# --- plain HTTP on the Function URL fronts ------------------------------------------------------


def test_health_on_both_urls(llama: RunningFunction, embeddings: RunningFunction) -> None:
    for function in (llama, embeddings):
        status, headers, body = http_call(function, "GET", "/health")
        assert status == 200
        assert headers["content-type"].startswith("application/json")
        assert json.loads(body)["status"] == "ok"


def test_binary_content_type_reaches_the_handler_base64_encoded(llama: RunningFunction) -> None:
    # Given a JSON body sent as application/octet-stream, which a Function URL base64-encodes
    body = json.dumps({"prompt": "llamas are", "max_tokens": 2}).encode()
    status, _, answer = http_call(
        llama, "POST", "/v1/completions", body, {"Content-Type": "application/octet-stream"}
    )
    # Then the handler decodes it and answers normally
    assert status == 200, answer
    assert json.loads(answer)["usage"]["completion_tokens"] <= 2


def test_curl_style_form_encoded_json_works_on_embeddings(embeddings: RunningFunction) -> None:
    # `curl -d` without a content type sends application/x-www-form-urlencoded (base64 on a Function URL)
    status, _, answer = http_call(
        embeddings,
        "POST",
        "/embed",
        json.dumps(EMBEDDINGS_SEED).encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200, answer
    assert len(json.loads(answer)) == 2


def test_query_string_is_passed_and_ignored_by_the_routes(llama: RunningFunction) -> None:
    status, _, answer = http_call(llama, "GET", "/v1/models?limit=1&verbose")
    assert status == 200
    assert json.loads(answer)["object"] == "list"


def test_unknown_route_and_wrong_method_are_clear_errors(
    llama: RunningFunction, embeddings: RunningFunction
) -> None:
    status, _, answer = http_call(llama, "GET", "/v1/nothing-here")
    assert status == 404
    assert "no route" in json.loads(answer)["error"]["message"]
    status, _, answer = http_call(embeddings, "GET", "/embed")
    assert status == 405
    assert json.loads(answer)["error"]


def test_bad_json_is_a_400_that_says_so(llama: RunningFunction) -> None:
    status, _, answer = http_call(
        llama, "POST", "/v1/chat/completions", b"{not json", {"Content-Type": "application/json"}
    )
    assert status == 400
    error = json.loads(answer)["error"]
    assert error["code"] == "invalid_json"


def test_max_tokens_bounds_generation_even_when_output_is_multibyte(llama: RunningFunction) -> None:
    # Given a request for 2 tokens whose answer is made of multi-byte characters
    # (llama-cpp-python skips its max_tokens check while a UTF-8 sequence is incomplete)
    body = {
        "messages": [{"role": "user", "content": "\U0001f999"}],
        "max_tokens": 2,
        "repeat_penalty": 5e-324,
        "temperature": 0,
    }
    status, _, answer = http_call(
        llama, "POST", "/", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    # Then at most 2 tokens are generated, not tokens until the function's deadline
    assert status == 200, answer
    result = json.loads(answer)
    assert result["usage"]["completion_tokens"] <= 2, result
    assert result["finish_reason"] != "deadline"


# --- API-key mode ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed() -> LocalStack:
    return shared_stack(api_key=True)


def test_api_key_mode_guards_every_route_but_health(keyed: LocalStack) -> None:
    for function in keyed.functions.values():
        route = "/v1/models" if function.key == "llama" else "/info"
        status, headers, _ = http_call(function, "GET", route)
        assert status == 401
        assert headers.get("www-authenticate") == "Bearer"
        wrong = http_call(function, "GET", route, headers={"Authorization": "Bearer not-the-key-000000"})
        assert wrong[0] == 401
        right = http_call(function, "GET", route, headers={"Authorization": f"Bearer {API_KEY}"})
        assert right[0] == 200
        assert http_call(function, "GET", "/health")[0] == 200


def test_api_key_mode_leaves_direct_invokes_to_iam(
    keyed: LocalStack, aws_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out.json"
    answer = aws_cli_invoke(keyed.functions["embeddings"].endpoint, EMBEDDINGS_SEED, out, aws_env)
    assert answer["StatusCode"] == 200
    assert len(json.loads(out.read_text())) == 2


# --- `python -m local` as a process: starts, serves, stops without leftovers -----------------------


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (the runtimes run in sessions of their own)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


@pytest.fixture
def local_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, int]]]:
    ports = {
        name: free_port() for name in ("llama-url", "llama-invoke", "embeddings-url", "embeddings-invoke")
    }
    ports_flags = [f"--{name}-port={port}" for name, port in ports.items()]
    command = [sys.executable, "-m", "local", *ports_flags, f"--log-dir={tmp_path}"]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    try:
        yield process, ports
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_make_local_serves_and_stops_cleanly(
    local_process: tuple[subprocess.Popen[str], dict[str, int]], stop_signal: signal.Signals
) -> None:
    process, ports = local_process
    assert process.stdout is not None
    # Given `python -m local` started as `make local` starts it
    output: list[str] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        if line.startswith("Serving"):
            break
    text = "".join(output)
    assert "Serving" in text, text
    assert "llama: ready in" in text
    assert "embeddings: ready in" in text
    # Then both URLs answer
    for key in ("llama", "embeddings"):
        connection = http.client.HTTPConnection("127.0.0.1", ports[f"{key}-url"], timeout=60)
        connection.request("GET", "/health")
        assert connection.getresponse().status == 200
        connection.close()
    processes = _children(process.pid)
    assert len(processes) >= 2  # one runtime process per function
    # When it gets Ctrl-C (SIGINT) or SIGTERM
    process.send_signal(stop_signal)
    rest, _ = process.communicate(timeout=60)
    # Then it exits cleanly and leaves no runtime behind
    assert process.returncode == 0, rest
    assert "stopped" in rest
    assert _alive(processes) == set()


def test_a_port_in_use_is_reported_not_a_traceback(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "local", "--only", "llama", f"--llama-url-port={port}",
             f"--llama-invoke-port={free_port()}", f"--log-dir={tmp_path}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert "already in use" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
