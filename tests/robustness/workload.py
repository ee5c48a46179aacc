"""workload — concurrent clients against an etcd-style JSON gateway, recording
a history for checker.py.

Each client is a thread with its own requests.Session, bound to one endpoint
(it moves to the next endpoint after an error). Operations on a few keys:
put (unique values), linearizable get, txn compare-and-swap on mod_revision
(single key: then=put, else=range of that key), delete, small range.

Outcomes: a 2xx answer is "ok". For reads, any error is "fail" (a read has
no effect). For writes, a timeout, a connection error, a 5xx or any other
error is "unknown": the write may or may not have been applied. A client
whose op ended "unknown" moves on as a new logical client, as in Jepsen
(the checker does not rely on per-client order anyway).
"""
import base64
import json
import random
import threading
import time

import requests


def b64(s):
    return base64.b64encode(s.encode()).decode()


def unb64(s):
    return base64.b64decode(s).decode()


class Gateway:
    """Thin client for the v3 JSON gateway of one endpoint."""

    def __init__(self, base, tls=None, timeout=2.0):
        self.base = base.rstrip("/")
        self.s = requests.Session()
        self.timeout = timeout
        if tls:
            self.s.verify = str(tls["ca"])
            if tls.get("cert"):
                self.s.cert = (str(tls["cert"]), str(tls["key"]))

    def call(self, path, body):
        r = self.s.post(self.base + path, data=json.dumps(body),
                        timeout=self.timeout)
        if r.status_code != 200:
            raise GatewayError(r.status_code, r.text[:200])
        return r.json()

    def close(self):
        self.s.close()


class GatewayError(Exception):
    def __init__(self, status, text):
        super().__init__(f"HTTP {status}: {text}")
        self.status = status


def _rev(resp):
    return int(resp.get("header", {}).get("revision", 0))


def _kv(kv):
    return unb64(kv.get("value", "")), int(kv.get("mod_revision", 0))


def do_op(gw, op):
    """Executes op (a dict with op/key/...) and returns its result dict.
    Raises on any error."""
    k = op["key"]
    kind = op["op"]
    if kind == "put":
        r = gw.call("/v3/kv/put", {"key": b64(k), "value": b64(op["value"])})
        return {"rev": _rev(r)}
    if kind == "get":
        body = {"key": b64(k)}
        if op.get("serializable"):
            body["serializable"] = True
        r = gw.call("/v3/kv/range", body)
        kvs = r.get("kvs") or []
        v, m = _kv(kvs[0]) if kvs else (None, 0)
        return {"rev": _rev(r), "value": v, "mod_rev": m}
    if kind == "range":
        r = gw.call("/v3/kv/range", {"key": b64(k), "range_end": b64(op["end"])})
        return {"rev": _rev(r),
                "kvs": {unb64(kv["key"]): list(_kv(kv))
                        for kv in r.get("kvs") or []}}
    if kind == "delete":
        r = gw.call("/v3/kv/deleterange", {"key": b64(k)})
        return {"rev": _rev(r), "deleted": int(r.get("deleted", 0))}
    if kind == "cas":
        body = {"compare": [{"key": b64(k), "target": "MOD", "result": "EQUAL",
                             "mod_revision": str(op["expect"])}],
                "success": [{"request_put": {"key": b64(k),
                                             "value": b64(op["value"])}}],
                "failure": [{"request_range": {"key": b64(k)}}]}
        r = gw.call("/v3/kv/txn", body)
        res = {"rev": _rev(r), "succeeded": bool(r.get("succeeded", False))}
        if not res["succeeded"]:
            rr = (r.get("responses") or [{}])[0].get("response_range", {})
            kvs = rr.get("kvs") or []
            res["value"], res["mod_rev"] = _kv(kvs[0]) if kvs else (None, 0)
        return res
    raise ValueError(kind)


DEFAULT_MIX = {"put": 30, "get": 30, "cas": 20, "delete": 5, "range": 15}


