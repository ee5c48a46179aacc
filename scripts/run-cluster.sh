#!/bin/bash
# make run: a local three-member kvd cluster over TLS on 127.0.0.1, like
# etcd's Procfile (clients 2379/22379/32379, peers 2380/22380/32380).
# Installs deps, builds kvd (Release, build-run/), creates a local CA
# and member/client certificates under .run/pki if missing, starts the
# members with data dirs and logs under .run/, and stops them (by PID) on
# Ctrl-C. Set KVD_RUN_DIR to use another folder.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUN=${KVD_RUN_DIR:-$ROOT/.run}
PKI=$RUN/pki
BUILD=${KVD_RUN_BUILD:-build-run}

scripts/install-deps.sh
# Warnings stay warnings here: make test is where -Werror is enforced, and
# a newer compiler warning in some module must not stop a user running kvd.
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DKV_SANITIZE=OFF \
	-DKV_WERROR=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target kvd
KVD=$ROOT/$BUILD/bin/kvd

mkdir -p "$PKI"
if [ ! -f "$PKI/client.crt" ]; then
	echo "run-cluster: creating a local CA and certificates in $PKI"
	(
		cd "$PKI"
		ossl() { openssl "$@" 2>/dev/null; }
		ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
			-nodes -days 3650 -subj "/CN=kvd local CA" \
			-keyout ca.key -out ca.crt \
			-addext "basicConstraints=critical,CA:TRUE" \
			-addext "keyUsage=critical,keyCertSign,cRLSign"
		leaf() { # name cn eku san
			{
				echo "basicConstraints=CA:FALSE"
				echo "keyUsage=critical,digitalSignature,keyEncipherment"
				echo "extendedKeyUsage=$3"
				[ -n "$4" ] && echo "subjectAltName=$4"
			} >"$1.ext"
			ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
				-nodes -subj "/CN=$2" -keyout "$1.key" -out "$1.csr"
			ossl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key \
				-CAcreateserial -days 3650 -extfile "$1.ext" \
				-out "$1.crt"
			rm -f "$1.csr" "$1.ext"
		}
		leaf member kvd-member serverAuth,clientAuth \
			"IP:127.0.0.1,IP:::1,DNS:localhost"
		leaf client client clientAuth ""
		chmod 600 ./*.key
	)
fi

NAMES=(infra1 infra2 infra3)
CPORTS=(2379 22379 32379)
PPORTS=(2380 22380 32380)
CLUSTER=""
for i in 0 1 2; do
	CLUSTER+="${CLUSTER:+,}${NAMES[$i]}=https://127.0.0.1:${PPORTS[$i]}"
done

PIDS=()
stop() {
	trap - INT TERM EXIT
	echo
	echo "run-cluster: stopping members (pids ${PIDS[*]:-})"
	for p in "${PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	echo "run-cluster: stopped; data and logs are in $RUN"
}
trap stop INT TERM EXIT

for i in 0 1 2; do
	n=${NAMES[$i]}
	"$KVD" --name "$n" --data-dir "$RUN/$n.etcd" \
		--listen-client-urls "https://127.0.0.1:${CPORTS[$i]}" \
		--advertise-client-urls "https://127.0.0.1:${CPORTS[$i]}" \
		--listen-peer-urls "https://127.0.0.1:${PPORTS[$i]}" \
		--initial-advertise-peer-urls "https://127.0.0.1:${PPORTS[$i]}" \
		--initial-cluster "$CLUSTER" \
		--initial-cluster-token kvd-local --initial-cluster-state new \
		--cert-file "$PKI/member.crt" --key-file "$PKI/member.key" \
		--trusted-ca-file "$PKI/ca.crt" --client-cert-auth \
		--peer-cert-file "$PKI/member.crt" \
		--peer-key-file "$PKI/member.key" \
		--peer-trusted-ca-file "$PKI/ca.crt" --peer-client-cert-auth \
		>>"$RUN/$n.log" 2>&1 &
	PIDS+=($!)
done

CURL="curl -s --cacert $PKI/ca.crt --cert $PKI/client.crt --key $PKI/client.key"
ready=""
for _ in $(seq 1 100); do
	for p in "${PIDS[@]}"; do
		if ! kill -0 "$p" 2>/dev/null; then
			echo "run-cluster: a member exited; its log:" >&2
			tail -n 20 "$RUN"/infra*.log >&2
			exit 1
		fi
	done
	if $CURL -f https://127.0.0.1:2379/health 2>/dev/null | grep -q true; then
		ready=1
		break
	fi
	sleep 0.1
done
[ -n "$ready" ] || echo "run-cluster: no leader yet; see $RUN/infra*.log"

cat <<MSG

kvd cluster running (TLS, client certificates required):
  infra1  https://127.0.0.1:2379   (peer 2380)   pid ${PIDS[0]}
  infra2  https://127.0.0.1:22379  (peer 22380)  pid ${PIDS[1]}
  infra3  https://127.0.0.1:32379  (peer 32380)  pid ${PIDS[2]}
  CA, client cert and key: $PKI/{ca.crt,client.crt,client.key}
  data dirs and logs:      $RUN/

Try it (put foo=bar, then read it back; keys and values are base64):
  $CURL https://127.0.0.1:2379/v3/kv/put -X POST -d '{"key":"Zm9v","value":"YmFy"}'
  $CURL https://127.0.0.1:22379/v3/kv/range -X POST -d '{"key":"Zm9v"}'

Ctrl-C stops every member.
MSG
wait
