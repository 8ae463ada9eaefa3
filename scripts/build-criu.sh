#!/usr/bin/env bash
# Build CRIU 4.1.1 into .cache/criu/bin/criu for the checkpoint/restore tests and
# benchmarks (local/checkpoint.py). Idempotent: once built, it only checks the
# build dependencies are installed and prints the binary's path. Runs as root on
# Debian bookworm (CI does), or through sudo for the apt steps.
#
# Why a source build: bookworm's own criu (3.17.1) fails every command on kernels
# since 6.13 ("vdso: Unexpected rt vDSO area bounds": the new [vvar_vclock]
# mapping), which CRIU handles from 4.1 on. The source is Debian trixie's upstream
# tarball, fetched with apt from a private deb-src list kept under .cache/criu/apt
# (the machine's own apt sources are left alone), and checked against a pinned
# SHA-256. The build dependencies are bookworm's packages.
#
#   bash scripts/build-criu.sh        # prints .../.cache/criu/bin/criu
set -euo pipefail

cd "$(dirname "$0")/.."
VERSION=4.1.1
TARBALL=criu_${VERSION}.orig.tar.xz
SHA256=f80a66cb3726bb2116266d4759ce3bcbfab7abdb6b6d430bf20dd41911717afe
CACHE=$PWD/.cache/criu
BIN=$CACHE/bin/criu
# libnftables-dev gives `--network-lock nftables` (there is no iptables binary here);
# the rest is what CRIU's Makefile probes for.
PACKAGES=(build-essential pkg-config libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
    python3-protobuf libnl-3-dev libnl-route-3-dev libcap-dev libnet1-dev libbsd-dev libnftables-dev
    libgnutls28-dev libaio-dev uuid-dev xz-utils)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if ! command -v apt-get >/dev/null 2>&1; then
    echo "build-criu: needs a Debian (bookworm) machine with apt-get" >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "build-criu: installing packages needs root; run as root or install sudo" >&2
    exit 1
fi

missing=()
for package in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$package")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -qx "Version: $VERSION"; then
    echo "$BIN"
    exit 0
fi

mkdir -p "$CACHE/apt/lists/partial" "$CACHE/apt/cache/archives/partial" "$CACHE/src"
if ! echo "$SHA256  $CACHE/src/$TARBALL" | sha256sum --check --status 2>/dev/null; then
    say "fetching $TARBALL (Debian trixie's upstream source)"
    echo 'deb-src http://deb.debian.org/debian trixie main' >"$CACHE/apt/sources.list"
    apt_private=(
        -o "Dir::Etc::SourceList=$CACHE/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$CACHE/apt/lists" -o "Dir::Cache=$CACHE/apt/cache"
        # apt drops to the _apt user for downloads; it cannot write into a root-owned cache
        -o APT::Sandbox::User=root
    )
    apt-get "${apt_private[@]}" -qq update
    # --tar-only: the upstream tarball is all the build needs (the .dsc and debian
    # tarball are not served here). Any trixie revision of 4.1.1 ships the same one.
    (cd "$CACHE/src" && rm -f "$TARBALL" && apt-get "${apt_private[@]}" -qq source --download-only --tar-only criu >/dev/null)
    if ! echo "$SHA256  $CACHE/src/$TARBALL" | sha256sum --check --status; then
        echo "build-criu: $CACHE/src/$TARBALL is missing or its SHA-256 is not $SHA256" >&2
        echo "build-criu: trixie's criu source: $(apt-cache "${apt_private[@]}" showsrc criu | grep -m1 '^Version:')" >&2
        exit 1
    fi
fi

say "building CRIU $VERSION"
rm -rf "$CACHE/criu-$VERSION"
tar -C "$CACHE" -xJf "$CACHE/src/$TARBALL"
make -C "$CACHE/criu-$VERSION" -j"$(nproc)" criu >"$CACHE/build.log" 2>&1 || {
    tail -n 40 "$CACHE/build.log" >&2
    echo "build-criu: make failed; the whole log is $CACHE/build.log" >&2
    exit 1
}
mkdir -p "$CACHE/bin"
install -m 0755 "$CACHE/criu-$VERSION/criu/criu" "$BIN"
"$BIN" --version | grep -qx "Version: $VERSION"
echo "$BIN"
