#!/usr/bin/python3
"""Watch event delivery latency and memory per watcher, kvd vs etcd, with
the same client for both.

For each server (a fresh single member on 127.0.0.1, plaintext) and each
watcher count N: N watchers on ONE key ("lat"), 100 per gRPC stream, 10
streams per connection; then puts to that key (Python grpcio) at a fixed
interval. The watchers are held by benchmarks/watch_client.c (default,
--client c: h2c + nghttp2 + protobuf-c, built here with cc), so a 10,000
watcher fan-out is not limited by the client; --client py uses grpcio in
spawned processes instead (each with its own GIL). Every put's send time
and every watch message's arrival time are taken with CLOCK_MONOTONIC
(shared by all processes), so latency = arrival - put sent: commit
(fsync) + apply + fan-out + transport + client. The put's own round trip
is reported beside it. Memory per watcher = (server VmRSS with the N
watchers, settled) - (VmRSS before the client connected), / N, so it
includes the streams (one per 100 watchers) and connections.

  /usr/bin/python3 benchmarks/watch_latency.py \\
      --kvd build-release/bin/kvd --watchers 1,1000,10000 --repeat 3

Prints one line per run and a summary table (markdown)."""
import argparse
import atexit
import multiprocessing as mp
import queue
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import watch_common as wc  # noqa: E402

WATCH = "/etcdserverpb.Watch/Watch"
PUT = "/etcdserverpb.KV/Put"
PER_STREAM = 100
STREAMS_PER_CHANNEL = 10


def _ident(b):
    return b


def worker(target, pbdir, nstreams, per_stream, key, conn):
    """Client process: nstreams Watch streams with per_stream watchers
    each; records (arrival ns, raw message)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import watch_common
    rpc_pb2 = watch_common.Messages(pbdir)
    import grpc
    opts = [("grpc.max_receive_message_length", -1)]
    chans, calls, recs, queues = [], [], [], []
    for i in range(nstreams):
        if i % STREAMS_PER_CHANNEL == 0:
            chans.append(grpc.insecure_channel(target, options=opts))
        q = queue.Queue()
        mc = chans[-1].stream_stream(WATCH, request_serializer=_ident,
                                     response_deserializer=_ident)
        calls.append(mc(iter(q.get, None)))
        queues.append(q)
        recs.append([])

    def recv(call, rec):
        try:
            for raw in call:
                rec.append((time.monotonic_ns(), raw))
        except grpc.RpcError:
            pass

    threads = [threading.Thread(target=recv, args=(calls[i], recs[i]),
                                daemon=True) for i in range(nstreams)]
    for t in threads:
        t.start()
    req = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
        key=key)).SerializeToString()
    for q in queues:
        for _ in range(per_stream):
            q.put(req)
    deadline = time.monotonic() + 120
    while sum(len(r) for r in recs) < nstreams * per_stream:
        if time.monotonic() > deadline:
            conn.send(("error", "watchers not created in time"))
            return
        time.sleep(0.05)
    conn.send(("ready", None))
    cmd, want = conn.recv()  # ("collect", events per watcher)
    total = nstreams * per_stream * (1 + want)
    deadline = time.monotonic() + 60
    while sum(len(r) for r in recs) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    out = []
    for rec in recs:
        for t, raw in list(rec):
            r = rpc_pb2.WatchResponse.FromString(raw)
            for ev in r.events:
                out.append((t, ev.kv.mod_revision))
    conn.send(("done", out))
    for q in queues:
        q.put(None)
    for c in calls:
        c.cancel()


def build_client(tmp):
    """Compiles watch_client.c with protoc-c's messages; returns its path."""
    import subprocess
    out = Path(tmp) / "c"
    out.mkdir()
    src = wc.ROOT / "proto"
    protos = ["etcdserverpb/rpc.proto", "mvccpb/kv.proto", "authpb/auth.proto"]
    subprocess.run(["protoc-c", "-I", str(src), "--c_out", str(out)] +
                   [str(src / p) for p in protos], check=True, timeout=60)
    exe = out / "watch_client"
    subprocess.run(["cc", "-O2", "-std=c11", "-o", str(exe),
                    str(wc.ROOT / "benchmarks/watch_client.c")] +
                   [str(out / p.replace(".proto", ".pb-c.c"))
                    for p in protos] +
                   ["-I", str(out), "-lnghttp2", "-lprotobuf-c"],
                   check=True, timeout=120)
    return exe


class CClient:
    """watch_client in a subprocess, driven through its stdout."""

    def __init__(self, exe, srv, nstreams, per_stream, expect):
        import subprocess
        self.p = subprocess.Popen(
            [str(exe), "127.0.0.1", str(srv.cport), str(nstreams),
             str(per_stream), "lat", str(expect), "120"],
            stdout=subprocess.PIPE, text=True)

    def wait_ready(self):
        line = self.p.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"watch_client: {line!r}")

    def results(self):
        out = []
        for line in self.p.stdout:
            if line.startswith("end"):
                break
            t, rev = line.split()
            out.append((int(t), int(rev)))
        self.p.wait(30)
        return out

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(5)


