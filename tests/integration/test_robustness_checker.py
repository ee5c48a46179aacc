"""Self-test of the linearizability checker in tests/robustness/: known-good
histories pass, hand-made violations fail with a clear explanation, and a
search that cannot finish reports "unknown", never a pass."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "robustness"))
import checker  # noqa: E402
import selftest  # noqa: E402


@pytest.mark.parametrize("name,hist,final",
                         selftest.good_histories(),
                         ids=[g[0] for g in selftest.good_histories()])
def test_good_history_passes(name, hist, final):
    for partition in (True, False):
        res = checker.check_history(hist, final=final, partition=partition,
                                    budget=20)
        assert res.verdict == "ok", f"{name} (partition={partition}): {res}"
        assert res.checked > 0


@pytest.mark.parametrize("name,hist,final,words",
                         selftest.bad_histories(),
                         ids=[b[0] for b in selftest.bad_histories()])
def test_bad_history_fails(name, hist, final, words):
    res = checker.check_history(hist, final=final, budget=20)
    assert res.verdict == "violation", f"{name}: {res}"
    assert any(words in v for v in res.violations), res.violations


def test_stale_read_found_by_search_alone():
    # no cheap check applies: the search must find it
    name, hist, final, _ = selftest.bad_histories()[0]
    res = checker.linearizable(hist)
    assert res.verdict == "violation"
    assert "op 3" in res.violations[0]


def test_simulated_history_with_corrupted_read_fails():
    hist, final = selftest.simulate(7, n=300)
    # make one acknowledged read return the value that preceded the
    # current one (a stale read)
    writes = {}
    for o in hist:
        if o["op"] == "put" and o["status"] == "ok":
            writes.setdefault(o["key"], []).append(o)
    for o in hist:
        ws = writes.get(o["key"], [])
        if o["op"] == "get" and o["status"] == "ok" and \
                o["result"]["value"] is not None:
            older = [w for w in ws if w["ret"] < o["call"] and
                     w["result"]["rev"] < o["result"]["mod_rev"]]
            older.sort(key=lambda w: w["result"]["rev"])
            if len(older) >= 2:
                o["result"]["value"] = older[0]["value"]
                o["result"]["mod_rev"] = older[0]["result"]["rev"]
                break
    else:
        pytest.skip("no suitable read in this simulation")
    res = checker.check_history(hist, final=final)
    assert res.verdict == "violation", res


def test_budget_gives_unknown():
    # an exhausted budget must give "unknown", never "ok"
    hist, final = selftest.simulate(3, n=400, unknown_p=0.3)
    res = checker.check_history(hist, final=final, budget=0.0)
    assert res.verdict == "unknown", res
    assert "budget" in res.unknown[0]


def test_non_atomic_range_needs_whole_history_search_or_revisions():
    name, hist, _, _ = [b for b in selftest.bad_histories()
                        if b[0] == "non-atomic range"][0]
    # each key on its own is linearizable ...
    assert checker.linearizable(hist, partition=True).verdict == "ok"
    # ... the whole history is not, and the revision replay says why
    assert checker.linearizable(hist, partition=False).verdict == "violation"
    assert checker.check_reads_at_revision(hist, ["a", "b"])
