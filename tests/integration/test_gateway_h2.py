"""The JSON gateway over HTTP/2: a request on an h2 connection whose
content-type is not application/grpc* goes to the same routes as over
HTTP/1.1 (etcd's grpcHandlerFunc), so curl, which negotiates h2 over TLS,
gets the JSON answer instead of a gRPC 415. Driven with curl (--http2,
its default, --http1.1 for the reference answer, and
--http2-prior-knowledge on a plaintext member). Run with /usr/bin/python3;
processes are stopped by PID."""
import base64
import json
import os
import subprocess

import pytest

from kvdcluster import b64, running

ETCDCTL = "/usr/bin/etcdctl"
CURL = "/usr/bin/curl"
MARK = "\n@@curl@@"


def _env():
    env = dict(os.environ)
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY",
              "all_proxy", "ALL_PROXY", "CURL_CA_BUNDLE"):
        env.pop(k, None)
    return env


def _cluster(tmp_path_factory, certs, bin_dir, tls):
    yield from running(tmp_path_factory, certs, bin_dir, "kvd-gwh2", n=1,
                       tls=tls)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, certs, bin_dir):
    yield from _cluster(tmp_path_factory, certs, bin_dir, True)


@pytest.fixture(scope="module")
def plain(tmp_path_factory, certs, bin_dir):
    yield from _cluster(tmp_path_factory, certs, bin_dir, False)


def curl(c, path, proto, data=None, method=None, data_file=None,
         extra=()):
    """Returns (http_code, http_version, body bytes)."""
    m = c.members[0]
    argv = [CURL, "-sS", "--noproxy", "*", "--max-time", "15",
            "-w", MARK + "%{http_code} %{http_version}"]
    if proto is not None:
        argv.append(proto)
    if c.tls:
        certs = c.certs
        argv += ["--cacert", str(certs["ca"]), "--cert",
                 str(certs["client_cert"]), "--key",
                 str(certs["client_key"])]
    if method is not None:
        argv += ["-X", method]
    if data is not None:
        argv += ["--data-binary", data]
    if data_file is not None:
        argv += ["--data-binary", "@" + str(data_file)]
    argv += list(extra)
    argv.append(m.curl + path)
    r = subprocess.run(argv, capture_output=True, timeout=30, env=_env())
    assert r.returncode == 0, (argv, r.stdout, r.stderr)
    body, _, tail = r.stdout.rpartition(MARK.encode())
    code, version = tail.decode().split()
    return int(code), version, body


def both(c, path, data=None, method=None, h2="--http2"):
    """The same request over HTTP/2 and over HTTP/1.1: asserts that the
    first really used HTTP/2 and that status and body agree; returns
    (status, body)."""
    code2, v2, body2 = curl(c, path, h2, data=data, method=method)
    code1, v1, body1 = curl(c, path, "--http1.1", data=data, method=method)
    assert v2 == "2", (path, v2)
    assert v1 == "1.1", (path, v1)
    assert (code2, body2) == (code1, body1), (path, body2, body1)
    return code2, body2


def put_body(k, v):
    return json.dumps({"key": b64(k), "value": b64(v)})


def test_curl_default_negotiates_h2_and_gets_json(cluster):
    # the README's command, verbatim apart from the files and the port
    code, version, body = curl(cluster, "/v3/kv/put", None, method="POST",
                               data='{"key":"Zm9v","value":"YmFy"}')
    assert version == "2", version
    assert code == 200, body
    j = json.loads(body)
    assert int(j["header"]["revision"]) >= 2, j


def test_put_range_round_trip(cluster):
    for i, proto in enumerate(["--http2", None, "--http1.1"]):
        code, version, body = curl(cluster, "/v3/kv/put", proto,
                                   data=put_body(f"k{i}", f"v{i}\u00e9"))
        assert code == 200, body
        assert "header" in json.loads(body)
    for i in range(3):
        code, body = both(cluster, "/v3/kv/range",
                          data=json.dumps({"key": b64(f"k{i}")}))
        assert code == 200
        kvs = json.loads(body)["kvs"]
        assert base64.b64decode(kvs[0]["value"]).decode() == f"v{i}\u00e9"
    # the v3beta alias
    code, body = both(cluster, "/v3beta/kv/range",
                      data=json.dumps({"key": b64("k0")}))
    assert code == 200 and json.loads(body)["kvs"]


