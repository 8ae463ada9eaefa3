"""Both container images, built exactly as `cdk deploy` would build them and run as Lambda runs them.

Everything is real: the CDK CLI synthesizes the app (with the context a user
with local models passes), podman builds each Docker image asset from the
synthesized asset manifest, and the images run under the real Lambda Runtime
Interface Emulator with Lambda's limits (see tests/images/); the generator's
streamed answers, which the emulator buffers, are read piece by piece from
the image's ENTRYPOINT run against local.runtime_api's Runtime API stand-in
(tests/images/run.py, ImageRuntimeLauncher). Only what cannot exist here is
replaced: the base image (a Debian-built stand-in through the
BASE_IMAGE build argument), the Hugging Face Hub (local model paths) and
download.pytorch.org (a local index of the same torch wheel). Nothing of AWS
is used or mocked: the functions run without AWS credentials.

The module's fixtures synthesize once and build each image once; a cold build
compiles llama.cpp (several minutes), later runs on the same machine reuse
podman's layer cache. Build logs land in .cache/images/logs/.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local.models import EMBEDDINGS_MODEL_ID
from local.rie import FunctionSpec
from local.runtime_api import HTTP_INTEGRATION, Done, Head, LocalFunction
from local.url_front import PRELUDE_DELIMITER, parse_prelude
from tests.conftest import function_url_event
from tests.images.assets import CloudAssembly, ImageAsset, synthesize
from tests.images.base import ensure_base_image
from tests.images.build import (
    TAG_PREFIX,
    BuildResult,
    TorchIndex,
    build_args_for_test,
    build_asset,
    copied_context,
    image_tag,
    synth_context,
)
from tests.images.cdk_cli import cdk_build_command
from tests.images.podman import CACHE, podman
from tests.images.report import image_report, render
from tests.images.run import (
    LAMBDA_USER,
    ImageRuntimeLauncher,
    LambdaContainer,
    cpu_share,
    image_command,
    run_under_qemu,
)

pytestmark = [pytest.mark.images, pytest.mark.slow]

LOGS = CACHE / "images" / "logs"
MINILM_DIMENSIONS = 384
MIB = 1024 * 1024


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="module")
def torch_index(workdir: Path) -> Iterator[TorchIndex]:
    with TorchIndex(workdir) as index:
        yield index


@pytest.fixture(scope="module")
def assembly(workdir: Path, torch_index: TorchIndex) -> CloudAssembly:
    """`cdk synth` with the embedded models as local models and the local torch index."""
    return CloudAssembly.read(synthesize(workdir / "cdk.out", synth_context(torch_index.url)))


@pytest.fixture(scope="module")
def base_image() -> str:
    return ensure_base_image()


_builds: dict[str, BuildResult] = {}


def _build(name: str, assembly: CloudAssembly, base_image: str) -> BuildResult:
    if name not in _builds:
        _builds[name] = build_asset(
            assembly.asset(name), base_image=base_image, log_path=LOGS / f"{name}.log"
        )
    return _builds[name]


@pytest.fixture(scope="module")
def llama_build(assembly: CloudAssembly, base_image: str, torch_index: TorchIndex) -> BuildResult:
    return _build("llama", assembly, base_image)


@pytest.fixture(scope="module")
def embeddings_build(assembly: CloudAssembly, base_image: str, torch_index: TorchIndex) -> BuildResult:
    return _build("embeddings", assembly, base_image)


def _container(build: BuildResult, assembly: CloudAssembly) -> Iterator[LambdaContainer]:
    function = assembly.function_for(build.asset)
    with LambdaContainer(
        build.tag,
        function,
        name=f"lambda-llm-{build.asset.name}",
        log_path=LOGS / f"{build.asset.name}-run.log",
    ) as container:
        yield container


@pytest.fixture(scope="module")
def llama_container(llama_build: BuildResult, assembly: CloudAssembly) -> Iterator[LambdaContainer]:
    yield from _container(llama_build, assembly)


@pytest.fixture(scope="module")
def embeddings_container(embeddings_build: BuildResult, assembly: CloudAssembly) -> Iterator[LambdaContainer]:
    yield from _container(embeddings_build, assembly)


@pytest.fixture(scope="module")
def llama_on_runtime_api(
    llama_build: BuildResult, assembly: CloudAssembly, workdir: Path
) -> Iterator[LocalFunction]:
    """The generator image's ENTRYPOINT on local.runtime_api's Runtime API, which passes a stream on."""
    function = assembly.function_for(llama_build.asset)
    spec = FunctionSpec(
        name="llama",
        code_dir=llama_build.asset.directory / "llama",  # its Dockerfile names the runtime module
        memory_mb=function.memory_mb,
        timeout_s=function.timeout_s,
        handler=image_command(llama_build.tag, function)[-1],
    )
    with (
        ImageRuntimeLauncher(
            llama_build.tag, function, name="lambda-llm-llama-stream", directory=workdir
        ) as launcher,
        LocalFunction(spec, log_path=LOGS / "llama-stream-run.log", python=str(launcher.path)) as running,
    ):
        yield running


def url_invoke(container: LambdaContainer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """Send a Function URL event; return the HTTP status and the decoded JSON body it describes.

    A function whose URL streams (FUNCTION_URL_INVOKE_MODE=RESPONSE_STREAM) frames every URL
    answer as Lambda's HTTP integration expects (JSON prelude, eight NULs, body); the emulator
    returns that stream whole, and it is read here as the Function URL would read it.
    """
    event = function_url_event(method, path, None if body is None else json.dumps(body))
    result = container.invoke(event)
    assert result.status == 200, result.body
    if container.function.environment.get("FUNCTION_URL_INVOKE_MODE") == "RESPONSE_STREAM":
        raw, found, payload = result.body.partition(PRELUDE_DELIMITER)
        assert found, result.body[:500]
        prelude = parse_prelude(raw)
        assert not isinstance(prelude, str), prelude
        return prelude[0], json.loads(payload)
    response = result.json()
    return response["statusCode"], json.loads(response["body"])


# ------------------------------------------------------------------ declared build


def test_synthesized_app_declares_both_images_with_the_local_models(assembly: CloudAssembly) -> None:
    # Given the app synthesized with local model paths, as a user with local models would
    # When its asset manifest is read
    llama, embeddings = assembly.asset("llama"), assembly.asset("embeddings")

    # Then each image builds from its own staged context, Dockerfile and local model
    assert llama.dockerfile == "llama/Dockerfile"
    assert embeddings.dockerfile == "embeddings/Dockerfile"
    assert llama.build_args["MODEL_LOCAL_PATH"].startswith("llama/models/")
    assert (llama.directory / llama.build_args["MODEL_LOCAL_PATH"]).is_file()
    assert embeddings.build_args["MODEL_LOCAL_PATH"].startswith("embeddings/models/")
    assert (embeddings.directory / embeddings.build_args["MODEL_LOCAL_PATH"] / "modules.json").is_file()
    for asset, other in ((llama, "embeddings"), (embeddings, "llama")):
        assert sorted(p.name for p in asset.directory.iterdir()) == sorted(["common", asset.name])
        assert not (asset.directory / other).exists()
        assert asset.platform == "linux/amd64"
        assert assembly.function_for(asset).architectures == ("x86_64",)


@pytest.mark.parametrize("name", ["llama", "embeddings"])
def test_image_builds_with_the_command_cdk_deploy_runs(
    name: str, assembly: CloudAssembly, base_image: str, request: pytest.FixtureRequest
) -> None:
    # Given the docker build command the pinned CDK CLI runs for this asset (tests/images/cdk_cli.py)
    asset: ImageAsset = assembly.asset(name)
    cli_args, cli_cwd = cdk_build_command(asset, assembly.directory, "cdkasset-tag")

    # When the image is built
    build: BuildResult = request.getfixturevalue(f"{name}_build")

    # Then podman ran that command in that directory, changing only the tag, the base
    # image and the network of RUN steps (which CDK leaves to the engine's default)
    assert build.command[0] == "podman"
    local_args = list(build.command[1:])
    assert cli_cwd == asset.directory
    expected = asset.docker_build_args(
        build.tag, build_args=build_args_for_test(asset, base_image), network_mode="host"
    )
    assert local_args == expected
    declared_args = _build_args(cli_args)
    assert _build_args(local_args) == {**declared_args, "BASE_IMAGE": base_image}
    assert _without(local_args, "--build-arg", "--tag", "--network") == _without(
        cli_args, "--build-arg", "--tag"
    )
    assert podman("image", "exists", build.tag, check=False).returncode == 0


def _build_args(args: list[str]) -> dict[str, str]:
    pairs = [args[i + 1] for i, arg in enumerate(args) if arg == "--build-arg"]
    return dict(pair.split("=", 1) for pair in pairs)


def _without(args: list[str], *flags: str) -> list[str]:
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in flags:
            skip = True
        else:
            kept.append(arg)
    return kept


@pytest.mark.parametrize("name", ["llama", "embeddings"])
def test_image_holds_the_runtime_and_model_but_nothing_for_building(
    name: str, request: pytest.FixtureRequest
) -> None:
    # Given a built image
    build: BuildResult = request.getfixturevalue(f"{name}_build")

    # When its filesystem is searched for build tools and caches
    probe = podman(
        "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", build.tag, "-c",
        "for tool in gcc cc g++ cmake make git; do command -v $tool; done;"
        " ls -d /root/.cache /build /var/lib/apt/lists/*Packages* 2>/dev/null; echo MODEL; ls /opt/model",
        check=False,
    )  # fmt: skip

    # Then there are no compilers, build folders or package lists, and the model is in place
    tools_and_dirs, model_files = probe.stdout.split("MODEL")
    assert tools_and_dirs.split() == [], probe.stdout
    assert model_files.split(), probe.stdout
    # with where the model came from (provenance.json), for the onnx backend beside the export
    if name == "llama":
        assert model_files.split() == ["model.gguf", "provenance.json"], probe.stdout
    else:
        assert build.asset.build_args["BACKEND"] == "onnx"
        assert model_files.split() == [
            "embedding_manifest.json", "model.onnx", "model.onnx.data", "provenance.json", "tokenizer.json"
        ], probe.stdout  # fmt: skip


# ------------------------------------------------------------------ run as Lambda runs it


@pytest.mark.parametrize("name", ["llama", "embeddings"])
def test_image_runs_the_projects_runtime_loop(
    name: str, assembly: CloudAssembly, request: pytest.FixtureRequest
) -> None:
    # Given a built image and the function the app declares for it
    build: BuildResult = request.getfixturevalue(f"{name}_build")
    function = assembly.function_for(build.asset)

    # When what Lambda runs is read, and the image's Python is asked for AWS's runtime client
    command = image_command(build.tag, function)
    config = json.loads(podman("image", "inspect", "--format", "{{json .Config}}", build.tag).stdout)
    script = "import importlib.util as u; print(u.find_spec('awslambdaric') is None)"
    probe = podman("run", "--rm", "--network", "none", "--entrypoint", "/opt/venv/bin/python", build.tag,
                   "-c", script)  # fmt: skip

    # Then it is the project's streaming runtime loop with the handler, not awslambdaric,
    # and ONNX Runtime's telemetry (a file lock under HOME) is off in the embeddings image
    assert command == ["/opt/venv/bin/python", "-m", "lambda_common.lambda_runtime", "handler.lambda_handler"]
    assert probe.stdout.strip() == "True", probe.stdout
    if name == "embeddings":
        assert "ORT_DISABLE_TELEMETRY=1" in config["Env"]


@pytest.mark.parametrize("name", ["llama", "embeddings"])
def test_image_can_trace_with_xray_when_tracing_is_on(name: str, request: pytest.FixtureRequest) -> None:
    # Given a built image (tracing_enabled turns on powertools' Tracer, which imports the X-Ray SDK)
    build: BuildResult = request.getfixturevalue(f"{name}_build")

    # When its Python makes an enabled Tracer, as the handlers do with tracing on
    script = (
        "from aws_lambda_powertools import Tracer;"
        "print(type(Tracer(service='probe', disabled=False).provider).__module__)"
    )
    done = podman("run", "--rm", "--network", "none", "--entrypoint", "/opt/venv/bin/python", build.tag,
                  "-c", script, check=False)  # fmt: skip

    # Then the X-Ray SDK and its dependencies are in the image
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().startswith("aws_xray_sdk."), done.stdout


@pytest.mark.parametrize("name", ["llama", "embeddings"])
def test_container_runs_with_lambdas_constraints(
    name: str, assembly: CloudAssembly, request: pytest.FixtureRequest
) -> None:
    # Given the image running as the synthesized function would
    container: LambdaContainer = request.getfixturevalue(f"{name}_container")
    function = assembly.function_for(assembly.asset(name))

    # When podman reports the container's settings and the function's user probes its filesystem
    info = container.inspect()
    write_root = container.exec("/bin/sh", "-c", "touch /var/task/probe")
    write_tmp = container.exec("/bin/sh", "-c", "touch /tmp/probe && id -u && id -g")
    reach_out = container.exec(
        "/opt/venv/bin/python", "-c", "import socket; socket.create_connection(('1.1.1.1', 53), timeout=3)"
    )

    # Then the root filesystem is read-only, /tmp is writable, the user is not root,
    # memory is the function's, and there is no network to reach
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert info["Config"]["User"] == LAMBDA_USER
    assert info["HostConfig"]["NetworkMode"] == "none"
    assert info["HostConfig"]["Memory"] == function.memory_mb * MIB
    # (podman stores the CPU share as a CFS quota in microseconds per 100 ms period)
    assert info["HostConfig"]["NanoCpus"] == pytest.approx(cpu_share(function.memory_mb) * 1e9, abs=1e5)
    assert write_root.returncode != 0
    assert "Read-only file system" in write_root.stderr
    assert write_tmp.returncode == 0, write_tmp.stderr
    assert write_tmp.stdout.split() == LAMBDA_USER.split(":")
    assert reach_out.returncode != 0
    assert "Network is unreachable" in reach_out.stderr


def test_llama_answers_the_seed_payload(llama_container: LambdaContainer) -> None:
    # Given the generator image running under the emulator
    # When the seed payload is invoked directly (as `aws lambda invoke` would)
    result = llama_container.invoke({"prompt": "llamas are", "n-generate": 1})

    # Then it answers with one new token in llama.cpp's response shape
    assert result.status == 200, result.body
    body = result.json()
    assert "errorMessage" not in body, body
    assert "error" not in body, body
    assert body["usage"]["completion_tokens"] == 1
    assert body["usage"]["prompt_tokens"] >= 2
    assert isinstance(body["text"], str)
    assert body["text"]
    assert body["finish_reason"] in ("length", "stop")
    assert body["model"]


def test_llama_answers_function_url_events(llama_container: LambdaContainer) -> None:
    # Given the generator image running under the emulator
    # When Function URL events ask for its health and a chat completion
    health_status, health = url_invoke(llama_container, "GET", "/health")
    chat_status, chat = url_invoke(
        llama_container,
        "POST",
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 3},
    )

    # Then both answer like the OpenAI API
    assert health_status == 200, health
    assert health["status"] == "ok"
    assert chat_status == 200, chat
    assert chat["object"] == "chat.completion"
    assert chat["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(chat["choices"][0]["message"]["content"], str)
    assert 1 <= chat["usage"]["completion_tokens"] <= 3


def test_llama_streams_through_its_entrypoint_on_the_runtime_api(llama_on_runtime_api: LocalFunction) -> None:
    # Given the generator image's ENTRYPOINT run against the Runtime API stand-in, with the
    # URL invoke mode the app declares (RESPONSE_STREAM) and no emulator in between
    question = {"role": "user", "content": "Count from 1 to 50, separated by commas."}
    body = {"messages": [question], "max_tokens": 24, "stream": True}
    event = function_url_event("POST", "/v1/chat/completions", json.dumps(body))

    # When a streamed chat completion is invoked through a Function URL event
    head, *pieces, done = llama_on_runtime_api.invoke(json.dumps(event).encode()).events()

    # Then the runtime loop answered in Lambda's streaming mode, framed for the HTTP integration
    assert isinstance(head, Head), head
    assert head.streaming
    assert head.content_type == HTTP_INTEGRATION
    assert isinstance(done, Done)
    assert done.error is None, done.error.message
    assert all(isinstance(piece, bytes) for piece in pieces)
    stream = b"".join(pieces)  # type: ignore[arg-type]
    raw, found, sse = stream.partition(PRELUDE_DELIMITER)
    assert found, stream[:500]
    prelude = parse_prelude(raw)
    assert not isinstance(prelude, str), prelude
    status, headers = prelude
    assert status == 200
    assert dict(headers)["Content-Type"].startswith("text/event-stream")

    # ... with OpenAI's chunks, then [DONE]
    offset, events = len(raw) + len(PRELUDE_DELIMITER), []
    for block in sse.split(b"\n\n"):
        if block:
            events.append((offset, block.removeprefix(b"data: ")))
        offset += len(block) + 2
    assert events[-1][1] == b"[DONE]"
    chunks = [(at, json.loads(data)) for at, data in events[:-1]]
    contents = [(at, c) for at, c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(contents) >= 2, chunks
    assert all(chunk["object"] == "chat.completion.chunk" for _, chunk in chunks)

    # ... sent piece by piece: the first words and the end of the stream came in different pieces
    ends = list(itertools.accumulate(len(piece) for piece in pieces))  # type: ignore[arg-type]
    first_words, end = bisect.bisect_right(ends, contents[0][0]), bisect.bisect_right(ends, events[-1][0])
    assert first_words < end, f"{len(pieces)} pieces"


def _unit_vectors(vectors: Any, count: int) -> None:
    assert isinstance(vectors, list)
    assert len(vectors) == count
    for vector in vectors:
        assert len(vector) == MINILM_DIMENSIONS
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, abs_tol=1e-3)


def test_embeddings_answers_the_seed_payload(embeddings_container: LambdaContainer) -> None:
    # Given the embeddings image running under the emulator
    # When the seed payload is invoked directly
    result = embeddings_container.invoke({"inputs": ["First text", "Second text"]})

    # Then it answers like TEI's /embed: two normalized 384-dimension MiniLM vectors
    assert result.status == 200, result.body
    vectors = result.json()
    _unit_vectors(vectors, 2)
    assert vectors[0] != vectors[1]


def test_embeddings_answers_function_url_events(embeddings_container: LambdaContainer) -> None:
    # Given the embeddings image running under the emulator
    # When Function URL events ask for its health and OpenAI-style embeddings
    health_status, _ = url_invoke(embeddings_container, "GET", "/health")
    status, body = url_invoke(
        embeddings_container,
        "POST",
        "/v1/embeddings",
        {"input": ["First text"], "model": EMBEDDINGS_MODEL_ID},
    )

    # Then both answer, the embeddings in OpenAI's list shape
    assert health_status == 200
    assert status == 200, body
    assert body["object"] == "list"
    _unit_vectors([item["embedding"] for item in body["data"]], 1)


_BATCH = """
import json, pathlib
import pyarrow as pa, pyarrow.parquet as pq
import batch
from embedder.batch_parquet import read_metadata, to_parquet
from embedder.service import EmbedOptions
vectors = batch.service.embed(["First text", "Second text"], EmbedOptions()).vectors
data = to_parquet(["a", "b"], vectors, dimensions=vectors.shape[1], metadata={"model": batch.MODEL_ID})
table = pq.read_table(pa.BufferReader(data))
print(json.dumps({
    "handler": callable(batch.lambda_handler), "rows": table.num_rows,
    "vector_type": str(table.schema.field("vector").type), "metadata": read_metadata(data),
    "same": bool((table.column("vector").combine_chunks().flatten().to_numpy().reshape(vectors.shape)
                  == vectors).all()),
    "pyarrow": sorted(p.name for p in pathlib.Path(pa.__file__).parent.iterdir()),
}))
"""


def test_embeddings_batch_entry_point_writes_parquet(embeddings_container: LambdaContainer) -> None:
    # Given the embeddings image, whose batch function runs the command batch.lambda_handler
    # (pyarrow trimmed at build time) with its output location in the environment
    env = {"BATCH_OUTPUT_BUCKET": "embeddings-output", "BATCH_OUTPUT_PREFIX": "runs/"}

    # When its Python imports the batch entry point (loading the model) and writes two vectors to Parquet
    done = embeddings_container.exec("/opt/venv/bin/python", "-c", _BATCH, env=env)

    # Then the handler is there and the Parquet file reads back as fixed-size float32 vectors,
    # with none of the trimmed parts of pyarrow present
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["handler"] is True
    assert result["rows"] == 2
    assert result["vector_type"] == f"fixed_size_list<element: float>[{MINILM_DIMENSIONS}]"
    assert result["metadata"] == {"model": EMBEDDINGS_MODEL_ID}
    assert result["same"] is True
    trimmed = {
        "include",
        "tests",
        "src",
        "libarrow_flight.so.2600",
        "_flight.cpython-311-x86_64-linux-gnu.so",
    }

    assert trimmed.isdisjoint(result["pyarrow"])
    assert not [name for name in result["pyarrow"] if name.endswith((".pyx", ".pxd", ".pxi"))]
    assert "libparquet.so.2600" in result["pyarrow"]


# ------------------------------------------------------------------ CPU without AVX-512

_AVX512_PROBE = """
import ctypes, mmap
code = bytes.fromhex("62f17d48efc0c3")  # vpxord zmm0, zmm0, zmm0 ; ret
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(code)
ctypes.CFUNCTYPE(None)(ctypes.addressof(ctypes.c_char.from_buffer(page)))()
print("AVX-512 instruction executed")
"""

_GENERATE = """
import json, os, llama_cpp
llm = llama_cpp.Llama(model_path=os.environ["MODEL_PATH"], n_ctx=256, n_threads=1, verbose=False)
out = llm("llamas are", max_tokens=4, temperature=0.0)
print(json.dumps({"system_info": llama_cpp.llama_print_system_info().decode(),
                  "tokens": out["usage"]["completion_tokens"], "text": out["choices"][0]["text"]}))
