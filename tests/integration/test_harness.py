"""Self-tests of the integration harness: the PKI, process handling and
the etcd reference fixture all work as later tests assume."""
import signal
import subprocess
import time

import pytest
import requests

import kvtest


def openssl(*args):
    return kvtest.run(["openssl", *args], check=False)


def test_certs_chain_to_ca(certs):
    for leaf in ("server", "client"):
        r = openssl("verify", "-CAfile", certs["ca"], certs[f"{leaf}_cert"])
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().endswith(": OK")
    r = openssl("verify", "-CAfile", certs["ca"], certs["rogue_cert"])
    assert r.returncode != 0, "a cert from another CA must not verify"


def test_server_cert_has_loopback_sans(certs):
    r = openssl("x509", "-in", certs["server_cert"], "-noout", "-ext",
                "subjectAltName")
    assert r.returncode == 0, r.stderr
    assert "IP Address:127.0.0.1" in r.stdout
    assert "DNS:localhost" in r.stdout


def test_free_ports_are_distinct_and_bindable():
    ports = kvtest.free_ports(5)
    assert len(set(ports)) == 5
    assert all(not kvtest.port_open(p) for p in ports)


def test_wait_for_is_bounded():
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="never"):
        kvtest.wait_for(lambda: False, timeout=0.3, what="never")
    assert time.monotonic() - t0 < 2


def test_process_stopped_by_pid(procs):
    p = procs.start("sleeper", ["sleep", "60"])
    assert p.alive()
    assert p.stop(timeout=5) == -signal.SIGTERM
    assert not p.alive()


def test_process_that_ignores_sigterm_is_killed(procs):
    p = procs.start("stubborn", ["sh", "-c", "trap '' TERM; sleep 60"])
    time.sleep(0.2)
    t0 = time.monotonic()
    assert p.stop(timeout=0.5) == -signal.SIGKILL
    assert time.monotonic() - t0 < 5


def test_reference_etcd_over_tls(etcd, certs):
    """The reference etcd serves its JSON gateway over TLS with our PKI and
    rejects a client whose certificate comes from another CA."""
    _, url = etcd(tls=True, client_cert_auth=True)
    s = requests.Session()
    s.trust_env = False
    s.verify = str(certs["ca"])
    s.cert = (str(certs["client_cert"]), str(certs["client_key"]))
    r = kvtest.wait_for(
        lambda: s.post(f"{url}/v3/kv/put", json={"key": "Zm9v",
                                                  "value": "YmFy"},
                       timeout=2), timeout=20, what="etcd put")
    assert r.status_code == 200, r.text
    r = s.post(f"{url}/v3/kv/range", json={"key": "Zm9v"}, timeout=5)
    assert r.json()["kvs"][0]["value"] == "YmFy"
    bad = requests.Session()
    bad.trust_env = False
    bad.verify = str(certs["ca"])
    bad.cert = (str(certs["rogue_cert"]), str(certs["rogue_key"]))
    with pytest.raises(requests.exceptions.RequestException):
        bad.post(f"{url}/v3/kv/range", json={"key": "Zm9v"}, timeout=5)


def test_etcdctl_against_reference(etcd):
    _, url = etcd()
    r = kvtest.run(["etcdctl", "--endpoints", url, "put", "k", "v"],
                   env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
    assert r.stdout.strip() == "OK"
    r = kvtest.run(["etcdctl", "--endpoints", url, "get", "k"],
                   env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
    assert r.stdout.split() == ["k", "v"]
