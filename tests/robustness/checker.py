"""checker — linearizability and cheap invariant checks for kvd/etcd KV histories.

A history is a list of operation dicts (one JSON line each, see history.py):

  id, client        unique op id; the client (thread) that issued it
  op                "put" | "get" | "cas" | "delete" | "range"
  key               the key (for "range": the first key; "end" is exclusive)
  value             put/cas: the unique value written
  expect            cas: the mod_revision compared (0 = key must not exist)
  call, ret         monotonic invoke/return times; ret is None when unknown
  status            "ok" | "unknown" (may or may not have taken effect)
                    | "fail" (definitely no effect: failed reads only)
  result            status "ok" only:
                      put    {"rev": r}
                      get    {"rev": h, "value": v|None, "mod_rev": m}
                      cas    {"rev": h, "succeeded": b,
                              "value": v|None, "mod_rev": m}  (failed: the
                              else-branch read of the key)
                      delete {"rev": h, "deleted": 0|1}
                      range  {"rev": h, "kvs": {key: [value, mod_rev]}}

Model (revision-aware etcd KV restricted to single-key writes): per key the
state is (value, mod_rev, floor).  value None = absent (mod_rev 0).  mod_rev
UNK = the key was last written by an op whose outcome (and so revision) we
never saw.  floor = a lower bound: every later write to the key has a
revision > floor.  A successful write with revision r requires r > floor.
Reads must return exactly the current value; their mod_rev must equal the
state's (or, if UNK, be > floor, which then pins it).  A cas succeeds iff
the current mod_rev equals expect.  Unknown-outcome writes are
nondeterministic (took effect / not yet); the checker works on *sets* of
model states (powerset construction), so it needs no backtracking for them.

Algorithm: Wing & Gong's search with Lowe's memoisation (cache of
(linearized-bitset, state-set)), as described by Lowe and used by
porcupine/knossos — written here from the description.  P-compositionality:
when partition=True the history is split per key; ranges are projected on
each key they cover (sound: the projection of a linearizable history is
linearizable, but the atomicity of a multi-key range is then only checked
by the cheap revision checks, not by the search).  partition=False checks
the whole history as one object (ranges atomic), at exponential cost.

Every search has a time budget; running out gives verdict "unknown", never
a pass.
"""
import time

UNK = -1
INF = float("inf")
# The search keeps one bitset of the partition's ops per cache entry: about
# n^2/8 bytes, 230 MB for 40k ops. The whole-history search is skipped
# above this size (per-key partitions are smaller).
WHOLE_MAX_OPS = 50000


class Result:
    """Outcome of check_history: verdict is "ok", "violation" or "unknown"."""

    def __init__(self):
        self.violations = []   # human-readable explanations
        self.unknown = []      # partitions the search could not finish
        self.ops = 0           # ops in the history
        self.checked = 0       # ops that went through the search
        self.notes = []        # e.g. the whole-history search was skipped

    @property
    def verdict(self):
        if self.violations:
            return "violation"
        if self.unknown:
            return "unknown"
        return "ok"

    def __repr__(self):
        return (f"Result({self.verdict}, ops={self.ops}, checked={self.checked},"
                f" violations={self.violations}, unknown={self.unknown})")


# ---------------------------------------------------------------- model ----

def _read_step(st, value, mod_rev):
    """A read of one key returning (value, mod_rev). Returns the new
    per-key state or None when illegal."""
    v, m, floor = st
    if v != value:
        return None
    if value is None:
        return st if mod_rev in (0, None) else None
    if m == UNK:
        if mod_rev is None or mod_rev <= floor:
            return None
        return (v, mod_rev, mod_rev)
    if mod_rev is not None and mod_rev != m:
        return None
    return st