"""


def test_avx512_probe_discriminates_the_emulated_cpu(llama_build: BuildResult) -> None:
    # Given one AVX-512 instruction, run by the image's Python
    # When it runs natively on this AVX-512 machine and on an emulated Haswell (AVX2, no AVX-512)
    native = podman("run", "--rm", "--network", "none", "--entrypoint", "/opt/venv/bin/python",
                    llama_build.tag, "-c", _AVX512_PROBE, check=False)  # fmt: skip
    haswell = run_under_qemu(llama_build.tag, cpu="Haswell", python_args=["-c", _AVX512_PROBE])

    # Then the emulated CPU dies of SIGILL (status 132) where the real one runs it:
    # the Haswell check below would catch a library that uses AVX-512
    if "avx512f" in Path("/proc/cpuinfo").read_text():
        assert native.returncode == 0, native.stderr
    assert haswell.returncode == 132, (haswell.returncode, haswell.stderr)


def test_llama_generates_on_a_cpu_without_avx512(llama_build: BuildResult) -> None:
    # Given the image's own Python and llama.cpp build, run on an emulated Haswell CPU
    # When it loads the baked-in model and generates a few tokens
    done = run_under_qemu(llama_build.tag, cpu="Haswell", python_args=["-c", _GENERATE])

    # Then it generates (no "Illegal instruction", exit status 132)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["tokens"] >= 1
    assert "AVX2 = 1" in result["system_info"]


def test_llama_kernels_follow_the_cpu_build_docs_llama_md_chose(llama_build: BuildResult) -> None:
    # Given the image's llama.cpp, run natively on this machine
    # When it reports the CPU features its kernels use and its backend libraries are listed
    script = (
        "import llama_cpp, pathlib; print(llama_cpp.llama_print_system_info().decode());"
        "print(*sorted(p.name for p in (pathlib.Path(llama_cpp.__file__).parent / 'lib').iterdir()))"
    )
    done = podman("run", "--rm", "--network", "none", "--entrypoint", "/opt/venv/bin/python", llama_build.tag,
                  "-c", script, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    system_info, libraries = done.stdout.strip().splitlines()[-2:]
    host_has_avx512 = "avx512f" in Path("/proc/cpuinfo").read_text()

    # Then with runtime CPU-variant selection (ggml-cpu-* libraries) an AVX-512 CPU gets
    # AVX-512 kernels; with the one fixed x86-64 baseline, AVX2 kernels and never AVX-512
    if "ggml-cpu-" in libraries:
        assert "AVX2 = 1" in system_info
        if host_has_avx512:
            assert "AVX512 = 1" in system_info, system_info
    else:
        assert "AVX2 = 1" in system_info
        assert "AVX512 = 1" not in system_info, system_info


# ------------------------------------------------------------------ layer cache


def test_code_only_change_reuses_the_compiled_llama_layer(
    llama_build: BuildResult, base_image: str, workdir: Path
) -> None:
    # Given the llama context copied elsewhere (another absolute path, fresh mtimes, as
    # in a new clone) with a change to the handler code only
    asset = llama_build.asset
    with copied_context(asset, workdir / "llama-code-change") as context:
        handler = context / "llama" / "handler.py"
        handler.write_text(handler.read_text() + "\n# a code-only change\n")

        # When it is built again with the same command
        rebuild = build_asset(
            asset,
            base_image=base_image,
            context_dir=context,
            tag=f"{TAG_PREFIX}/llama:cache-check",
            log_path=LOGS / "llama-cache-check.log",
        )
    try:
        # Then llama.cpp's compile step and every dependency and model step come from
        # the layer cache; only the code layers are rebuilt
        compile_step = rebuild.step(r"cmake-args\.sh.*pip install")
        assert compile_step.cached, rebuild.log_path
        first_code_step = next(i for i, s in enumerate(rebuild.steps) if "handler.py" in s.text)
        assert all(
            step.cached for step in rebuild.steps[:first_code_step] if not step.text.startswith("FROM")
        )
        assert not rebuild.steps[first_code_step].cached
        assert rebuild.image_id != llama_build.image_id
    finally:
        podman("rmi", rebuild.tag, check=False)


def test_changed_local_model_is_rebuilt_into_the_image(
    llama_build: BuildResult, base_image: str, workdir: Path
) -> None:
    # Given the llama context with the local model file changed in place (same path)
    asset = llama_build.asset
    with copied_context(asset, workdir / "llama-model-change") as context:
        model = context / asset.build_args["MODEL_LOCAL_PATH"]
        with model.open("ab") as handle:
            handle.write(b"\0" * 4096)
        want = hashlib.sha256(model.read_bytes()).hexdigest()

        # When it is built again with the same command
        rebuild = build_asset(
            asset,
            base_image=base_image,
            context_dir=context,
            tag=f"{TAG_PREFIX}/llama:model-check",
            log_path=LOGS / "llama-model-check.log",
        )
    try:
        baked = podman("run", "--rm", "--network", "none", "--entrypoint", "sha256sum", rebuild.tag,
                       "/opt/model/model.gguf").stdout.split()[0]  # fmt: skip
    finally:
        podman("rmi", rebuild.tag, check=False)

    # Then the image holds the new model, not the cached old one
    assert baked == want


# ------------------------------------------------------------------ sizes


def test_image_sizes_and_largest_layers_are_reported(
    llama_build: BuildResult, embeddings_build: BuildResult, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given both built images
    builds = [llama_build, embeddings_build]

    # When their sizes and layers are read from podman
    reports = [image_report(build.asset.name, build.tag) for build in builds]
    markdown = render(reports)
    times = "\n".join(
        f"{b.asset.name}: built in {b.seconds:.0f} s, {sum(s.cached for s in b.steps)}/{len(b.steps)} steps "
        "from the layer cache"
        for b in builds
    )
    report_path = CACHE / "images" / "report.md"
    report_path.write_text(markdown + "\n" + times + "\n")
    with capsys.disabled():
        print(f"\n\n{markdown}\n{times}\n(also in {report_path})")

    # Then each fits Lambda's 10 GB limit and its model is one of its largest layers
    for report in reports:
        assert 0 < report.size < 10 * 1000**3
        assert any("/opt/model" in layer.instruction for layer in report.largest(3)), report.largest(3)
    assert image_tag(llama_build.asset) == llama_build.tag
