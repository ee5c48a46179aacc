"""cluster — start an n-member etcd-compatible cluster (real etcd or kvd)
on 127.0.0.1 with etcd's flags, and inject process faults into it.

    c = Cluster(procs, workdir, binary="etcd", n=3, tls=certs)
    c.start_all(); c.wait_ready()
    c.kill9(1); c.start(1); c.sigstop(c.leader()); c.sigcont(...)
    c.stop_all()

procs is a kvtest.ProcessManager (the `procs` fixture, or one made by
run.py); every process is stopped by the PID it was started with.  tls is
None (plain http everywhere) or the dict of kvtest.make_certs: then client
and peer URLs are https, clients must present a certificate signed by the
CA (--client-cert-auth) and peers authenticate each other the same way.
"""
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
import kvtest  # noqa: E402


class Cluster:
    def __init__(self, procs, workdir, binary="etcd", n=3, tls=None,
                 election_ms=1000, heartbeat_ms=100, extra_args=(),
                 hosts=None, split_peer_ports=False):
        exe = shutil.which(binary) if os.sep not in str(binary) else binary
        if exe is None or not os.path.exists(exe):
            raise FileNotFoundError(f"server binary {binary!r} not found")
        self.exe = str(exe)
        self.procs = procs
        self.workdir = Path(workdir)
        self.n = n
        self.tls = tls
        self.election_ms = election_ms
        self.heartbeat_ms = heartbeat_ms
        self.extra_args = list(extra_args)
        self.token = f"rb-{os.getpid()}-{int(time.time())}"
        ports = kvtest.free_ports(3 * n if split_peer_ports else 2 * n)
        scheme = "https" if tls else "http"
        # hosts[i]: the address member i listens on (127.0.0.1, or its
        # network namespace's address, see netfault.NetLab)
        self.hosts = list(hosts or ["127.0.0.1"] * n)
        self.client_ports = ports[:n]
        # peer_ports are advertised (--initial-cluster); with
        # split_peer_ports the member listens on peer_listen_ports instead
        # and a proxy (proxy.PeerProxies) forwards one to the other
        self.peer_ports = ports[n:2 * n]
        self.peer_listen_ports = (ports[2 * n:] if split_peer_ports
                                  else self.peer_ports)
        self.names = [f"m{i}" for i in range(n)]
        self.client_urls = [f"{scheme}://{h}:{p}"
                            for h, p in zip(self.hosts, self.client_ports)]
        self.peer_urls = [f"{scheme}://{h}:{p}"
                          for h, p in zip(self.hosts, self.peer_ports)]
        self.peer_listen_urls = [f"{scheme}://{h}:{p}" for h, p in
                                 zip(self.hosts, self.peer_listen_ports)]
        # per-member process wrapping, set by a fault environment:
        # prefix[i] goes before argv (e.g. ip netns exec NS), env[i] is
        # added to the environment (e.g. LD_PRELOAD=libfaketime)
        self.prefix = [[] for _ in range(n)]
        self.env = [{} for _ in range(n)]
        self.data_dirs = [self.workdir / f"{nm}.data" for nm in self.names]
        self.proc = [None] * n
        self.started = [False] * n
        self.stopped_sig = [False] * n
        self.restarts = 0

    # ---------------------------------------------------------- clients --
    @property
    def client_tls(self):
        if not self.tls:
            return None
        return {"ca": self.tls["ca"], "cert": self.tls["client_cert"],
                "key": self.tls["client_key"]}

    def _session(self):
        s = requests.Session()
        t = self.client_tls
        if t:
            s.verify = str(t["ca"])
            s.cert = (str(t["cert"]), str(t["key"]))
        return s

    def status(self, i, timeout=1.0):
        """POST /v3/maintenance/status on member i (raises on failure)."""
        with self._session() as s:
            r = s.post(self.client_urls[i] + "/v3/maintenance/status",
                       data="{}", timeout=timeout)
            r.raise_for_status()
            return r.json()

    def leader(self, timeout=10.0):
        """Index of the member that all reachable members call leader."""
        def find():
            ids = {}
            leaders = set()
            for i in range(self.n):
                if not self.alive(i) or self.stopped_sig[i]:
                    continue
                try:
                    st = self.status(i)
                except (requests.RequestException, ValueError):
                    continue
                ids[st["header"]["member_id"]] = i
                if st.get("leader") and st["leader"] != "0":
                    leaders.add(st["leader"])
            if len(leaders) == 1:
                lid = leaders.pop()
                if lid in ids:
                    return ("found", ids[lid])
            return None
        return kvtest.wait_for(find, timeout=timeout, what="a leader")[1]

    # --------------------------------------------------------- processes --
    def argv(self, i):
        name = self.names[i]
        cluster = ",".join(f"{nm}={u}" for nm, u in zip(self.names, self.peer_urls))
        a = [self.exe, "--name", name,
             "--data-dir", self.data_dirs[i],
             "--listen-client-urls", self.client_urls[i],
             "--advertise-client-urls", self.client_urls[i],
             "--listen-peer-urls", self.peer_listen_urls[i],
             "--initial-advertise-peer-urls", self.peer_urls[i],
             "--initial-cluster", cluster,
             "--initial-cluster-state", "new",
             "--initial-cluster-token", self.token,
             "--election-timeout", str(self.election_ms),
             "--heartbeat-interval", str(self.heartbeat_ms)]
        if self.tls:
            t = self.tls
            a += ["--cert-file", t["server_cert"], "--key-file", t["server_key"],
                  "--trusted-ca-file", t["ca"], "--client-cert-auth",
                  "--peer-cert-file", t["server_cert"],
                  "--peer-key-file", t["server_key"],
                  "--peer-trusted-ca-file", t["ca"],
                  "--peer-client-cert-auth"]
        if os.path.basename(self.exe) == "etcd":
            a += ["--log-level", "warn"]
        return list(self.prefix[i]) + a + self.extra_args

    def alive(self, i):
        return self.proc[i] is not None and self.proc[i].alive()

    def start(self, i):
        """(Re)starts member i with the same data dir and flags."""
        assert not self.alive(i), f"member {i} already running"
        env = dict(os.environ)
        env.update(self.env[i])
        if self.started[i]:
            self.restarts += 1
        self.proc[i] = self.procs.start(
            f"{self.names[i]}-{self.restarts}" if self.started[i]
            else self.names[i], self.argv(i), env=env)
        self.started[i] = True
        self.stopped_sig[i] = False

    def start_all(self):
        for i in range(self.n):
            self.start(i)

    def wait_ready(self, timeout=30.0):
        """Waits until every live member answers status and a leader
        exists; returns the leader index."""
        for i in range(self.n):
            if self.alive(i):
                kvtest.wait_for(lambda i=i: (not self.alive(i)) or self.status(i),
                                timeout=timeout, what=f"member {i} status")
                if not self.alive(i):
                    raise RuntimeError(f"member {i} exited:\n"
                                       f"{self.proc[i].log_text()}")
        return self.leader(timeout)

    def kill9(self, i):
        """SIGKILL member i (a crash) and reap it."""
        if self.stopped_sig[i]:
            self.sigcont(i)
        if self.proc[i] is not None:
            self.proc[i].kill()

    def stop(self, i):
        """SIGTERM member i (SIGKILL after 10 s)."""
        if self.stopped_sig[i]:
            self.sigcont(i)
        if self.proc[i] is not None:
            self.proc[i].stop()

    def sigstop(self, i):
        if self.alive(i):
            self.proc[i].signal(signal.SIGSTOP)
            self.stopped_sig[i] = True

    def sigcont(self, i):
        if self.alive(i):
            self.proc[i].signal(signal.SIGCONT)
        self.stopped_sig[i] = False

    def heal(self):
        """Resumes paused members and restarts dead ones."""
        for i in range(self.n):
            if self.stopped_sig[i]:
                self.sigcont(i)
            if not self.alive(i):
                if self.proc[i] is not None:
                    self.proc[i].stop()  # close its log
                self.start(i)

    def stop_all(self):
        for i in range(self.n):
            if self.proc[i] is not None:
                self.stop(i)