class Recorder:
    """Thread-safe history sink."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ops = []
        self.next_id = 0

    def new_id(self):
        with self.lock:
            self.next_id += 1
            return self.next_id

    def add(self, op):
        with self.lock:
            self.ops.append(op)


def _client(cid, endpoints, tls, keys, mix, rec, stop_at, max_ops, counter,
            timeout, seed, stop_event, serializable):
    rnd = random.Random(seed)
    ep = cid % len(endpoints)
    gw = Gateway(endpoints[ep], tls, timeout)
    last_mod = {k: 0 for k in keys}
    logical = cid
    seq = 0
    kinds, weights = zip(*mix.items())
    try:
        while time.monotonic() < stop_at and not stop_event.is_set():
            with counter["lock"]:
                if counter["n"] >= max_ops:
                    break
                counter["n"] += 1
            kind = rnd.choices(kinds, weights)[0]
            k = rnd.choice(keys)
            seq += 1
            op = {"id": rec.new_id(), "client": logical, "op": kind, "key": k}
            if kind in ("put", "cas"):
                op["value"] = f"c{cid}-{seq}"
            if kind == "cas":
                op["expect"] = last_mod[k]
            if kind == "get" and serializable:
                op["serializable"] = True
            if kind == "range":
                i = keys.index(k)
                op["key"] = keys[min(i, len(keys) - 2)]
                op["end"] = keys[min(i, len(keys) - 2) + 1] + "\x00" \
                    if rnd.random() < 0.5 else keys[-1] + "\x00"
            op["call"] = time.monotonic()
            try:
                res = do_op(gw, op)
                op["ret"] = time.monotonic()
                op["status"] = "ok"
                op["result"] = res
                if kind == "put" or (kind == "cas" and res["succeeded"]):
                    last_mod[k] = res["rev"]
                elif kind in ("get", "cas"):
                    last_mod[k] = res["mod_rev"]
                elif kind == "delete":
                    last_mod[k] = 0
                elif kind == "range":
                    for rk in keys:
                        if op["key"] <= rk < op["end"]:
                            last_mod[rk] = res["kvs"].get(rk, [None, 0])[1]
            except (requests.RequestException, GatewayError, ValueError,
                    KeyError) as e:
                op["ret"] = None
                op["error"] = f"{type(e).__name__}: {str(e)[:160]}"
                if kind in ("get", "range"):
                    op["status"] = "fail"
                else:
                    op["status"] = "unknown"
                    logical += 1000
                # move to the next endpoint; brief backoff
                ep = (ep + 1) % len(endpoints)
                gw.close()
                gw = Gateway(endpoints[ep], tls, timeout)
                time.sleep(0.05)
            rec.add(op)
    finally:
        gw.close()


def run_workload(endpoints, duration, clients=4, keys=None, tls=None,
                 max_ops=100000, mix=None, timeout=2.0, seed=None,
                 prefix="/rb/", serializable=False):
    """Runs `clients` threads for `duration` seconds (or max_ops ops) and
    returns the recorded history (list of op dicts, sorted by call).
    serializable=True makes gets serializable (served from the member's
    local state, possibly stale): a planted bug the checker must catch,
    not a mode to test a server with."""
    keys = keys or [f"{prefix}k{i}" for i in range(4)]
    keys = sorted(keys)
    mix = mix or DEFAULT_MIX
    rec = Recorder()
    stop_at = time.monotonic() + duration
    counter = {"n": 0, "lock": threading.Lock()}
    seed = random.randrange(1 << 30) if seed is None else seed
    stop_event = threading.Event()
    ths = [threading.Thread(target=_client, daemon=True,
                            args=(c, endpoints, tls, keys, mix, rec, stop_at,
                                  max_ops, counter, timeout, seed + c,
                                  stop_event, serializable))
           for c in range(clients)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(duration + timeout * 3 + 5)
    stop_event.set()
    return sorted(rec.ops, key=lambda o: o["call"]), keys


def final_read(endpoints, keys, tls=None, timeout=2.0, deadline=30.0):
    """A linearizable range over all keys after the run, retried on every
    endpoint until one answers. Returns {key: (value, mod_rev), "_rev": h}."""
    end = time.monotonic() + deadline
    last = None
    while time.monotonic() < end:
        for ep in endpoints:
            gw = Gateway(ep, tls, timeout)
            try:
                r = gw.call("/v3/kv/range", {"key": b64(keys[0]),
                                             "range_end": b64(keys[-1] + "\x00")})
                out = {k: (None, 0) for k in keys}
                for kv in r.get("kvs") or []:
                    out[unb64(kv["key"])] = _kv(kv)
                out["_rev"] = _rev(r)
                return out
            except (requests.RequestException, GatewayError) as e:
                last = e
            finally:
                gw.close()
        time.sleep(0.2)
    raise TimeoutError(f"final read failed on every endpoint: {last}")


def save_history(path, ops, final=None):
    """JSON lines: one op per line; the final read as {"final": {...}}."""
    with open(path, "w") as f:
        for o in ops:
            f.write(json.dumps(o) + "\n")
        if final is not None:
            f.write(json.dumps({"final": {k: list(v) if k != "_rev" else v
                                          for k, v in final.items()}}) + "\n")


def load_history(path):
    ops, final = [], None
    with open(path) as f:
        for line in f:
            d = json.loads(line)
            if "final" in d:
                final = {k: tuple(v) if k != "_rev" else v
                         for k, v in d["final"].items()}
            else:
                ops.append(d)
    return ops, final


def member_view(endpoint, keys, tls=None, timeout=2.0):
    """A *serializable* range over all keys served by this member from its
    own store: {key: (value, mod_rev), "_rev": h}. Used after healing to
    compare the members' stores with each other."""
    gw = Gateway(endpoint, tls, timeout)
    try:
        r = gw.call("/v3/kv/range", {"key": b64(keys[0]),
                                     "range_end": b64(keys[-1] + "\x00"),
                                     "serializable": True})
    finally:
        gw.close()
    out = {k: (None, 0) for k in keys}
    for kv in r.get("kvs") or []:
        out[unb64(kv["key"])] = _kv(kv)
    out["_rev"] = _rev(r)
    return out
