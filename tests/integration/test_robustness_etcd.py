"""Robustness smoke against real etcd 3.4: a 3-member cluster on 127.0.0.1
(TLS, client certificates), 4 recording clients for ~10 s, one member
killed with SIGKILL mid-way and restarted; the history must check out with
0 violations. The same scenario runs against kvd by passing its binary to
tests/robustness/run.py."""
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "robustness"))
import checker  # noqa: E402
import scenarios  # noqa: E402
import workload  # noqa: E402


@pytest.fixture
def etcd_binary():
    exe = shutil.which("etcd")
    if exe is None:
        pytest.fail("etcd not installed: run scripts/install-deps.sh")
    return exe


def _stale_copy(ops):
    """A copy of ops where one read returns a value an acknowledged write
    had already overwritten before the read began; None if no such read."""
    acked = [o for o in ops if o["status"] == "ok" and
             (o["op"] == "put" or (o["op"] == "cas" and
                                   o["result"]["succeeded"]))]
    for r in ops:
        if r["op"] != "get" or r["status"] != "ok" or r["result"]["value"] is None:
            continue
        before = sorted((w for w in acked if w["key"] == r["key"] and
                         w["ret"] < r["call"]),
                        key=lambda w: w["result"]["rev"])
        if len(before) >= 2 and before[0]["result"]["rev"] < r["result"]["mod_rev"]:
            out = [dict(o) for o in ops]
            for o in out:
                if o["id"] == r["id"]:
                    o["result"] = dict(o["result"], value=before[0]["value"],
                                       mod_rev=before[0]["result"]["rev"])
            return out
    return None


def test_etcd_kill9_one_member_is_linearizable(procs, tmp_path, certs,
                                               etcd_binary):
    res = scenarios.run_scenario(procs, "kill_once", binary=etcd_binary,
                                 duration=10.0, clients=4, tls=certs,
                                 workdir=tmp_path / "run", budget=60,
                                 nemesis_kwargs={"at": 4.0})
    print(f"\nscenario={res['scenario']} ops={res['ops']} "
          f"checked={res['checked']} violations={len(res['violations'])} "
          f"ok={res['ok']} unknown={res['unknown']} "
          f"failed_reads={res['fail']} duration={res['duration']}s")
    assert res["restarts"] == 1
    assert res["ok"] > 200, "too little traffic for a meaningful check"
    assert res["violations"] == [], "\n".join(res["violations"])
    assert res["verdict"] == "ok", res["unknown_search"]

    # the checker is not vacuous on this real history: a planted stale
    # read is caught
    ops, final = workload.load_history(res["history"])
    bad = _stale_copy(ops)
    if bad is not None:
        assert checker.check_history(bad, final=final).verdict == "violation"
