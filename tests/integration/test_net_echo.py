"""End-to-end tests of net/ through tests/net/net_echo_server: TLS with
client-cert-auth, keep-alive, pipelining, bad clients, back-pressure and
graceful shutdown. Every server listens on 127.0.0.1 on a free port and is
stopped by PID (procs fixture)."""
import http.client
import os
import signal
import socket
import ssl
import time

import pytest
import requests

import kvtest


def start_echo(procs, bin_dir, certs, tls=True, cca=True, extra=(),
               name="echo"):
    port = kvtest.free_port()
    scheme = "https" if tls else "http"
    argv = [bin_dir / "net_echo_server", "--listen",
            f"{scheme}://127.0.0.1:{port}"]
    if tls:
        argv += ["--cert-file", certs["server_cert"],
                 "--key-file", certs["server_key"],
                 "--trusted-ca-file", certs["ca"]]
        if cca:
            argv += ["--client-cert-auth"]
    argv += list(extra)
    p = procs.start(name, argv)
    kvtest.wait_for(lambda: not p.alive() or kvtest.port_open(port),
                    timeout=10, what=f"{name} to listen on {port}")
    assert p.alive(), p.log_text()
    return p, port


def stop_clean(p):
    """Stops p by PID with SIGTERM; it must exit 0 with no sanitizer
    report (ASan/LSan builds print one and exit non-zero)."""
    rc = p.stop()
    log = p.log_text(tail=10000)
    assert "Sanitizer" not in log, log
    assert rc == 0, log


def client_ctx(certs, cert="client", alpn=("http/1.1",)):
    ctx = ssl.create_default_context(cafile=str(certs["ca"]))
    if cert is not None:
        ctx.load_cert_chain(str(certs[f"{cert}_cert"]),
                            str(certs[f"{cert}_key"]))
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def tls_socket(certs, port, cert="client"):
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return client_ctx(certs, cert).wrap_socket(raw,
                                               server_hostname="127.0.0.1")


def session(certs, cert="client"):
    s = requests.Session()
    s.trust_env = False
    s.verify = str(certs["ca"])
    if cert is not None:
        s.cert = (str(certs[f"{cert}_cert"]), str(certs[f"{cert}_key"]))
    return s


def read_responses(sock, n, timeout=10):
    """Reads n complete HTTP/1.1 responses (Content-Length or chunked)
    from sock; returns [(status, headers dict, body bytes)]."""
    sock.settimeout(timeout)
    buf = b""
    out = []

    def need(k):
        nonlocal buf
        while len(buf) < k:
            d = sock.recv(65536)
            if not d:
                raise EOFError(f"closed after {len(out)} responses")
            buf += d

    def line():
        nonlocal buf
        while b"\r\n" not in buf:
            need(len(buf) + 1)
        i = buf.index(b"\r\n")
        ln, buf = buf[:i], buf[i + 2:]
        return ln

    while len(out) < n:
        status = int(line().split()[1])
        hdrs = {}
        while True:
            ln = line()
            if not ln:
                break
            k, v = ln.decode().split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
        body = b""
        if hdrs.get("transfer-encoding") == "chunked":
            while True:
                size = int(line(), 16)
                need(size + 2)
                body += buf[:size]
                buf = buf[size + 2:]
                if size == 0:
                    break
        else:
            k = int(hdrs.get("content-length", "0"))
            need(k)
            body, buf = buf[:k], buf[k:]
        out.append((status, hdrs, body))
    return out


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    raise RuntimeError("no VmRSS")


