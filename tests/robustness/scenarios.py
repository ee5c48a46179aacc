"""scenarios — named nemeses and the runner that records and checks one
scenario run.

A nemesis is a function (cluster, stop_event, rnd, log) that injects faults
until stop_event is set and leaves every member it touched running again.
A scenario may also need a fault *environment* (faultenv.py): network
namespaces, peer proxies, a tmpfs data dir, libfaketime; the runner sets it
up before the cluster starts and tears it down in a `finally` after every
member is stopped, also when the run fails. The nemesis reaches it as
`c.fault`. A nemesis reports a broken expectation (a member that refused
to start after a torn tail, or started on a mid-log corruption) with
`c.findings.append(text)`; findings are reported next to the checker's
violations (run.py exits 1 on either).
"""
import random
import tempfile
import threading
import time
from pathlib import Path

import checker
import faultenv
import workload
from cluster import Cluster
from nemeses import FAULT_SCENARIOS


def _wait(stop, s):
    return stop.wait(s)


def kill_random(c, stop, rnd, log):
    """kill -9 a random member every 2-4 s; restart it 0.5-1.5 s later."""
    while not _wait(stop, rnd.uniform(2, 4)):
        i = rnd.randrange(c.n)
        log(f"kill -9 member {i}")
        c.kill9(i)
        stop.wait(rnd.uniform(0.5, 1.5))
        c.start(i)
        log(f"restarted member {i}")


def kill_leader(c, stop, rnd, log):
    """kill -9 the leader every 3-5 s; restart it 0.5-1.5 s later."""
    while not _wait(stop, rnd.uniform(3, 5)):
        try:
            i = c.leader(timeout=5)
        except TimeoutError:
            log("no leader found; skipping")
            continue
        log(f"kill -9 leader {i}")
        c.kill9(i)
        stop.wait(rnd.uniform(0.5, 1.5))
        c.start(i)
        log(f"restarted member {i}")


def _pause(c, stop, rnd, log, leader):
    longer = 2.5 * c.election_ms / 1000.0
    while not _wait(stop, rnd.uniform(1.5, 3)):
        try:
            lead = c.leader(timeout=5)
        except TimeoutError:
            log("no leader found; skipping")
            continue
        i = lead if leader else rnd.choice([j for j in range(c.n) if j != lead])
        d = rnd.uniform(longer, longer + 1.0)
        log(f"SIGSTOP member {i} ({'leader' if leader else 'follower'}) "
            f"for {d:.1f}s")
        c.sigstop(i)
        stop.wait(d)
        c.sigcont(i)
        log(f"SIGCONT member {i}")


def pause_follower(c, stop, rnd, log):
    """SIGSTOP a follower for longer than the election timeout, SIGCONT."""
    _pause(c, stop, rnd, log, leader=False)


def pause_leader(c, stop, rnd, log):
    """SIGSTOP the leader for longer than the election timeout, SIGCONT."""
    _pause(c, stop, rnd, log, leader=True)


def kill_once(c, stop, rnd, log, at=None):
    """kill -9 one random member once mid-way and restart it (CI smoke)."""
    if _wait(stop, at if at is not None else rnd.uniform(3, 5)):
        return
    i = rnd.randrange(c.n)
    log(f"kill -9 member {i}")
    c.kill9(i)
    stop.wait(1.0)
    c.start(i)
    log(f"restarted member {i}")


def none(c, stop, rnd, log):
    """No faults (baseline)."""
    stop.wait()


SCENARIOS = {
    "none": none,
    "kill_once": kill_once,
    "kill_random": kill_random,
    "kill_leader": kill_leader,
    "pause_follower": pause_follower,
    "pause_leader": pause_leader,
}
# name -> (nemesis, fault environment class)
ENVS = {name: faultenv.Env for name in SCENARIOS}
for _name, (_fn, _env) in FAULT_SCENARIOS.items():
    SCENARIOS[_name] = _fn
    ENVS[_name] = _env
DEFAULT = ["kill_random", "kill_leader", "pause_follower", "pause_leader"]
FAULTS = list(FAULT_SCENARIOS)


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:", "WARNING: ThreadSanitizer")


