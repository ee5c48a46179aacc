"""Watch over gRPC (etcdctl 3.4 watch) and over the JSON gateway (POST
/v3/watch, HTTP/1.1 chunked), on a three-member TLS cluster. Run with
/usr/bin/python3; every subprocess is bounded and stopped by PID."""
import json
import os
import queue
import signal
import subprocess
import threading
import time

import pytest

from kvdcluster import Cluster, b64, running, unb64, wait_until

ETCDCTL = "/usr/bin/etcdctl"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, certs, bin_dir):
    yield from running(tmp_path_factory, certs, bin_dir, "kvd-watch")


def argv(cluster, member, *args):
    certs = cluster.certs
    return [ETCDCTL, "--endpoints=" + cluster.members[member].curl,
            "--cacert", str(certs["ca"]), "--cert",
            str(certs["client_cert"]), "--key", str(certs["client_key"]),
            "--dial-timeout=5s"] + list(args)


def env():
    e = dict(os.environ, ETCDCTL_API="3")
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        e.pop(k, None)
    return e


def ctl(cluster, *args, member=0):
    r = subprocess.run(argv(cluster, member, "--command-timeout=15s",
                            *args), capture_output=True, text=True,
                       timeout=30, env=env())
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


class Watcher:
    """etcdctl watch in the background, output in files, stopped by PID."""

    def __init__(self, cluster, tmp_path, name, *args, member=0):
        self.out = open(tmp_path / f"{name}.out", "w+")
        self.err = open(tmp_path / f"{name}.err", "w+")
        self.p = subprocess.Popen(argv(cluster, member, "watch", *args),
                                  stdout=self.out, stderr=self.err,
                                  env=env())

    def text(self):
        self.out.flush()
        with open(self.out.name) as f:
            return f.read()

    def errtext(self):
        with open(self.err.name) as f:
            return f.read()

    def wait_lines(self, n, timeout=10):
        wait_until(lambda: len(self.text().splitlines()) >= n or
                   self.p.poll() is not None, timeout=timeout,
                   what=f"{n} lines from etcdctl watch")
        return self.text().splitlines()

    def stop(self):
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.p.pid, signal.SIGKILL)
                self.p.wait(timeout=5)
        self.out.close()
        self.err.close()


def rev_of(cluster):
    return int(cluster.members[0].status()["header"]["revision"])


def settle():
    # etcdctl watch has no "created" output: give the stream time to open
    time.sleep(0.7)


def test_watch_put_delete(cluster, tmp_path):
    w = Watcher(cluster, tmp_path, "w1", "wk", member=0)
    try:
        settle()
        ctl(cluster, "put", "wk", "v1", member=1)
        ctl(cluster, "put", "other", "x", member=1)
        ctl(cluster, "del", "wk", member=2)
        lines = w.wait_lines(5)
        assert lines[:5] == ["PUT", "wk", "v1", "DELETE", "wk"], lines
        assert w.p.poll() is None, w.errtext()
    finally:
        w.stop()


def test_watch_history_prefix_prev_kv(cluster, tmp_path):
    start = rev_of(cluster) + 1
    ctl(cluster, "put", "hp/a", "1")
    ctl(cluster, "put", "hp/a", "2")
    ctl(cluster, "put", "hpx", "no")  # outside the prefix
    w = Watcher(cluster, tmp_path, "w2", "--prefix", "hp/",
                f"--rev={start}", "--prev-kv", member=1)
    try:
        # history: PUT hp/a 1 (no prev), PUT hp/a 2 (prev 1)
        lines = w.wait_lines(8)
        assert lines[:8] == ["PUT", "hp/a", "1",
                             "PUT", "hp/a", "1", "hp/a", "2"], lines
        ctl(cluster, "put", "hp/b", "3", member=2)
        ctl(cluster, "put", "hp/a", "4", member=0)
        lines = w.wait_lines(16)
        assert lines[8:16] == ["PUT", "hp/b", "3",
                               "PUT", "hp/a", "2", "hp/a", "4"], lines
    finally:
        w.stop()


