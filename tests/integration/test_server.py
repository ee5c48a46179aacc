"""End-to-end tests of the kvd server: a three-member cluster with mutual
TLS between peers and client-cert-auth on the client port, driven through
etcd's JSON gateway with requests and python3-etcd3gw. Every process listens
on 127.0.0.1 on free ports, every wait is bounded and every process is
stopped by PID."""
import json
import os
import signal
import socket
import ssl
import threading
import time

import pytest
import requests

import kvtest
from kvdcluster import Cluster, b64, retry, running, unb64, wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, certs, bin_dir):
    """One shared three-member TLS cluster for the read/write and bad-input
    tests (they leave it serving)."""
    yield from running(tmp_path_factory, certs, bin_dir, "kvd-shared")


# ---- flags ---------------------------------------------------------------

@pytest.mark.parametrize("argv,msg", [
    (["--no-such-flag"], "unknown flag"),
    (["--listen-client-urls", "https://127.0.0.1:1"], "--cert-file"),
    (["--client-cert-auth", "--cert-file", "a", "--key-file", "b"],
     "--trusted-ca-file"),
    (["--name", "x", "--initial-cluster", "y=http://127.0.0.1:1"],
     "couldn't find local name"),
    (["--heartbeat-interval=abc"], "invalid value"),
], ids=["unknown", "https-without-cert", "cca-without-ca",
        "name-not-in-cluster", "bad-number"])
def test_bad_flags_exit_2(bin_dir, argv, msg):
    r = kvtest.run([bin_dir / "kvd", *argv], check=False, timeout=10)
    assert r.returncode == 2, r
    assert msg in r.stderr, r.stderr


def test_version_flag(bin_dir):
    r = kvtest.run([bin_dir / "kvd", "--version"], timeout=10)
    assert "kvd Version: 0.1.0" in r.stdout
    assert "etcd API: 3.4" in r.stdout


# ---- the KV API through every member -------------------------------------

def test_kv_through_every_member(cluster):
    for i, m in enumerate(cluster.members):
        p = f"every/{i}/"
        r = m.put(p + "a", "1")
        rev = int(r["header"]["revision"])
        assert r["header"]["cluster_id"] and r["header"]["member_id"]
        assert int(r["header"]["raft_term"]) >= 1
        m.put(p + "b", "2")
        m.put(p + "c", "3")
        for other in cluster.members:
            assert other.get(p + "a") == "1"
        # prefix range
        end = b64(p[:-1] + chr(ord(p[-1]) + 1))
        r = m.call("/v3/kv/range", {"key": b64(p), "range_end": end})
        assert [unb64(kv["key"]) for kv in r["kvs"]] == \
            [p + "a", p + "b", p + "c"]
        assert r["count"] == "3"
        # count only, limit
        r = m.call("/v3/kv/range", {"key": b64(p), "range_end": end,
                                    "limit": 1})
        assert len(r["kvs"]) == 1 and r["more"] is True
        # delete with prev_kv
        r = m.call("/v3/kv/deleterange", {"key": b64(p + "b"),
                                          "prev_kv": True})
        assert r["deleted"] == "1"
        assert unb64(r["prev_kvs"][0]["value"]) == "2"
        assert m.get(p + "b") is None
        # txn: compare value, then put
        r = m.call("/v3/kv/txn", {
            "compare": [{"key": b64(p + "a"), "target": "VALUE",
                         "result": "EQUAL", "value": b64("1")}],
            "success": [{"request_put": {"key": b64(p + "a"),
                                         "value": b64("11")}}],
            "failure": [{"request_range": {"key": b64(p + "a")}}]})
        assert r["succeeded"] is True
        assert "revision" in r["responses"][0]["response_put"]["header"]
        r = m.call("/v3/kv/txn", {
            "compare": [{"key": b64(p + "a"), "target": "VALUE",
                         "result": "EQUAL", "value": b64("1")}],
            "success": [{"requestPut": {"key": b64(p + "a"),
                                        "value": b64("x")}}],
            "failure": [{"requestRange": {"key": b64(p + "a")}}]})
        assert "succeeded" not in r
        kv = r["responses"][0]["response_range"]["kvs"][0]
        assert unb64(kv["value"]) == "11"
        # historical read
        r = m.call("/v3/kv/range", {"key": b64(p + "a"), "revision": rev})
        assert unb64(r["kvs"][0]["value"]) == "1"
        # compaction
        r = m.call("/v3/kv/compaction", {"revision": rev})
        assert int(r["header"]["revision"]) > rev
        r = m.post("/v3/kv/range", {"key": b64(p + "a"),
                                    "revision": rev - 1})
        assert r.status_code == 400
        assert r.json()["message"] == \
            "etcdserver: mvcc: required revision has been compacted"


