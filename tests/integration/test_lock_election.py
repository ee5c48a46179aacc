"""etcd's Lock and Election services (issue 9) on a three-member TLS kvd
cluster: over gRPC (python3-grpcio with message classes generated from
proto/ by protoc at test time) and over the JSON gateway (requests), the
etcd clients that build locks and elections on leases (etcdctl lock /
elect, etcd3gw, python3-etcd3), and a side-by-side comparison of exact
gateway answers with a real etcd 3.4. Run with /usr/bin/python3; every
process is bounded in time and stopped by PID.

Tests that need the Lease service (grants, revokes, expiry) are marked
`leases` in their docstrings: every Lock/Campaign with lease 0 grants a
60 s session lease, so they all do in practice."""
import base64
import concurrent.futures
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest
import requests

import kvtest
from kvdcluster import b64, running, unb64, wait_until

ETCDCTL = "/usr/bin/etcdctl"
PROTO_DIR = Path(os.environ.get("KV_SOURCE_DIR",
                                Path(__file__).resolve().parents[2])) / "proto"


# ---- fixtures -------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory, certs, bin_dir):
    yield from running(tmp_path_factory, certs, bin_dir, "kvd-lock")


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    """Message classes for etcd's protos, built at test time from proto/
    by protoc into a private descriptor pool (the default pool already
    holds python3-etcd3's copies of the same names)."""
    from google.protobuf import descriptor_pb2, descriptor_pool
    from google.protobuf import message_factory

    out = tmp_path_factory.mktemp("pb") / "etcd.pb"
    kvtest.run(["protoc", "-I", str(PROTO_DIR), "--include_imports",
                "--descriptor_set_out", str(out), "v3lockpb/v3lock.proto",
                "v3electionpb/v3election.proto"], timeout=60)
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)

    def cls(name):
        d = pool.FindMessageTypeByName(name)
        if hasattr(message_factory, "GetMessageClass"):
            return message_factory.GetMessageClass(d)
        return message_factory.MessageFactory(pool).GetPrototype(d)

    class Lock:
        pass

    class El:
        pass
    for n in ("LockRequest", "LockResponse", "UnlockRequest",
              "UnlockResponse"):
        setattr(Lock, n, cls("v3lockpb." + n))
    for n in ("CampaignRequest", "CampaignResponse", "LeaderKey",
              "LeaderRequest", "LeaderResponse", "ProclaimRequest",
              "ProclaimResponse", "ResignRequest", "ResignResponse"):
        setattr(El, n, cls("v3electionpb." + n))

    class M:
        lock = Lock
        el = El
    return M


def channel(cluster, member=0):
    certs = cluster.certs
    creds = grpc.ssl_channel_credentials(
        open(certs["ca"], "rb").read(), open(certs["client_key"], "rb").read(),
        open(certs["client_cert"], "rb").read())
    return grpc.secure_channel(f"127.0.0.1:{cluster.members[member].cport}",
                               creds)


def unary(ch, path, resp_cls):
    return ch.unary_unary(path,
                          request_serializer=lambda m: m.SerializeToString(),
                          response_deserializer=resp_cls.FromString)


def lease(member, ttl=30):
    return int(member.call("/v3/lease/grant", {"TTL": ttl})["ID"])


def lock_key(name, lease_id):
    return f"{name}/{lease_id:x}"


def keys_under(member, prefix):
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    r = member.call("/v3/kv/range", {"key": b64(prefix),
                                     "range_end": b64(end)})
    return [unb64(kv["key"]) for kv in r.get("kvs", [])]


# ---- Lock over gRPC ---------------------------------------------------------

def test_lock_two_contenders_grpc(cluster, pb):
    """leases: the second Lock blocks until the first is unlocked."""
    m0 = cluster.members[0]
    l1, l2 = lease(m0), lease(m0)
    with channel(cluster, 0) as c0, channel(cluster, 1) as c1:
        lock0 = unary(c0, "/v3lockpb.Lock/Lock", pb.lock.LockResponse)
        lock1 = unary(c1, "/v3lockpb.Lock/Lock", pb.lock.LockResponse)
        unlock = unary(c1, "/v3lockpb.Lock/Unlock", pb.lock.UnlockResponse)
        r1 = lock0(pb.lock.LockRequest(name=b"glk", lease=l1), timeout=10)
        assert r1.key == lock_key("glk", l1).encode()
        assert r1.header.revision > 0 and r1.header.member_id != 0
        fut = lock1.future(pb.lock.LockRequest(name=b"glk", lease=l2),
                           timeout=30)
        time.sleep(1.0)
        assert not fut.done()
        assert sorted(keys_under(m0, "glk/")) == sorted(
            [lock_key("glk", l1), lock_key("glk", l2)])
        # a lock already held by the same lease is granted again at once
        again = lock0(pb.lock.LockRequest(name=b"glk", lease=l1), timeout=10)
        assert again.key == r1.key
        u = unlock(pb.lock.UnlockRequest(key=r1.key), timeout=10)
        assert u.header.revision > r1.header.revision
        r2 = fut.result(timeout=10)
        assert r2.key == lock_key("glk", l2).encode()
        # the header of the read that saw the older key gone
        assert r2.header.revision >= u.header.revision
        unlock(pb.lock.UnlockRequest(key=r2.key), timeout=10)
    assert keys_under(m0, "glk/") == []


