#!/usr/bin/python3
"""The watch scale run of issue 8: W watchers on one member across S gRPC
streams while E events/s are written for T seconds; every event must
reach every watcher of its key, once, in order (none lost).

Watcher i watches key w/<i mod K> (K = W / watchers-per-key keys), so each
event goes to watchers-per-key watchers; one extra watcher on the whole
prefix (on stream 0) sees every event. Writes are Txns of 10 puts to
distinct keys, paced to E events/s, several in flight. Streams are spread
over client processes (spawned: each has its own grpcio and GIL).

  /usr/bin/python3 benchmarks/watch_scale.py --kvd build-release/bin/kvd
  (defaults: 10000 watchers, 100 streams, 1000 events/s, 30 s; add
   --servers kvd,etcd to run etcd 3.4 the same way)"""
import argparse
import atexit
import multiprocessing as mp
import queue
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import watch_common as wc  # noqa: E402

WATCH = "/etcdserverpb.Watch/Watch"
TXN = "/etcdserverpb.KV/Txn"
STREAMS_PER_CHANNEL = 10


def _ident(b):
    return b


def key(i):
    return b"w/%05d" % i


def worker(target, pbdir, streams, per_stream, nkeys, conn):
    """Client process: the given stream numbers, per_stream watchers each
    (watch_id j + 1 on key (stream * per_stream + j) mod nkeys), plus the
    prefix watcher (watch_id 100000) on stream 0. Reports, per (stream,
    watch_id), the list of (revision, key) received, and the latency
    samples (arrival ns, revision)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import watch_common
    rpc_pb2 = watch_common.Messages(pbdir)
    import grpc
    opts = [("grpc.max_receive_message_length", -1)]
    chans, calls, recs, queues = [], [], [], []
    for n, si in enumerate(streams):
        if n % STREAMS_PER_CHANNEL == 0:
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

    for i in range(len(streams)):
        threading.Thread(target=recv, args=(calls[i], recs[i]),
                         daemon=True).start()
    ncreated = 0
    for n, si in enumerate(streams):
        for j in range(per_stream):
            k = key((si * per_stream + j) % nkeys)
            queues[n].put(rpc_pb2.WatchRequest(
                create_request=rpc_pb2.WatchCreateRequest(
                    key=k, watch_id=j + 1)).SerializeToString())
            ncreated += 1
        if si == 0:
            queues[n].put(rpc_pb2.WatchRequest(
                create_request=rpc_pb2.WatchCreateRequest(
                    key=b"w/", range_end=b"w0", watch_id=100000))
                .SerializeToString())
            ncreated += 1
    deadline = time.monotonic() + 300
    while sum(len(r) for r in recs) < ncreated:
        if time.monotonic() > deadline:
            conn.send(("error", "watchers not created in time"))
            return
        time.sleep(0.05)
    conn.send(("ready", ncreated))
    cmd, want = conn.recv()  # ("collect", expected messages)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        n = sum(len(r) for r in recs) - ncreated
        if n >= want:
            break
        time.sleep(0.1)
    got, samples = {}, []
    for n, si in enumerate(streams):
        for t, raw in list(recs[n]):
            r = rpc_pb2.WatchResponse.FromString(raw)
            lst = got.setdefault((si, r.watch_id), [])
            for ev in r.events:
                lst.append((ev.kv.mod_revision, ev.kv.key))
                samples.append((t, ev.kv.mod_revision))
    conn.send(("done", (got, samples)))
    for q in queues:
        q.put(None)
    for c in calls:
        c.cancel()


def run(kind, args, pbdir, rpc_pb2):
    import grpc
    srv = wc.Server(kind, args.kvd)
    procs = []
    try:
        nstreams = args.streams
        per_stream = args.watchers // nstreams
        nkeys = args.watchers // args.watchers_per_key
        rss0 = srv.rss_kib()
        ctx = mp.get_context("spawn")
        nprocs = min(args.procs, nstreams)
        for p_i in range(nprocs):
            mine = list(range(p_i, nstreams, nprocs))
            a, b = ctx.Pipe()
            p = ctx.Process(target=worker, args=(srv.target, pbdir, mine,
                                                 per_stream, nkeys, b))
            p.start()
            procs.append((p, a, mine))
        t_c = time.monotonic()
        for p, a, _ in procs:
            if not a.poll(400):
                raise RuntimeError("client process not ready")
            st, msg = a.recv()
            if st != "ready":
                raise RuntimeError(msg)
        t_created = time.monotonic() - t_c
        time.sleep(2)
        rss1 = srv.rss_kib()
        ch = grpc.insecure_channel(srv.target)
        txn = ch.unary_unary(TXN, request_serializer=_ident,
                             response_deserializer=rpc_pb2.TxnResponse
                             .FromString)
        total = args.rate * args.seconds
        batch = 10
        expect = {}  # key -> [revision]
        sent = {}    # revision -> send ns
        inflight = []
        lock = threading.Lock()
        t0 = time.monotonic()
        n = 0
        stride = 7919  # coprime with the key counts used: spreads the keys
        maxrss = rss1

        def done_cb(fut, keys, ts):
            r = fut.result()
            with lock:
                sent[r.header.revision] = ts
                for k in keys:
                    expect.setdefault(k, []).append(r.header.revision)

        while n < total:
            keys = [key((m * stride) % nkeys) for m in range(n, n + batch)]
            req = rpc_pb2.TxnRequest(success=[
                rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
                    key=k, value=b"v%d" % (n + i)))
                for i, k in enumerate(keys)]).SerializeToString()
            ts = time.monotonic_ns()
            f = txn.future(req, timeout=30)
            f.add_done_callback(lambda fut, keys=keys, ts=ts:
                                done_cb(fut, keys, ts))
            inflight.append(f)
            n += batch
            if n % 1000 == 0:
                maxrss = max(maxrss, srv.rss_kib())
            delay = t0 + n / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        for f in inflight:
            f.result()
        elapsed = time.monotonic() - t0
        # messages each client process waits for: one per event for the
        # key watchers, one per txn for the prefix watcher
        per_proc_want = {}
        for p, a, mine in procs:
            w = 0
            for si in mine:
                for j in range(per_stream):
                    k = key((si * per_stream + j) % nkeys)
                    w += len(expect.get(k, []))
                if si == 0:
                    w += total // batch  # one message per txn
            per_proc_want[p.pid] = w
            a.send(("collect", w))
        got = {}
        samples = []
        for p, a, _ in procs:
            if not a.poll(300):
                raise RuntimeError("client process did not report")
            st, (g, s) = a.recv()
            got.update(g)
            samples += s
        maxrss = max(maxrss, srv.rss_kib())
        # checks: every watcher got exactly its key's revisions, in order
        lost = dup = wrong = 0
        delivered = 0
        for si in range(nstreams):
            for j in range(per_stream):
                k = key((si * per_stream + j) % nkeys)
                want = [(rev, k) for rev in expect.get(k, [])]
                have = got.get((si, j + 1), [])
                delivered += len(have)
                if have != want:
                    hs, ws = set(have), set(want)
                    lost += len(ws - hs)
                    dup += len(have) - len(hs)
                    wrong += len(hs - ws)
        pre = got.get((0, 100000), [])
        delivered += len(pre)
        prevs = [r for r, _ in pre]
        pre_ok = (prevs == sorted(prevs) and len(pre) == total)
        lat = sorted((t - sent[rev]) / 1e6 for t, rev in samples
                     if rev in sent)
        expected = sum(len(expect.get(key((si * per_stream + j) % nkeys),
                                      []))
                       for si in range(nstreams)
                       for j in range(per_stream)) + total
        return {
            "server": kind, "watchers": nstreams * per_stream,
            "streams": nstreams, "events": total,
            "rate": total / elapsed, "created_s": t_created,
            "expected": expected, "delivered": delivered, "lost": lost,
            "dup": dup, "wrong": wrong, "prefix_ok": pre_ok,
            "p50": wc.percentile(lat, 0.5), "p99": wc.percentile(lat, 0.99),
            "rss0": rss0 / 1024, "rss1": rss1 / 1024,
            "maxrss": maxrss / 1024,
        }
    finally:
        for p, a, _ in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
        srv.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kvd", default=str(wc.ROOT / "build-release/bin/kvd"))
    ap.add_argument("--servers", default="kvd")
    ap.add_argument("--watchers", type=int, default=10000)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--watchers-per-key", type=int, default=1)
    ap.add_argument("--rate", type=int, default=1000, help="events/s")
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="watch-scale-")
    atexit.register(shutil.rmtree, tmp, True)
    pbdir, rpc_pb2 = wc.load_messages(tmp)
    print(f"# machine: {wc.machine()}")
    ok = True
    for rep in range(args.repeat):
        for kind in args.servers.split(","):
            r = run(kind, args, pbdir, rpc_pb2)
            good = (r["lost"] == 0 and r["dup"] == 0 and r["wrong"] == 0 and
                    r["prefix_ok"] and r["delivered"] == r["expected"])
            ok = ok and good
            print(f"{kind}: {r['watchers']} watchers / {r['streams']} "
                  f"streams (+1 prefix watcher), {r['events']} events at "
                  f"{r['rate']:.0f}/s; created in {r['created_s']:.1f} s; "
                  f"delivered {r['delivered']}/{r['expected']}, lost "
                  f"{r['lost']}, duplicated {r['dup']}, unexpected "
                  f"{r['wrong']}, prefix watcher in order and complete: "
                  f"{r['prefix_ok']}; put-to-event latency p50 "
                  f"{r['p50']:.1f} ms p99 {r['p99']:.1f} ms; RSS "
                  f"{r['rss0']:.1f} MiB idle, {r['rss1']:.1f} MiB with "
                  f"the watchers, {r['maxrss']:.1f} MiB max -> "
                  f"{'OK' if good else 'FAIL'}", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
