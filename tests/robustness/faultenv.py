"""faultenv — the environments the fault scenarios run a cluster in.

An environment is set up before the cluster starts and closed after every
member has been stopped, in a `finally`, also when the run failed:

    env = Env(workdir, rnd, log, tls=None)
    env.setup()                              # may raise: then env.close()
    c = Cluster(..., **env.cluster_kwargs())
    env.attach(c)                            # per-member wrapping
    ... nemesis uses c.fault (= env) ...
    env.heal(c)                              # undo faults before final reads
    env.close()                              # remove namespaces, proxies,
                                             # mounts (never raises)

| class | what it gives |
|---|---|
| Env | nothing (process faults only) |
| NetnsEnv | one network namespace per member + nftables (netfault.NetLab) |
| ProxyEnv | a fault-injecting TCP proxy in front of each peer listener |
| TmpfsEnv | one member's data dir on a small tmpfs (disk full) |
| ClockEnv | one member under libfaketime, clock set from a file |
"""
import os
import re
import subprocess
import time
from pathlib import Path

import netfault
import proxy

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


class Env:
    def __init__(self, workdir, rnd, log, tls=None):
        self.workdir = Path(workdir)
        self.rnd = rnd
        self.log = log
        self.tls = tls
        self.c = None

    def setup(self):
        pass

    def cluster_kwargs(self):
        return {}

    def attach(self, c):
        self.c = c

    def heal(self, c):
        pass

    def close(self):
        pass


class NetnsEnv(Env):
    """Members in their own network namespaces: c.fault.lab.partition()."""

    def setup(self):
        if self.tls:
            raise ValueError("netns scenarios run without --tls (the test "
                             "certificates name 127.0.0.1 only)")
        self.lab = netfault.NetLab(3, self.log)
        self.lab.setup()

    def cluster_kwargs(self):
        return {"hosts": self.lab.hosts}

    def attach(self, c):
        super().attach(c)
        for i in range(c.n):
            c.prefix[i] = self.lab.exec_prefix(i)

    def heal(self, c):
        self.lab.heal()

    def close(self):
        lab = getattr(self, "lab", None)
        if lab is not None:
            lab.close()


class ProxyEnv(Env):
    """Peers reach member i through c.fault.px (proxy.PeerProxies) link i."""

    def cluster_kwargs(self):
        return {"split_peer_ports": True}

    def attach(self, c):
        super().attach(c)
        self.px = proxy.PeerProxies(
            list(zip(c.peer_ports, c.peer_listen_ports)),
            seed=self.rnd.randrange(1 << 30))

    def heal(self, c):
        self.px.heal()
        self.log(f"proxy stats {self.px.stats()}")

    def close(self):
        px = getattr(self, "px", None)
        if px is not None:
            px.close()


def _mounts():
    with open("/proc/mounts") as f:
        return [line.split() for line in f]


def cleanup_stale_mounts():
    """Unmounts tmpfs mounts left by harnesses that are gone (their source
    name is kvrb<pid>)."""
    for fields in _mounts():
        m = re.fullmatch(netfault.PREFIX + r"(\d+)", fields[0])
        if m and fields[2] == "tmpfs" and not netfault._pid_alive(
                int(m.group(1))):
            subprocess.run(["umount", "-l", fields[1]], capture_output=True,
                           timeout=20)


class TmpfsEnv(Env):
    """One member (c.fault.victim) keeps its data dir on a tmpfs of
    size_mb; fill() takes every free byte with a balloon file, free()
    deletes it."""

    size_mb = 100  # a 64 MiB preallocated WAL segment + LMDB + snapshots

    def setup(self):
        cleanup_stale_mounts()
        self.mnt = None

    def attach(self, c):
        super().attach(c)
        self.victim = self.rnd.randrange(c.n)
        d = Path(c.data_dirs[self.victim])
        d.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o",
                        f"size={self.size_mb}m,mode=0700",
                        f"{netfault.PREFIX}{os.getpid()}", str(d)],
                       check=True, capture_output=True, timeout=20)
        self.mnt = d
        self.balloon = d / "balloon"
        self.log(f"member {self.victim} data dir on tmpfs "
                 f"size={self.size_mb}m")

    def free_bytes(self):
        st = os.statvfs(self.mnt)
        return st.f_bavail * st.f_frsize

    def usage(self):
        """'path=bytes ...' of the files on the tmpfs (for the log)."""
        out = []
        for p in sorted(self.mnt.rglob("*")):
            try:
                if p.is_file():
                    out.append(f"{p.relative_to(self.mnt)}="
                               f"{p.stat().st_blocks * 512 >> 20}M")
            except OSError:
                pass
        return " ".join(out)

    def fill(self):
        """Writes the balloon until ENOSPC (1 MiB, then 4 KiB writes);
        returns its size."""
        n = 0
        try:
            fd = os.open(self.balloon, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                         0o600)
        except OSError:  # already full: not even an inode left
            return 0
        try:
            for size in (1 << 20, 4096):
                chunk = b"\xa5" * size
                while True:
                    try:
                        w = os.write(fd, chunk)
                    except OSError:
                        break
                    n += w
                    if w < size:
                        break
        finally:
            os.close(fd)
        return n

    def free(self):
        try:
            self.balloon.unlink()
        except FileNotFoundError:
            pass

    def heal(self, c):
        self.free()

    def close(self):
        if self.mnt is None:
            return
        for _ in range(20):
            r = subprocess.run(["umount", str(self.mnt)], capture_output=True,
                               timeout=20)
            if r.returncode == 0:
                break
            time.sleep(0.25)
        else:
            subprocess.run(["umount", "-l", str(self.mnt)],
                           capture_output=True, timeout=20)
        self.mnt = None


class ClockEnv(Env):
    """One member (c.fault.victim) runs under libfaketime reading its
    offset from a file every second: set_clock("+1h"), "-30s", "+0 x2".
    monotonic=False fakes only the wall clock (an NTP step);
    monotonic=True fakes CLOCK_MONOTONIC too (harsher: raft's timers)."""

    monotonic = False

    def setup(self):
        if not os.path.exists(FAKETIME_LIB):
            raise FileNotFoundError(f"{FAKETIME_LIB}: install libfaketime "
                                    f"(scripts/install-deps.sh)")

    def attach(self, c):
        super().attach(c)
        self.victim = self.rnd.randrange(c.n)
        self.file = self.workdir / f"faketime-{c.names[self.victim]}"
        self.set_clock("+0")
        asan = os.environ.get("ASAN_OPTIONS", "")
        env = {"LD_PRELOAD": FAKETIME_LIB,
               "FAKETIME_TIMESTAMP_FILE": str(self.file),
               "FAKETIME_CACHE_DURATION": "1",
               # libasan must otherwise come first in the library list
               "ASAN_OPTIONS": (asan + ":" if asan else "") +
               "verify_asan_link_order=0"}
        if not self.monotonic:
            env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
        c.env[self.victim] = env
        self.log(f"member {self.victim} under libfaketime "
                 f"(monotonic {'faked' if self.monotonic else 'real'})")

    def set_clock(self, spec):
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(spec + "\n")
        os.replace(tmp, self.file)

    def heal(self, c):
        self.set_clock("+0")


class ClockMonoEnv(ClockEnv):
    monotonic = True