def test_watch_compacted(cluster, tmp_path):
    ctl(cluster, "put", "cw", "1")
    ctl(cluster, "put", "cw", "2")
    rev = rev_of(cluster)
    ctl(cluster, "compaction", str(rev))
    w = Watcher(cluster, tmp_path, "w3", "cw", f"--rev={rev - 1}")
    try:
        wait_until(lambda: w.p.poll() is not None or
                   "compacted" in w.errtext(), timeout=10,
                   what="the compaction cancel")
        assert "watch was canceled (etcdserver: mvcc: required revision " \
            "has been compacted)" in w.errtext(), w.errtext()
    finally:
        w.stop()


def test_gateway_watch_stream(cluster):
    m = cluster.members[0]
    body = json.dumps({"create_request": {"key": b64("gk"),
                                          "prev_kv": True}}) + "\n"
    r = cluster.session.post(m.curl + "/v3/watch", data=body, stream=True,
                             timeout=10)
    try:
        assert r.status_code == 200
        lines = r.iter_lines(chunk_size=1 << 20)
        first = json.loads(next(lines))
        assert first["result"]["created"] is True, first
        assert "revision" in first["result"]["header"], first
        cluster.members[1].put("gk", "g1")
        ev = json.loads(next(lines))["result"]
        assert len(ev["events"]) == 1, ev
        kv = ev["events"][0]["kv"]
        assert unb64(kv["key"]) == "gk" and unb64(kv["value"]) == "g1"
        assert ev["header"]["revision"] == kv["mod_revision"]
        assert "type" not in ev["events"][0]  # PUT is the default
    finally:
        r.close()
    # the member keeps serving
    assert m.get("gk") == "g1"


def test_follower_sees_the_same_order(cluster, tmp_path):
    lead = cluster.leader()
    idx = {m.name: i for i, m in enumerate(cluster.members)}
    li = idx[lead.name]
    fi = idx[cluster.followers()[0].name]
    wl = Watcher(cluster, tmp_path, "wl", "--prefix", "ord/", member=li)
    wf = Watcher(cluster, tmp_path, "wf", "--prefix", "ord/", member=fi)
    try:
        settle()
        for i in range(10):
            ctl(cluster, "put", f"ord/{i % 3}", str(i),
                member=(li, fi)[i % 2])
        a = wl.wait_lines(30)
        b = wf.wait_lines(30)
        assert len(a) == 30 and a == b, (a, b)
        assert a[2::3] == [str(i) for i in range(10)]
    finally:
        wl.stop()
        wf.stop()


def test_gateway_catch_up_large_history(cluster):
    """2000 events in 20 txns, replayed from history in catch-up batches;
    then live events follow without gap or duplicate."""
    m = cluster.members[2]
    start = rev_of(cluster) + 1
    for t in range(20):
        ops = [{"request_put": {"key": b64(f"big/{t:02d}/{i:03d}"),
                                "value": b64(str(i))}} for i in range(100)]
        m.call("/v3/kv/txn", {"success": ops})
    body = json.dumps({"create_request": {"key": b64("big/"),
                                          "range_end": b64("big0"),
                                          "start_revision": str(start)}})
    r = cluster.session.post(m.curl + "/v3/watch", data=body, stream=True,
                             timeout=10)
    try:
        lines = r.iter_lines(chunk_size=1 << 20)
        assert json.loads(next(lines))["result"]["created"] is True
        keys = []
        while len(keys) < 2000:
            res = json.loads(next(lines))["result"]
            keys += [unb64(e["kv"]["key"]) for e in res["events"]]
        assert keys == [f"big/{t:02d}/{i:03d}" for t in range(20)
                        for i in range(100)]
        m.put("big/live", "1")
        res = json.loads(next(lines))["result"]
        assert [unb64(e["kv"]["key"]) for e in res["events"]] == \
            ["big/live"]
    finally:
        r.close()


