"""Replication as an operator sees it: real kvd processes, real mutual TLS
between members, the real MVCC state machine. (The node's deterministic
tests live in tests/unit/raft; these check that the pieces work together.)
"""
import concurrent.futures
import shutil

import pytest

import kvtest
from kvdcluster import Cluster, b64, retry, wait_until


def hashes(cluster):
    return {m.name: m.call("/v3/maintenance/hash", {})["hash"]
            for m in cluster.live()}


def serializable_get(m, key):
    return m.get(key, serializable=True)


def test_ten_thousand_writes_replicate(procs, certs, bin_dir, tmp_path):
    """10,000 acknowledged puts through all members, concurrently; every
    member ends with the same revision, contents and hash."""
    c = Cluster(procs, certs, bin_dir, tmp_path).start()
    n_threads, per = 8, 1250

    def writer(t):
        m = c.members[t % 3]
        for i in range(per):
            m.put(f"bulk/{t}/{i % 100}", f"{t}-{i}")
        return per

    with concurrent.futures.ThreadPoolExecutor(n_threads) as ex:
        assert sum(ex.map(writer, range(n_threads))) == n_threads * per
    lead = c.leader()
    rev = int(lead.status()["header"]["revision"])
    assert rev >= n_threads * per + 1
    # Followers apply what the leader applied.
    for m in c.members:
        wait_until(lambda m=m: int(m.call(
            "/v3/kv/range", {"key": b64("bulk/"), "range_end": b64("bulk0"),
                             "count_only": True, "serializable": True}
        )["header"]["revision"]) == rev, timeout=20,
            what=f"{m.name} to reach revision {rev}")
        r = m.call("/v3/kv/range", {"key": b64("bulk/"),
                                    "range_end": b64("bulk0"),
                                    "serializable": True})
        assert int(r["count"]) == n_threads * 100
        for t in range(n_threads):
            assert serializable_get(
                m, f"bulk/{t}/{(per - 1) % 100}") == f"{t}-{per - 1}"
    assert len(set(hashes(c).values())) == 1


def test_follower_catches_up_through_snapshot(procs, certs, bin_dir,
                                              tmp_path):
    """A follower that was down while the leader snapshotted and dropped
    the log it needs is brought back by a streamed MVCC snapshot."""
    c = Cluster(procs, certs, bin_dir, tmp_path,
                extra=("--snapshot-count", "300",
                       "--experimental-snapshot-catchup-entries", "50"))
    c.start()
    lead = c.leader()
    f = c.followers()[0]
    lead.put("before", "1")
    wait_until(lambda: serializable_get(f, "before") == "1",
               what="follower to apply the first write")
    assert f.proc.stop() == 0
    # One entry each: several snapshots and the log behind them dropped.
    # The values are big so that the leader's queue of messages for the
    # dead peer (bounded at 64 MiB by the transport) overflows: otherwise
    # the queued appends alone would bring the follower up to date.
    pad = "x" * 60000
    for i in range(1200):
        lead.put(f"snap/{i % 40}", f"v{i}" + (pad if i < 1199 else ""))
    lead.call("/v3/kv/deleterange", {"key": b64("snap/0")})
    f.start()
    f.wait_listening()
    wait_until(lambda: serializable_get(f, "snap/39") == "v1199",
               timeout=30, what="follower to catch up")
    assert serializable_get(f, "snap/0") is None
    assert serializable_get(f, "before") == "1"
    log = f.proc.log_text(tail=100000)
    assert "state restored from snapshot" in log, log[-3000:]
    # New writes after the install replicate normally, and all agree.
    retry(lambda: lead.put("after", "2"))
    wait_until(lambda: serializable_get(f, "after") == "2",
               what="follower to apply writes after the snapshot")
    wait_until(lambda: len(set(hashes(c).values())) == 1,
               what="equal hashes")
    # The follower restarts from its installed snapshot + log.
    assert f.proc.stop() == 0
    f.start()
    f.wait_listening()
    wait_until(lambda: serializable_get(f, "after") == "2",
               what="follower to come back after restart")


def test_member_with_foreign_certificate_refused(procs, certs, bin_dir,
                                                 tmp_path):
    """A member presenting a certificate from another CA is refused by its
    peers: the other two form the quorum, it never gets data."""
    c = Cluster(procs, certs, bin_dir, tmp_path)
    rogue = c.members[2]
    orig = rogue.argv

    def rogue_argv():
        a = [str(x) for x in orig()]
        a[a.index("--peer-cert-file") + 1] = str(certs["rogue_cert"])
        a[a.index("--peer-key-file") + 1] = str(certs["rogue_key"])
        return a

    rogue.argv = rogue_argv
    for m in c.members:
        m.start()
    for m in c.members:
        m.wait_listening()
    good = c.members[:2]
    wait_until(lambda: c.leader_id(good) is not None, timeout=20,
               what="a leader among the two good members")
    retry(lambda: good[0].put("secret", "s"), timeout=20)
    assert good[1].get("secret") == "s"
    wait_until(lambda: "peer connection refused" in
               good[0].proc.log_text(tail=100000) + good[1].proc.log_text(
                   tail=100000), timeout=20, what="a refusal in the logs")
    # The rogue has no leader and none of the data.
    r = rogue.post("/v3/kv/range", {"key": b64("secret"),
                                    "serializable": True})
    assert r.status_code == 200 and "kvs" not in r.json()
    r = rogue.post("/v3/kv/put", {"key": b64("x"), "value": b64("y")},
                   timeout=20)
    assert r.status_code != 200
