"""proxy — a fault-injecting userspace TCP proxy in front of each member's
peer listener (tc netem is not available on this kernel).

A member advertises its peer URL on port P (what the others dial, from
--initial-cluster) but listens on L (--listen-peer-urls); the proxy
accepts on P and forwards to L. So every byte *into* member i from its
peers passes through proxy i, which can:

    px = PeerProxies([(P0, L0), (P1, L1), (P2, L2)])   # starts a thread
    px.delay(i, base_ms, jitter_ms)   # each chunk waits base +- jitter
                                      # (order kept: TCP stays a stream)
    px.stall(i, True|False)           # hold data (connections stay open)
    px.reset(i)                       # abort every connection through i
    px.refuse(i, True|False)          # new connections closed at once
    px.blackhole(i, True|False)       # discard data; on False, reset so
                                      # the streams restart cleanly
    px.close()                        # stops everything (idempotent)

Both directions of a proxied connection get the same treatment. The
proxy runs one asyncio loop in a daemon thread and binds 127.0.0.1 only.
"""
import asyncio
import random
import threading
import time


class _Link:
    def __init__(self, listen, target, host):
        self.listen = listen
        self.target = target
        self.host = host
        self.base = 0.0
        self.jitter = 0.0
        self.stalled = False
        self.refusing = False
        self.holing = False
        self.conns = set()
        self.server = None
        self.unstall = None  # asyncio.Event, set when not stalled
        self.stats = {"conns": 0, "bytes": 0, "dropped": 0, "resets": 0}


class PeerProxies:
    def __init__(self, pairs, host="127.0.0.1", seed=None):
        self.rnd = random.Random(seed)
        self.links = [_Link(p, t, host) for p, t in pairs]
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.error = None
        self.th = threading.Thread(target=self._main, daemon=True,
                                   name="peer-proxy")
        self.th.start()
        if not self.ready.wait(10):
            raise RuntimeError("proxy did not start")
        if self.error:
            raise self.error

    # ------------------------------------------------------------ thread --
    def _main(self):
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except Exception as e:  # noqa: BLE001 - reported to the caller
            self.error = e
            self.ready.set()
            return
        self.ready.set()
        self.loop.run_forever()
        # shut down: close servers and connections
        for ln in self.links:
            if ln.server:
                ln.server.close()
            for w in list(ln.conns):
                w.transport.abort()
        tasks = asyncio.all_tasks(self.loop)
        for t in tasks:
            t.cancel()
        self.loop.run_until_complete(
            asyncio.gather(*tasks, return_exceptions=True))
        self.loop.close()

    async def _start(self):
        for ln in self.links:
            ln.unstall = asyncio.Event()
            ln.unstall.set()
            ln.server = await asyncio.start_server(
                lambda r, w, ln=ln: self._accept(ln, r, w), ln.host,
                ln.listen, reuse_address=True)

    async def _accept(self, ln, cr, cw):
        if ln.refusing:
            cw.transport.abort()
            return
        try:
            sr, sw = await asyncio.wait_for(
                asyncio.open_connection(ln.host, ln.target), 2.0)
        except (OSError, asyncio.TimeoutError):
            cw.transport.abort()
            return
        ln.stats["conns"] += 1
        ln.conns.add(cw)
        ln.conns.add(sw)
        try:
            await asyncio.gather(self._pump(ln, cr, sw),
                                 self._pump(ln, sr, cw))
        finally:
            for w in (cw, sw):
                ln.conns.discard(w)
                w.transport.abort()

    async def _pump(self, ln, r, w):
        """Copies r to w; every chunk is delivered at
        max(arrival + delay, previous delivery) so order is kept."""
        q = asyncio.Queue()
        done = object()

        async def writer():
            while True:
                item = await q.get()
                if item is done:
                    return
                at, data = item
                now = self.loop.time()
                if at > now:
                    await asyncio.sleep(at - now)
                await ln.unstall.wait()
                if ln.holing:
                    ln.stats["dropped"] += len(data)
                    continue
                w.write(data)
                await w.drain()
                ln.stats["bytes"] += len(data)

        wt = asyncio.ensure_future(writer())
        last = 0.0
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    break
                d = ln.base + (self.rnd.uniform(-ln.jitter, ln.jitter)
                               if ln.jitter else 0.0)
                at = max(self.loop.time() + max(d, 0.0), last)
                last = at
                q.put_nowait((at, data))
            q.put_nowait(done)
            await wt
            if w.can_write_eof():
                w.write_eof()
        except (OSError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            wt.cancel()
            w.transport.abort()

    # ----------------------------------------------------------- control --
    def _call(self, fn):
        fut = asyncio.run_coroutine_threadsafe(self._wrap(fn), self.loop)
        return fut.result(10)

    @staticmethod
    async def _wrap(fn):
        return fn()

    def delay(self, i, base_ms, jitter_ms=0.0):
        ln = self.links[i]

        def f():
            ln.base, ln.jitter = base_ms / 1000.0, jitter_ms / 1000.0
        self._call(f)

    def stall(self, i, on):
        ln = self.links[i]

        def f():
            ln.stalled = on
            if on:
                ln.unstall.clear()
            else:
                ln.unstall.set()
        self._call(f)

    def reset(self, i):
        ln = self.links[i]

        def f():
            ln.stats["resets"] += 1
            for w in list(ln.conns):
                w.transport.abort()
        self._call(f)

    def refuse(self, i, on):
        ln = self.links[i]

        def f():
            ln.refusing = on
        self._call(f)

    def blackhole(self, i, on):
        ln = self.links[i]

        def f():
            ln.holing = on
            if not on:  # the streams lost bytes: start them afresh
                for w in list(ln.conns):
                    w.transport.abort()
        self._call(f)

    def heal(self):
        for i in range(len(self.links)):
            self.delay(i, 0, 0)
            self.refuse(i, False)
            self.stall(i, False)
            if self.links[i].holing:
                self.blackhole(i, False)

    def stats(self):
        return [dict(ln.stats) for ln in self.links]

    def close(self):
        if self.loop.is_closed() or not self.th.is_alive():
            return
        for ln in self.links:
            ln.unstall.set() if ln.unstall else None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.th.join(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _selftest():
    """Echo through a proxy with delay; prints latency."""
    import socket
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    port = srv.getsockname()[1]
    s2 = socket.socket()
    s2.bind(("127.0.0.1", 0))
    pport = s2.getsockname()[1]
    s2.close()

    def echo():
        c, _ = srv.accept()
        while True:
            d = c.recv(100)
            if not d:
                break
            c.sendall(d)
        c.close()
    threading.Thread(target=echo, daemon=True).start()
    with PeerProxies([(pport, port)]) as px:
        px.delay(0, 50, 10)
        c = socket.create_connection(("127.0.0.1", pport))
        t = time.monotonic()
        c.sendall(b"hello")
        assert c.recv(100) == b"hello"
        print(f"round trip {1000 * (time.monotonic() - t):.0f} ms "
              f"(expected ~100)")
        px.reset(0)
        time.sleep(0.1)
        print("after reset recv:", c.recv(100))
        c.close()


if __name__ == "__main__":
    _selftest()