def _key_steps(st, op, key):
    """All per-key successor states of st for op (projected on key)."""
    kind = op["op"]
    status = op["status"]
    res = op.get("result") or {}
    v, m, floor = st
    if kind in ("get", "range"):
        if status != "ok":
            return [st]
        if kind == "get":
            got = (res.get("value"), res.get("mod_rev"))
        else:
            kv = res.get("kvs", {}).get(key)
            got = (kv[0], kv[1]) if kv else (None, 0)
        n = _read_step(st, *got)
        return [n] if n is not None else []
    if kind == "put":
        if status == "ok":
            r = res["rev"]
            return [(op["value"], r, r)] if r > floor else []
        return [st, (op["value"], UNK, floor)]
    if kind == "delete":
        if status == "ok":
            if res.get("deleted", 0):
                r = res["rev"]
                return [(None, 0, r)] if v is not None and r > floor else []
            return [st] if v is None else []
        return [st, (None, 0, floor)]
    if kind == "cas":
        expect = op["expect"]
        if status == "ok":
            if res.get("succeeded"):
                r = res["rev"]
                if r <= floor:
                    return []
                if expect == 0:
                    ok = v is None
                elif m == UNK:
                    ok = v is not None and floor < expect < r
                else:
                    ok = v is not None and m == expect
                return [(op["value"], r, r)] if ok else []
            n = _read_step(st, res.get("value"), res.get("mod_rev"))
            if n is None:
                return []
            cur = n[1] if n[0] is not None else 0
            return [n] if cur != expect else []
        # unknown: failed (no effect) or succeeded with an unknown revision
        out = [st]
        if expect == 0:
            if v is None:
                out.append((op["value"], UNK, floor))
        elif v is not None and (m == expect or (m == UNK and expect > floor)):
            out.append((op["value"], UNK, max(floor, expect)))
        return out
    raise ValueError(f"unknown op kind {kind!r}")


def op_keys(op, keyspace):
    """Keys an op touches."""
    if op["op"] == "range":
        return [k for k in keyspace if op["key"] <= k < op["end"]]
    return [op["key"]]


def _step(states, op, keys):
    """Powerset step: states is a frozenset of tuples of per-key states,
    keys the ordered key list of the partition."""
    touched = [i for i, k in enumerate(keys) if k in op["_keys"]]
    out = set()
    for s in states:
        partial = [s]
        for i in touched:
            nxt = []
            for p in partial:
                for ks in _key_steps(p[i], op, keys[i]):
                    nxt.append(p[:i] + (ks,) + p[i + 1:])
            partial = nxt
            if not partial:
                break
        out.update(partial)
    return frozenset(out)


# --------------------------------------------------------------- search ----

class _Budget(Exception):
    pass


def _wgl(ops, keys, deadline):
    """Wing-Gong-Lowe search over ops (all touching only keys). Returns
    (True, None) or (False, info) where info names the op that could not be
    linearized after the longest linearizable prefix. Raises _Budget."""
    n = len(ops)
    if n == 0:
        return True, None
    # events: (time, kind 0=call 1=return, op index); calls before returns
    # on equal times (closed intervals: touching ops are concurrent).
    ev = []
    for i, op in enumerate(ops):
        ev.append((op["call"], 0, i))
        ev.append((op["ret"] if op["ret"] is not None else INF, 1, i))
    ev.sort()
    m = len(ev)
    # doubly linked list over event slots 1..m; 0 is the head sentinel
    nxt = list(range(1, m + 2))
    prv = list(range(-1, m + 1))
    kind = [None] * (m + 1)
    opi = [None] * (m + 1)
    match = [0] * (m + 1)
    call_slot = {}
    for j, (_, k, i) in enumerate(ev, start=1):
        kind[j] = k
        opi[j] = i
        if k == 0:
            call_slot[i] = j
        else:
            match[call_slot[i]] = j
    nxt[m] = 0   # 0 terminates
    end = 0

    def lift(j):
        r = match[j]
        nxt[prv[j]] = nxt[j]
        if nxt[j]:
            prv[nxt[j]] = prv[j]
        nxt[prv[r]] = nxt[r]
        if nxt[r]:
            prv[nxt[r]] = prv[r]

    def unlift(j):
        r = match[j]
        if nxt[r]:
            prv[nxt[r]] = r
        nxt[prv[r]] = r
        if nxt[j]:
            prv[nxt[j]] = j
        nxt[prv[j]] = j

    state = frozenset([tuple((None, 0, 0) for _ in keys)])
    bits = 0
    cache = set()
    stack = []
    best = 0
    best_fail = None
    e = nxt[0]
    steps = 0
    while nxt[0] != end:
        steps += 1
        if steps & 1023 == 1 and time.monotonic() > deadline:
            raise _Budget()
        if kind[e] == 0:
            i = opi[e]
            s2 = _step(state, ops[i], keys)
            if s2:
                b2 = bits | (1 << i)
                if (b2, s2) not in cache:
                    cache.add((b2, s2))
                    stack.append((e, state))
                    state = s2
                    bits = b2
                    lift(e)
                    if len(stack) > best:
                        best = len(stack)
                    e = nxt[0]
                    continue
            e = nxt[e]
        else:
            if not stack:
                return False, best_fail
            if best_fail is None or len(stack) >= best_fail[0]:
                best_fail = (len(stack), ops[opi[e]], state)
            e, state = stack.pop()
            bits &= ~(1 << opi[e])
            unlift(e)
            e = nxt[e]
    return True, None


