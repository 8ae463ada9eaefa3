"""`make local`: serve both functions on localhost as Lambda runs them, until Ctrl-C.

    python -m local [--only llama|embeddings] [--llama-model FILE.gguf]
                    [--embeddings-model SENTENCE_TRANSFORMERS_FOLDER] [--api-key KEY] [ports...]

Each function is its real handler under the runtime its image runs (the
project's runtime loop, ``lambda_common.lambda_runtime``, which streams),
started by a local stand-in for Lambda's Runtime API
(``local.runtime_api``) with the memory size, timeout, log level, URL invoke
mode and SnapStart setting ``cdk.json`` deploys: the generator's URL streams
tokens as they are generated (RESPONSE_STREAM). Ports (flags, or environment variables of
the same name in upper case, e.g. ``LLAMA_URL_PORT``): Invoke API
9000 (llama) / 9001 (embeddings), Function URL 8080 / 8081. Function logs are
echoed to the console with a prefix and kept in ``.cache/local/logs/``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from local.functions import DEFAULT_PORTS, FUNCTION_KEYS, LocalOptions, build_plans
from local.stack import LOG_DIR, LocalStack, RunningFunction
from local.url_front import INVOKE_MODES

echo = functools.partial(print, flush=True)


def _port(name: str, default: int) -> int:
    value = os.environ.get(name.upper().replace("-", "_"), "")
    return int(value) if value.strip() else default


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m local",
        description="Serve the generator and the embeddings function on localhost, as Lambda runs them.",
    )
    parser.add_argument("--only", choices=FUNCTION_KEYS, help="serve one function only")
    parser.add_argument("--llama-model", type=Path, help="a GGUF file (default: the embedded SmolLM2-135M)")
    parser.add_argument(
        "--embeddings-model",
        type=Path,
        help="a sentence-transformers model folder (default: the embedded all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--embeddings-model-id", help="the name the embeddings model reports (default: folder name)"
    )
    parser.add_argument(
        "--embeddings-backend", choices=("onnx", "torch"), help="default: embeddings_backend in cdk.json"
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("LOCAL_API_KEY") or None,
        help="require `Authorization: Bearer KEY` on the URLs (API-key mode; at least 16 characters; "
        "default: $LOCAL_API_KEY)",
    )
    parser.add_argument(
        "--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), help="handler log level"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="also echo the platform's START/END/REPORT log lines"
    )
    parser.add_argument(
        "--snap-start",
        action="append",
        choices=FUNCTION_KEYS,
        default=[],
        help="run this function through the SnapStart lifecycle (before-snapshot hooks, restore, "
        "after-restore hooks) even if cdk.json does not deploy it with SnapStart; repeatable",
    )
    parser.add_argument(
        "--log-dir", type=Path, default=LOG_DIR, help="where the functions' logs go (default %(default)s)"
    )
    parser.add_argument(
        "--checkpoint",
        action="store_true",
        help="SnapStart functions: checkpoint the initialised runtime with CRIU and restore a copy for "
        "each new environment (root and scripts/build-criu.sh needed; default: the lifecycle in place)",
    )
    for key in FUNCTION_KEYS:
        parser.add_argument(f"--{key}-memory-mb", type=int, help="memory size (default: cdk.json)")
        parser.add_argument(f"--{key}-timeout-s", type=int, help="timeout in seconds (default: cdk.json)")
        parser.add_argument(
            f"--{key}-url-invoke-mode",
            choices=INVOKE_MODES,
            help="Function URL invoke mode (default: cdk.json; the embeddings URL is BUFFERED)",
        )
    for key in FUNCTION_KEYS:
        invoke_port, url_port = DEFAULT_PORTS[key]
        parser.add_argument(
            f"--{key}-invoke-port",
            type=int,
            default=_port(f"{key}_invoke_port", invoke_port),
            help=f"Lambda Invoke API port (default {invoke_port})",
        )
        parser.add_argument(
            f"--{key}-url-port",
            type=int,
            default=_port(f"{key}_url_port", url_port),
            help=f"Function URL port (default {url_port})",
        )
    return parser


def options_from(args: argparse.Namespace) -> LocalOptions:
    for key in FUNCTION_KEYS:
        memory, timeout = getattr(args, f"{key}_memory_mb"), getattr(args, f"{key}_timeout_s")
        if memory is not None and not 128 <= memory <= 10240:
            raise SystemExit(f"--{key}-memory-mb must be from 128 to 10240 (Lambda's range), got {memory}")
        if timeout is not None and not 1 <= timeout <= 900:
            raise SystemExit(f"--{key}-timeout-s must be from 1 to 900 (Lambda's range), got {timeout}")
    if args.api_key is not None and len(args.api_key) < 16:
        raise SystemExit("--api-key must be at least 16 characters long (the handlers refuse shorter keys)")
    return LocalOptions(
        only=args.only,
        llama_model=args.llama_model,
        embeddings_model=args.embeddings_model,
        embeddings_model_id=args.embeddings_model_id,
        embeddings_backend=args.embeddings_backend,
        api_key=args.api_key,
        llama_invoke_port=args.llama_invoke_port,
        llama_url_port=args.llama_url_port,
        embeddings_invoke_port=args.embeddings_invoke_port,
        embeddings_url_port=args.embeddings_url_port,
        log_level=args.log_level,
        memory_mb=_per_function(args, "memory_mb"),
        timeout_s=_per_function(args, "timeout_s"),
        url_invoke_mode=_per_function(args, "url_invoke_mode"),
        snap_start=dict.fromkeys(args.snap_start, True),
    )


def _per_function(args: argparse.Namespace, name: str) -> dict[str, Any]:
    values = {key: getattr(args, f"{key}_{name}") for key in FUNCTION_KEYS}
    return {key: value for key, value in values.items() if value is not None}


def _model_name(function: RunningFunction) -> str:
    """The model id clients may send: the generator's GET /v1/models, the embedder's GET /info,
    else GET /health (each asks only the route its function has, so no refusal is logged)."""
    if function.plan.key == "llama":
        status, raw, _ = function.call("GET", "/v1/models")
        if status == 200:
            with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
                return str(json.loads(raw)["data"][0]["id"])
    else:
        status, raw, _ = function.call("GET", "/info")
        if status == 200:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                return str(json.loads(raw)["model_id"])
    status, raw, _ = function.call("GET", "/health")
    if status == 200:
        with contextlib.suppress(ValueError, AttributeError):
            health = json.loads(raw)
            return str(health.get("model_id") or health.get("model") or "default")
    return "default"


def _python_example(*statements: str) -> list[str]:
    # The statements use single quotes only, so double quotes hold them in any POSIX shell.
    code = "; ".join(["from openai import OpenAI", *statements])
    return [f'  .venv/bin/python -c "{code}"']


def examples(stack: LocalStack, api_key: str | None) -> list[str]:
    """Copy-paste calls for the functions that run."""
    auth = f" -H {shlex.quote('Authorization: Bearer ' + api_key)}" if api_key else ""
    sdk_key = api_key or "unused"
    lines = ["Try:"]
    llama = stack.functions.get("llama")
    if llama is not None:
        model = _model_name(llama)
        chat = {
            "model": model,
            "messages": [{"role": "user", "content": "Name three llama facts."}],
            "max_tokens": 64,
        }
        streamed = {**chat, "stream": True}
        lines += [
            "  # Function URL (curl, OpenAI-style)",
            f"  curl -s {llama.url}/v1/chat/completions -H 'content-type: application/json'{auth} \\",
            f"    -d {shlex.quote(json.dumps(chat))}",
        ]
        if llama.plan.url_invoke_mode == "RESPONSE_STREAM":
            lines += [
                "  # ... streamed: tokens arrive as server-sent events while they are generated",
                f"  curl -N {llama.url}/v1/chat/completions -H 'content-type: application/json'{auth} \\",
                f"    -d {shlex.quote(json.dumps(streamed))}",
            ]
        lines += [
            "  # Lambda Invoke API: the AWS CLI wants credentials (any: the emulator ignores them);",
            "  # AWS CLI v2 also needs --cli-binary-format raw-in-base64-out (v1 rejects that option)",
            "  AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1 \\",
            f"    aws lambda invoke --endpoint-url {llama.endpoint} --function-name function \\",
            """    --payload '{"prompt": "llamas are", "n-generate": 16}' /dev/stdout""",
            "  # ... streamed with boto3 (no AWS CLI has invoke-with-response-stream)",
            f'  AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local .venv/bin/python -c "import boto3; '
            f"r = boto3.client('lambda', endpoint_url='{llama.endpoint}', region_name='us-east-1')"
            ".invoke_with_response_stream(FunctionName='function', "
            """Payload=b'{\\"prompt\\": \\"llamas are\\", \\"n-generate\\": 16, \\"stream\\": true}'); """
            "[print(e['PayloadChunk']['Payload'].decode(), end='', flush=True) "
            "for e in r['EventStream'] if 'PayloadChunk' in e]\"",
            "  # OpenAI SDK",
            *_python_example(
                f"c = OpenAI(base_url='{llama.url}/v1', api_key='{sdk_key}')",
                f"r = c.completions.create(model='{model}', prompt='llamas are', max_tokens=16)",
                "print(r.choices[0].text)",
            ),
        ]
    embeddings = stack.functions.get("embeddings")
    if embeddings is not None:
        model = _model_name(embeddings)
        lines += [
            "  # Embeddings, TEI-style and OpenAI-style",
            f"  curl -s {embeddings.url}/embed -H 'content-type: application/json'{auth} \\",
            """    -d '{"inputs": ["First text", "Second text"]}'""",
            *_python_example(
                f"c = OpenAI(base_url='{embeddings.url}/v1', api_key='{sdk_key}')",
                f"print(len(c.embeddings.create(model='{model}', input='hi').data[0].embedding))",
            ),
        ]
    return lines


def banner(stack: LocalStack, api_key: str | None) -> str:
    lines = ["", "Serving (Ctrl-C stops everything):"]
    for function in stack.functions.values():
        spec = function.plan.spec
        snap = ", SnapStart lifecycle" if function.plan.snap_start else ""
        lines += [
            f"  {function.key:<11} {function.plan.description}",
            f"    Function URL  {function.url}   (invoke mode {function.plan.url_invoke_mode}{snap})",
            f"    Invoke API    {function.endpoint}   (function name: function; "
            f"{spec.memory_mb} MB, timeout {spec.timeout_s} s)",
        ]
    if api_key:
        lines.append("  API-key mode: every URL route but GET /health needs `Authorization: Bearer <key>`.")
    lines += ["", *examples(stack, api_key), ""]
    return "\n".join(lines)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = options_from(args)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    stack = LocalStack([], echo=echo, verbose=args.verbose, log_dir=args.log_dir)
    if args.checkpoint:
        from local.snapstart import CriuSnapshots

        stack.snapshots = CriuSnapshots
    try:
        stack.plans = build_plans(options, echo=echo)
        stack.start()
        stack.warm_up()
        echo(banner(stack, options.api_key))
        while True:
            dead = stack.dead_functions()
            if dead:
                echo(f"the Runtime API of {', '.join(dead)} stopped; stopping (see {args.log_dir})")
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        echo("\nstopping...")
        return 0
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            echo(f"error: a port is already in use ({exc}); choose others with the --*-port flags")
            return 1
        raise
    except (RuntimeError, FileNotFoundError) as exc:
        echo(f"error: {exc}")
        return 1
    finally:
        # Ctrl-C again while stopping must not leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        echo("stopped")


if __name__ == "__main__":
    sys.exit(main())