def test_stop_with_open_watches(procs, certs, bin_dir, tmp_path):
    """SIGTERM with a gRPC, an HTTP/1.1 and an HTTP/2 gateway watch open:
    exit 0, no report."""
    c = Cluster(procs, certs, bin_dir, tmp_path / "c1", n=1)
    c.start()
    c.wait_leader()
    w = Watcher(c, tmp_path, "ws", "--prefix", "s/")
    r = c.session.post(c.members[0].curl + "/v3/watch",
                       data=json.dumps({"create_request":
                                        {"key": b64("s/")}}),
                       stream=True, timeout=10)
    h2 = H2Watch(c, 0, json.dumps({"create_request": {"key": b64("s/")}}))
    try:
        lines = r.iter_lines(chunk_size=1 << 20)
        assert json.loads(next(lines))["result"]["created"] is True
        assert h2.next()["created"] is True
        settle()
        t0 = time.monotonic()
        codes = c.stop()
        assert all(rc == 0 for rc in codes.values()), (codes, procs.logs())
        assert time.monotonic() - t0 < 10
        assert "Sanitizer" not in procs.logs()
        # the h2 answer ended cleanly (END_STREAM), not reset
        assert h2.p.wait(timeout=10) == 0, h2.stop()
    finally:
        r.close()
        h2.stop()
        w.stop()


def test_gateway_slow_consumer(cluster):
    """A reader that stops reading while ~20 MB of events are written
    (back-pressure: the watcher falls back to history) still gets every
    event once, in order."""
    m = cluster.members[0]
    body = json.dumps({"create_request": {"key": b64("slow/"),
                                          "range_end": b64("slow0")}})
    r = cluster.session.post(m.curl + "/v3/watch", data=body, stream=True,
                             timeout=20)
    try:
        lines = r.iter_lines(chunk_size=1 << 20)
        assert json.loads(next(lines))["result"]["created"] is True
        big = "v" * 10000
        for t in range(20):
            ops = [{"request_put": {"key": b64(f"slow/{t:02d}/{i:03d}"),
                                    "value": b64(big)}}
                   for i in range(100)]
            m.call("/v3/kv/txn", {"success": ops})
        keys = []
        while len(keys) < 2000:
            res = json.loads(next(lines))["result"]
            keys += [unb64(e["kv"]["key"]) for e in res["events"]]
        assert keys == [f"slow/{t:02d}/{i:03d}" for t in range(20)
                        for i in range(100)]
    finally:
        r.close()


def test_python_clients_watch(cluster):
    """Debian's etcd3gw (JSON gateway) and python3-etcd3 (gRPC) watch
    clients see puts made through other members, in order."""
    import threading

    import etcd3
    from etcd3gw.client import Etcd3Client

    certs = cluster.certs
    m0, m1, m2 = cluster.members
    gw = Etcd3Client(host="127.0.0.1", port=m0.cport, protocol="https",
                     ca_cert=str(certs["ca"]),
                     cert_cert=str(certs["client_cert"]),
                     cert_key=str(certs["client_key"]), api_path="/v3/",
                     timeout=15)
    gw.session.trust_env = False
    gw_events, cancel = gw.watch_prefix("pyw/")
    got_gw = []

    def drain_gw():
        for ev in gw_events:
            got_gw.append(ev["kv"]["value"])
            if len(got_gw) == 3:
                break

    t = threading.Thread(target=drain_gw, daemon=True)
    t.start()
    c = etcd3.client(host="127.0.0.1", port=m1.cport, ca_cert=str(certs["ca"]),
                     cert_cert=str(certs["client_cert"]),
                     cert_key=str(certs["client_key"]), timeout=15)
    it, cancel_grpc = c.watch_prefix("pyw/")
    time.sleep(0.5)  # both watchers registered before the writes
    for i in range(3):
        m2.put(f"pyw/{i}", f"v{i}")
    got_grpc = []
    for ev in it:
        got_grpc.append(ev.value)
        if len(got_grpc) == 3:
            break
    cancel_grpc()
    t.join(15)
    cancel()
    assert got_grpc == [b"v0", b"v1", b"v2"]
    assert [v if isinstance(v, bytes) else v.encode() for v in got_gw] == \
        [b"v0", b"v1", b"v2"]