def _describe(op):
    r = op.get("result")
    t = f"[{op['call']:.6f}, {op['ret'] if op['ret'] is None else round(op['ret'], 6)}]"
    what = f"{op['op']}({op['key']}"
    if op["op"] == "range":
        what += f"..{op['end']}"
    if op["op"] in ("put", "cas"):
        what += f", {op['value']!r}"
    if op["op"] == "cas":
        what += f", expect mod_rev={op['expect']}"
    what += ")"
    return f"op {op['id']} client {op['client']} {what} {t} -> {op['status']} {r}"


def _useful(op, observed):
    """Pre-filter: failed reads have no effect; an unknown put/cas whose
    value nobody ever observed may be linearized after everything else,
    which is the same as leaving it out (used only on the fast path: a
    violation is re-checked with every op kept)."""
    if op["status"] == "fail":
        return False
    if op["status"] == "unknown" and op["op"] in ("get", "range"):
        return False
    return True


def _prune(op, observed):
    return (op["status"] == "unknown" and op["op"] in ("put", "cas")
            and op["value"] not in observed)


def linearizable(history, keyspace=None, partition=True, budget=60.0,
                 result=None):
    """Runs the WGL search; appends to result (a Result) and returns it."""
    res = result or Result()
    ops = [dict(o) for o in history if _useful(o, None)]
    if keyspace is None:
        ks = set()
        for o in history:
            if o["op"] != "range":
                ks.add(o["key"])
        keyspace = sorted(ks)
    for o in ops:
        o["_keys"] = set(op_keys(o, keyspace))
    observed = set()
    for o in ops:
        r = o.get("result") or {}
        if o["status"] != "ok":
            continue
        if o["op"] in ("get", "cas"):
            observed.add(r.get("value"))
        elif o["op"] == "range":
            observed.update(v for v, _ in r.get("kvs", {}).values())
    deadline = time.monotonic() + budget
    if partition:
        parts = [([k], [o for o in ops if k in o["_keys"]]) for k in keyspace]
    else:
        parts = [(list(keyspace), ops)]
    for keys, pops in parts:
        name = ",".join(keys) if partition else "*"
        try:
            fast = [o for o in pops if not _prune(o, observed)]
            ok, info = _wgl(fast, keys, deadline)
            if not ok and len(fast) != len(pops):
                ok, info = _wgl(pops, keys, deadline)
        except _Budget:
            res.unknown.append(f"partition {name}: search budget of "
                               f"{budget:.0f}s exhausted")
            continue
        res.checked += len(pops) if partition else len(pops)
        if not ok:
            best, op, states = info if info else (0, None, None)
            msg = (f"not linearizable (partition {name}): after a "
                   f"linearizable prefix of {best} ops no order fits; "
                   f"stuck at {_describe(op) if op else '?'}; model states "
                   f"then: {sorted(states, key=repr) if states else '?'}")
            res.violations.append(msg)
    if partition:
        # ops counted once even when a range spans partitions
        res.checked = min(res.checked, len(ops))
    return res


