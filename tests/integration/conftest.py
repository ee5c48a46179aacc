"""pytest fixtures for kvd's integration tests (run with /usr/bin/python3).

Fixtures:
  certs      session-wide test PKI (kvtest.make_certs)
  procs      a ProcessManager whose processes are stopped after the test;
             their logs are printed when the test fails
  bin_dir    build/bin of the tree under test
  etcd       factory starting a real single-member etcd 3.4 (the reference)
"""
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import kvtest  # noqa: E402

# python-requests would ignore a session's own CA bundle when these are set.
os.environ.pop("REQUESTS_CA_BUNDLE", None)
os.environ.pop("CURL_CA_BUNDLE", None)


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return kvtest.make_certs(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def bin_dir():
    if not kvtest.BIN_DIR.is_dir():
        pytest.fail(f"build output {kvtest.BIN_DIR} missing: run make build")
    return kvtest.BIN_DIR


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def procs(request, tmp_path):
    pm = kvtest.ProcessManager(tmp_path)
    yield pm
    failed = getattr(request.node, "rep_call", None)
    pm.stop_all()
    if failed is not None and failed.failed:
        print("\n" + pm.logs())


@pytest.fixture
def etcd(procs, tmp_path, certs):
    """Factory: etcd(tls=True) starts a real etcd 3.4 on free ports and
    returns (proc, client_url). Stopped with the test's other processes."""
    exe = shutil.which("etcd")
    if exe is None:
        pytest.fail("etcd not installed: run scripts/install-deps.sh")

    def start(tls=False, client_cert_auth=False, name="etcd"):
        cport, pport = kvtest.free_ports(2)
        scheme = "https" if tls else "http"
        curl = f"{scheme}://127.0.0.1:{cport}"
        purl = f"http://127.0.0.1:{pport}"
        argv = [exe, "--name", name, "--data-dir", tmp_path / f"{name}.etcd",
                "--listen-client-urls", curl, "--advertise-client-urls", curl,
                "--listen-peer-urls", purl,
                "--initial-advertise-peer-urls", purl,
                "--initial-cluster", f"{name}={purl}",
                "--log-level", "warn"]
        if tls:
            argv += ["--cert-file", certs["server_cert"],
                     "--key-file", certs["server_key"]]
            if client_cert_auth:
                argv += ["--client-cert-auth",
                         "--trusted-ca-file", certs["ca"]]
        env = dict(os.environ, ETCD_UNSUPPORTED_ARCH=os.environ.get(
            "ETCD_UNSUPPORTED_ARCH", ""))
        p = procs.start(name, argv, env=env)
        kvtest.wait_for(lambda: not p.alive() or kvtest.port_open(cport),
                        timeout=20, what=f"{name} to listen on {cport}")
        if not p.alive():
            pytest.fail(f"{name} exited early:\n{p.log_text()}")
        return p, curl

    return start
