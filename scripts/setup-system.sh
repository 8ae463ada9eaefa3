#!/usr/bin/env bash
# System packages for the container-image tests (`make test-images`) on Debian
# bookworm, and the project's own podman configuration. Idempotent and quick
# once done; runs as root, or through sudo when not root.
#
#   podman + runc  build the images from the CDK asset manifest and run them
#                  (crun is not installed: it fails on hybrid cgroup v1 kernels)
#   netavark       podman's network stack (a hard dependency; the tests use only
#                  --network=host for builds and --network=none for runs)
#   mmdebstrap     builds the stand-in base image from Debian packages
#   qemu-user-static  runs the generator on an emulated CPU without AVX-512,
#                  inside its own container (a static binary can be mounted in);
#   qemu-user      the same emulator for host programs (qemu-x86_64 -cpu Haswell)
#   uidmap         newuidmap/newgidmap, for rootless podman and mmdebstrap
#   curl           a real HTTP client for the streaming tests (curl -N)
#   (then CRIU 4.1.1, built by scripts/build-criu.sh: Debian's 3.17 fails on this kernel)
#
# The podman settings go to .cache/containers/containers.conf, not /etc: local/images.py
# points CONTAINERS_CONF at it for every podman call, so the machine's global
# configuration is left alone.
set -euo pipefail

cd "$(dirname "$0")/.."
PACKAGES=(podman runc netavark mmdebstrap qemu-user qemu-user-static uidmap curl)
CONF_DIR=.cache/containers

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

bash scripts/apt-install.sh setup-system "${PACKAGES[@]}"

# The settings this kernel and machine need (see ../shared/FACTS.md):
#   runtime = runc          crun cannot create containers on hybrid cgroups
#   default_ulimits         podman's defaults (from the host's hard limits) are refused
#   cgroupfs, file events   no systemd or journald to talk to
#   netavark                silences the unused CNI config Debian ships in /etc/cni
mkdir -p "$CONF_DIR"
conf=$CONF_DIR/containers.conf
want=$(
    cat <<'EOF'
# Written by scripts/setup-system.sh; used through CONTAINERS_CONF by local/images.py.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
network_backend = "netavark"
EOF
)
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$want" ]; then
    say "writing $conf"
    printf '%s\n' "$want" >"$conf"
fi

if ! CONTAINERS_CONF=$PWD/$conf podman info --format '{{.Host.OCIRuntime.Name}}' >/dev/null; then
    echo "setup-system: podman is installed but \`podman info\` fails with $conf" >&2
    exit 1
fi
# CRIU, for the local stand-in of SnapStart (checkpoint the initialised runtime, restore copies):
# Debian bookworm's 3.17 fails on this kernel, so it is built from source (about 20 s; skipped once built).
criu=$(bash scripts/build-criu.sh)
say "system packages ready: $(podman --version), $(mmdebstrap --version), $(qemu-x86_64 --version | head -n1), criu $("$criu" --version | head -n1 | cut -d' ' -f2)"