# ---------------------------------------------------------- cheap checks ----

def _writes(history):
    """(op, revision) for every acknowledged write that changed the store."""
    out = []
    for o in history:
        if o["status"] != "ok":
            continue
        r = o["result"]
        if o["op"] == "put" or (o["op"] == "cas" and r.get("succeeded")) or \
                (o["op"] == "delete" and r.get("deleted", 0)):
            out.append((o, r["rev"]))
    return out


def check_unique_revisions(history):
    """No two different acknowledged writes share a revision (all our
    writes are single-key, so every write has its own revision)."""
    seen = {}
    errs = []
    for o, rev in _writes(history):
        if rev in seen:
            errs.append(f"duplicate revision {rev}: {_describe(seen[rev])} "
                        f"and {_describe(o)}")
        else:
            seen[rev] = o
    return errs


def check_reads_of_written_values(history):
    """Every value a read returns was written by some put/cas (acknowledged
    or of unknown outcome), to that key, and with the same mod_revision as
    that write's acknowledged revision."""
    written = {}
    for o in history:
        if o["op"] in ("put", "cas") and o["status"] in ("ok", "unknown"):
            rev = None
            if o["status"] == "ok":
                r = o["result"]
                if o["op"] == "put" or r.get("succeeded"):
                    rev = r["rev"]
                elif o["op"] == "cas":
                    continue  # a failed cas wrote nothing
            written[o["value"]] = (o["key"], rev, o)
    errs = []
    for o in history:
        if o["status"] != "ok":
            continue
        r = o["result"]
        reads = []
        if o["op"] == "get" or (o["op"] == "cas" and not r.get("succeeded")):
            if r.get("value") is not None:
                reads.append((o["key"], r["value"], r.get("mod_rev")))
        elif o["op"] == "range":
            reads += [(k, v, m) for k, (v, m) in r.get("kvs", {}).items()]
        for k, v, m in reads:
            w = written.get(v)
            if w is None:
                errs.append(f"read of a value never written: {v!r} for key "
                            f"{k} by {_describe(o)}")
            elif w[0] != k:
                errs.append(f"read of {v!r} under key {k} but it was written"
                            f" to {w[0]}: {_describe(o)}")
            elif w[1] is not None and m is not None and m != w[1]:
                errs.append(f"read of {v!r} with mod_revision {m} but its "
                            f"write was acknowledged at revision {w[1]}: "
                            f"{_describe(o)}")
    return errs


def _rev_key(o):
    """Position of an acknowledged op in revision order: a write at r is
    (r, 0); anything that only read (get, range, failed cas, delete of a
    missing key) at header revision h is (h, 1)."""
    r = o["result"]
    is_write = o["op"] == "put" or (o["op"] == "cas" and r.get("succeeded")) \
        or (o["op"] == "delete" and r.get("deleted", 0))
    return (r["rev"], 0 if is_write else 1)


def check_revision_order(history):
    """Real-time order vs revision order: if A returned before B was
    invoked (both acknowledged), then rev_key(A) <= rev_key(B), i.e. B's
    header revision >= A's, and strictly greater if B is a write.

    Sound only when every read is linearizable (etcd's default, not
    serializable=true) and the header revision of a read is the store
    revision the read was served at (etcd: yes; a read-only txn too), and
    all clients talk to one cluster (no revision resets). O(n log n):
    sweep ops by invoke time keeping the max key of ops returned before."""
    acked = [o for o in history if o["status"] == "ok" and o["ret"] is not None]
    by_ret = sorted(acked, key=lambda o: o["ret"])
    by_call = sorted(acked, key=lambda o: o["call"])
    errs = []
    best = None
    j = 0
    for b in by_call:
        while j < len(by_ret) and by_ret[j]["ret"] < b["call"]:
            a = by_ret[j]
            if best is None or _rev_key(a) > _rev_key(best):
                best = a
            j += 1
        if best is not None:
            kb = _rev_key(b)
            ka = _rev_key(best)
            if kb < ka or (kb[1] == 0 and kb[0] <= ka[0]):
                errs.append(f"revision went backwards in real time: "
                            f"{_describe(best)} returned before "
                            f"{_describe(b)} was invoked")
    return errs


