"""selftest — histories with known verdicts for checker.py.

good_histories(): hand-made linearizable histories, plus generated ones
from a sequential simulation of the etcd KV model with random concurrency
windows and unknown outcomes. bad_histories(): hand-made violations, each
with the words its explanation must contain.
"""
import random

KEYS = ["a", "b", "c"]


class _Builder:
    def __init__(self):
        self.ops = []

    def op(self, kind, key, call, ret, result=None, status="ok", client=0,
           **kw):
        o = {"id": len(self.ops) + 1, "client": client, "op": kind,
             "key": key, "call": float(call),
             "ret": None if ret is None else float(ret), "status": status}
        if result is not None:
            o["result"] = result
        o.update(kw)
        self.ops.append(o)
        return self

    def put(self, key, value, rev, call, ret, **kw):
        return self.op("put", key, call, ret, {"rev": rev}, value=value, **kw)

    def get(self, key, value, mod_rev, rev, call, ret, **kw):
        return self.op("get", key, call, ret,
                       {"rev": rev, "value": value, "mod_rev": mod_rev}, **kw)


def simulate(seed, n=200, clients=4, keys=KEYS, unknown_p=0.05):
    """Runs a sequential etcd KV model; op i takes effect at time 10*i and
    is given a random [call, ret] window around it (so ops overlap), then
    some writes are turned into unknown outcomes (some applied, some
    not). Returns (history, final)."""
    rnd = random.Random(seed)
    store = {}   # key -> (value, mod_rev)
    rev = 1
    ops = []
    busy = {}    # client -> time its previous op returned
    t = 0.0
    for i in range(n):
        t = 10.0 * (i + 1)
        kind = rnd.choice(["put", "get", "cas", "delete", "range", "put",
                           "get", "cas"])
        k = rnd.choice(keys)
        c = rnd.randrange(clients)
        call = max(t - rnd.uniform(0, 25), busy.get(c, 0.0) + 0.1)
        if call > t:
            c = max(busy, key=lambda x: -busy[x]) if busy else c
            call = min(t, busy.get(c, 0.0) + 0.1)
            if call > t:
                call = t - 0.01
        ret = t + rnd.uniform(0, 25)
        busy[c] = ret
        o = {"id": i + 1, "client": c, "op": kind, "key": k, "call": call,
             "ret": ret, "status": "ok"}
        unknown = kind in ("put", "cas", "delete") and rnd.random() < unknown_p
        applied = True
        if unknown and rnd.random() < 0.5:
            applied = False
        if kind == "put":
            o["value"] = f"v{i}"
            if applied:
                rev += 1
                store[k] = (o["value"], rev)
            o["result"] = {"rev": rev}
        elif kind == "get":
            v, m = store.get(k, (None, 0))
            o["result"] = {"rev": rev, "value": v, "mod_rev": m}
        elif kind == "range":
            i0 = keys.index(k)
            o["key"] = keys[min(i0, len(keys) - 2)]
            o["end"] = keys[-1] + "\x00"
            o["result"] = {"rev": rev, "kvs": {
                kk: list(store[kk]) for kk in keys
                if o["key"] <= kk < o["end"] and kk in store}}
        elif kind == "delete":
            d = 1 if k in store else 0
            if applied and d:
                rev += 1
                del store[k]
            o["result"] = {"rev": rev, "deleted": d}
        elif kind == "cas":
            o["value"] = f"v{i}"
            cur = store.get(k, (None, 0))[1]
            # half the time the right revision, else a stale or random one
            o["expect"] = cur if rnd.random() < 0.5 else max(0, cur - rnd.randint(1, 3))
            if o["expect"] == cur and applied:
                rev += 1
                store[k] = (o["value"], rev)
                o["result"] = {"rev": rev, "succeeded": True}
            else:
                v, m = store.get(k, (None, 0))
                o["result"] = {"rev": rev, "succeeded": False,
                               "value": v, "mod_rev": m}
                if o["expect"] == cur:
                    unknown = True   # not applied: only as an unknown op
        if unknown:
            o["status"] = "unknown"
            o["ret"] = None
            del o["result"]
        ops.append(o)
    final = {k: store.get(k, (None, 0)) for k in keys}
    final["_rev"] = rev
    ops.sort(key=lambda o: o["call"])
    return ops, final