CURL = "/usr/bin/curl"


class H2Watch:
    """curl --http2 POST /v3/watch in the background (TLS, ALPN h2),
    its newline-delimited JSON answer read line by line; stopped by
    PID."""

    def __init__(self, cluster, member, body, extra=(), path="/v3/watch"):
        certs = cluster.certs
        e = dict(os.environ)
        for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                  "all_proxy", "ALL_PROXY", "CURL_CA_BUNDLE"):
            e.pop(k, None)
        argv = [CURL, "-sS", "-N", "--http2", "--noproxy", "*",
                "--max-time", "60", "--cacert", str(certs["ca"]),
                "--cert", str(certs["client_cert"]), "--key",
                str(certs["client_key"]), "-D", "/dev/stderr",
                "--data-binary", body,
                cluster.members[member].curl + path] + list(extra)
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=e)

        # lines arrive through a reader thread: select() on a buffered
        # pipe misses lines already read into the buffer
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def next(self, timeout=20):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no watch line from curl in time")
        assert line, "curl ended"
        return json.loads(line)["result"]

    def out(self, timeout=20):
        """Everything curl wrote, once it exited."""
        self.p.wait(timeout=timeout)
        chunks = []
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                return b"".join(chunks)
            chunks.append(line)

    def stop(self):
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGKILL)
        self.p.wait(timeout=5)
        head = self.p.stderr.read().decode(errors="replace")
        self.p.stderr.close()
        return head


def test_gateway_watch_http2(cluster):
    """POST /v3/watch over HTTP/2 (curl over TLS, ALPN h2) streams the
    same lines as HTTP/1.1: created, then each revision's events live,
    from history, and a cancel through a second watch in the body."""
    m0, m1, m2 = cluster.members
    start = rev_of(cluster) + 1
    m1.put("h2w/a", "1")
    body = json.dumps({"create_request": {"key": b64("h2w/"),
                                          "range_end": b64("h2w0"),
                                          "start_revision": str(start),
                                          "prev_kv": True}}) + "\n" + \
        json.dumps({"create_request": {"key": b64("h2x"),
                                       "watch_id": "7"}})
    w = H2Watch(cluster, 0, body)
    try:
        first = w.next()
        assert first["created"] is True and first.get("watch_id",
                                                      "0") == "0", first
        second = w.next()
        assert second["created"] is True and second["watch_id"] == "7"
        hist = w.next()
        assert [unb64(e["kv"]["key"]) for e in hist["events"]] == ["h2w/a"]
        assert int(hist["events"][0]["kv"]["mod_revision"]) == start
        m2.put("h2w/a", "2")
        live = w.next()
        ev = live["events"][0]
        assert unb64(ev["kv"]["value"]) == "2"
        assert unb64(ev["prev_kv"]["value"]) == "1"
        m1.put("h2x", "x")
        x = w.next()
        assert x["watch_id"] == "7" and \
            unb64(x["events"][0]["kv"]["key"]) == "h2x"
    finally:
        head = w.stop()
    assert head.startswith("HTTP/2 200"), head
    assert "content-type: application/json" in head.lower(), head
    # the member keeps serving after the client went away mid-stream
    assert m0.get("h2w/a") == "2"


def test_gateway_watch_http2_errors(cluster):
    """Bad body over h2: the gateway's JSON error, as on HTTP/1.1."""
    w = H2Watch(cluster, 1, "{not json")
    try:
        out = w.out()
    finally:
        head = w.stop()
    assert head.startswith("HTTP/2 400"), head
    j = json.loads(out)
    assert j["code"] == 3 and j["error"] == j["message"], j