def check_reads_at_revision(history, keyspace):
    """Replays the known writes: a read served at header revision h must
    show, for every key it covers, the state after revision h. Known
    writes are the acknowledged ones plus unknown puts/cas whose value a
    read showed with its mod_revision (then their revision is known).
    For each key a read covers, with the latest known write w to that key
    at a revision <= h: a value read at mod_revision m needs m <= h and
    w.rev <= m; an absent key needs w to be a delete (or no w), unless an
    unknown-outcome delete of that key exists (its revision is never
    learnt). Catches non-atomic ranges and reads served at another
    revision than their header says. Same soundness conditions as
    check_revision_order."""
    import bisect
    writes = {}      # key -> list of (rev, is_delete, op)
    for o, rev in _writes(history):
        writes.setdefault(o["key"], []).append((rev, o["op"] == "delete", o))
    acked_vals = {o.get("value") for o, _ in _writes(history)}
    unknown = {o["value"]: o for o in history
               if o["status"] == "unknown" and o["op"] in ("put", "cas")}
    unknown_del = {o["key"] for o in history
                   if o["status"] == "unknown" and o["op"] == "delete"}
    reads = []       # (op, header, key, value, mod_rev)
    for o in history:
        if o["status"] != "ok":
            continue
        r = o["result"]
        h = r["rev"]
        if o["op"] == "get" or (o["op"] == "cas" and not r.get("succeeded")):
            reads.append((o, h, o["key"], r.get("value"), r.get("mod_rev")))
        elif o["op"] == "range":
            for k in op_keys(o, keyspace):
                v, m = r.get("kvs", {}).get(k, (None, 0))
                reads.append((o, h, k, v, m))
        elif o["op"] == "delete" and not r.get("deleted", 0):
            reads.append((o, h, o["key"], None, 0))
    seen_unknown = set()
    for o, h, k, v, m in reads:
        if v in unknown and v not in acked_vals and v not in seen_unknown:
            seen_unknown.add(v)
            writes.setdefault(k, []).append((m, False, unknown[v]))
    for k in writes:
        writes[k].sort(key=lambda w: w[0])
    revs = {k: [w[0] for w in ws] for k, ws in writes.items()}
    errs = []
    for o, h, k, v, m in reads:
        ws = writes.get(k, [])
        i = bisect.bisect_right(revs.get(k, []), h) - 1
        w = ws[i] if i >= 0 else None
        if v is not None:
            if m is not None and m > h:
                errs.append(f"read at revision {h} shows key {k} at a later "
                            f"mod_revision {m}: {_describe(o)}")
            elif w is not None and m is not None and w[0] > m:
                errs.append(f"read at revision {h} shows key {k} at "
                            f"mod_revision {m}, but {_describe(w[2])} wrote "
                            f"it at revision {w[0]} <= {h}: {_describe(o)}")
        elif w is not None and not w[1] and k not in unknown_del:
            errs.append(f"read at revision {h} shows key {k} absent, but "
                        f"{_describe(w[2])} wrote it at revision {w[0]} <= "
                        f"{h}: {_describe(o)}")
    return errs


