"""Leases on a three-member TLS cluster: the JSON gateway's exact answers
(checked against etcd 3.4.23), etcdctl's lease commands, etcd3gw and
python3-etcd3, keep-alives and TimeToLive through followers (forwarded to
the leader), expiry through raft (same revision on every member), expiry
and keep-alive across a kill -9 of the leader, checkpointed remaining TTLs,
and leases surviving a restart. Run with /usr/bin/python3; every process is
bounded and stopped by PID."""
import json
import os
import signal
import subprocess
import time

import pytest

import kvtest
from kvdcluster import Cluster, b64, running, stop_checked, unb64, wait_until

ETCDCTL = "/usr/bin/etcdctl"
# heartbeat 50 ms, election 500 ms: etcd's minimum TTL is
# ceil(1.5 x 500 ms) = 1 s
MIN_TTL = 1


def start_cluster(tmp_path_factory, certs, bin_dir, name, **kw):
    root = tmp_path_factory.mktemp(name)
    pm = kvtest.ProcessManager(root)
    c = Cluster(pm, certs, bin_dir, root, **kw)
    c.pm = pm
    c.start()
    return c


def stop_cluster(c):
    stop_checked(c, c.pm)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, certs, bin_dir):
    yield from running(tmp_path_factory, certs, bin_dir, "kvd-lease")


def env():
    e = dict(os.environ, ETCDCTL_API="3")
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        e.pop(k, None)
    return e


def ctl_argv(cluster, member, *args):
    certs = cluster.certs
    return [ETCDCTL, "--endpoints=" + cluster.members[member].curl,
            "--cacert", str(certs["ca"]), "--cert",
            str(certs["client_cert"]), "--key", str(certs["client_key"]),
            "--dial-timeout=5s", "--command-timeout=15s"] + list(args)


def ctl(cluster, *args, member=0, check=True):
    r = subprocess.run(ctl_argv(cluster, member, *args), capture_output=True,
                       text=True, timeout=30, env=env())
    if check:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def grant(m, ttl, lid=None):
    body = {"TTL": ttl}
    if lid is not None:
        body["ID"] = lid
    return m.call("/v3/lease/grant", body)


def put_lease(m, k, v, lid):
    return m.call("/v3/kv/put", {"key": b64(k), "value": b64(v),
                                 "lease": lid})


def ttl_of(m, lid, keys=False):
    return m.call("/v3/lease/timetolive", {"ID": lid, "keys": keys})


def keys_with(m, prefix):
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    r = m.call("/v3/kv/range", {"key": b64(prefix), "range_end": b64(end),
                                "serializable": True})
    return sorted(unb64(kv["key"]) for kv in r.get("kvs", []))