def compare_members(c, keys, log, timeout=20.0):
    """After healing: waits until every member has applied the same raft
    index, then reads all keys *serializably* (from each member's own
    store) and compares. Returns violations (a member whose store differs
    holds data the others never agreed on, or lost some)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            idx = [int(c.status(i, timeout=2.0)["raftAppliedIndex"])
                   for i in range(c.n)]
        except Exception as e:  # noqa: BLE001 - retry until the deadline
            last = f"status: {e}"
            time.sleep(0.3)
            continue
        if len(set(idx)) != 1:
            last = f"applied indexes differ: {idx}"
            time.sleep(0.3)
            continue
        try:
            views = [workload.member_view(u, keys, tls=c.client_tls)
                     for u in c.client_urls]
        except Exception as e:  # noqa: BLE001
            last = f"serializable read: {e}"
            time.sleep(0.3)
            continue
        if all(v == views[0] for v in views):
            log(f"members agree at applied index {idx[0]}, "
                f"revision {views[0]['_rev']}")
            return []
        last = "stores differ: " + "; ".join(
            f"{c.names[i]}={v}" for i, v in enumerate(views))
        time.sleep(0.5)
    if last and last.startswith("stores differ"):
        return [f"members disagree after healing: {last}"]
    return [f"members did not converge within {timeout:.0f} s: {last}"]


def run_scenario(procs, name, binary="etcd", duration=10.0, clients=4,
                 tls=None, workdir=None, seed=None, budget=120.0,
                 log=print, nemesis_kwargs=None, serializable=False):
    """Starts a 3-member cluster, runs the workload with the nemesis for
    `duration` s, heals, reads every key and checks the history. Returns a
    dict: scenario, ops, ok/unknown/fail counts, checked, violations (list),
    verdict, history (path), duration."""
    nemesis = SCENARIOS[name]
    seed = random.randrange(1 << 30) if seed is None else seed
    rnd = random.Random(seed)
    workdir = Path(workdir or tempfile.mkdtemp(prefix=f"rb-{name}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    events = []

    def nlog(msg):
        events.append((round(time.monotonic() - t0, 3), msg))
        log(f"  [{name} +{time.monotonic() - t0:5.1f}s] {msg}")

    env = ENVS[name](workdir, rnd, nlog, tls=tls)
    c = None
    ops = final = None
    member_errs = []
    try:
        env.setup()
        c = Cluster(procs, workdir, binary=binary, n=3, tls=tls,
                    **env.cluster_kwargs())
        c.fault = env
        c.findings = []
        env.attach(c)
        c.start_all()
        c.wait_ready(timeout=30)
        stop = threading.Event()
        # each thread gets its own generator (drawn here, in order), so a
        # seed replays the same nemesis choices
        wl_seed = rnd.randrange(1 << 30)
        nem_rnd = random.Random(rnd.randrange(1 << 30))
        th = threading.Thread(target=nemesis, daemon=True,
                              args=(c, stop, nem_rnd, nlog),
                              kwargs=nemesis_kwargs or {})
        th.start()
        ops, keys = workload.run_workload(
            c.client_urls, duration, clients=clients, tls=c.client_tls,
            seed=wl_seed, serializable=serializable)
        stop.set()
        th.join(60)
        if th.is_alive():
            c.findings.append("nemesis did not stop within 60 s")
        env.heal(c)
        c.heal()
        c.wait_ready(timeout=30)
        final = workload.final_read(c.client_urls, keys, tls=c.client_tls)
        member_errs = compare_members(c, keys, nlog)
    finally:
        try:
            if c is not None:
                c.stop_all()
        finally:
            env.close()
            if ops is not None and final is None:  # keep it for a post-mortem
                workload.save_history(workdir / "history.jsonl", ops)
    for p in c.procs.procs if c is not None else []:
        text = p.log_text(100000)
        for marker in SANITIZER_MARKERS:
            if marker in text:
                summ = [ln for ln in text.splitlines()
                        if ln.startswith("SUMMARY:")]
                c.findings.append(f"{p.name}: '{marker}' in {p.log_path}"
                                  + (f": {summ[0]}" if summ else ""))
                break
    hist_path = workdir / "history.jsonl"
    with open(workdir / "events.txt", "w") as f:
        f.writelines(f"+{t:.3f}s {m}\n" for t, m in events)
    workload.save_history(hist_path, ops, final)
    res = checker.check_history(ops, final=final, keyspace=keys,
                                budget=budget)
    lost = checker.check_final_reads(ops, final)
    res.violations += member_errs
    counts = {s: sum(1 for o in ops if o["status"] == s)
              for s in ("ok", "unknown", "fail")}
    return {"scenario": name, "seed": seed, "ops": len(ops), **counts,
            "checked": res.checked, "violations": res.violations,
            "unknown_search": res.unknown, "notes": res.notes,
            "verdict": res.verdict, "lost": len(lost),
            "findings": list(c.findings), "member_errs": member_errs,
            "history": str(hist_path), "events": events,
            "restarts": c.restarts,
            "duration": round(time.monotonic() - t0, 1)}
