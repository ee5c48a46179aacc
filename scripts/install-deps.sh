#!/bin/sh
# Install every Debian 12 package that kvd's build, tests and benchmarks need.
# Idempotent: when everything is present it installs nothing and touches no
# network. Run as root (CI and the dev machines are root).
set -eu

PKGS="
build-essential cmake pkg-config clang llvm libclang-rt-14-dev
libuv1-dev libraft-dev liblmdb-dev libssl-dev openssl
node-llhttp libnghttp2-dev
libprotobuf-c-dev protobuf-c-compiler
libjansson-dev
libcmocka-dev
python3 python3-pytest python3-etcd3gw python3-etcd3 python3-requests python3-grpcio
etcd-server etcd-client
lmdb-utils curl
nftables iproute2 faketime libfaketime
"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
		missing="$missing $p"
	fi
done

if [ -z "$missing" ]; then
	echo "install-deps: all packages present"
	exit 0
fi

echo "install-deps: installing:$missing"
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: must run as root to install packages" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
# etcd-server's package starts a system etcd on 2379; kvd's tests pick free
# ports, but a stray daemon only wastes memory: stop it if it was started.
if command -v systemctl >/dev/null 2>&1; then
	systemctl stop etcd >/dev/null 2>&1 || true
fi
echo "install-deps: done"