def test_gateway_watch_http2_slow_consumer(cluster):
    """An h2 watcher that does not read while ~20 MB are written (the
    stream's window closes, the watcher falls back to history) still gets
    every event once, in order."""
    m = cluster.members[2]
    body = json.dumps({"create_request": {"key": b64("h2slow/"),
                                          "range_end": b64("h2slow0")}})
    w = H2Watch(cluster, 2, body)
    try:
        assert w.next()["created"] is True
        big = "v" * 10000
        for t in range(20):
            ops = [{"request_put": {"key": b64(f"h2slow/{t:02d}/{i:03d}"),
                                    "value": b64(big)}}
                   for i in range(100)]
            m.call("/v3/kv/txn", {"success": ops})
        keys = []
        while len(keys) < 2000:
            keys += [unb64(e["kv"]["key"]) for e in w.next()["events"]]
        assert keys == [f"h2slow/{t:02d}/{i:03d}" for t in range(20)
                        for i in range(100)]
    finally:
        w.stop()


def test_delete_at_compact_revision_as_etcd_3_4(cluster):
    """A watch opened exactly at the compact revision gets what compaction
    kept of that revision: a delete at that revision is gone with its
    tombstone, so the first event is the next put. This is etcd 3.4.23's
    behaviour, checked by hand (etcd #19179 changed it later); kvd keeps
    it for drop-in compatibility."""
    m = cluster.members[0]
    m.put("dcr", "1")
    r = m.call("/v3/kv/deleterange", {"key": b64("dcr")})
    rev = int(r["header"]["revision"])
    m.call("/v3/kv/compaction", {"revision": str(rev), "physical": True})
    body = json.dumps({"create_request": {"key": b64("dcr"),
                                          "start_revision": str(rev)}})
    resp = cluster.session.post(m.curl + "/v3/watch", data=body,
                                stream=True, timeout=10)
    try:
        lines = resp.iter_lines(chunk_size=1 << 20)
        assert json.loads(next(lines))["result"]["created"] is True
        put = m.put("dcr", "2")
        ev = json.loads(next(lines))["result"]["events"][0]
        assert ev.get("type", "PUT") == "PUT", ev
        assert int(ev["kv"]["mod_revision"]) == \
            int(put["header"]["revision"]), ev
        assert unb64(ev["kv"]["value"]) == "2"
    finally:
        resp.close()


def test_gateway_watch_http2_reset_while_blocked(cluster):
    """The client goes away (kill -9) while its h2 watch is blocked on a
    full window with responses queued: the member frees the stream (no
    sanitizer report at teardown) and keeps serving."""
    m = cluster.members[1]
    body = json.dumps({"create_request": {"key": b64("h2rst/"),
                                          "range_end": b64("h2rst0")}})
    w = H2Watch(cluster, 1, body)
    try:
        assert w.next()["created"] is True
        os.kill(w.p.pid, signal.SIGSTOP)  # stops reading: window closes
        big = "v" * 10000
        for t in range(8):
            ops = [{"request_put": {"key": b64(f"h2rst/{t}/{i:03d}"),
                                    "value": b64(big)}} for i in range(100)]
            m.call("/v3/kv/txn", {"success": ops})
    finally:
        w.stop()  # SIGKILL works on a stopped process
    assert m.get("h2rst/7/099") == big
    w2 = H2Watch(cluster, 1, json.dumps({"create_request": {
        "key": b64("h2rst/7/099")}}))
    try:
        assert w2.next()["created"] is True
        m.put("h2rst/7/099", "after")
        ev = w2.next()["events"][0]
        assert unb64(ev["kv"]["value"]) == "after"
    finally:
        w2.stop()


def test_gateway_h2_streams_election_observe(cluster):
    """gateway_h2.c hands POST /v3/election/observe to v3election.c as it
    does /v3/watch: {"result":...} lines over HTTP/2."""
    m0 = cluster.members[0]
    lid = m0.call("/v3/lease/grant", {"TTL": 30})["ID"]
    m0.call("/v3/election/campaign", {"name": b64("h2el"), "lease": lid,
                                      "value": b64("one")})
    w = H2Watch(cluster, 1, json.dumps({"name": b64("h2el")}),
                path="/v3/election/observe")
    try:
        res = w.next()
        assert unb64(res["kv"]["value"]) == "one", res
    finally:
        head = w.stop()
        m0.call("/v3/lease/revoke", {"ID": lid})
    assert head.startswith("HTTP/2 200"), head