def test_txn(cluster):
    txn = {
        "compare": [{"key": b64("tx"), "target": "VERSION",
                     "result": "EQUAL", "version": "0"}],
        "success": [{"request_put": {"key": b64("tx"),
                                     "value": b64("1")}}],
        "failure": [{"request_range": {"key": b64("tx")}}],
    }
    code, version, body = curl(cluster, "/v3/kv/txn", "--http2",
                               data=json.dumps(txn))
    assert (code, version) == (200, "2"), body
    assert json.loads(body)["succeeded"] is True
    # the second time the compare fails: same answer on both transports
    code, body = both(cluster, "/v3/kv/txn", data=json.dumps(txn))
    j = json.loads(body)
    assert code == 200 and not j.get("succeeded")
    kv = j["responses"][0]["response_range"]["kvs"][0]
    assert base64.b64decode(kv["value"]) == b"1"


def test_errors_match_http1(cluster):
    code, body = both(cluster, "/v3/kv/put", data="{not json")
    assert code == 400
    j = json.loads(body)
    assert j["code"] == 3 and j["error"] == j["message"], j
    code, body = both(cluster, "/v3/kv/nosuch", data="{}")
    assert code == 404 and body == b"Not Found\n"
    code, body = both(cluster, "/nosuch", data="{}")
    assert code == 404 and body == b"404 page not found\n"
    code, body = both(cluster, "/v3/kv/put", method="GET")
    assert code == 405 and body == b"Method Not Allowed\n"
    code, body = both(cluster, "/v3/auth/enable", data="{}")
    assert code == 501 and json.loads(body)["code"] == 12


def test_version_and_health(cluster):
    code, body = both(cluster, "/version")
    assert code == 200
    assert set(json.loads(body)) == {"etcdserver", "etcdcluster"}
    code, body = both(cluster, "/health")
    assert code == 200 and json.loads(body) == {"health": "true"}
    code, body = both(cluster, "/health", method="POST")
    assert code == 405
    # HEAD: the headers only
    code, version, head = curl(cluster, "/version", "--http2",
                               extra=["-I"])
    assert (code, version) == (200, "2"), head
    assert b"content-type: application/json" in head.lower(), head


def test_body_limit(cluster, tmp_path):
    big = tmp_path / "big.json"
    big.write_bytes(b'{"key":"' + b"A" * (4 * 1024 * 1024) + b'"}')
    code, version, body = curl(cluster, "/v3/kv/put", "--http2",
                               data_file=big)
    assert (code, version) == (413, "2"), body
    # the connection's other streams are unaffected
    code, version, _ = curl(cluster, "/health", "--http2")
    assert (code, version) == (200, "2")


def test_text_plain_is_not_grpc_415(cluster):
    code, version, body = curl(
        cluster, "/etcdserverpb.KV/Range", "--http2", data="x",
        extra=["-H", "content-type: text/plain"])
    assert version == "2"
    # the gateway's answer for a path outside /v3/ (etcd: its HTTP mux)
    assert code == 404 and body == b"404 page not found\n"


def test_grpc_still_served_on_the_port(cluster):
    certs = cluster.certs
    argv = [ETCDCTL, "--endpoints=" + cluster.members[0].curl,
            "--cacert", str(certs["ca"]), "--cert",
            str(certs["client_cert"]), "--key", str(certs["client_key"]),
            "--dial-timeout=5s", "--command-timeout=15s"]
    env = dict(_env(), ETCDCTL_API="3")
    r = subprocess.run(argv + ["put", "g", "rpc"], capture_output=True,
                       text=True, timeout=30, env=env)
    assert r.returncode == 0 and r.stdout == "OK\n", r.stderr
    r = subprocess.run(argv + ["get", "g"], capture_output=True, text=True,
                       timeout=30, env=env)
    assert r.returncode == 0 and r.stdout == "g\nrpc\n", r.stderr
    # and the gateway over h2 sees the gRPC write
    code, body = both(cluster, "/v3/kv/range",
                      data=json.dumps({"key": b64("g")}))
    kv = json.loads(body)["kvs"][0]
    assert base64.b64decode(kv["value"]) == b"rpc"


def test_plaintext_prior_knowledge(plain):
    h2 = "--http2-prior-knowledge"
    code, version, body = curl(plain, "/v3/kv/put", h2,
                               data=put_body("p", "q"))
    assert (code, version) == (200, "2"), body
    code, body = both(plain, "/v3/kv/range",
                      data=json.dumps({"key": b64("p")}), h2=h2)
    kv = json.loads(body)["kvs"][0]
    assert base64.b64decode(kv["value"]) == b"q"
    code, body = both(plain, "/version", h2=h2)
    assert code == 200
    code, body = both(plain, "/v3/kv/put", data="[", h2=h2)
    assert code == 400 and json.loads(body)["code"] == 3
