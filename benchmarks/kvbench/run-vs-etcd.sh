#!/bin/bash
# Runs the same kvbench workloads against kvd and etcd 3.4 (/usr/bin/etcd)
# with the same topology on 127.0.0.1, alternating the two servers round by
# round (the machine is shared: pairs measured close in time are what to
# compare). Each server starts fresh for each round on free ports and is
# stopped by PID.
#
#   benchmarks/kvbench/run-vs-etcd.sh [-b BIN] [-n MEMBERS] [-t plain|tls]
#                                     [-r ROUNDS] [-s SUITE] [-o OUTDIR]
#   SUITE: quick (put, range, txn-put, lease-grant, lease-keepalive),
#          leases (100k kept leases, TTL 90 s: RSS and expiry), mix (apiserver-mix XS
#          60 s), or a comma list of them. Default quick.
# Every kvbench output is kept in OUTDIR/<server>-r<round>-<name>.txt and
# one line per run is appended to OUTDIR/summary.tsv.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/build-kb/bin
members=1
mode=plain
rounds=3
suite=quick
out=
mixdur=60
while getopts "b:n:t:r:s:o:d:" opt; do
  case $opt in
    b) bin=$OPTARG ;;
    n) members=$OPTARG ;;
    t) mode=$OPTARG ;;
    r) rounds=$OPTARG ;;
    s) suite=$OPTARG ;;
    o) out=$OPTARG ;;
    d) mixdur=$OPTARG ;;
    *) sed -n '2,16p' "$0"; exit 64 ;;
  esac