def test_v3beta_alias(cluster):
    m = cluster.members[0]
    r = cluster.session.post(m.curl + "/v3beta/kv/put",
                             json={"key": b64("beta"), "value": b64("v")},
                             timeout=10)
    assert r.status_code == 200, r.text
    r = cluster.session.post(m.curl + "/v3beta/kv/range",
                             json={"key": b64("beta")}, timeout=10)
    assert unb64(r.json()["kvs"][0]["value"]) == "v"


def test_etcd3gw_client(cluster, certs):
    from etcd3gw.client import Etcd3Client
    for m in cluster.members:
        c = Etcd3Client(host="127.0.0.1", port=m.cport, protocol="https",
                        ca_cert=str(certs["ca"]),
                        cert_cert=str(certs["client_cert"]),
                        cert_key=str(certs["client_key"]), api_path="/v3/")
        c.session.trust_env = False
        key = f"gw/{m.name}"
        assert c.put(key, "hello") is True
        assert c.get(key) == [b"hello"]
        c.put(key + "/x", "1")
        got = sorted(v for v, _ in c.get_prefix(key))
        assert got == [b"1", b"hello"]
        assert c.replace(key, "hello", "world") is True
        assert c.replace(key, "hello", "again") is False
        assert c.get(key) == [b"world"]
        assert c.delete(key) is True
        assert c.get(key) == []
        assert c.status()["version"] == "3.4.23"
        assert len(c.members()) == 3


def test_linearizable_read_on_follower(cluster):
    lead = cluster.leader()
    for f in cluster.followers():
        for i in range(20):
            v = f"{f.name}-{i}"
            lead.put("lin/key", v)
            assert f.get("lin/key") == v
            # and the other way round: write on the follower, read on
            # the leader
            f.put("lin/key2", v)
            assert lead.get("lin/key2") == v


def test_serializable_read(cluster):
    m = cluster.members[0]
    m.put("ser/k", "v")
    wait_until(lambda: all(x.get("ser/k", serializable=True) == "v"
                           for x in cluster.members), timeout=5,
               what="serializable reads to catch up")


def test_version_health_status_members_hash(cluster):
    for m in cluster.members:
        r = cluster.session.get(m.curl + "/version", timeout=5)
        assert r.json() == {"etcdserver": "3.4.23", "etcdcluster": "3.4.0"}
        r = cluster.session.get(m.curl + "/health", timeout=5)
        assert r.status_code == 200 and r.json() == {"health": "true"}
        st = m.status()
        assert st["version"] == "3.4.23"
        assert int(st["dbSize"]) > 0 and int(st["raftIndex"]) > 0
        assert int(st["raftAppliedIndex"]) > 0 and st["leader"]
        ml = m.call("/v3/cluster/member/list", {})
        assert "revision" not in ml["header"]
        assert sorted(x["name"] for x in ml["members"]) == ["m1", "m2", "m3"]
        me = [x for x in ml["members"]
              if x["ID"] == ml["header"]["member_id"]][0]
        assert me["clientURLs"] == [m.curl]
    # peers tell each other their client URLs (within a few seconds)
    def all_urls():
        for m in cluster.members:
            ml = m.call("/v3/cluster/member/list", {})
            got = {x["name"]: x.get("clientURLs") for x in ml["members"]}
            want = {x.name: [x.curl] for x in cluster.members}
            if got != want:
                return False
        return True
    wait_until(all_urls, timeout=10, what="every member's client URLs")
    for m in cluster.members:
        assert m.call("/v3/maintenance/hash", {})["hash"] >= 0


