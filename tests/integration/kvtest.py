"""kvtest — helpers shared by kvd's integration tests.

Everything here keeps tests hermetic: servers listen on 127.0.0.1 on ports
picked by the kernel, every wait is bounded, and every process is stopped by
the PID we started, never by name.
"""
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

SOURCE_DIR = Path(os.environ.get("KV_SOURCE_DIR",
                                 Path(__file__).resolve().parents[2]))
BUILD_DIR = Path(os.environ.get("KV_BUILD_DIR", SOURCE_DIR / "build"))
BIN_DIR = BUILD_DIR / "bin"


def free_port():
    """Returns a TCP port on 127.0.0.1 that was free a moment ago.

    The socket is closed before returning, so a race with another process
    is possible but unlikely; callers retry a failed bind by starting
    again with new ports."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n):
    ports = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Polls predicate() until it returns a truthy value, which is returned.

    Raises TimeoutError naming `what` after `timeout` seconds. Exceptions
    from predicate count as "not yet"; the last one is chained."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = predicate()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - anything means "not yet"
            last = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}") from last


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Proc:
    """One child process with its log file."""

    def __init__(self, name, argv, log_path, env=None, cwd=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            self.argv, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, cwd=cwd,
            start_new_session=True)
        self.pid = self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, timeout=10.0):
        """SIGTERM, then SIGKILL after `timeout` s. Returns the exit code."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()
        return self.popen.returncode

    def kill(self):
        """kill -9, as a crash would."""
        if self.alive():
            self.signal(signal.SIGKILL)
            self.popen.wait(5)
        return self.popen.returncode

    def log_text(self, tail=200):
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail:])


class ProcessManager:
    """Starts processes for one test and stops all of them at the end."""

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.procs = []

    def start(self, name, argv, env=None, cwd=None):
        p = Proc(name, argv, self.workdir / f"{name}.log", env=env, cwd=cwd)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in reversed(self.procs):
            p.stop()

    def logs(self):
        return "\n".join(f"----- {p.name} (pid {p.pid}, {p.log_path}) -----\n"
                         f"{p.log_text()}" for p in self.procs)


def run(argv, timeout=60, check=True, **kw):
    """subprocess.run with a timeout and captured text output."""
    return subprocess.run([str(a) for a in argv], capture_output=True,
                          text=True, timeout=timeout, check=check, **kw)


def make_certs(d):
    """Creates a test PKI in directory d with the openssl CLI.

    Files: ca.crt/ca.key (a CA), server.crt/key (SAN 127.0.0.1, ::1 and
    localhost; serverAuth+clientAuth, usable for peers too), client.crt/key
    (CN=client, clientAuth), other-ca.crt and rogue.crt/key (a cert from an
    unrelated CA, for rejection tests). Returns a dict name -> Path."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)

    def ossl(*args):
        run(["openssl", *args], cwd=d)

    def ca(name, cn):
        ossl("req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "3650",
             "-subj", f"/CN={cn}", "-keyout", f"{name}.key",
             "-out", f"{name}.crt",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def leaf(name, cn, ca_name, san, eku):
        ext = d / f"{name}.ext"
        ext.write_text(f"basicConstraints=CA:FALSE\n"
                       f"keyUsage=critical,digitalSignature,keyEncipherment\n"
                       f"extendedKeyUsage={eku}\n"
                       + (f"subjectAltName={san}\n" if san else ""))
        ossl("req", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={cn}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr")
        ossl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca_name}.crt",
             "-CAkey", f"{ca_name}.key", "-CAcreateserial", "-days", "3650",
             "-extfile", f"{name}.ext", "-out", f"{name}.crt")

    ca("ca", "kvd test CA")
    leaf("server", "kvd-server", "ca",
         "IP:127.0.0.1,IP:::1,DNS:localhost", "serverAuth,clientAuth")
    leaf("client", "client", "ca", None, "clientAuth")
    ca("other-ca", "unrelated CA")
    leaf("rogue", "rogue", "other-ca", "IP:127.0.0.1,DNS:localhost",
         "serverAuth,clientAuth")
    return {
        "dir": d,
        "ca": d / "ca.crt",
        "server_cert": d / "server.crt", "server_key": d / "server.key",
        "client_cert": d / "client.crt", "client_key": d / "client.key",
        "rogue_cert": d / "rogue.crt", "rogue_key": d / "rogue.key",
        "other_ca": d / "other-ca.crt",
    }