def good_histories():
    """(name, history, final) triples that must pass."""
    out = []
    b = _Builder()
    b.put("a", "x", 2, 0, 1).get("a", "x", 2, 2, 2, 3)
    out.append(("sequential put/get", b.ops, {"a": ("x", 2), "_rev": 2}))

    b = _Builder()   # concurrent read may see the old or the new value
    b.put("a", "x", 2, 0, 1).put("a", "y", 3, 2, 6)
    b.get("a", "x", 2, 2, 3, 4, client=1).get("a", "y", 3, 3, 5, 7, client=2)
    out.append(("concurrent read sees either", b.ops,
                {"a": ("y", 3), "_rev": 3}))

    b = _Builder()   # an unknown put later observed
    b.put("a", "x", 2, 0, 1)
    b.op("put", "a", 2, None, status="unknown", value="y")
    b.get("a", "y", 3, 3, 5, 6, client=1)
    out.append(("unknown put observed", b.ops, {"a": ("y", 3), "_rev": 3}))

    b = _Builder()   # an unknown put never applied
    b.put("a", "x", 2, 0, 1)
    b.op("put", "a", 2, None, status="unknown", value="y")
    b.get("a", "x", 2, 2, 5, 6, client=1)
    out.append(("unknown put never applied", b.ops,
                {"a": ("x", 2), "_rev": 2}))

    b = _Builder()   # cas on the right revision, then a failed stale cas
    b.put("a", "x", 2, 0, 1)
    b.op("cas", "a", 2, 3, {"rev": 3, "succeeded": True}, value="y", expect=2)
    b.op("cas", "a", 4, 5, {"rev": 3, "succeeded": False, "value": "y",
                            "mod_rev": 3}, value="z", expect=2)
    b.op("delete", "a", 6, 7, {"rev": 4, "deleted": 1})
    b.op("range", "a", 8, 9, {"rev": 4, "kvs": {}}, end="c")
    out.append(("cas, stale cas fails, delete, empty range", b.ops,
                {"a": (None, 0), "_rev": 4}))

    b = _Builder()   # failed reads have no effect at all
    b.put("a", "x", 2, 0, 1)
    b.op("get", "a", 2, None, status="fail")
    b.put("b", "q", 3, 2, 3).get("b", "q", 3, 3, 4, 5)
    out.append(("failed read ignored, two keys", b.ops,
                {"a": ("x", 2), "b": ("q", 3), "_rev": 3}))

    for seed in range(30):
        ops, final = simulate(seed)
        out.append((f"simulated seed {seed}", ops, final))
    return out


def bad_histories():
    """(name, history, final, words) — must fail; the explanation must
    contain `words`."""
    out = []
    b = _Builder()
    b.put("a", "x", 2, 0, 1).put("a", "y", 3, 2, 3)
    b.get("a", "x", 2, 3, 4, 5, client=1)
    out.append(("stale read", b.ops, None, "not linearizable"))

    b = _Builder()
    b.put("a", "x", 2, 0, 1).put("a", "y", 3, 2, 3)
    out.append(("lost acknowledged write", b.ops,
                {"a": ("x", 2), "_rev": 3}, "lost acknowledged write"))

    b = _Builder()
    b.put("a", "x", 2, 0, 1).put("b", "y", 2, 0, 1, client=1)
    out.append(("duplicated revision", b.ops, None, "duplicate revision"))

    b = _Builder()
    b.put("a", "x", 2, 0, 1).get("a", "ghost", 3, 3, 2, 3)
    out.append(("read of a never-written value", b.ops, None,
                "never written"))

    b = _Builder()   # different keys: per-key search passes, revisions not
    b.put("a", "x", 5, 0, 1).put("b", "y", 4, 2, 3)
    out.append(("non-monotonic revision", b.ops, None, "backwards"))

    b = _Builder()
    b.put("a", "x", 2, 0, 1).put("a", "y", 3, 2, 3)
    b.op("cas", "a", 4, 5, {"rev": 4, "succeeded": True}, value="z", expect=2)
    out.append(("cas succeeded against a stale revision", b.ops, None,
                "not linearizable"))

    b = _Builder()   # a range that is not one snapshot: the per-key
    # search passes (each key on its own fits), the revision replay not
    b.put("b", "q", 2, 2, 3).put("a", "x", 3, 4, 5)
    b.op("range", "a", 0, 10, {"rev": 3, "kvs": {"a": ["x", 3]}}, end="c",
         client=1)
    out.append(("non-atomic range", b.ops, None, "absent"))

    b = _Builder()   # a read served at an older revision than its header
    b.put("a", "x", 2, 0, 1).put("a", "y", 3, 2, 3)
    b.get("a", "x", 2, 3, 0, 4, client=1)
    out.append(("read older than its header revision", b.ops, None,
                "wrote it at revision 3"))

    b = _Builder()   # a lost write the final read alone shows
    b.put("a", "x", 2, 0, 1)
    out.append(("acknowledged write missing at the end", b.ops,
                {"a": (None, 0), "_rev": 2}, "lost acknowledged write"))
    return out
