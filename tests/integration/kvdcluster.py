"""Helpers for kvd server tests: start a TLS cluster of kvd members on free
127.0.0.1 ports (processes owned by the test's `procs` fixture, stopped by
PID), and talk to it through the JSON gateway with requests."""
import base64
import time

import requests

import kvtest


def b64(s):
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


def unb64(s):
    return base64.b64decode(s).decode()


class Member:
    def __init__(self, cluster, name, cport, pport):
        self.cluster = cluster
        self.name = name
        self.cport = cport
        self.pport = pport
        self.proc = None

    @property
    def curl(self):
        return f"{self.cluster.scheme}://127.0.0.1:{self.cport}"

    @property
    def purl(self):
        return f"https://127.0.0.1:{self.pport}"

    def argv(self):
        c = self.cluster
        certs = c.certs
        a = [c.bin_dir / "kvd", "--name", self.name,
             "--data-dir", c.root / f"{self.name}.etcd",
             "--listen-client-urls", self.curl,
             "--advertise-client-urls", self.curl,
             "--listen-peer-urls", self.purl,
             "--initial-advertise-peer-urls", self.purl,
             "--initial-cluster", c.initial_cluster(),
             "--initial-cluster-token", "kvd-test",
             "--initial-cluster-state", "new",
             "--peer-cert-file", certs["server_cert"],
             "--peer-key-file", certs["server_key"],
             "--peer-trusted-ca-file", certs["ca"],
             "--peer-client-cert-auth",
             "--heartbeat-interval", str(c.heartbeat),
             "--election-timeout", str(c.election),
             "--log-level", "info"]
        if c.tls:
            a += ["--cert-file", certs["server_cert"],
                  "--key-file", certs["server_key"],
                  "--trusted-ca-file", certs["ca"], "--client-cert-auth"]
        return a + list(c.extra)

    def start(self):
        self.proc = self.cluster.procs.start(self.name, self.argv())
        return self.proc

    def wait_listening(self, timeout=20):
        kvtest.wait_for(lambda: not self.proc.alive() or
                        kvtest.port_open(self.cport), timeout=timeout,
                        what=f"{self.name} to listen on {self.cport}")
        assert self.proc.alive(), self.proc.log_text()

    def post(self, path, body, timeout=10, **kw):
        return self.cluster.session.post(self.curl + path, json=body,
                                         timeout=timeout, **kw)

    def call(self, path, body, timeout=10):
        r = self.post(path, body, timeout=timeout)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    def put(self, k, v):
        return self.call("/v3/kv/put", {"key": b64(k), "value": b64(v)})

    def get(self, k, **extra):
        r = self.call("/v3/kv/range", dict({"key": b64(k)}, **extra))
        kvs = r.get("kvs", [])
        return unb64(kvs[0]["value"]) if kvs else None

    def status(self):
        return self.call("/v3/maintenance/status", {})


class Cluster:
    def __init__(self, procs, certs, bin_dir, root, n=3, tls=True,
                 heartbeat=50, election=500, extra=()):
        self.procs = procs
        self.certs = certs
        self.bin_dir = bin_dir
        self.root = root
        self.tls = tls
        self.scheme = "https" if tls else "http"
        self.heartbeat = heartbeat
        self.election = election
        self.extra = extra
        ports = kvtest.free_ports(2 * n)
        self.members = [Member(self, f"m{i + 1}", ports[2 * i],
                               ports[2 * i + 1]) for i in range(n)]
        s = requests.Session()
        s.trust_env = False
        if tls:
            s.verify = str(certs["ca"])
            s.cert = (str(certs["client_cert"]), str(certs["client_key"]))
        self.session = s

    def initial_cluster(self):
        return ",".join(f"{m.name}={m.purl}" for m in self.members)

    def start(self):
        for m in self.members:
            m.start()
        for m in self.members:
            m.wait_listening()
        self.wait_leader()
        return self

    def leader_id(self, members=None):
        """The leader all given live members agree on, or None."""
        ids = set()
        for m in members or self.live():
            try:
                ids.add(m.status().get("leader"))
            except (requests.RequestException, AssertionError):
                return None
        if len(ids) == 1 and None not in ids:
            return ids.pop()
        return None

    def live(self):
        return [m for m in self.members if m.proc and m.proc.alive()]

    def wait_leader(self, timeout=20):
        kvtest.wait_for(lambda: self.leader_id() is not None and
                        self.ready(), timeout=timeout, what="a leader")
        return self.leader()

    def ready(self):
        """A linearizable read goes through on every live member (the
        leader finished its post-election barrier)."""
        try:
            return all(m.post("/v3/kv/range", {"key": b64("__ready")},
                              timeout=3).status_code == 200
                       for m in self.live())
        except requests.RequestException:
            return False

    def leader(self):
        lid = self.leader_id()
        for m in self.live():
            if m.status()["header"]["member_id"] == lid:
                return m
        return None

    def followers(self):
        lead = self.leader()
        return [m for m in self.live() if m is not lead]

    def stop(self):
        codes = {}
        for m in self.members:
            if m.proc is not None:
                codes[m.name] = m.proc.stop()
        return codes


def wait_until(pred, timeout=10, what="condition"):
    kvtest.wait_for(pred, timeout=timeout, what=what)


def retry(fn, timeout=10):
    """Calls fn until it stops raising (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (requests.RequestException, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def stop_checked(c, pm):
    """Stops every member by PID; each must exit 0 with no sanitizer
    report in the logs."""
    codes = c.stop()
    logs = pm.logs()
    assert all(rc == 0 for rc in codes.values()), (codes, logs)
    assert "Sanitizer" not in logs, logs


def running(tmp_path_factory, certs, bin_dir, name, **kw):
    """For a fixture: `yield from running(...)` starts a cluster of kvd
    members (Cluster's keyword arguments), yields it, then stops it with
    stop_checked. The logs are printed when the fixture fails."""
    root = tmp_path_factory.mktemp(name)
    pm = kvtest.ProcessManager(root)
    c = Cluster(pm, certs, bin_dir, root, **kw)
    c.pm = pm
    try:
        c.start()
        yield c
    except BaseException:
        print(pm.logs())
        raise
    finally:
        stop_checked(c, pm)
