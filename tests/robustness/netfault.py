"""netfault — one network namespace per member, joined by a bridge, with
nftables drop rules inside each namespace to cut links (partitions).

    with NetLab(3, log) as lab:          # needs root (CI and dev are root)
        c = Cluster(..., hosts=lab.hosts)
        c.prefix[i] = lab.exec_prefix(i)  # ip netns exec NS
        lab.partition([{0}, {1, 2}])       # 0 cannot talk to 1 or 2
        lab.cut(0, 2)                      # one more pair, both ways
        lab.heal()                         # everything flows again

Layout: a bridge kvrb<pid>b in the root namespace holding 10.213.K.254/24,
and per member a namespace kvrb<pid>-m<i> whose eth0 (a veth whose other end
is on the bridge) holds 10.213.K.(i+1)/24. Clients (the harness) stay in the
root namespace and reach every member through the bridge; partitions cut
only member-to-member traffic, the way a network split between servers
would, so clients on the minority side still reach their member.

Rules live in a table `inet kvrb` inside each namespace (input: drop from
the cut members' addresses; output: drop to them), so they disappear with
the namespace. close() deletes the namespaces and the bridge, also after a
failure, and NetLab() first removes what an earlier, killed harness left
(names carry the harness pid; only dead pids' leftovers are removed).
"""
import os
import re
import subprocess

PREFIX = "kvrb"


def _run(args, check=True, input=None):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                       timeout=20, input=input)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))}: rc={r.returncode} "
                           f"{r.stderr.strip()}")
    return r


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def cleanup_stale():
    """Removes namespaces and bridges left by harnesses that are gone."""
    r = _run(["ip", "netns", "list"], check=False)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(PREFIX + r"(\d+)-m\d+", name)
        if m and not _pid_alive(int(m.group(1))):
            _run(["ip", "netns", "del", name], check=False)
    r = _run(["ip", "-o", "link", "show"], check=False)
    for line in r.stdout.splitlines():
        m = re.match(r"\d+: (" + PREFIX + r"(\d+)[bv]\d*)[@:]", line)
        if m and not _pid_alive(int(m.group(2))):
            _run(["ip", "link", "del", m.group(1)], check=False)


class NetLab:
    def __init__(self, n, log=print):
        self.n = n
        self.log = log
        pid = os.getpid()
        self.tag = f"{PREFIX}{pid}"
        self.bridge = f"{self.tag}b"
        self.ns = [f"{self.tag}-m{i}" for i in range(n)]
        self.veth = [f"{self.tag}v{i}" for i in range(n)]
        self.created_ns = []
        self.created_bridge = False
        self.cuts = set()
        cleanup_stale()
        used = _run(["ip", "-4", "-o", "addr", "show"], check=False).stdout
        for k in [pid % 200 + 20] + list(range(20, 220)):
            if f"10.213.{k}." not in used:
                break
        else:
            raise RuntimeError("no free 10.213.K.0/24 subnet")
        self.subnet = k
        self.hosts = [f"10.213.{k}.{i + 1}" for i in range(n)]

    # ------------------------------------------------------------- setup --
    def __enter__(self):
        try:
            self.setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def setup(self):
        k = self.subnet
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        self.created_bridge = True
        _run(["ip", "addr", "add", f"10.213.{k}.254/24", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        for i in range(self.n):
            ns = self.ns[i]
            _run(["ip", "netns", "add", ns])
            self.created_ns.append(ns)
            _run(["ip", "link", "add", self.veth[i], "type", "veth",
                  "peer", "name", "eth0", "netns", ns])
            _run(["ip", "link", "set", self.veth[i], "master", self.bridge,
                  "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{self.hosts[i]}/24",
                  "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            self._nft(i, "add table inet kvrb\n"
                         "add chain inet kvrb in { type filter hook input "
                         "priority 0; policy accept; }\n"
                         "add chain inet kvrb out { type filter hook output "
                         "priority 0; policy accept; }\n")
        self.log(f"netns lab up: {', '.join(self.ns)} on {self.bridge} "
                 f"10.213.{k}.0/24")

    def exec_prefix(self, i):
        """argv prefix that runs a command inside member i's namespace
        (ip netns exec execs it: the pid stays the command's)."""
        return ["ip", "netns", "exec", self.ns[i]]

    def _nft(self, i, script):
        _run(["ip", "netns", "exec", self.ns[i], "nft", "-f", "-"],
             input=script)

    # ------------------------------------------------------------ faults --
    def _apply(self):
        for i in range(self.n):
            lines = ["flush chain inet kvrb in", "flush chain inet kvrb out"]
            for a, b in self.cuts:
                if i in (a, b):
                    other = self.hosts[b if i == a else a]
                    lines.append(f"add rule inet kvrb in ip saddr {other} drop")
                    lines.append(f"add rule inet kvrb out ip daddr {other} drop")
            self._nft(i, "\n".join(lines) + "\n")

    def cut(self, a, b):
        """Drops all traffic between members a and b (both ways)."""
        self.cuts.add((min(a, b), max(a, b)))
        self._apply()

    def partition(self, groups):
        """Members in different groups cannot talk to each other."""
        where = {m: gi for gi, g in enumerate(groups) for m in g}
        self.cuts = {(a, b) for a in range(self.n) for b in range(a + 1, self.n)
                     if where.get(a, -1) != where.get(b, -2)}
        self._apply()

    def heal(self):
        self.cuts = set()
        self._apply()

    def rules(self, i):
        return _run(["ip", "netns", "exec", self.ns[i], "nft", "list",
                     "table", "inet", "kvrb"], check=False).stdout

    # ----------------------------------------------------------- cleanup --
    def close(self):
        """Deletes the namespaces (their rules and veth ends go with them)
        and the bridge. Safe to call twice; never raises."""
        for ns in self.created_ns:
            _run(["ip", "netns", "del", ns], check=False)
        self.created_ns = []
        for v in self.veth:
            if _run(["ip", "link", "show", v], check=False).returncode == 0:
                _run(["ip", "link", "del", v], check=False)
        if self.created_bridge:
            _run(["ip", "link", "del", self.bridge], check=False)
            self.created_bridge = False