def test_mtls_requests_and_keepalive(procs, bin_dir, certs):
    p, port = start_echo(procs, bin_dir, certs)
    base = f"https://127.0.0.1:{port}"
    s = session(certs)
    r = s.get(base + "/hello", timeout=10)
    assert r.status_code == 200
    assert r.text == "hello from kvd net\n"
    body = os.urandom(100_000)
    r = s.post(base + "/echo", data=body, timeout=10)
    assert r.status_code == 200 and r.content == body
    assert s.get(base + "/nope", timeout=10).status_code == 404

    # Keep-alive: many requests over one TLS connection.
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                       context=client_ctx(certs))
    conn.request("GET", "/hello")
    r = conn.getresponse()
    assert r.status == 200 and r.read() == b"hello from kvd net\n"
    first = conn.sock
    for i in range(20):
        conn.request("POST", "/echo", body=f"msg {i}".encode())
        r = conn.getresponse()
        assert r.read() == f"msg {i}".encode()
    assert conn.sock is first, "the connection was not reused"
    conn.close()

    # Streaming: chunked pieces arrive.
    r = s.get(base + "/stream?count=3&interval_ms=20", timeout=10)
    assert r.text == "piece 0\npiece 1\npiece 2\n"
    assert r.headers["Transfer-Encoding"] == "chunked"
    stop_clean(p)


def test_body_limit_413(procs, bin_dir, certs):
    p, port = start_echo(procs, bin_dir, certs, extra=["--max-body", "1000"])
    s = session(certs)
    url = f"https://127.0.0.1:{port}/echo"
    assert s.post(url, data=b"x" * 1000, timeout=10).status_code == 200
    r = s.post(url, data=b"x" * 5000, timeout=10)
    assert r.status_code == 413
    stop_clean(p)


def test_bad_client_certs_refused(procs, bin_dir, certs):
    p, port = start_echo(procs, bin_dir, certs)
    url = f"https://127.0.0.1:{port}/hello"
    for cert in ("rogue", None):
        with pytest.raises((requests.exceptions.SSLError,
                            requests.exceptions.ConnectionError)):
            session(certs, cert=cert).get(url, timeout=10)
    assert session(certs).get(url, timeout=10).status_code == 200
    kvtest.wait_for(lambda: p.log_text().count("TLS handshake failed") >= 2,
                    timeout=5, what="handshake failures logged")
    log = p.log_text()
    assert "peer=127.0.0.1:" in log
    assert "certificate" in log
    stop_clean(p)


def test_garbage_closes_only_that_connection(procs, bin_dir, certs):
    p, port = start_echo(procs, bin_dir, certs)
    good = http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                       context=client_ctx(certs))
    good.request("GET", "/hello")
    assert good.getresponse().read() == b"hello from kvd net\n"

    for junk in (b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
                 bytes(range(256)) * 4):
        bad = socket.create_connection(("127.0.0.1", port), timeout=10)
        bad.sendall(junk)
        data = b""
        while True:  # an alert at most, then EOF
            d = bad.recv(4096)
            if not d:
                break
            data += d
            assert len(data) < 1024
        bad.close()
        # The good client, on its old connection, is unaffected.
        good.request("POST", "/echo", body=b"still here")
        assert good.getresponse().read() == b"still here"
    good.close()
    kvtest.wait_for(lambda: "http request" in p.log_text(), timeout=5,
                    what="plaintext-to-TLS logged")
    # Plaintext HTTP to the TLS port gets a plaintext hint, as from etcd.
    bad = socket.create_connection(("127.0.0.1", port), timeout=10)
    bad.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while True:
        d = bad.recv(4096)
        if not d:
            break
        data += d
    bad.close()
    assert data.startswith(b"HTTP/1.0 400 Bad Request")
    assert b"HTTP request to an HTTPS server" in data
    assert p.alive()
    stop_clean(p)


