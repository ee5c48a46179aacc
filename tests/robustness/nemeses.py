"""nemeses — the fault scenarios of issue 6 beyond kill and pause: network
partitions, slow and lossy peer links, a full disk, damaged WAL/store
files on a stopped member, clock jumps. Each is (nemesis, environment);
scenarios.py registers them. A nemesis runs until `stop` is set, leaves
every member running and its faults healed (the runner heals again), and
appends broken expectations to c.findings.
"""
import subprocess
import time

import faultenv
import walfault


def _leader(c, log):
    try:
        return c.leader(timeout=5)
    except TimeoutError:
        log("no leader found")
        return None


def _over_election(c, rnd, extra=1.5):
    e = c.election_ms / 1000.0
    return rnd.uniform(2.5 * e, 2.5 * e + extra)


# ------------------------------------------------------------ partitions --
def partition_leader(c, stop, rnd, log):
    """Isolate the leader from both followers for 2.5-4 s (> election
    timeout; clients still reach it), heal, repeat every 1.5-3 s."""
    lab = c.fault.lab
    while not stop.wait(rnd.uniform(1.5, 3)):
        lead = _leader(c, log)
        if lead is None:
            continue
        d = _over_election(c, rnd)
        lab.partition([{lead}, set(range(c.n)) - {lead}])
        log(f"partition: leader {lead} isolated for {d:.1f}s")
        stop.wait(d)
        lab.heal()
        log("healed")


def partition_split(c, stop, rnd, log):
    """A random minority (one member, leader or not) cut from the majority
    for 2.5-4 s, heal, every 1.5-3 s."""
    lab = c.fault.lab
    while not stop.wait(rnd.uniform(1.5, 3)):
        m = rnd.randrange(c.n)
        d = _over_election(c, rnd)
        lab.partition([{m}, set(range(c.n)) - {m}])
        log(f"partition: minority {{{m}}} | majority "
            f"{sorted(set(range(c.n)) - {m})} for {d:.1f}s")
        stop.wait(d)
        lab.heal()
        log("healed")


def partition_bridge(c, stop, rnd, log):
    """Cut one link (two members cannot talk, the third talks to both;
    half the time the cut link is the leader's), heal, every 1.5-3 s."""
    lab = c.fault.lab
    while not stop.wait(rnd.uniform(1.5, 3)):
        lead = _leader(c, log)
        if lead is not None and rnd.random() < 0.5:
            a = lead
            b = rnd.choice([j for j in range(c.n) if j != lead])
        else:
            a, b = rnd.sample(range(c.n), 2)
        d = _over_election(c, rnd)
        lab.cut(a, b)
        log(f"partition: link {a}-{b} cut (leader {lead}) for {d:.1f}s")
        stop.wait(d)
        lab.heal()
        log("healed")


# -------------------------------------------------------------- proxies --
def slow_links(c, stop, rnd, log):
    """All peer links 10 +- 8 ms; every 2-4 s one member's incoming links
    become 300 +- 250 ms (etcd's DelayPeerNetwork is 75 +- 50) for 2-3 s,
    long enough to trigger elections when it is the leader's followers'
    links, and out of order arrival is impossible (TCP order is kept)."""
    px = c.fault.px
    for i in range(c.n):
        px.delay(i, 10, 8)
    log("all peer links 10+-8 ms")
    while not stop.wait(rnd.uniform(2, 4)):
        i = rnd.randrange(c.n)
        d = rnd.uniform(2, 3)
        px.delay(i, 300, 250)
        log(f"links into member {i} 300+-250 ms for {d:.1f}s")
        stop.wait(d)
        px.delay(i, 10, 8)
    px.heal()


def lossy_links(c, stop, rnd, log):
    """Every 1-2.5 s, on the links into a random member: reset every
    connection, or stall them 0.5-3 s, or refuse new connections and reset
    for 1-3 s, or blackhole (discard bytes) 1-3 s then reset."""
    px = c.fault.px
    while not stop.wait(rnd.uniform(1, 2.5)):
        i = rnd.randrange(c.n)
        act = rnd.choice(["reset", "stall", "refuse", "blackhole"])
        if act == "reset":
            px.reset(i)
            log(f"reset connections into member {i}")
            continue
        d = rnd.uniform(0.5, 3) if act == "stall" else rnd.uniform(1, 3)
        log(f"{act} links into member {i} for {d:.1f}s")
        if act == "stall":
            px.stall(i, True)
            stop.wait(d)
            px.stall(i, False)
        elif act == "refuse":
            px.refuse(i, True)
            px.reset(i)
            stop.wait(d)
            px.refuse(i, False)
        else:
            px.blackhole(i, True)
            stop.wait(d)
            px.blackhole(i, False)
        log("healed")
    px.heal()


