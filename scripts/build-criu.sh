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
# One patch of ours (below): since Linux 6.16, getsockopt(SO_PASSCRED/SO_PASSSEC)
# answers EOPNOTSUPP for TCP sockets, and 4.1.1 then fails to dump any process
# holding one ("sockets: Can't get 1:16 opt: Operation not supported"). CRIU 4.2
# skips those options for such sockets; 4.2 is only in Debian testing/unstable,
# whose pool drops a tarball once it is superseded, so we stay on trixie's.
#
#   bash scripts/build-criu.sh        # prints .../.cache/criu/bin/criu
set -euo pipefail

cd "$(dirname "$0")/.."
VERSION=4.1.1
TARBALL=criu_${VERSION}.orig.tar.xz
SHA256=f80a66cb3726bb2116266d4759ce3bcbfab7abdb6b6d430bf20dd41911717afe
CACHE=$PWD/.cache/criu
BIN=$CACHE/bin/criu
STAMP=$CACHE/bin/criu.built
# libnftables-dev gives `--network-lock nftables` (there is no iptables binary here);
# the rest is what CRIU's Makefile probes for.
PACKAGES=(build-essential pkg-config libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
    python3-protobuf libnl-3-dev libnl-route-3-dev libcap-dev libnet1-dev libbsd-dev libnftables-dev
    libgnutls28-dev libaio-dev uuid-dev xz-utils patch)

PATCH=$(
    cat <<'EOF'
--- a/criu/sockets.c
+++ b/criu/sockets.c
@@ -637,6 +637,26 @@
 	return 0;
 }
 
+/*
+ * Since Linux 6.16 only unix, netlink and bluetooth sockets have SO_PASSCRED
+ * and SO_PASSSEC; the others answer EOPNOTSUPP, which means "not set".
+ */
+static int dump_pass_opt(int sk, int name, protobuf_c_boolean *has, protobuf_c_boolean *on)
+{
+	socklen_t len = sizeof(int);
+	int val;
+
+	if (getsockopt(sk, SOL_SOCKET, name, &val, &len) < 0) {
+		if (errno == EOPNOTSUPP)
+			return 0;
+		pr_perror("Can't get %d:%d opt", SOL_SOCKET, name);
+		return -1;
+	}
+	*has = true;
+	*on = val ? true : false;
+	return 0;
+}
+
 int dump_socket_opts(int sk, SkOptsEntry *soe)
 {
 	int ret = 0, val;
@@ -676,13 +696,8 @@
 	soe->so_reuseport = val ? true : false;
 	soe->has_so_reuseport = true;
 
-	ret |= dump_opt(sk, SOL_SOCKET, SO_PASSCRED, &val);
-	soe->has_so_passcred = true;
-	soe->so_passcred = val ? true : false;
-
-	ret |= dump_opt(sk, SOL_SOCKET, SO_PASSSEC, &val);
-	soe->has_so_passsec = true;
-	soe->so_passsec = val ? true : false;
+	ret |= dump_pass_opt(sk, SO_PASSCRED, &soe->has_so_passcred, &soe->so_passcred);
+	ret |= dump_pass_opt(sk, SO_PASSSEC, &soe->has_so_passsec, &soe->so_passsec);
 
 	ret |= dump_opt(sk, SOL_SOCKET, SO_DONTROUTE, &val);
 	soe->has_so_dontroute = true;
EOF
)
# What was built: a binary built from other sources or another patch is rebuilt.
BUILD_ID="$VERSION $SHA256 $(printf '%s\n' "$PATCH" | sha256sum | cut -d' ' -f1)"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

bash scripts/apt-install.sh build-criu "${PACKAGES[@]}"

if [ -x "$BIN" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$BUILD_ID" ] && "$BIN" --version >/dev/null 2>&1; then
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
printf '%s\n' "$PATCH" | patch -d "$CACHE/criu-$VERSION" -p1 --quiet
make -C "$CACHE/criu-$VERSION" -j"$(nproc)" criu >"$CACHE/build.log" 2>&1 || {
    tail -n 40 "$CACHE/build.log" >&2
    echo "build-criu: make failed; the whole log is $CACHE/build.log" >&2
    exit 1
}
mkdir -p "$CACHE/bin"
install -m 0755 "$CACHE/criu-$VERSION/criu/criu" "$BIN"
"$BIN" --version | grep -qx "Version: $VERSION"
echo "$BUILD_ID" >"$STAMP"
echo "$BIN"