def check_final_reads(history, final):
    """final: {key: (value, mod_rev)} read linearizably after every op of
    the history returned (None value = absent), plus "_rev" = its header
    revision. Every acknowledged write must still be there or be
    overwritten by a later revision: for each key, all acknowledged
    writes have revision <= the final mod_revision (or <= the final header
    revision when the key is absent and the last write a delete), and the
    final value is one that was written to that key."""
    errs = []
    last = {}
    for o, rev in _writes(history):
        k = o["key"]
        if k not in last or rev > last[k][1]:
            last[k] = (o, rev)
    frev = final.get("_rev")
    for k, (o, rev) in sorted(last.items()):
        v, m = final.get(k, (None, 0))
        if frev is not None and rev > frev:
            errs.append(f"lost acknowledged write: {_describe(o)} at revision"
                        f" {rev} but the final read is at revision {frev}")
        elif v is not None and m < rev:
            errs.append(f"lost acknowledged write: {_describe(o)} at revision"
                        f" {rev} but key {k} finally has {v!r} at "
                        f"mod_revision {m}")
        elif v is None and o["op"] != "delete" and not any(
                d["op"] == "delete" and d["key"] == k and
                d["status"] == "unknown" for d in history):
            errs.append(f"lost acknowledged write: {_describe(o)} at revision"
                        f" {rev} but key {k} is finally absent and no "
                        f"acknowledged delete came later")
    return errs


def final_as_ops(final, t, first_id=10 ** 9):
    """The final reads as history ops at time t (after everything), so the
    search checks them too."""
    ops = []
    for i, (k, vm) in enumerate(sorted((k, v) for k, v in final.items()
                                       if k != "_rev")):
        ops.append({"id": first_id + i, "client": -1, "op": "get", "key": k,
                    "call": t, "ret": t + 1e-6 * (i + 1), "status": "ok",
                    "result": {"rev": final.get("_rev", 0), "value": vm[0],
                               "mod_rev": vm[1]}})
        t += 1e-5
    return ops


def check_history(history, final=None, keyspace=None, partition=True,
                  budget=60.0, revision_order=True, whole=True):
    """All checks. Returns a Result. With partition and whole, a search
    over the whole history as one object (ranges atomic) follows the
    per-key one when that passed, within what is left of the budget; if
    it runs out, that is a note, not "unknown" (the per-key verdict
    stands)."""
    t0 = time.monotonic()
    res = Result()
    hist = list(history)
    res.ops = len(hist)
    if final is not None:
        tend = max([o["ret"] or o["call"] for o in hist] + [0]) + 1.0
        hist = hist + final_as_ops(final, tend)
        res.violations += check_final_reads(history, final)
        res.ops = len(hist)
    res.violations += check_unique_revisions(hist)
    res.violations += check_reads_of_written_values(hist)
    if revision_order:
        res.violations += check_revision_order(hist)
        res.violations += check_reads_at_revision(hist, keyspace or sorted(
            {o["key"] for o in hist if o["op"] != "range"}))
    linearizable(hist, keyspace=keyspace, partition=partition,
                 budget=budget, result=res)
    left = budget - (time.monotonic() - t0)
    if partition and whole and res.verdict == "ok" and \
            len(hist) > WHOLE_MAX_OPS:
        res.notes.append(f"whole-history search skipped: {len(hist)} ops > "
                         f"{WHOLE_MAX_OPS} (memory); range atomicity rests "
                         f"on the revision replay")
    elif partition and whole and res.verdict == "ok" and \
            any(o["op"] == "range" for o in hist):
        w = linearizable(hist, keyspace=keyspace, partition=False,
                         budget=max(left, 0.0))
        res.violations += w.violations
        if w.unknown:
            res.notes.append("whole-history search (range atomicity) not "
                             "finished within the budget")
    return res


def main(argv):
    """checker.py HISTORY.jsonl [--budget S] — checks a saved history."""
    import json
    if len(argv) < 2:
        print("usage: checker.py HISTORY.jsonl [--budget S]")
        return 2
    budget = float(argv[argv.index("--budget") + 1]) \
        if "--budget" in argv else 120.0
    ops, final = [], None
    with open(argv[1]) as f:
        for line in f:
            d = json.loads(line)
            if "final" in d:
                final = {k: tuple(v) if k != "_rev" else v
                         for k, v in d["final"].items()}
            else:
                ops.append(d)
    res = check_history(ops, final=final, budget=budget)
    print(f"ops={res.ops} checked={res.checked} "
          f"violations={len(res.violations)} verdict={res.verdict}")
    for v in res.violations + res.unknown + res.notes:
        print("  " + v)
    return {"ok": 0, "violation": 1}.get(res.verdict, 2)


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv))