def events(m, prefix, start_rev, want, timeout=10):
    """The first `want` events under prefix from start_rev, read from the
    member's POST /v3/watch (HTTP/1.1, newline-delimited JSON)."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = {"create_request": {"key": b64(prefix), "range_end": b64(end),
                               "start_revision": start_rev}}
    got = []
    with m.cluster.session.post(m.curl + "/v3/watch", json=body,
                                stream=True, timeout=timeout) as r:
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + timeout
        for line in r.iter_lines():
            if not line:
                continue
            res = json.loads(line)["result"]
            for ev in res.get("events", []):
                got.append((ev.get("type", "PUT"), unb64(ev["kv"]["key"]),
                            int(ev["kv"]["mod_revision"])))
            if len(got) >= want or time.monotonic() > deadline:
                break
    return got


# ---- the gateway's answers, as etcd 3.4.23 gives them ----------------------

def test_grant_ttl_floor_and_errors(cluster):
    m = cluster.members[0]
    for ttl in (0, -5, 1):
        r = grant(m, ttl)
        assert int(r["TTL"]) == MIN_TTL
        assert int(r["ID"]) > 0
        assert set(r["header"]) >= {"cluster_id", "member_id", "revision",
                                    "raft_term"}
    r = m.post("/v3/lease/grant", {"TTL": 9000000001})
    assert r.status_code == 400
    assert r.json() == {"error": "etcdserver: too large lease TTL",
                        "message": "etcdserver: too large lease TTL",
                        "code": 11}
    assert grant(m, 30, 770001)["ID"] == "770001"
    r = m.post("/v3/lease/grant", {"TTL": 30, "ID": 770001})
    assert r.status_code == 412
    assert r.json()["message"] == "etcdserver: lease already exists"
    assert r.json()["code"] == 9
    # negative ids are the client's to choose, as in etcd
    assert grant(m, 30, -3)["ID"] == "-3"
    m.call("/v3/lease/revoke", {"ID": -3})


def test_put_attach_ttl_keys_revoke(cluster):
    m0, m1, m2 = cluster.members
    lid = int(grant(m0, 30, 770002)["ID"])
    put_lease(m1, "la/a", "1", lid)
    put_lease(m2, "la/b", "2", lid)
    put_lease(m0, "la/c", "3", lid)
    m0.put("la/c", "no lease now")  # re-put without the lease detaches
    for m in cluster.members:       # followers forward to the leader
        r = ttl_of(m, lid, keys=True)
        assert r["ID"] == str(lid)
        assert int(r["grantedTTL"]) == 30
        assert 27 <= int(r["TTL"]) <= 30
        assert sorted(unb64(k) for k in r["keys"]) == ["la/a", "la/b"]
    r = ttl_of(m1, 770099)
    assert r["TTL"] == "-1" and "grantedTTL" not in r
    ids = [l["ID"] for l in m2.call("/v3/lease/leases", {})["leases"]]
    assert str(lid) in ids
    # the kv/lease/* aliases of etcd's gateway
    assert m1.call("/v3/kv/lease/timetolive", {"ID": lid})["ID"] == str(lid)
    assert str(lid) in [l["ID"] for l in
                        m1.call("/v3/kv/lease/leases", {})["leases"]]
    before = int(m0.status()["header"]["revision"])
    r = m1.call("/v3/lease/revoke", {"ID": lid})
    # both keys go in one revision, in key order
    assert int(r["header"]["revision"]) == before + 1
    for m in cluster.members:
        wait_until(lambda: keys_with(m, "la/") == ["la/c"], timeout=5,
                   what="revoked keys gone")
    evs = events(m2, "la/", before + 1, 2)
    assert evs == [("DELETE", "la/a", before + 1),
                   ("DELETE", "la/b", before + 1)]
    for path in ("/v3/lease/revoke", "/v3/kv/lease/revoke"):
        r = m0.post(path, {"ID": lid})
        assert r.status_code == 404
        assert r.json() == {"error": "etcdserver: requested lease not found",
                            "message": "etcdserver: requested lease not found",
                            "code": 5}
    r = m0.post("/v3/kv/put", {"key": b64("la/x"), "value": b64("x"),
                               "lease": lid})
    assert r.status_code == 404
    assert r.json()["message"] == "etcdserver: requested lease not found"


def test_gateway_keepalive(cluster):
    m0, m1, _ = cluster.members
    lid = int(grant(m0, 20)["ID"])
    for m in (m0, m1):
        r = m.post("/v3/lease/keepalive", {"ID": lid})
        assert r.status_code == 200
        assert r.text.endswith("\n")
        res = json.loads(r.text)["result"]
        assert res["ID"] == str(lid) and res["TTL"] == "20"
    # unknown lease: TTL 0 (omitted), not an error
    res = json.loads(m1.post("/v3/lease/keepalive", {"ID": 991}).text)
    assert res["result"]["ID"] == "991" and "TTL" not in res["result"]


def test_txn_puts_attach_only_the_branch_taken(cluster):
    m = cluster.members[1]
    lid = int(grant(m, 30)["ID"])
    txn = {"compare": [{"key": b64("lt/none"), "target": "MOD",
                        "result": "EQUAL", "mod_revision": 0}],
           "success": [{"request_put": {"key": b64("lt/yes"),
                                        "value": b64("1"), "lease": lid}}],
           "failure": [{"request_put": {"key": b64("lt/no"),
                                        "value": b64("1"), "lease": lid}}]}
    assert m.call("/v3/kv/txn", txn)["succeeded"]
    r = ttl_of(m, lid, keys=True)
    assert [unb64(k) for k in r["keys"]] == ["lt/yes"]
    # ignore_lease keeps the attachment
    m.call("/v3/kv/put", {"key": b64("lt/yes"), "value": b64("2"),
                          "ignore_lease": True})
    assert [unb64(k) for k in ttl_of(m, lid, True)["keys"]] == ["lt/yes"]
    m.call("/v3/lease/revoke", {"ID": lid})
    assert keys_with(m, "lt/") == []


def test_expiry_same_revision_everywhere(cluster):
    m0, m1, m2 = cluster.members
    lid = int(grant(m0, MIN_TTL)["ID"])
    start = int(put_lease(m1, "le/1", "x", lid)["header"]["revision"])
    put_lease(m2, "le/2", "y", lid)
    m0.put("le/keep", "z")
    for m in cluster.members:
        wait_until(lambda: keys_with(m, "le/") == ["le/keep"], timeout=10,
                   what="expired keys gone")
        assert ttl_of(m, lid)["TTL"] == "-1"
    seen = [events(m, "le/", start, 5) for m in cluster.members]
    assert seen[0] == seen[1] == seen[2]
    dels = [e for e in seen[0] if e[0] == "DELETE"]
    assert [e[1] for e in dels] == ["le/1", "le/2"]
    assert dels[0][2] == dels[1][2]


# ---- etcdctl, etcd3gw, python3-etcd3 ----------------------------------------

def test_etcdctl_lease_commands(cluster):
    out = ctl(cluster, "lease", "grant", "30", member=1).stdout
    assert out.startswith("lease ") and "granted with TTL(30s)" in out
    lid = out.split()[1]
    ctl(cluster, "put", "--lease=" + lid, "lc/k1", "v1", member=2)
    ctl(cluster, "put", "--lease=" + lid, "lc/k2", "v2", member=0)
    out = ctl(cluster, "lease", "timetolive", "--keys", lid, member=2).stdout
    assert f"lease {lid} granted with TTL(30s)" in out
    assert "attached keys([lc/k1 lc/k2])" in out
    assert lid in ctl(cluster, "lease", "list", member=1).stdout
    out = ctl(cluster, "lease", "keep-alive", "--once", lid, member=2).stdout
    assert f"lease {lid} keepalived with TTL(30)" in out
    # the keep-alive stream, through a follower
    p = subprocess.Popen(ctl_argv(cluster, 2, "lease", "keep-alive", lid),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env())
    try:
        time.sleep(1.5)
    finally:
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=10)
    assert f"lease {lid} keepalived with TTL(30)" in out
    ctl(cluster, "lease", "revoke", lid, member=0)
    assert ctl(cluster, "get", "--prefix", "lc/").stdout == ""
    r = ctl(cluster, "lease", "revoke", lid, check=False)
    assert r.returncode != 0
    assert "requested lease not found" in r.stderr
    r = ctl(cluster, "lease", "timetolive", lid)
    assert "already expired" in r.stdout
    r = ctl(cluster, "put", "--lease=" + lid, "lc/k3", "v", check=False)
    assert r.returncode != 0 and "requested lease not found" in r.stderr
    # as etcd 3.4.23: a keep-alive answered with TTL 0 is "not found"
    r = ctl(cluster, "lease", "keep-alive", "--once", lid, check=False)
    assert r.returncode != 0
    assert "requested lease not found" in r.stderr


def test_etcd3gw_lease(cluster):
    from etcd3gw.client import Etcd3Client

    certs = cluster.certs
    m = cluster.members[1]
    c = Etcd3Client(host="127.0.0.1", port=m.cport, protocol="https",
                    ca_cert=str(certs["ca"]),
                    cert_cert=str(certs["client_cert"]),
                    cert_key=str(certs["client_key"]), api_path="/v3/",
                    timeout=15)
    c.session.trust_env = False
    lease = c.lease(ttl=40)
    assert c.put("gw/k", "v", lease=lease)
    assert lease.refresh() == 40
    assert 35 <= lease.ttl() <= 40
    assert [k.decode() if isinstance(k, bytes) else k
            for k in lease.keys()] == ["gw/k"]
    assert str(lease.id) in [l["ID"] for l in c.session.post(
        m.curl + "/v3/lease/leases", json={}).json()["leases"]]
    assert lease.revoke()
    assert c.get("gw/k") == []


def test_python_etcd3_lease(cluster):
    import etcd3

    certs = cluster.certs
    m = cluster.members[2]
    c = etcd3.client(host="127.0.0.1", port=m.cport, ca_cert=str(certs["ca"]),
                     cert_cert=str(certs["client_cert"]),
                     cert_key=str(certs["client_key"]), timeout=15)
    lease = c.lease(25)
    c.put("pe/k", "v", lease=lease)
    resp = list(lease.refresh())  # the LeaseKeepAlive stream
    assert resp[0].TTL == 25 and resp[0].ID == lease.id
    assert lease.granted_ttl == 25
    assert 20 <= lease.remaining_ttl <= 25
    assert lease.keys == [b"pe/k"]
    info = c.get_lease_info(lease.id)
    assert info.grantedTTL == 25 and info.ID == lease.id
    lease.revoke()
    assert c.get("pe/k") == (None, None)


# ---- leader failure ----------------------------------------------------------

def test_expiry_and_keepalive_across_leader_kill(tmp_path_factory, certs,
                                                 bin_dir):
    """Keys of a lease nobody keeps alive disappear after the leader is
    killed with SIGKILL, on every member at the same revision; keys of a
    lease kept alive through a follower never disappear."""
    c = start_cluster(tmp_path_factory, certs, bin_dir, "kvd-lease-kill")
    try:
        lead = c.leader()
        fol = c.followers()[0]
        kept = int(grant(fol, 3)["ID"])
        gone = int(grant(fol, 4)["ID"])
        start = int(put_lease(fol, "lk/kept", "1", kept)["header"][
            "revision"])
        put_lease(fol, "lk/gone", "2", gone)
        stop = [False]
        errors = []

        def keep():
            while not stop[0]:
                for m in c.live():
                    if m is lead:
                        continue
                    try:
                        r = m.post("/v3/lease/keepalive", {"ID": kept},
                                   timeout=2)
                        if r.status_code == 200 and \
                                json.loads(r.text)["result"].get("TTL"):
                            break
                    except Exception as e:  # noqa: BLE001 - retried
                        errors.append(e)
                time.sleep(0.3)

        import threading
        t = threading.Thread(target=keep, daemon=True)
        t.start()
        time.sleep(0.5)
        lead.proc.kill()
        c.wait_leader()
        live = c.live()
        for m in live:
            wait_until(lambda: keys_with(m, "lk/") == ["lk/kept"],
                       timeout=20, what="the unkept lease to expire")
        time.sleep(5)  # more than the kept lease's TTL + grace
        for m in live:
            assert keys_with(m, "lk/") == ["lk/kept"]
        stop[0] = True
        t.join(5)
        seen = [events(m, "lk/", start, 3) for m in live]
        assert seen[0] == seen[1]
        assert [e[:2] for e in seen[0]] == [("PUT", "lk/kept"),
                                            ("PUT", "lk/gone"),
                                            ("DELETE", "lk/gone")]
        # the killed member comes back with the same state
        lead.start()
        lead.wait_listening()
        wait_until(lambda: keys_with(lead, "lk/") == ["lk/kept"],
                   timeout=20, what="the restarted member to catch up")
        assert events(lead, "lk/", start, 3) == seen[0]
    finally:
        stop_cluster(c)


def test_checkpoint_survives_leader_change(tmp_path_factory, certs, bin_dir):
    """With checkpoints every second, a new leader continues a lease from
    its checkpointed remaining TTL instead of granting it anew."""
    c = start_cluster(tmp_path_factory, certs, bin_dir, "kvd-lease-cp",
                      extra=("--experimental-lease-checkpoint-interval",
                             "1s"))
    try:
        fol = c.followers()[0]
        lid = int(grant(fol, 30)["ID"])
        time.sleep(6)
        before = int(ttl_of(fol, lid)["TTL"])
        assert before <= 25
        lead = c.leader()
        lead.proc.kill()
        c.wait_leader()
        after = int(ttl_of(fol, lid)["TTL"])
        # the remaining TTL plus at most a checkpoint interval and the
        # election timeout of grace, never the full 30 s again
        assert after <= before + 2, (before, after)
        lead.start()
        lead.wait_listening()
        c.wait_leader()
    finally:
        stop_cluster(c)


def test_leases_survive_restart(tmp_path_factory, certs, bin_dir):
    c = start_cluster(tmp_path_factory, certs, bin_dir, "kvd-lease-restart")
    try:
        m = c.members[0]
        lid = int(grant(m, 60)["ID"])
        put_lease(m, "lr/a", "1", lid)
        put_lease(m, "lr/b", "2", lid)
        codes = c.stop()
        assert all(rc == 0 for rc in codes.values()), codes
        for mm in c.members:
            mm.start()
        for mm in c.members:
            mm.wait_listening()
        c.wait_leader()
        for mm in c.members:
            r = ttl_of(mm, lid, keys=True)
            assert int(r["grantedTTL"]) == 60
            assert sorted(unb64(k) for k in r["keys"]) == ["lr/a", "lr/b"]
        m.call("/v3/lease/revoke", {"ID": lid})
        for mm in c.members:
            wait_until(lambda: keys_with(mm, "lr/") == [], timeout=5,
                       what="revoked after restart")
    finally:
        stop_cluster(c)


def test_leader_stall_does_not_expire_kept_leases(tmp_path_factory, certs,
                                                  bin_dir):
    """A leader whose loop stalls longer than a lease's TTL (SIGSTOP here,
    a slow disk in life) does not expire leases for its own absence (etcd
    #15247: the clients' keep-alives could not be read): after the stall
    every lease restarts from its remaining TTL plus the grace, so a
    keep-alive that arrives right after still finds it; an unkept lease
    still expires afterwards."""
    c = start_cluster(tmp_path_factory, certs, bin_dir, "kvd-lease-stall",
                      n=1)
    try:
        m = c.members[0]
        kept = int(grant(m, 2)["ID"])
        put_lease(m, "ls/kept", "1", kept)
        # the leader's lessor runs: the TTL counts down
        assert int(ttl_of(m, kept)["TTL"]) in (0, 1, 2)
        m.proc.signal(signal.SIGSTOP)
        try:
            time.sleep(3)  # longer than the TTL
        finally:
            m.proc.signal(signal.SIGCONT)
        time.sleep(0.2)  # the member's tick runs first
        r = m.post("/v3/lease/keepalive", {"ID": kept})
        assert json.loads(r.text)["result"].get("TTL") == "2", r.text
        assert keys_with(m, "ls/") == ["ls/kept"]
        # nobody keeps it alive now: it expires
        wait_until(lambda: keys_with(m, "ls/") == [], timeout=10,
                   what="the lease to expire after the stall")
    finally:
        stop_cluster(c)


def test_server_picked_ids_do_not_collide_across_members(cluster):
    """Grants with ID 0 sent to every member at once get distinct IDs (the
    member's ID is part of them, as in etcd), never `lease already
    exists`."""
    import threading

    got, errors = [], []

    def grant_many(m):
        for _ in range(40):
            r = m.post("/v3/lease/grant", {"TTL": 30})
            if r.status_code != 200:
                errors.append(r.text)
            else:
                got.append(int(r.json()["ID"]))

    ts = [threading.Thread(target=grant_many, args=(m,))
          for m in cluster.members]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert errors == []
    assert len(got) == 120 and len(set(got)) == 120
    assert all(i > 0 for i in got)
    for lid in got:
        cluster.members[0].call("/v3/lease/revoke", {"ID": lid})