def run_one(kind, kvd_bin, n, nputs, interval, nprocs, pbdir, rpc_pb2,
            cexe=None):
    import grpc
    srv = wc.Server(kind, kvd_bin)
    procs = []
    cc = None
    try:
        ch = grpc.insecure_channel(srv.target)
        put = ch.unary_unary(PUT, request_serializer=_ident,
                             response_deserializer=rpc_pb2.PutResponse
                             .FromString)
        put(rpc_pb2.PutRequest(key=b"warm", value=b"x").SerializeToString(),
            timeout=10)
        time.sleep(1)
        rss0 = srv.rss_kib()
        per_stream = min(n, PER_STREAM)
        nstreams = max(1, n // per_stream)
        ctx = mp.get_context("spawn")
        shares = [nstreams // nprocs + (1 if i < nstreams % nprocs else 0)
                  for i in range(min(nprocs, nstreams))]
        if cexe is not None:
            shares = []
            cc = CClient(cexe, srv, nstreams, per_stream, n * nputs)
            cc.wait_ready()
        for s in shares:
            a, b = ctx.Pipe()
            p = ctx.Process(target=worker, args=(srv.target, pbdir, s,
                                                 per_stream, b"lat", b))
            p.start()
            procs.append((p, a))
        for p, a in procs:
            if not a.poll(180):
                raise RuntimeError("client process not ready")
            st, msg = a.recv()
            if st != "ready":
                raise RuntimeError(msg)
        time.sleep(2)
        rss1 = srv.rss_kib()
        sent, acks = {}, []
        for i in range(nputs):
            t0 = time.monotonic_ns()
            r = put(rpc_pb2.PutRequest(key=b"lat", value=b"v%d" % i)
                    .SerializeToString(), timeout=10)
            t1 = time.monotonic_ns()
            sent[r.header.revision] = t0
            acks.append((t1 - t0) / 1e6)
            left = interval - (time.monotonic_ns() - t0) / 1e9
            if left > 0:
                time.sleep(left)
        for p, a in procs:
            a.send(("collect", nputs))
        lat = []
        got = 0
        if cc is not None:
            for t, rev in cc.results():
                if rev in sent:
                    lat.append((t - sent[rev]) / 1e6)
                    got += 1
        for p, a in procs:
            if not a.poll(180):
                raise RuntimeError("client process did not report")
            st, out = a.recv()
            for t, rev in out:
                if rev in sent:
                    lat.append((t - sent[rev]) / 1e6)
                    got += 1
        lat.sort()
        acks.sort()
        return {
            "server": kind, "watchers": n, "puts": nputs,
            "expected": n * nputs, "delivered": got,
            "p50": wc.percentile(lat, 0.50), "p99": wc.percentile(lat, 0.99),
            "max": lat[-1] if lat else float("nan"),
            "put_p50": wc.percentile(acks, 0.50),
            "rss_idle_mib": rss0 / 1024, "rss_mib": rss1 / 1024,
            "kib_per_watcher": (rss1 - rss0) / n,
        }
    finally:
        if cc is not None:
            cc.kill()
        for p, a in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
        srv.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kvd", default=str(wc.ROOT / "build-release/bin/kvd"))
    ap.add_argument("--servers", default="kvd,etcd")
    ap.add_argument("--watchers", default="1,1000,10000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--client", choices=("c", "py"), default="c",
                    help="who holds the watchers: watch_client.c or grpcio")
    ap.add_argument("--procs", type=int, default=2,
                    help="grpcio client processes (--client py)")
    args = ap.parse_args()
    # puts and the interval between them per watcher count: the interval
    # lets the client drain one put's fan-out before the next
    plan = {1: (200, 0.02), 1000: (60, 0.1), 10000: (20, 1.0)}
    tmp = tempfile.mkdtemp(prefix="watch-latency-")
    atexit.register(shutil.rmtree, tmp, True)
    pbdir, rpc_pb2 = wc.load_messages(tmp)
    cexe = build_client(tmp) if args.client == "c" else None
    print(f"# machine: {wc.machine()}; client: {args.client}")
    results = []
    for rep in range(args.repeat):
        for n in [int(x) for x in args.watchers.split(",")]:
            nputs, interval = plan.get(n, (50, max(0.02, n / 10000)))
            for kind in args.servers.split(","):
                r = run_one(kind, args.kvd, n, nputs, interval, args.procs,
                            pbdir, rpc_pb2, cexe)
                r["rep"] = rep
                results.append(r)
                print(f"{kind:4} N={n:<6} rep={rep} delivered "
                      f"{r['delivered']}/{r['expected']} p50 "
                      f"{r['p50']:.2f} ms p99 {r['p99']:.2f} ms max "
                      f"{r['max']:.1f} ms put p50 {r['put_p50']:.2f} ms "
                      f"rss {r['rss_idle_mib']:.1f}->{r['rss_mib']:.1f} MiB "
                      f"({r['kib_per_watcher']:.2f} KiB/watcher)",
                      flush=True)
    print()
    print("| watchers | server | p50 ms (median, range) | p99 ms (median, "
          "range) | put p50 ms | KiB/watcher | delivered |")
    print("|---|---|---|---|---|---|---|")
    for n in [int(x) for x in args.watchers.split(",")]:
        for kind in args.servers.split(","):
            rs = [r for r in results if r["watchers"] == n and
                  r["server"] == kind]
            if not rs:
                continue

            def med(k):
                v = sorted(r[k] for r in rs)
                return statistics.median(v), v[0], v[-1]

            p50, p99, ack, kib = med("p50"), med("p99"), med("put_p50"), \
                med("kib_per_watcher")
            dl = sum(r["delivered"] for r in rs)
            ex = sum(r["expected"] for r in rs)
            print(f"| {n} | {kind} | {p50[0]:.2f} ({p50[1]:.2f}-"
                  f"{p50[2]:.2f}) | {p99[0]:.2f} ({p99[1]:.2f}-"
                  f"{p99[2]:.2f}) | {ack[0]:.2f} | "
                  f"{kib[0]:.2f} | {dl}/{ex} |")


if __name__ == "__main__":
    main()