done
kvbench=$bin/kvbench
etcd=${ETCD:-/usr/bin/etcd}
[ -x "$kvbench" ] && [ -x "$bin/kvd" ] && [ -x "$etcd" ] || {
  echo "need $kvbench, $bin/kvd and $etcd" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/kvbench-vs.XXXXXX")
out=${out:-$work/out}
mkdir -p "$out"
pids=()

cleanup() {
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  pids=()
}
trap 'cleanup; rm -rf "$work/data"' EXIT

free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

make_certs() {
  local d=$work/pki
  [ -f "$d/ca.pem" ] && return
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$d/ca-key.pem" -out "$d/ca.pem" -days 2 -subj /CN=kvbench-ca \
    2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$d/key.pem" -out "$d/req.csr" -subj /CN=127.0.0.1 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' \
    > "$d/ext.cnf"
  openssl x509 -req -in "$d/req.csr" -CA "$d/ca.pem" -CAkey "$d/ca-key.pem" \
    -CAcreateserial -out "$d/cert.pem" -days 2 -extfile "$d/ext.cnf" \
    2>/dev/null
}

# start SERVER: starts kvd or etcd with $members members; sets $endpoints
# (comma list), $lead_pid (first member) and $all_pids.
start() {
  local server=$1 exe scheme=http
  [ "$server" = kvd ] && exe=$bin/kvd || exe=$etcd
  [ "$mode" = tls ] && scheme=https
  read -r -a ports <<< "$(free_ports $((2 * members)))"
  local cluster="" i
  for ((i = 0; i < members; i++)); do
    cluster+="${cluster:+,}m$i=http://127.0.0.1:${ports[2*i+1]}"
  done
  rm -rf "$work/data"
  mkdir -p "$work/data"
  endpoints=""
  all_pids=""
  for ((i = 0; i < members; i++)); do
    local c=$scheme://127.0.0.1:${ports[2*i]} p=http://127.0.0.1:${ports[2*i+1]}
    local args=(--name "m$i" --data-dir "$work/data/m$i"
      --listen-client-urls "$c" --advertise-client-urls "$c"
      --listen-peer-urls "$p" --initial-advertise-peer-urls "$p"
      --initial-cluster "$cluster" --initial-cluster-state new
      --initial-cluster-token "kvbench-$server" --log-level warn)
    if [ "$mode" = tls ]; then
      args+=(--cert-file "$work/pki/cert.pem" --key-file "$work/pki/key.pem"
        --trusted-ca-file "$work/pki/ca.pem" --client-cert-auth)
    fi
    "$exe" "${args[@]}" > "$out/$server-m$i.log" 2>&1 &
    pids+=($!)
    all_pids+="${all_pids:+,}$!"
    [ "$i" = 0 ] && lead_pid=$!
    endpoints+="${endpoints:+,}$c"
  done
  # ready when a linearizable put goes through
  local ok=0
  for _ in $(seq 100); do
    if "$kvbench" put --endpoints "${endpoints%%,*}" --total 1 "${tlsargs[@]}" \
        > /dev/null 2>&1; then ok=1; break; fi
    sleep 0.2
  done
  [ $ok = 1 ] || { echo "$server did not come up" >&2; tail "$out/$server-m0.log" >&2; exit 1; }
}

stop() { cleanup; }

tlsargs=()
if [ "$mode" = tls ]; then
  make_certs
  tlsargs=(--cacert "$work/pki/ca.pem" --cert "$work/pki/cert.pem" --key "$work/pki/key.pem")
fi

# bench SERVER ROUND NAME ARGS...: one kvbench run, kept and summarised.
bench() {
  local server=$1 round=$2 name=$3
  shift 3
  local f=$out/$server-r$round-$name.txt
  echo "\$ kvbench $*" > "$f"
  "$kvbench" "$@" "${tlsargs[@]}" >> "$f" 2>&1 || true
  local thr p50 p99 err
  thr=$(grep -m1 -oP 'throughput: \K[0-9.]+' "$f" || echo -)
  p50=$(grep -m1 -oP 'p50 \K[0-9.]+' "$f" || echo -)
  p99=$(grep -m1 -oP ' p99 \K[0-9.]+' "$f" || echo -)
  err=$(grep -m1 -oP 'errors: \K[0-9]+' "$f" || echo -)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$members" "$mode" "$server" \
    "$round" "$name" "$thr" "$p50" "$p99" "$err" >> "$out/summary.tsv"
  printf '%-4s r%s %-22s %10s req/s  p50 %8s ms  p99 %8s ms  errors %s\n' \
    "$server" "$round" "$name" "$thr" "$p50" "$p99" "$err"
}

quick() {
  local s=$1 r=$2 ep=$endpoints
  local common=(--endpoints "$ep" --key-size 8 --val-size 256)
  bench "$s" "$r" put-1x1 put "${common[@]}" --conns 1 --clients 1 \
    --total 4000 --key-space-size 100000
  bench "$s" "$r" put-16x64 put "${common[@]}" --conns 16 --clients 64 \
    --total 40000 --key-space-size 100000
  "$kvbench" put "${common[@]}" --total 1 --key-space-size 1 "${tlsargs[@]}" > /dev/null
  bench "$s" "$r" range-l-16x64 range 00000000 --endpoints "$ep" \
    --conns 16 --clients 64 --total 40000 --consistency l
  bench "$s" "$r" range-s-16x64 range 00000000 --endpoints "$ep" \
    --conns 16 --clients 64 --total 40000 --consistency s
  bench "$s" "$r" txn-put-16x64 txn-put "${common[@]}" --conns 16 \
    --clients 64 --total 40000 --key-space-size 100000
  bench "$s" "$r" lease-grant-16x64 lease-grant --endpoints "$ep" \
    --conns 16 --clients 64 --total 20000 --ttl 100
  bench "$s" "$r" lease-keepalive-16x64 lease-keepalive --endpoints "$ep" \
    --conns 16 --clients 64 --total 40000
}

leases() {
  local s=$1 r=$2
  bench "$s" "$r" lease-keep-100k lease-grant --endpoints "$endpoints" \
    --conns 16 --clients 64 --total 100000 --keep --ttl 90 --wait-expire \
    --pid "$all_pids"
}

mix() {
  local s=$1 r=$2
  bench "$s" "$r" apiserver-mix-xs apiserver-mix --tier xs \
    --duration "$mixdur" --endpoints "$endpoints" --pid "$all_pids"
}

echo "kvd $(git -C "$root" rev-parse --short HEAD), $members member(s), $mode, $rounds rounds, suite $suite; output in $out"
for ((r = 1; r <= rounds; r++)); do
  # alternate which server goes first
  order=(kvd etcd)
  [ $((r % 2)) = 0 ] && order=(etcd kvd)
  for s in "${order[@]}"; do
    IFS=, read -r -a parts <<< "$suite"
    for part in "${parts[@]}"; do
      start "$s"
      "$part" "$s" "$r"
      stop
    done
  done
done
echo "summary: $out/summary.tsv"