def test_lock_mutual_exclusion(cluster, pb):
    """leases: twelve contenders on three members each take the lock once,
    never two at a time."""
    m0 = cluster.members[0]
    n = 12
    leases = [lease(m0) for _ in range(n)]
    chans = [channel(cluster, i) for i in range(3)]
    holding = []
    order = []
    errors = []
    mu = threading.Lock()

    def worker(i):
        ch = chans[i % 3]
        try:
            r = unary(ch, "/v3lockpb.Lock/Lock", pb.lock.LockResponse)(
                pb.lock.LockRequest(name=b"mx", lease=leases[i]), timeout=60)
            with mu:
                holding.append(i)
                if len(holding) > 1:
                    errors.append(f"{holding} hold the lock together")
            time.sleep(0.05)
            with mu:
                holding.remove(i)
                order.append(r.key)
            unary(ch, "/v3lockpb.Lock/Unlock", pb.lock.UnlockResponse)(
                pb.lock.UnlockRequest(key=r.key), timeout=10)
        except Exception as e:  # reported below
            errors.append(repr(e))
    try:
        ts = [threading.Thread(target=worker, args=(i,), daemon=True)
              for i in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(90)
        assert not errors, errors
        assert sorted(order) == sorted(lock_key("mx", x).encode()
                                       for x in leases)
    finally:
        for ch in chans:
            ch.close()
    assert keys_under(m0, "mx/") == []


def test_lock_released_when_lease_revoked(cluster, pb):
    """leases: revoking the holder's lease deletes its key and the next
    waiter acquires."""
    m0, m1, m2 = cluster.members
    l1, l2 = lease(m0), lease(m1)
    with channel(cluster, 2) as ch:
        lock = unary(ch, "/v3lockpb.Lock/Lock", pb.lock.LockResponse)
        r1 = lock(pb.lock.LockRequest(name=b"rlk", lease=l1), timeout=10)
        fut = lock.future(pb.lock.LockRequest(name=b"rlk", lease=l2),
                          timeout=30)
        time.sleep(0.5)
        assert not fut.done()
        m1.call("/v3/lease/revoke", {"ID": str(l1)})
        r2 = fut.result(timeout=10)
        assert r2.key == lock_key("rlk", l2).encode()
        assert r1.key.decode() not in keys_under(m2, "rlk/")
        m1.call("/v3/lease/revoke", {"ID": str(l2)})
    assert keys_under(m0, "rlk/") == []


def test_lock_lease_zero_grants_a_session(cluster, pb):
    """leases: lease 0 makes a 60 s session lease, as etcd's NewSession."""
    m0 = cluster.members[0]
    with channel(cluster, 1) as ch:
        r = unary(ch, "/v3lockpb.Lock/Lock", pb.lock.LockResponse)(
            pb.lock.LockRequest(name=b"zlk"), timeout=10)
    kv = m0.call("/v3/kv/range", {"key": b64(r.key)})["kvs"][0]
    lid = int(kv["lease"])
    assert r.key == lock_key("zlk", lid).encode()
    assert "value" not in kv  # an empty value
    ttl = m0.call("/v3/lease/timetolive", {"ID": str(lid)})
    assert int(ttl["grantedTTL"]) == 60 and 50 <= int(ttl["TTL"]) <= 60
    m0.call("/v3/lease/revoke", {"ID": str(lid)})


def test_lock_waiter_gone_deletes_its_key(cluster, pb):
    """leases: a Lock cancelled while waiting deletes its key (etcd's
    Mutex.Lock unlocks when its context ends)."""
    m0 = cluster.members[0]
    l1, l2 = lease(m0), lease(m0)
    with channel(cluster, 0) as ch:
        lock = unary(ch, "/v3lockpb.Lock/Lock", pb.lock.LockResponse)
        r1 = lock(pb.lock.LockRequest(name=b"clk", lease=l1), timeout=10)
        fut = lock.future(pb.lock.LockRequest(name=b"clk", lease=l2),
                          timeout=30)
        wait_until(lambda: len(keys_under(m0, "clk/")) == 2, timeout=10,
                   what="the waiter's key")
        fut.cancel()
        wait_until(lambda: keys_under(m0, "clk/") ==
                   [r1.key.decode()], timeout=10,
                   what="the cancelled waiter's key to go")
        # and a deadline does the same
        with pytest.raises(grpc.RpcError) as e:
            lock(pb.lock.LockRequest(name=b"clk", lease=l2), timeout=1)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_until(lambda: keys_under(m0, "clk/") ==
                   [r1.key.decode()], timeout=10,
                   what="the timed-out waiter's key to go")
        unary(ch, "/v3lockpb.Lock/Unlock", pb.lock.UnlockResponse)(
            pb.lock.UnlockRequest(key=r1.key), timeout=10)


def test_lock_errors_grpc(cluster, pb):
    """Errors are etcd's: plain errors from its embedded client, gRPC
    Unknown (2), same text."""
    with channel(cluster, 0) as ch:
        lock = unary(ch, "/v3lockpb.Lock/Lock", pb.lock.LockResponse)
        unlock = unary(ch, "/v3lockpb.Lock/Unlock", pb.lock.UnlockResponse)
        with pytest.raises(grpc.RpcError) as e:
            lock(pb.lock.LockRequest(name=b"elk", lease=12345), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNKNOWN
        assert e.value.details() == "etcdserver: requested lease not found"
        with pytest.raises(grpc.RpcError) as e:
            unlock(pb.lock.UnlockRequest(), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNKNOWN
        assert e.value.details() == "etcdserver: key is not provided"
        # unlocking a key that is not there is not an error
        r = unlock(pb.lock.UnlockRequest(key=b"elk/none"), timeout=10)
        assert r.header.revision > 0


# ---- Lock over the gateway ---------------------------------------------------

def test_lock_two_contenders_gateway(cluster):
    """leases: /v3/lock/lock on two followers and /v3beta/lock/unlock on
    the third member."""
    m0, m1, m2 = cluster.members
    l1, l2 = lease(m0), lease(m0)
    r1 = m1.call("/v3/lock/lock", {"name": b64("hlk"), "lease": str(l1)})
    assert unb64(r1["key"]) == lock_key("hlk", l1)
    assert set(r1["header"]) == {"cluster_id", "member_id", "revision",
                                 "raft_term"}
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(m2.call, "/v3/lock/lock",
                        {"name": b64("hlk"), "lease": str(l2)}, 30)
        time.sleep(1.0)
        assert not fut.done()
        u = m0.call("/v3beta/lock/unlock", {"key": r1["key"]})
        r2 = fut.result(timeout=10)
    assert unb64(r2["key"]) == lock_key("hlk", l2)
    assert int(r2["header"]["revision"]) >= int(u["header"]["revision"])
    m0.call("/v3/lock/unlock", {"key": r2["key"]})
    r = m0.post("/v3/lock/unlock", {})
    assert r.status_code == 500 and r.json() == {
        "error": "etcdserver: key is not provided",
        "message": "etcdserver: key is not provided", "code": 2}
    assert m0.cluster.session.get(m0.curl + "/v3/lock/lock",
                                  timeout=10).status_code == 405


def test_lock_gateway_waiter_gone_deletes_its_key(cluster):
    """leases: an HTTP/1.1 client that gives up on a waiting
    /v3/lock/lock (read timeout: the connection is closed) leaves no key
    behind, as with etcd."""
    m0, m1, _ = cluster.members
    l1, l2 = lease(m0), lease(m0)
    r1 = m0.call("/v3/lock/lock", {"name": b64("hglk"), "lease": str(l1)})
    s = requests.Session()
    s.trust_env = False
    s.verify = cluster.session.verify
    s.cert = cluster.session.cert
    with pytest.raises(requests.exceptions.ReadTimeout):
        s.post(m1.curl + "/v3/lock/lock",
               json={"name": b64("hglk"), "lease": str(l2)}, timeout=1.5)
    s.close()
    wait_until(lambda: keys_under(m0, "hglk/") == [unb64(r1["key"])],
               timeout=10, what="the abandoned waiter's key to go")
    m0.call("/v3/lock/unlock", {"key": r1["key"]})


def test_lock_gateway_h2_waiter_gone_deletes_its_key(cluster, tmp_path):
    """leases: the same over HTTP/2 (curl's default over TLS): the stream
    reset cancels the waiting Lock and its key goes."""
    m0, m1, _ = cluster.members
    certs = cluster.certs
    l1, l2 = lease(m0), lease(m0)
    r1 = m0.call("/v3/lock/lock", {"name": b64("h2lk"), "lease": str(l1)})
    body = json.dumps({"name": b64("h2lk"), "lease": str(l2)})
    r = subprocess.run(["/usr/bin/curl", "-sS", "--http2", "--max-time",
                        "1.5", "--cacert", str(certs["ca"]), "--cert",
                        str(certs["client_cert"]), "--key",
                        str(certs["client_key"]), "-d", body,
                        m1.curl + "/v3/lock/lock"],
                       capture_output=True, text=True, timeout=20,
                       env={k: v for k, v in os.environ.items()
                            if "proxy" not in k.lower()})
    assert r.returncode == 28, (r.returncode, r.stdout, r.stderr)
    wait_until(lambda: keys_under(m0, "h2lk/") == [unb64(r1["key"])],
               timeout=10, what="the abandoned waiter's key to go")
    m0.call("/v3/lock/unlock", {"key": r1["key"]})


# ---- Election over gRPC -------------------------------------------------------

def observe_grpc(ch, pb, name, out, stop_after):
    it = ch.unary_stream("/v3electionpb.Election/Observe",
                         request_serializer=lambda m: m.SerializeToString(),
                         response_deserializer=pb.el.LeaderResponse.FromString)(
        pb.el.LeaderRequest(name=name), timeout=60)

    def run():
        try:
            for r in it:
                out.append(r)
                if len(out) >= stop_after:
                    break
        except grpc.RpcError:
            pass
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return it, t


def test_election_grpc(cluster, pb):
    """leases: campaign / proclaim / leader / observe / resign with two
    candidates on different members."""
    m0 = cluster.members[0]
    l1, l2 = lease(m0), lease(m0)
    E = "/v3electionpb.Election/"
    with channel(cluster, 0) as c0, channel(cluster, 1) as c1, \
            channel(cluster, 2) as c2:
        seen = []
        it, t = observe_grpc(c2, pb, b"gel", seen, 3)
        time.sleep(0.5)  # Observe found no leader and watches the prefix
        camp0 = unary(c0, E + "Campaign", pb.el.CampaignResponse)
        camp1 = unary(c1, E + "Campaign", pb.el.CampaignResponse)
        leader = unary(c2, E + "Leader", pb.el.LeaderResponse)
        proclaim = unary(c0, E + "Proclaim", pb.el.ProclaimResponse)
        resign = unary(c0, E + "Resign", pb.el.ResignResponse)

        with pytest.raises(grpc.RpcError) as e:
            leader(pb.el.LeaderRequest(name=b"gel"), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNKNOWN
        assert e.value.details() == "election: no leader"

        a = camp0(pb.el.CampaignRequest(name=b"gel", lease=l1, value=b"a1"),
                  timeout=10)
        assert a.leader.name == b"gel"
        assert a.leader.key == lock_key("gel", l1).encode()
        assert a.leader.rev == a.header.revision and a.leader.lease == l1
        fut = camp1.future(pb.el.CampaignRequest(name=b"gel", lease=l2,
                                                 value=b"b1"), timeout=30)
        time.sleep(1.0)
        assert not fut.done()
        ld = leader(pb.el.LeaderRequest(name=b"gel"), timeout=10)
        assert ld.kv.key == a.leader.key and ld.kv.value == b"a1"
        assert ld.kv.lease == l1 and ld.kv.create_revision == a.leader.rev

        p = proclaim(pb.el.ProclaimRequest(leader=a.leader, value=b"a2"),
                     timeout=10)
        ld = leader(pb.el.LeaderRequest(name=b"gel"), timeout=10)
        assert ld.kv.value == b"a2" and ld.kv.mod_revision == \
            p.header.revision
        # a leader key with another revision is not the leader (etcd
        # compares only the create revision of the given key)
        with pytest.raises(grpc.RpcError) as e:
            proclaim(pb.el.ProclaimRequest(
                leader=pb.el.LeaderKey(name=b"gel",
                                       key=lock_key("gel", l2).encode(),
                                       rev=a.leader.rev, lease=l2),
                value=b"x"), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNKNOWN
        assert e.value.details() == "election: not leader"

        r = resign(pb.el.ResignRequest(leader=a.leader), timeout=10)
        b = fut.result(timeout=10)
        assert b.leader.key == lock_key("gel", l2).encode()
        assert b.leader.rev < r.header.revision  # created while waiting
        ld = leader(pb.el.LeaderRequest(name=b"gel"), timeout=10)
        assert ld.kv.key == b.leader.key and ld.kv.value == b"b1"
        # the old leader key is no longer leader; resigning it is a no-op
        with pytest.raises(grpc.RpcError) as e:
            proclaim(pb.el.ProclaimRequest(leader=a.leader, value=b"a3"),
                     timeout=10)
        assert e.value.details() == "election: not leader"
        r2 = resign(pb.el.ResignRequest(leader=a.leader), timeout=10)
        assert r2.header.revision == r.header.revision

        t.join(10)
        it.cancel()
        vals = [(o.kv.key, o.kv.value) for o in seen]
        assert vals == [(a.leader.key, b"a1"), (a.leader.key, b"a2"),
                        (b.leader.key, b"b1")], vals
        assert seen[0].header.revision == a.leader.rev
        assert seen[1].header.revision == p.header.revision
        resign(pb.el.ResignRequest(leader=b.leader), timeout=10)
        for code_path, req in ((E + "Proclaim",
                                pb.el.ProclaimRequest(value=b"v")),
                               (E + "Resign", pb.el.ResignRequest())):
            with pytest.raises(grpc.RpcError) as e:
                unary(c0, code_path, pb.el.ResignResponse)(req, timeout=10)
            assert e.value.code() == grpc.StatusCode.UNKNOWN
            assert e.value.details() == '"leader" field must be provided'


def test_campaign_again_proclaims_new_value(cluster, pb):
    """leases: a candidate campaigning again with another value keeps its
    key and revision and proclaims the new value."""
    m0 = cluster.members[0]
    l1 = lease(m0)
    with channel(cluster, 1) as ch:
        camp = unary(ch, "/v3electionpb.Election/Campaign",
                     pb.el.CampaignResponse)
        a = camp(pb.el.CampaignRequest(name=b"rel", lease=l1, value=b"x"),
                 timeout=10)
        b = camp(pb.el.CampaignRequest(name=b"rel", lease=l1, value=b"y"),
                 timeout=10)
        assert b.leader.key == a.leader.key and b.leader.rev == a.leader.rev
        kv = m0.call("/v3/kv/range", {"key": b64(a.leader.key)})["kvs"][0]
        assert unb64(kv["value"]) == "y" and kv["version"] == "2"
    m0.call("/v3/lease/revoke", {"ID": str(l1)})


def test_campaign_waiter_gone_resigns(cluster, pb):
    """leases: a Campaign cancelled while waiting deletes its key."""
    m0 = cluster.members[0]
    l1, l2 = lease(m0), lease(m0)
    with channel(cluster, 0) as ch:
        camp = unary(ch, "/v3electionpb.Election/Campaign",
                     pb.el.CampaignResponse)
        a = camp(pb.el.CampaignRequest(name=b"wel", lease=l1, value=b"x"),
                 timeout=10)
        fut = camp.future(pb.el.CampaignRequest(name=b"wel", lease=l2,
                                                value=b"y"), timeout=30)
        wait_until(lambda: len(keys_under(m0, "wel/")) == 2, timeout=10,
                   what="the second candidate")
        fut.cancel()
        wait_until(lambda: keys_under(m0, "wel/") ==
                   [a.leader.key.decode()], timeout=10,
                   what="the cancelled candidate to resign")
    m0.call("/v3/lease/revoke", {"ID": str(l1)})
    m0.call("/v3/lease/revoke", {"ID": str(l2)})


# ---- Election over the gateway --------------------------------------------------

def test_election_gateway_observe(cluster):
    """leases: POST /v3/election/observe streams {"result":...} lines for
    each leader and value; the rest of the API over the gateway."""
    m0, m1, m2 = cluster.members
    l1, l2 = lease(m0), lease(m0)
    lines = []
    r = m2.cluster.session.post(m2.curl + "/v3/election/observe",
                                json={"name": b64("hel")}, stream=True,
                                timeout=30)
    assert r.status_code == 200

    def read():
        try:
            for ln in r.iter_lines():
                if ln:
                    lines.append(json.loads(ln))
                if len(lines) >= 3:
                    break
        except requests.RequestException:
            pass
    t = threading.Thread(target=read, daemon=True)
    t.start()
    try:
        time.sleep(0.5)
        a = m0.call("/v3/election/campaign", {"name": b64("hel"),
                                              "lease": str(l1),
                                              "value": b64("one")})
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            fut = ex.submit(m1.call, "/v3beta/election/campaign",
                            {"name": b64("hel"), "lease": str(l2),
                             "value": b64("two")}, 30)
            time.sleep(0.5)
            assert not fut.done()
            ld = m1.call("/v3/election/leader", {"name": b64("hel")})
            assert ld["kv"]["key"] == a["leader"]["key"]
            p = m0.call("/v3/election/proclaim",
                        {"leader": a["leader"], "value": b64("uno")})
            m0.call("/v3/election/resign", {"leader": a["leader"]})
            b = fut.result(timeout=10)
        t.join(10)
    finally:
        r.close()
    assert [(unb64(x["result"]["kv"]["key"]), unb64(x["result"]["kv"]["value"]))
            for x in lines] == [(lock_key("hel", l1), "one"),
                                (lock_key("hel", l1), "uno"),
                                (lock_key("hel", l2), "two")]
    assert lines[1]["result"]["header"]["revision"] == p["header"]["revision"]
    assert b["leader"]["rev"] == lines[2]["result"]["kv"]["create_revision"]
    e = m0.post("/v3/election/leader", {"name": b64("nobody")})
    assert e.status_code == 500 and e.json()["code"] == 2
    assert e.json()["error"] == "election: no leader"
    m0.call("/v3/election/resign", {"leader": b["leader"]})


# ---- the same answers as etcd 3.4 ------------------------------------------------

def scenario(session, url):
    """A fixed sequence over the gateway; returns the answers with the
    ids, lease ids and revisions made relative."""
    def post(path, body, timeout=10):
        r = session.post(url + path, json=body, timeout=timeout)
        return r.status_code, r.json()

    _, base = post("/v3/kv/put", {"key": b64("cmp/base"), "value": b64("x")})
    rev0 = int(base["header"]["revision"])
    leases = [post("/v3/lease/grant", {"TTL": 30})[1]["ID"]
              for _ in range(2)]

    def norm(x):
        if isinstance(x, dict):
            out = {}
            for k, v in x.items():
                if k in ("cluster_id", "member_id", "raft_term"):
                    out[k] = "id"
                elif k in ("revision", "rev", "create_revision",
                           "mod_revision"):
                    out[k] = int(v) - rev0
                elif k in ("lease", "ID"):
                    out[k] = f"L{leases.index(v)}" if v in leases else v
                elif k in ("key", "name", "value"):
                    s = base64.b64decode(v).decode()
                    for i, lid in enumerate(leases):
                        s = s.replace(f"{int(lid):x}", f"L{i}")
                    out[k] = s
                else:
                    out[k] = norm(v)
            return out
        return x

    res = []

    def rec(status, body):
        res.append((status, norm(body)))
        return body

    L0, L1 = leases
    rec(*post("/v3/election/leader", {"name": b64("cel")}))
    rec(*post("/v3/election/proclaim", {"value": b64("v")}))
    rec(*post("/v3/election/resign", {}))
    a = rec(*post("/v3/election/campaign", {"name": b64("cel"), "lease": L0,
                                            "value": b64("one")}))
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(post, "/v3/election/campaign",
                        {"name": b64("cel"), "lease": L1,
                         "value": b64("two")}, 30)
        time.sleep(1.0)
        rec(*post("/v3/election/leader", {"name": b64("cel")}))
        rec(*post("/v3/election/proclaim", {"leader": a["leader"],
                                            "value": b64("uno")}))
        rec(*post("/v3/election/campaign", {"name": b64("cel"), "lease": L0,
                                            "value": b64("eins")}))
        rec(*post("/v3/election/resign", {"leader": a["leader"]}))
        rec(*fut.result(timeout=10))
    rec(*post("/v3/election/proclaim", {"leader": a["leader"],
                                        "value": b64("uno")}))
    rec(*post("/v3/election/resign", {"leader": a["leader"]}))
    k = rec(*post("/v3/lock/lock", {"name": b64("clk"), "lease": L0}))
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(post, "/v3/lock/lock", {"name": b64("clk"),
                                                "lease": L1}, 30)
        time.sleep(1.0)
        rec(*post("/v3/kv/put", {"key": b64("cmp/other"), "value": b64("y")}))
        rec(*post("/v3/lock/lock", {"name": b64("clk"), "lease": L0}))
        rec(*post("/v3/lock/unlock", {"key": k["key"]}))
        rec(*fut.result(timeout=10))
    rec(*post("/v3/lock/unlock", {}))
    rec(*post("/v3/lock/lock", {"name": b64("clk"), "lease": "777"}))
    rec(*post("/v3/election/campaign", {"name": b64("cel"), "lease": "777"}))
    return res


def test_same_answers_as_etcd(cluster, etcd):
    """leases: the scenario's answers from kvd and from etcd 3.4.23 are
    equal once ids and revisions are made relative."""
    _, eurl = etcd(tls=True)
    s = requests.Session()
    s.trust_env = False
    s.verify = str(cluster.certs["ca"])
    want = scenario(s, eurl)
    got = scenario(cluster.session, cluster.members[1].curl)
    assert got == want


# ---- etcd's clients ------------------------------------------------------------

def ctl_argv(cluster, member, *args):
    certs = cluster.certs
    return [ETCDCTL, "--endpoints=" + cluster.members[member].curl,
            "--cacert", str(certs["ca"]), "--cert",
            str(certs["client_cert"]), "--key", str(certs["client_key"]),
            "--dial-timeout=5s"] + list(args)


def ctl_env():
    e = dict(os.environ, ETCDCTL_API="3")
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        e.pop(k, None)
    return e


class Bg:
    """An etcdctl in the background, output in a file, stopped by PID."""

    def __init__(self, cluster, tmp_path, name, *args, member=0):
        self.path = tmp_path / f"{name}.out"
        self.f = open(self.path, "w")
        self.p = subprocess.Popen(ctl_argv(cluster, member, *args),
                                  stdout=self.f, stderr=subprocess.STDOUT,
                                  env=ctl_env())

    def text(self):
        if not self.f.closed:
            self.f.flush()
        return self.path.read_text()

    def kill(self, sig=signal.SIGTERM):
        if self.f.closed:
            return
        if self.p.poll() is None:
            os.kill(self.p.pid, sig)
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.p.pid, signal.SIGKILL)
                self.p.wait(timeout=5)
        self.f.close()


def test_etcdctl_lock_holder_killed(cluster, tmp_path):
    """leases: etcdctl lock (client-side in 3.4: lease, keep-alive, txn,
    watch). The holder is killed with SIGKILL; the other contender
    acquires once the holder's 3 s session lease expires."""
    a = Bg(cluster, tmp_path, "a", "lock", "ctl-lock", "--ttl=3", member=0)
    b = None
    try:
        wait_until(lambda: "ctl-lock/" in a.text(), timeout=15,
                   what="the first etcdctl lock")
        b = Bg(cluster, tmp_path, "b", "lock", "ctl-lock", "--ttl=3",
               member=1)
        time.sleep(2.0)
        assert b.text() == "", b.text()  # waits while the holder lives
        a.kill(signal.SIGKILL)
        t0 = time.monotonic()
        wait_until(lambda: "ctl-lock/" in b.text(), timeout=15,
                   what="the second etcdctl lock after the TTL")
        waited = time.monotonic() - t0
        assert 0.5 < waited < 12, waited
        assert b.text().strip() != a.text().strip()
    finally:
        a.kill()
        if b is not None:
            b.kill()


def test_etcdctl_lock_runs_command(cluster):
    """leases: etcdctl lock <name> <command> runs it under the lock."""
    r = subprocess.run(ctl_argv(cluster, 2, "lock", "ctl-cmd", "echo",
                                "locked"), capture_output=True, text=True,
                       timeout=30, env=ctl_env())
    assert r.returncode == 0 and r.stdout == "locked\n", (r.stdout, r.stderr)


def test_etcdctl_elect_holder_killed(cluster, tmp_path):
    """leases: etcdctl elect with two candidates and an observer
    (elect -l); the leader's process is killed with SIGKILL and the other
    candidate leads once the 60 s session lease (etcdctl elect has no
    --ttl) expires."""
    obs = Bg(cluster, tmp_path, "obs", "elect", "-l", "ctl-el", member=2)
    a = Bg(cluster, tmp_path, "a", "elect", "ctl-el", "pa", member=0)
    b = None
    try:
        wait_until(lambda: a.text().endswith("pa\n"), timeout=15,
                   what="the first candidate to lead")
        b = Bg(cluster, tmp_path, "b", "elect", "ctl-el", "pb", member=1)
        time.sleep(2.0)
        assert b.text() == "", b.text()
        a.kill(signal.SIGKILL)
        t0 = time.monotonic()
        wait_until(lambda: b.text().endswith("pb\n"), timeout=90,
                   what="the second candidate to lead after the TTL")
        assert time.monotonic() - t0 > 5  # not before the lease ran out
        wait_until(lambda: obs.text().endswith("pb\n"), timeout=10,
                   what="the observer to see the new leader")
        out = obs.text().split("\n")
        assert out[1] == "pa" and out[0].startswith("ctl-el/"), out
    finally:
        for p in (obs, a, b):
            if p is not None:
                p.kill()


def test_etcd3gw_lock(cluster, certs):
    """leases: etcd3gw's lock() (txn put-if-absent with a lease over the
    gateway), released by release() and by the lease running out."""
    from etcd3gw.client import Etcd3Client

    def client(m):
        c = Etcd3Client(host="127.0.0.1", port=m.cport, protocol="https",
                        ca_cert=str(certs["ca"]),
                        cert_cert=str(certs["client_cert"]),
                        cert_key=str(certs["client_key"]), api_path="/v3/",
                        timeout=15)
        c.session.trust_env = False
        return c
    c0, c1 = client(cluster.members[0]), client(cluster.members[1])
    l0 = c0.lock("gwlock", ttl=30)
    l1 = c1.lock("gwlock", ttl=2)
    assert l0.acquire() is True and l0.is_acquired()
    assert l1.acquire() is False
    assert l0.release() is True
    assert l1.acquire() is True and l1.is_acquired()
    # not refreshed: gone once its 2 s lease expires
    wait_until(lambda: l0.acquire(), timeout=15,
               what="the expired lock to be free")
    assert l0.release() is True


def test_python_etcd3_lock(cluster, certs):
    """leases: python3-etcd3's Lock (lease + txn put-if-absent over gRPC).
    Its blocking retry (acquire with a timeout under contention) does not
    run with Debian's tenacity (a wait() signature mismatch in the
    client), so contention is checked with timeout=0 (one attempt)."""
    import etcd3

    def client(m):
        return etcd3.client(host="127.0.0.1", port=m.cport,
                            ca_cert=str(certs["ca"]),
                            cert_cert=str(certs["client_cert"]),
                            cert_key=str(certs["client_key"]), timeout=15)
    c0, c2 = client(cluster.members[0]), client(cluster.members[2])
    try:
        a = c0.lock("pylock", ttl=30)
        b = c2.lock("pylock", ttl=30)
        assert a.acquire(timeout=0) and a.is_acquired()
        assert b.acquire(timeout=0) is False
        assert a.release()
        assert b.acquire(timeout=0) and b.is_acquired()
        assert b.release()
        # a lock whose lease is not refreshed ends with it
        short = c0.lock("pylock", ttl=2)
        assert short.acquire(timeout=0)
        assert a.acquire(timeout=0) is False
        wait_until(lambda: a.acquire(timeout=0), timeout=15,
                   what="the expired lock to be free")
        assert a.release()
    finally:
        c0.close()
        c2.close()


# ---- last: kills and restarts a member -------------------------------------------

def test_lock_waiter_survives_leader_kill(cluster, pb):
    """leases: a Lock waiting on a follower keeps waiting across a leader
    kill (SIGKILL) and acquires once the holder unlocks through the new
    leader. The killed member is restarted for any later test."""
    lead = cluster.leader()
    fol = [m for m in cluster.live() if m is not lead]
    l1, l2 = lease(fol[0]), lease(fol[0])
    idx = cluster.members.index(fol[1])
    with channel(cluster, idx) as ch:
        lock = unary(ch, "/v3lockpb.Lock/Lock", pb.lock.LockResponse)
        r1 = lock(pb.lock.LockRequest(name=b"klk", lease=l1), timeout=10)
        fut = lock.future(pb.lock.LockRequest(name=b"klk", lease=l2),
                          timeout=60)
        wait_until(lambda: len(keys_under(fol[0], "klk/")) == 2,
                   timeout=10, what="the waiter's key")
        lead.proc.kill()
        try:
            cluster.wait_leader(timeout=30)
            assert not fut.done()
            wait_until(lambda: fol[0].post("/v3/lock/unlock",
                                           {"key": b64(r1.key)},
                                           timeout=5).status_code == 200,
                       timeout=20, what="unlock through the new leader")
            r2 = fut.result(timeout=20)
            assert r2.key == lock_key("klk", l2).encode()
            unary(ch, "/v3lockpb.Lock/Unlock", pb.lock.UnlockResponse)(
                pb.lock.UnlockRequest(key=r2.key), timeout=10)
        finally:
            lead.start()
            lead.wait_listening()
            cluster.wait_leader(timeout=30)
