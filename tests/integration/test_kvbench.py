"""kvbench smoke test: a few hundred requests of put, lease-keepalive and
friends against one kvd member started here (plaintext, and TLS with client
certificates), checking that the summary parses and shows no errors. This
is not a benchmark: speed is measured in docs/benchmarks.md, never here.
Run with /usr/bin/python3; every process is bounded and stopped by PID."""
import re
import subprocess

import pytest

from kvdcluster import Cluster

SUMMARY = {
    "requests": re.compile(r"^\s*requests: (\d+)$", re.M),
    "errors": re.compile(r"^\s*errors: (\d+)$", re.M),
    "throughput": re.compile(r"^\s*throughput: ([0-9.]+) req/s$", re.M),
    "latency": re.compile(
        r"^\s*latency ms: p50 ([0-9.]+) p90 ([0-9.]+) p99 ([0-9.]+) "
        r"p99\.9 ([0-9.]+) max ([0-9.]+) mean ([0-9.]+)$", re.M),
}


def kvbench(bin_dir, *args, timeout=60):
    p = subprocess.run([str(bin_dir / "kvbench"), *map(str, args)],
                       capture_output=True, text=True, timeout=timeout)
    assert "Sanitizer" not in p.stderr, p.stderr
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return p.stdout


def summary(out):
    """The first summary block of out: requests, errors, throughput and the
    latency quantiles, all present and consistent."""
    got = {k: r.search(out) for k, r in SUMMARY.items()}
    assert all(got.values()), out
    lat = [float(x) for x in got["latency"].groups()]
    p50, p90, p99, p999, mx, _ = lat
    assert 0 < p50 <= p90 <= p99 <= p999 <= mx, out
    return {"requests": int(got["requests"].group(1)),
            "errors": int(got["errors"].group(1)),
            "throughput": float(got["throughput"].group(1)),
            "p50": p50}


@pytest.fixture
def plain(procs, certs, bin_dir, tmp_path):
    c = Cluster(procs, certs, bin_dir, tmp_path, n=1, tls=False).start()
    yield c.members[0]
    c.stop()


@pytest.fixture
def tls(procs, certs, bin_dir, tmp_path):
    c = Cluster(procs, certs, bin_dir, tmp_path, n=1, tls=True).start()
    yield c.members[0]
    c.stop()


def test_put_and_keepalive_plaintext(plain, bin_dir):
    ep = f"127.0.0.1:{plain.cport}"
    s = summary(kvbench(bin_dir, "put", "--endpoints", ep, "--total", 200,
                        "--conns", 2, "--clients", 8, "--val-size", 64,
                        "--key-space-size", 50, "--pid", plain.proc.pid))
    assert s["requests"] == 200 and s["errors"] == 0
    s = summary(kvbench(bin_dir, "lease-keepalive", "--endpoints", ep,
                        "--total", 100, "--clients", 4))
    assert s["requests"] == 100 and s["errors"] == 0
    # what put wrote is there: 50 keys of 64 bytes, read through range
    out = kvbench(bin_dir, "range", "0", ":", "--endpoints", ep,
                  "--total", 20, "--consistency", "s")
    assert summary(out)["errors"] == 0


def test_tls_client_certs(tls, bin_dir, certs):
    ep = f"https://127.0.0.1:{tls.cport}"
    auth = ["--cacert", certs["ca"], "--cert", certs["client_cert"],
            "--key", certs["client_key"]]
    s = summary(kvbench(bin_dir, "put", "--endpoints", ep, "--total", 200,
                        *auth))
    assert s["requests"] == 200 and s["errors"] == 0
    s = summary(kvbench(bin_dir, "lease-keepalive", "--endpoints", ep,
                        "--total", 100, "--clients", 2, *auth))
    assert s["requests"] == 100 and s["errors"] == 0


def test_other_commands(plain, bin_dir):
    ep = f"127.0.0.1:{plain.cport}"
    for args in (["txn-put", "--txn-ops", 4, "--key-space-size", 100],
                 ["txn-mixed", "--key-space-size", 100, "--rw-ratio", 1,
                  "--limit", 10],
                 ["lease-grant", "--ttl", 60]):
        out = kvbench(bin_dir, *args, "--endpoints", ep, "--total", 100,
                      "--clients", 4)
        assert "errors: 0" in out and "error " not in out, out
    out = kvbench(bin_dir, "lease-grant", "--endpoints", ep, "--total", 50,
                  "--keep", "--ttl", 2, "--wait-expire", timeout=60)
    assert "expired: all leases gone" in out, out


def test_apiserver_mix_short(plain, bin_dir):
    ep = f"127.0.0.1:{plain.cport}"
    out = kvbench(bin_dir, "apiserver-mix", "--endpoints", ep,
                  "--duration", 2, "--multiple", 0.2, timeout=90)
    assert "unexpected 0" in out, out
    s = summary(out)
    assert s["errors"] == 0 and s["requests"] > 50, out


def test_errors_are_reported(bin_dir, tmp_path):
    # nothing listens there: connecting fails, and kvbench says so
    p = subprocess.run([str(bin_dir / "kvbench"), "put", "--endpoints",
                        "127.0.0.1:1", "--total", "1"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "connect" in p.stderr