# ---- bad input: each gets etcd's error and the server keeps serving ------

BAD = {
    "malformed_json": ("/v3/kv/put", "{bad", 400, 3, None),
    "wrong_types": ("/v3/kv/range", '{"key":1}', 400, 3, None),
    "bad_base64": ("/v3/kv/put", '{"key":"!!!"}', 400, 3, "base64"),
    "empty_key": ("/v3/kv/put", '{"value":"eA=="}', 400, 3,
                  "etcdserver: key is not provided"),
    "empty_key_range": ("/v3/kv/range", "{}", 400, 3,
                        "etcdserver: key is not provided"),
    "too_many_txn_ops": (
        "/v3/kv/txn",
        json.dumps({"success": [{"request_put": {"key": b64(f"k{i}"),
                                                 "value": ""}}
                                for i in range(129)]}),
        400, 3, "etcdserver: too many operations in txn request"),
    "duplicate_keys_in_txn": (
        "/v3/kv/txn",
        json.dumps({"success": [{"request_put": {"key": b64("d"),
                                                 "value": ""}},
                                {"request_put": {"key": b64("d"),
                                                 "value": ""}}]}),
        400, 3, "etcdserver: duplicate key given in txn request"),
    "future_revision": ("/v3/kv/range",
                        json.dumps({"key": b64("a"),
                                    "revision": 1 << 40}),
                        400, 11,
                        "etcdserver: mvcc: required revision is a future "
                        "revision"),
    "future_compaction": ("/v3/kv/compaction",
                          json.dumps({"revision": 1 << 40}), 400, 11,
                          "etcdserver: mvcc: required revision is a future "
                          "revision"),
    "unknown_fields_ignored": ("/v3/kv/put",
                               json.dumps({"key": b64("u"), "value": "",
                                           "bogus": 1}), 200, None, None),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input(cluster, case):
    path, body, status, code, msg = BAD[case]
    for m in cluster.members:
        r = cluster.session.post(m.curl + path, data=body, timeout=10)
        assert r.status_code == status, (case, r.status_code, r.text)
        if code is not None:
            j = r.json()
            assert j["code"] == code, j
            assert j["error"] == j["message"]
            if msg is not None:
                assert msg in j["message"], j
        # still serving
        assert m.put("alive", case)["header"]


def test_bad_oversized_body(cluster):
    m = cluster.members[0]
    # 1 MiB values are fine, through a follower too
    for x in cluster.members:
        x.put("big/ok", "z" * (1 << 20))
        assert x.get("big/ok") == "z" * (1 << 20)
    big = b64(b"x" * (1572864 + 1024))  # one value over the 1.5 MiB limit
    r = cluster.session.post(m.curl + "/v3/kv/put",
                             json={"key": b64("big"), "value": big},
                             timeout=20)
    assert r.status_code == 400, r.text
    assert r.json() == {"error": "etcdserver: request is too large",
                        "message": "etcdserver: request is too large",
                        "code": 3}
    # far beyond the limit: refused by the HTTP layer
    try:
        r = cluster.session.post(m.curl + "/v3/kv/put",
                                 data=b"x" * (4 << 20), timeout=20)
        assert r.status_code == 413, r.text
    except requests.ConnectionError:
        pass  # the 413 and close came while the client was still sending
    assert m.put("alive", "after-big")["header"]


def test_bad_compacted_revision(cluster):
    m = cluster.members[0]
    r1 = int(m.put("cmp/a", "1")["header"]["revision"])
    m.put("cmp/a", "2")
    m.call("/v3/kv/compaction", {"revision": r1 + 1})
    r = m.post("/v3/kv/range", {"key": b64("cmp/a"), "revision": r1})
    assert r.status_code == 400
    assert r.json()["code"] == 11
    assert r.json()["message"] == \
        "etcdserver: mvcc: required revision has been compacted"
    r = m.post("/v3/kv/compaction", {"revision": r1})
    assert r.status_code == 400
    assert r.json()["message"] == \
        "etcdserver: mvcc: required revision has been compacted"


def test_bad_unknown_path(cluster):
    m = cluster.members[0]
    r = cluster.session.post(m.curl + "/v3/kv/nope", data="{}", timeout=5)
    assert r.status_code == 404 and r.text == "Not Found\n"
    r = cluster.session.post(m.curl + "/nope", data="{}", timeout=5)
    assert r.status_code == 404 and r.text == "404 page not found\n"
    r = cluster.session.post(m.curl + "/v3alpha/kv/range", data="{}",
                             timeout=5)
    assert r.status_code == 404
    r = cluster.session.post(m.curl + "/v3/auth/enable", data="{}", timeout=5)
    assert r.status_code == 501 and r.json()["code"] == 12
    assert m.put("alive", "404")["header"]


def test_bad_wrong_method(cluster):
    m = cluster.members[0]
    r = cluster.session.get(m.curl + "/v3/kv/range", timeout=5)
    assert r.status_code == 405 and r.text == "Method Not Allowed\n"
    r = cluster.session.post(m.curl + "/version", timeout=5)
    assert r.status_code == 405
    assert m.put("alive", "405")["header"]


def test_bad_plaintext_to_tls_port(cluster):
    """As Go's server (and so etcd) does: 400 and a plain explanation, then
    close. (If the request had bytes the server never read, the close may
    turn into a reset that eats the answer; so send one small request.)"""
    m = cluster.members[0]
    with socket.create_connection(("127.0.0.1", m.cport), timeout=5) as t:
        t.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        try:
            while True:
                chunk = t.recv(4096)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
    assert got.startswith(b"HTTP/1.0 400 Bad Request"), got
    assert b"Client sent an HTTP request to an HTTPS server" in got
    assert m.put("alive", "plain")["header"]


def test_bad_tls_without_client_cert(cluster, certs):
    m = cluster.members[0]
    ctx = ssl.create_default_context(cafile=str(certs["ca"]))
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with socket.create_connection(("127.0.0.1", m.cport),
                                      timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as t:
                t.sendall(b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Length: 2\r\n\r\n{}")
                if not t.recv(100):
                    raise ConnectionError("closed")
    s = requests.Session()
    s.trust_env = False
    s.verify = str(certs["ca"])
    s.cert = (str(certs["rogue_cert"]), str(certs["rogue_key"]))
    with pytest.raises(requests.RequestException):
        s.post(m.curl + "/v3/kv/range", json={"key": b64("a")}, timeout=5)
    assert m.put("alive", "nocert")["header"]


def test_bad_client_stops_reading(cluster, certs):
    """A client that pipelines big reads and never reads the answers must
    not stop the member from serving others."""
    m = cluster.members[0]
    m.put("slow/big", "y" * 200000)
    ctx = ssl.create_default_context(cafile=str(certs["ca"]))
    ctx.load_cert_chain(str(certs["client_cert"]), str(certs["client_key"]))
    raw = socket.create_connection(("127.0.0.1", m.cport), timeout=5)
    t = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    body = json.dumps({"key": b64("slow/big"), "serializable": True})
    req = (f"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\n"
           f"Content-Length: {len(body)}\r\n\r\n{body}").encode()
    try:
        t.settimeout(0.5)
        for _ in range(1000):
            try:
                t.sendall(req)
            except (socket.timeout, ssl.SSLError, OSError):
                break
        # input is fed only while the connection can take output, so the
        # member builds a bounded number of answers for it and keeps
        # serving everyone, including itself
        for other in cluster.members:
            assert other.put("alive", "slow")["header"]
            assert other.get("slow/big") == "y" * 200000
    finally:
        t.close()


# ---- durability -----------------------------------------------------------

def writer(member_list, stop, acked, attempted, prefix):
    """Writes unique values round-robin over members; records what was
    acknowledged."""
    s = requests.Session()
    s.trust_env = False
    s.verify = member_list[0].cluster.session.verify
    s.cert = member_list[0].cluster.session.cert
    i = 0
    while not stop.is_set():
        m = member_list[i % len(member_list)]
        key = f"{prefix}/{i % 50}"
        val = f"{prefix}-{i}"
        attempted.add(val)
        try:
            r = s.post(m.curl + "/v3/kv/put",
                       json={"key": b64(key), "value": b64(val)}, timeout=10)
            if r.status_code == 200:
                acked[val] = (key, int(r.json()["header"]["revision"]))
        except requests.RequestException:
            pass
        i += 1


def range_all(m, prefix):
    r = m.call("/v3/kv/range", {"key": b64(prefix + "/"),
                                "range_end": b64(prefix + "0")})
    return {unb64(kv["key"]): (unb64(kv["value"]), int(kv["mod_revision"]))
            for kv in r.get("kvs", [])}


def test_durability_kill_leader(procs, certs, bin_dir, tmp_path):
    c = Cluster(procs, certs, bin_dir, tmp_path).start()
    stop = threading.Event()
    acked, attempted = {}, set()
    threads = [threading.Thread(target=writer,
                                args=(c.members, stop, acked, attempted,
                                      f"w{j}"))
               for j in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        lead = c.leader()
        lead.proc.kill()
        time.sleep(2.5)  # writes continue through a new leader
        lead.start()
        lead.wait_listening()
        time.sleep(1.0)
        # graceful stop under load: in-flight requests are answered or
        # failed, the store is synced, exit 0
        f = c.followers()[0]
        assert f.proc.stop() == 0, f.proc.log_text()
        assert "Sanitizer" not in f.proc.log_text(tail=10000)
        time.sleep(0.5)
        f.start()
        f.wait_listening()
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    assert len(acked) > 50, len(acked)
    c.wait_leader()

    # every acknowledged write is there (the latest per key by revision),
    # on every member, and nothing never written appears
    def check():
        want = {}
        for val, (key, rev) in acked.items():
            if key not in want or want[key][1] < rev:
                want[key] = (val, rev)
        for m in c.members:
            for j in range(4):
                got = range_all(m, f"w{j}")
                for key, (val, rev) in got.items():
                    assert val in attempted, (m.name, key, val)
                for key, (val, rev) in want.items():
                    if key.startswith(f"w{j}/"):
                        g = got.get(key)
                        assert g is not None and g[1] >= rev, \
                            (m.name, key, val, rev, g)
        return True
    retry(check, timeout=15)

    # and each acknowledged write is in the history exactly as answered:
    # at its revision, its key holds its value (a sample, on every member)
    sample = sorted(acked.items(), key=lambda kv: kv[1][1])[::max(
        1, len(acked) // 150)]
    for m in c.members:
        for val, (key, rev) in sample:
            r = m.call("/v3/kv/range", {"key": b64(key), "revision": rev})
            kv = r["kvs"][0]
            assert unb64(kv["value"]) == val, (m.name, key, rev, kv)
            assert int(kv["mod_revision"]) == rev

    # same state on every member
    def hashes():
        return {m.call("/v3/maintenance/hash", {})["hash"]
                for m in c.members}
    wait_until(lambda: len(hashes()) == 1, timeout=15, what="equal hashes")
    before = hashes()
    contents = range_all(c.members[0], "w0")

    # clean stop (exit 0, no sanitizer report), restart all: same state
    codes = c.stop()
    assert all(rc == 0 for rc in codes.values()), (codes, procs.logs())
    for m in c.members:
        log = m.proc.log_text(tail=10000)
        assert "Sanitizer" not in log, log
    c.start()
    wait_until(lambda: all(range_all(m, "w0") == contents
                           for m in c.members), timeout=15,
               what="same contents after restart")
    assert hashes() == before


def test_no_leader_fails_fast(procs, certs, bin_dir, tmp_path):
    """With two of three members gone, writes fail with etcd's Unavailable
    errors within the request timeout and /health says false."""
    c = Cluster(procs, certs, bin_dir, tmp_path).start()
    survivor = c.members[0]
    survivor.put("minority/k", "v")
    for m in c.members[1:]:
        m.proc.kill()
    # a serializable read is served locally; a linearizable one is not
    # served without a quorum (never stale)
    assert survivor.get("minority/k", serializable=True) == "v"
    t0 = time.monotonic()
    r = survivor.post("/v3/kv/range", {"key": b64("minority/k")},
                      timeout=20)
    assert time.monotonic() - t0 < 8
    assert r.status_code == 503, r.text
    assert r.json()["code"] == 14
    t0 = time.monotonic()
    r = survivor.post("/v3/kv/put", {"key": b64("x"), "value": ""},
                      timeout=20)
    assert time.monotonic() - t0 < 8
    assert r.status_code == 503, r.text
    assert r.json()["code"] == 14
    assert r.json()["message"] in ("etcdserver: no leader",
                                   "etcdserver: request timed out",
                                   "etcdserver: leader changed")
    wait_until(lambda: c.session.get(survivor.curl + "/health",
                                     timeout=5).status_code == 503,
               timeout=10, what="health false")
    assert survivor.proc.stop() == 0


def test_nospace_alarm(procs, certs, bin_dir, tmp_path):
    """Past --quota-backend-bytes, puts fail with etcd's NOSPACE error, the
    replicated alarm shows in Status, DeleteRange still works, /health is
    false."""
    c = Cluster(procs, certs, bin_dir, tmp_path, n=1, tls=False,
                extra=["--quota-backend-bytes", "1048576"]).start()
    m = c.members[0]
    val = b64(b"v" * 60000)
    errors = []
    for i in range(40):
        r = m.post("/v3/kv/put", {"key": b64(f"q{i}"), "value": val})
        if r.status_code != 200:
            errors.append(r)
    assert errors, "the quota was never hit"
    assert errors[-1].status_code == 429
    assert errors[-1].json() == {
        "error": "etcdserver: mvcc: database space exceeded",
        "message": "etcdserver: mvcc: database space exceeded", "code": 8}
    st = m.status()
    assert any("alarm:NOSPACE" in e for e in st.get("errors", [])), st
    r = m.call("/v3/kv/deleterange", {"key": b64("q0")})
    assert r["deleted"] == "1"
    r = c.session.get(m.curl + "/health", timeout=5)
    assert r.status_code == 503 and r.json() == {"health": "false"}
    al = m.call("/v3/maintenance/alarm", {"action": "GET"})
    assert {"memberID": st["header"]["member_id"],
            "alarm": "NOSPACE"} in al["alarms"], al
    # etcd's recovery: delete, compact, defragment, disarm
    m.call("/v3/kv/deleterange", {"key": b64("q"), "range_end": b64("r")})
    rev = m.status()["header"]["revision"]
    m.call("/v3/kv/compaction", {"revision": rev, "physical": True})
    time.sleep(0.5)  # physical compaction runs in steps on the loop
    assert m.call("/v3/maintenance/defragment", {}) == {}
    m.call("/v3/maintenance/alarm", {"action": "DEACTIVATE",
                                     "memberID": st["header"]["member_id"],
                                     "alarm": "NOSPACE"})
    assert "errors" not in m.status()
    m.put("after-disarm", "ok")
    assert m.get("after-disarm") == "ok"
    r = c.session.get(m.curl + "/health", timeout=5)
    assert r.status_code == 200
    assert m.proc.stop() == 0


def test_pipelined_requests(cluster, certs):
    """Many requests in one write (pipelining, requests split across the
    server's input slices): every answer, in order."""
    m = cluster.members[1]
    ctx = ssl.create_default_context(cafile=str(certs["ca"]))
    ctx.load_cert_chain(str(certs["client_cert"]), str(certs["client_key"]))
    raw = socket.create_connection(("127.0.0.1", m.cport), timeout=10)
    t = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    n = 60
    out = b""
    for i in range(n):
        path = "/v3/kv/put" if i % 2 == 0 else "/v3/kv/range"
        body = json.dumps({"key": b64(f"pipe/{i // 2}"),
                           "value": b64("v" * 3000 + str(i))}
                          if i % 2 == 0 else {"key": b64(f"pipe/{i // 2}")})
        out += (f"POST {path} HTTP/1.1\r\nHost: x\r\n"
                f"Content-Length: {len(body)}\r\n\r\n{body}").encode()
    t.sendall(out)
    f = t.makefile("rb")
    for i in range(n):
        status = f.readline()
        assert b" 200 " in status, (i, status)
        length = 0
        while True:
            line = f.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = json.loads(f.read(length))
        if i % 2 == 1:
            assert unb64(body["kvs"][0]["value"]) == "v" * 3000 + str(i - 1)
    t.close()