# ------------------------------------------------------------ disk full --
def _log_tail(c, i, n=15):
    return c.proc[i].log_text(n) if c.proc[i] is not None else ""


def disk_full(c, stop, rnd, log):
    """The victim's tmpfs is filled to the last byte for 3-5 s under load
    (the others keep serving), then freed; if the victim stopped, it is
    restarted and must catch up. Repeats every 2-3 s."""
    env = c.fault
    v = env.victim
    while not stop.wait(rnd.uniform(2, 3)):
        log(f"tmpfs of member {v}: {env.usage()}")
        n = env.fill()
        d = rnd.uniform(3, 5)
        log(f"disk of member {v} full (balloon {n >> 20} MiB) for {d:.1f}s")
        stop.wait(d)
        died = not c.alive(v)
        env.free()
        if died:
            rc = c.proc[v].popen.returncode
            text = _log_tail(c, v, 40)
            log(f"member {v} stopped (exit {rc}); disk freed, restarting")
            # fail-stop is fine, a crash is not: want a non-zero exit
            # after an error that says the disk is full
            clean = rc is not None and rc > 0 and "Sanitizer" not in text \
                and any(w in text.lower() for w in
                        ("no space", "enospc", "nospc", "disk full"))
            if not clean:
                c.findings.append(f"disk_full: member {v} did not stop "
                                  f"cleanly on a full disk (exit {rc}, "
                                  f"no 'no space' error logged):\n{text}")
            c.proc[v].stop()
            c.start(v)
            if not _wait_member(c, v, 15):
                c.findings.append(f"disk_full: member {v} did not come back "
                                  f"after space was freed:\n"
                                  f"{_log_tail(c, v)}")
                return
        else:
            log(f"member {v} survived the full disk; freed")


