"""scenarios — named nemeses and the runner that records and checks one
scenario run.

A nemesis is a function (cluster, stop_event, rnd, log) that injects faults
until stop_event is set and leaves every member it touched running again.
Process faults only for now; network partitions, lossy links, disk full,
torn WAL tails and clock jumps (issue 6) are later work.
"""
import random
import tempfile
import threading
import time
from pathlib import Path

import checker
import workload
from cluster import Cluster


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
DEFAULT = ["kill_random", "kill_leader", "pause_follower", "pause_leader"]


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
    c = Cluster(procs, workdir, binary=binary, n=3, tls=tls)
    t0 = time.monotonic()
    events = []

    def nlog(msg):
        events.append((round(time.monotonic() - t0, 3), msg))
        log(f"  [{name} +{time.monotonic() - t0:5.1f}s] {msg}")

    try:
        c.start_all()
        c.wait_ready(timeout=30)
        stop = threading.Event()
        th = threading.Thread(target=nemesis, daemon=True,
                              args=(c, stop, rnd, nlog),
                              kwargs=nemesis_kwargs or {})
        th.start()
        ops, keys = workload.run_workload(
            c.client_urls, duration, clients=clients, tls=c.client_tls,
            seed=rnd.randrange(1 << 30), serializable=serializable)
        stop.set()
        th.join(30)
        c.heal()
        c.wait_ready(timeout=30)
        final = workload.final_read(c.client_urls, keys, tls=c.client_tls)
    finally:
        c.stop_all()
    hist_path = workdir / "history.jsonl"
    workload.save_history(hist_path, ops, final)
    res = checker.check_history(ops, final=final, keyspace=keys,
                                budget=budget)
    counts = {s: sum(1 for o in ops if o["status"] == s)
              for s in ("ok", "unknown", "fail")}
    return {"scenario": name, "seed": seed, "ops": len(ops), **counts,
            "checked": res.checked, "violations": res.violations,
            "unknown_search": res.unknown, "notes": res.notes,
            "verdict": res.verdict,
            "history": str(hist_path), "events": events,
            "restarts": c.restarts,
            "duration": round(time.monotonic() - t0, 1)}