def test_pipelining_keeps_order(procs, bin_dir, certs):
    p, port = start_echo(procs, bin_dir, certs)
    s = tls_socket(certs, port)
    # A slow streamed answer first: the fast ones must wait their turn.
    reqs = (b"GET /stream?count=3&interval_ms=100 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\none"
            b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\ntwo"
            b"GET /missing HTTP/1.1\r\nHost: a\r\n\r\n")
    s.sendall(reqs)
    rs = read_responses(s, 5)
    assert [r[0] for r in rs] == [200, 200, 200, 200, 404]
    assert rs[0][2] == b"piece 0\npiece 1\npiece 2\n"
    assert rs[1][2] == b"one"
    assert rs[2][2] == b"hello from kvd net\n"
    assert rs[3][2] == b"two"
    # The same connection still works, then Connection: close closes it.
    s.sendall(b"GET /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    rs = read_responses(s, 1)
    assert rs[0][1].get("connection") == "close"
    assert s.recv(100) == b""
    s.close()

    # Many small pipelined requests in one write, over plaintext HTTP too.
    p2, port2 = start_echo(procs, bin_dir, certs, tls=False, name="plain")
    raw = socket.create_connection(("127.0.0.1", port2), timeout=10)
    n = 100
    raw.sendall(b"".join(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%d"
        % (len(str(i)), i) for i in range(n)))
    rs = read_responses(raw, n)
    assert [r[2] for r in rs] == [str(i).encode() for i in range(n)]
    # HTTP/1.0: answered, then closed.
    raw.sendall(b"GET /hello HTTP/1.0\r\n\r\n")
    rs = read_responses(raw, 1)
    assert rs[0][2] == b"hello from kvd net\n"
    assert raw.recv(100) == b""
    raw.close()
    stop_clean(p)
    stop_clean(p2)


def test_alpn_selection(procs, bin_dir, certs):
    p, port = start_echo(procs, bin_dir, certs)

    def s_client(alpn):
        r = kvtest.run(["openssl", "s_client", "-connect",
                        f"127.0.0.1:{port}", "-alpn", alpn,
                        "-CAfile", certs["ca"],
                        "-cert", certs["client_cert"],
                        "-key", certs["client_key"]],
                       input="", check=False, timeout=20)
        return r.stdout

    assert "ALPN protocol: h2" in s_client("h2")
    assert "ALPN protocol: h2" in s_client("http/1.1,h2")
    assert "ALPN protocol: http/1.1" in s_client("http/1.1")
    assert "No ALPN negotiated" in s_client("spdy/3")
    # The echo server does not serve h2 yet and says so.
    kvtest.wait_for(lambda: "HTTP/2 is not served yet" in p.log_text(),
                    timeout=5, what="h2 refusal logged")
    # Python's ssl sees the same choice.
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = client_ctx(certs, alpn=("h2", "http/1.1")).wrap_socket(
        s, server_hostname="127.0.0.1")
    assert s.selected_alpn_protocol() == "h2"
    s.close()
    stop_clean(p)


def test_slow_reader_does_not_grow_memory(procs, bin_dir, certs):
    p, port = start_echo(procs, bin_dir, certs)
    s = session(certs)
    base = f"https://127.0.0.1:{port}"
    assert s.get(base + "/hello", timeout=10).status_code == 200
    before = rss_kib(p.pid)
    # ~6 GiB if the server buffered it all; the reader never reads.
    slow = tls_socket(certs, port)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sendall(b"GET /stream?count=100000&size=65536&interval_ms=0 "
                 b"HTTP/1.1\r\nHost: a\r\n\r\n")
    peak = before
    for _ in range(20):
        time.sleep(0.1)
        peak = max(peak, rss_kib(p.pid))
    # Others are still served while the slow reader is stuck.
    assert s.get(base + "/hello", timeout=10).status_code == 200
    peak = max(peak, rss_kib(p.pid))
    print(f"RSS {before} -> peak {peak} KiB")
    assert peak - before < 96 * 1024, f"RSS grew {before} -> {peak} KiB"
    slow.close()
    assert s.get(base + "/hello", timeout=10).status_code == 200
    stop_clean(p)


def test_sigterm_finishes_inflight_and_exits_zero(procs, bin_dir, certs):
    p, port = start_echo(procs, bin_dir, certs)
    s = tls_socket(certs, port)
    s.sendall(b"GET /stream?count=5&interval_ms=150 HTTP/1.1\r\n"
              b"Host: a\r\n\r\n")
    s.settimeout(10)
    first = s.recv(4096)
    assert first.startswith(b"HTTP/1.1 200")
    idle = tls_socket(certs, port)  # an idle keep-alive connection
    p.signal(signal.SIGTERM)
    rest = read_responses_after(s, first)
    assert rest == b"piece 0\npiece 1\npiece 2\npiece 3\npiece 4\n"
    assert idle.recv(100) == b""  # closed by the server
    p.popen.wait(10)
    assert p.popen.returncode == 0, p.log_text()
    assert not kvtest.port_open(port)
    s.close()
    idle.close()


def read_responses_after(sock, head):
    """Parses one chunked response whose first bytes were already read."""
    class Pre:
        def __init__(self):
            self.data = head

        def recv(self, n):
            if self.data:
                d, self.data = self.data, b""
                return d
            return sock.recv(n)

        def settimeout(self, t):
            sock.settimeout(t)

    return read_responses(Pre(), 1)[0][2]


def test_bad_cert_file_named(procs, bin_dir, certs, tmp_path):
    port = kvtest.free_port()
    missing = tmp_path / "nope.key"
    p = procs.start("bad", [bin_dir / "net_echo_server", "--listen",
                            f"https://127.0.0.1:{port}",
                            "--cert-file", certs["server_cert"],
                            "--key-file", missing])
    p.popen.wait(10)
    assert p.popen.returncode != 0
    assert "nope.key" in p.log_text()
    p2 = procs.start("mismatch", [bin_dir / "net_echo_server", "--listen",
                                  f"https://127.0.0.1:{port}",
                                  "--cert-file", certs["server_cert"],
                                  "--key-file", certs["client_key"]])
    p2.popen.wait(10)
    assert p2.popen.returncode != 0
    assert "does not match" in p2.log_text()


def test_idle_timeout_closes_quiet_connections(procs, bin_dir, certs):
    p, port = start_echo(procs, bin_dir, certs,
                         extra=["--idle-timeout-ms", "300"])
    s = tls_socket(certs, port)
    s.sendall(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n")
    assert read_responses(s, 1)[0][0] == 200
    t0 = time.monotonic()
    s.settimeout(5)
    assert s.recv(100) == b""
    assert 0.2 < time.monotonic() - t0 < 3
    s.close()
    # A quiet stream is busy, not idle: pieces 700 ms apart survive.
    s = tls_socket(certs, port)
    s.sendall(b"GET /stream?count=3&interval_ms=700 HTTP/1.1\r\n"
              b"Host: a\r\n\r\n")
    assert read_responses(s, 1)[0][2] == b"piece 0\npiece 1\npiece 2\n"
    s.close()
    # A handshake that never starts is cut too.
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert raw.recv(100) == b""
    raw.close()
    stop_clean(p)


def test_many_concurrent_clients(procs, bin_dir, certs):
    import concurrent.futures
    p, port = start_echo(procs, bin_dir, certs)

    def client(i):
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=20,
                                           context=client_ctx(certs))
        for j in range(20):
            body = f"{i}-{j}".encode() * (j + 1)
            conn.request("POST", "/echo", body=body)
            r = conn.getresponse()
            assert r.status == 200 and r.read() == body
        conn.close()
        return i

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        assert sorted(ex.map(client, range(32))) == list(range(32))
    stop_clean(p)


def test_listen_errors(procs, bin_dir, certs):
    p, port = start_echo(procs, bin_dir, certs, tls=False)
    other = kvtest.free_port()
    q = procs.start("busy", [bin_dir / "net_echo_server", "--listen",
                             f"http://127.0.0.1:{other},"
                             f"http://127.0.0.1:{port}"])
    q.popen.wait(10)
    assert q.popen.returncode != 0
    assert "address already in use" in q.log_text()
    assert f"127.0.0.1:{port}" in q.log_text()
    assert "Sanitizer" not in q.log_text()
    r = procs.start("badurl", [bin_dir / "net_echo_server", "--listen",
                               "https://127.0.0.1"])
    r.popen.wait(10)
    assert r.popen.returncode == 2
    stop_clean(p)