def _wait_member(c, i, timeout):
    """True once member i answers status; False if it exits or times out."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not c.alive(i):
            return False
        try:
            c.status(i, timeout=1.0)
            return True
        except Exception:  # noqa: BLE001 - not yet
            time.sleep(0.1)
    return False


def _wait_exit(c, i, timeout):
    """The exit code if member i exits within timeout, else None."""
    try:
        return c.proc[i].popen.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


# ------------------------------------------------------ damaged files --
def _copy_dir(src, dst):
    subprocess.run(["rm", "-rf", str(dst)], check=True, timeout=60)
    subprocess.run(["cp", "-a", "--sparse=always", str(src), str(dst)],
                   check=True, timeout=120)


def _damage(c, stop, rnd, log, kind):
    """Every 2.5-4 s: SIGKILL a random member, damage its files (walfault),
    restart it and check the outcome against the expectation."""
    fn = walfault.FAULTS[kind]
    while not stop.wait(rnd.uniform(2.5, 4)):
        i = rnd.randrange(c.n)
        c.kill9(i)
        dd = c.data_dirs[i]
        backup = dd.with_name(dd.name + ".pristine")
        _copy_dir(dd, backup)
        what = fn(dd, rnd)
        log(f"kill -9 member {i}; {what or 'nothing to damage'}")
        c.proc[i].stop()
        c.start(i)
        up = _wait_member(c, i, 10)
        rc = None if up else _wait_exit(c, i, 5)
        text = _log_tail(c, i, 30)
        must_refuse = kind == "flip_middle" and what is not None
        may_refuse = kind == "flip_store"
        if up:
            log(f"member {i} restarted")
            if must_refuse:
                c.findings.append(
                    f"{kind}: member {i} STARTED on a WAL with a corrupted "
                    f"record followed by later writes ({what}):\n{text}")
        else:
            seg = what.split(" in ")[1].split(" ")[0] if what and \
                " in " in what else ""
            named = seg and (seg in text or seg.split("/")[-1] in text)
            log(f"member {i} refused to start (exit {rc}); names the file: "
                f"{bool(named)}")
            if not must_refuse and not may_refuse:
                c.findings.append(f"{kind}: member {i} did not restart after "
                                  f"{what} (exit {rc}):\n{text}")
            elif rc is None:
                c.findings.append(f"{kind}: member {i} neither served nor "
                                  f"exited within 15 s:\n{text}")
            elif not named:
                c.findings.append(f"{kind}: member {i} refused to start but "
                                  f"its error does not name the damaged file "
                                  f"{seg}:\n{text}")
            elif rc == 0 or rc < 0:
                c.findings.append(f"{kind}: member {i} refused to start with "
                                  f"exit status {rc} (want a clean non-zero "
                                  f"exit):\n{text}")
            # bring the member back from its undamaged copy
            c.proc[i].stop()
            _copy_dir(backup, dd)
            c.start(i)
            if not _wait_member(c, i, 15):
                c.findings.append(f"{kind}: member {i} did not start from its "
                                  f"undamaged copy:\n{_log_tail(c, i, 30)}")
                return
            log(f"member {i} restored from its undamaged copy")
        subprocess.run(["rm", "-rf", str(backup)], timeout=60)


def torn_tail(c, stop, rnd, log):
    """Cut or zero the newest WAL segment inside its last record: must
    restart (tail truncated) and catch up."""
    _damage(c, stop, rnd, log, "torn_tail")


def flip_last(c, stop, rnd, log):
    """Flip bytes in the last WAL record: a torn tail, must restart."""
    _damage(c, stop, rnd, log, "flip_last")


def flip_middle(c, stop, rnd, log):
    """Flip a byte of a WAL record that later writes follow: must refuse to
    start with an error naming the segment (then restored from a copy)."""
    _damage(c, stop, rnd, log, "flip_middle")


def flip_store(c, stop, rnd, log):
    """Flip bytes in the used part of db/data.mdb: refuse to start naming
    it, or start holding exactly what the others hold."""
    _damage(c, stop, rnd, log, "flip_store")


# ---------------------------------------------------------------- clock --
WALL_JUMPS = ["+1h", "-30s", "+2d", "-1h", "+0 x2", "+10m x0.5", "-5m",
              "+0"]
MONO_JUMPS = ["+5s", "-2s", "+30s", "+0 x2", "+0 x0.5", "-1s", "+0"]


def _clock(c, stop, rnd, log, jumps):
    env = c.fault
    while not stop.wait(rnd.uniform(1.5, 3)):
        spec = rnd.choice(jumps)
        env.set_clock(spec)
        log(f"clock of member {env.victim} set to {spec!r}")
    env.set_clock("+0")


def clock_jump(c, stop, rnd, log):
    """libfaketime on one member, wall clock only (NTP-like steps and
    drift): +1h, -30s, +2d, x2, ... every 1.5-3 s."""
    _clock(c, stop, rnd, log, WALL_JUMPS)


def clock_jump_mono(c, stop, rnd, log):
    """libfaketime on one member faking CLOCK_MONOTONIC too (raft's
    timers): +5s, -2s, +30s, x2, x0.5, ... every 1.5-3 s."""
    _clock(c, stop, rnd, log, MONO_JUMPS)


def clock_back_restart(c, stop, rnd, log):
    """kill -9 the member under libfaketime every 1-2 s and restart it with
    its wall clock set back by about the time it was down plus 0-0.6 s
    (a machine whose clock is behind after a reboot), so the restarted
    member's wall clock re-lives the last moments of its previous life
    while the entries that life proposed are still being applied. Ids
    drawn from the wall clock (request ids) repeat then."""
    env = c.fault
    v = env.victim
    off = 0.0
    while not stop.wait(rnd.uniform(1, 2)):
        t = time.monotonic()
        c.kill9(v)
        stop.wait(rnd.uniform(0.1, 0.4))
        down = time.monotonic() - t
        off -= down + rnd.uniform(0.0, 0.6)
        env.set_clock(f"{off:+.3f}")
        c.proc[v].stop()
        c.start(v)
        log(f"kill -9 member {v}, restarted after {down:.2f}s with its "
            f"wall clock at {off:+.3f}s")
        if not _wait_member(c, v, 10):
            c.findings.append(f"clock_back_restart: member {v} did not "
                              f"restart:\n{_log_tail(c, v)}")
            return


FAULT_SCENARIOS = {
    "partition_leader": (partition_leader, faultenv.NetnsEnv),
    "partition_split": (partition_split, faultenv.NetnsEnv),
    "partition_bridge": (partition_bridge, faultenv.NetnsEnv),
    "slow_links": (slow_links, faultenv.ProxyEnv),
    "lossy_links": (lossy_links, faultenv.ProxyEnv),
    "disk_full": (disk_full, faultenv.TmpfsEnv),
    "torn_tail": (torn_tail, faultenv.Env),
    "flip_last": (flip_last, faultenv.Env),
    "flip_middle": (flip_middle, faultenv.Env),
    "flip_store": (flip_store, faultenv.Env),
    "clock_jump": (clock_jump, faultenv.ClockEnv),
    "clock_jump_mono": (clock_jump_mono, faultenv.ClockMonoEnv),
    "clock_back_restart": (clock_back_restart, faultenv.ClockEnv),
}
