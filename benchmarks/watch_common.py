"""Shared pieces of the watch benchmarks (watch_scale.py, watch_latency.py):
etcd v3 message classes from kvd's proto/ (via protoc-c's descriptor
set; the gRPC method paths are etcd's), a single-member kvd or etcd
started on free 127.0.0.1 ports in a temporary directory and stopped by
PID, and the server's resident memory. Run with /usr/bin/python3."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Messages:
    """etcd v3 message classes from kvd's proto/ files: protoc-c writes
    their descriptor set (descriptor_path), loaded into a private pool.
    Use as generated code: rpc_pb2.WatchRequest, rpc_pb2.PutResponse..."""

    def __init__(self, descriptor_path):
        from google.protobuf import (descriptor_pb2, descriptor_pool,
                                     message_factory)
        fds = descriptor_pb2.FileDescriptorSet.FromString(
            Path(descriptor_path).read_bytes())
        self._pool = descriptor_pool.DescriptorPool()
        for f in fds.file:
            self._pool.Add(f)
        self._factory = message_factory.MessageFactory(self._pool)

    def __getattr__(self, name):
        desc = self._pool.FindMessageTypeByName("etcdserverpb." + name)
        cls = self._factory.GetPrototype(desc)
        setattr(self, name, cls)
        return cls


def load_messages(workdir):
    """Writes the descriptor set into workdir (protoc-c, a build
    dependency); returns (its path, Messages). Worker processes rebuild
    Messages from the path."""
    src = ROOT / "proto"
    out = Path(workdir) / "rpc.desc"
    subprocess.run(["protoc-c", "-I", str(src), "--include_imports",
                    "--descriptor_set_out", str(out),
                    str(src / "etcdserverpb/rpc.proto")], check=True,
                   timeout=60)
    return str(out), Messages(out)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Server:
    """One single-member kvd or etcd on 127.0.0.1 (plaintext), its data in
    a temporary directory, stopped by PID."""

    def __init__(self, kind, kvd_bin=None, extra=()):
        self.kind = kind
        self.dir = Path(tempfile.mkdtemp(prefix=f"watch-bench-{kind}-"))
        self.cport, self.pport = free_port(), free_port()
        curl = f"http://127.0.0.1:{self.cport}"
        purl = f"http://127.0.0.1:{self.pport}"
        exe = kvd_bin if kind == "kvd" else shutil.which("etcd")
        argv = [str(exe), "--name", "m1", "--data-dir",
                str(self.dir / "data"),
                "--listen-client-urls", curl,
                "--advertise-client-urls", curl,
                "--listen-peer-urls", purl,
                "--initial-advertise-peer-urls", purl,
                "--initial-cluster", f"m1={purl}",
                "--log-level", "warn" if kind == "kvd" else "error"]
        argv += list(extra)
        self.log = open(self.dir / "server.log", "wb")
        self.p = subprocess.Popen(argv, stdout=self.log,
                                  stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL,
                                  start_new_session=True)
        deadline = time.monotonic() + 20
        while not port_open(self.cport):
            if self.p.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{kind} did not start: " +
                                   (self.dir / "server.log").read_text())
            time.sleep(0.05)
        self.target = f"127.0.0.1:{self.cport}"

    def version(self):
        r = subprocess.run([self.p.args[0], "--version"],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.splitlines()[0] if r.stdout else "?"

    def rss_kib(self):
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.p.pid, signal.SIGKILL)
                self.p.wait(5)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def percentile(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) -
                                                        1)))))
    return sorted_vals[i]


def machine():
    import platform
    try:
        model = [line.split(":", 1)[1].strip()
                 for line in open("/proc/cpuinfo")
                 if line.startswith("model name")][0]
    except (OSError, IndexError):
        model = platform.processor()
    return f"{os.cpu_count()} cores ({model}), {platform.platform()}"
