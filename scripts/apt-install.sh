#!/usr/bin/env bash
# Install Debian packages that are missing, without recommends, as root or
# through sudo; quick and silent when they are all there. Shared by
# setup-system.sh and build-criu.sh.
#
#   bash scripts/apt-install.sh WHO PACKAGE...   # WHO names the caller in messages
set -euo pipefail

who=$1
shift

if ! command -v apt-get >/dev/null 2>&1; then
    echo "$who: needs a Debian (bookworm) machine with apt-get; install $* yourself" >&2
    exit 1
fi

missing=()
for package in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$package")
    fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "$who: installing ${missing[*]} needs root; run as root or install sudo" >&2
    exit 1
fi
printf '\033[1m==> %s\033[0m\n' "$who: installing ${missing[*]}" >&2
"${as_root[@]}" apt-get update -qq
# Recommends are left out on purpose: for podman they would pull crun, buildah's CLI,
# fuse-overlayfs, slirp4netns and binfmt registrations, none of which the tests use.
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
