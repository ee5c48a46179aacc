#!/usr/bin/python3
"""run.py — run robustness scenarios against etcd or kvd and check them.

    tests/robustness/run.py --binary etcd|PATH --duration S [--scenario NAME...]
                            [--runs N] [--clients N] [--tls] [--keep DIR]

Prints per run "scenario=X ops=N checked=N violations=N" and exits 1 on
any violation, or 2 if a check could not finish (budget) or a run failed.
"""
import argparse
import os
import shutil
import signal
import sys
import tempfile
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "integration"))
os.environ.pop("REQUESTS_CA_BUNDLE", None)
os.environ.pop("CURL_CA_BUNDLE", None)

import kvtest  # noqa: E402
import scenarios  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default="etcd",
                    help="etcd (from PATH) or a path to kvd")
    ap.add_argument("--duration", type=float, default=20.0,
                    help="seconds of traffic per run")
    ap.add_argument("--scenario", nargs="*", default=None,
                    help=f"of {', '.join(scenarios.SCENARIOS)}, or 'faults' "
                         f"(every fault scenario) or 'all'; default "
                         f"{' '.join(scenarios.DEFAULT)}")
    ap.add_argument("--runs", type=int, default=1, help="runs per scenario")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--tls", action="store_true",
                    help="https + client certificates, peers over TLS")
    ap.add_argument("--budget", type=float, default=120.0,
                    help="checker time budget per run (s)")
    ap.add_argument("--keep", default=None,
                    help="directory for data, logs and histories "
                         "(default: a temp dir, removed on success)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--interleave", action="store_true",
                    help="run 1 of every scenario, then 2, ... (a soak cut "
                         "short has about as many runs of each)")
    ap.add_argument("--plant-serializable-reads", action="store_true",
                    help="checker validation: make gets serializable "
                         "(stale reads allowed by etcd); violations are "
                         "then expected")
    a = ap.parse_args()
    # SIGTERM/SIGHUP unwind like ^C, so every `finally` (kill the members
    # by pid, delete namespaces and proxies, unmount tmpfs) runs
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    names = []
    for n in a.scenario or scenarios.DEFAULT:
        if n == "all":
            names += (scenarios.DEFAULT + ["kill_once", "none"] +
                      scenarios.FAULTS)
        elif n == "faults":
            names += scenarios.FAULTS
        else:
            names.append(n)
    for n in names:
        if n not in scenarios.SCENARIOS:
            ap.error(f"unknown scenario {n}")
    base = Path(a.keep or tempfile.mkdtemp(prefix="kvd-robustness-"))
    base.mkdir(parents=True, exist_ok=True)
    certs = kvtest.make_certs(base / "pki") if a.tls else None
    worst = 0
    total_ops = total_viol = 0
    summary = {}
    order = ([(n, r) for r in range(a.runs) for n in names] if a.interleave
             else [(n, r) for n in names for r in range(a.runs)])
    for name, r in order:
        if True:
            wd = base / f"{name}-{r}"
            pm = kvtest.ProcessManager(wd)
            wd.mkdir(parents=True, exist_ok=True)
            try:
                res = scenarios.run_scenario(
                    pm, name, binary=a.binary, duration=a.duration,
                    clients=a.clients, tls=certs, workdir=wd,
                    seed=None if a.seed is None else a.seed + r,
                    budget=a.budget,
                    serializable=a.plant_serializable_reads)
            except Exception:  # noqa: BLE001 - report and go on
                traceback.print_exc()
                print(f"scenario={name} run={r} error (logs in {wd})")
                print(pm.logs()[-4000:])
                worst = max(worst, 2)
                continue
            finally:
                pm.stop_all()
            nv = len(res["violations"])
            total_ops += res["ops"]
            total_viol += nv
            nf = len(res["findings"])
            sm = summary.setdefault(name, [0, 0, 0, 0, 0, 0])
            sm[0] += 1
            sm[1] += res["checked"]
            sm[2] += nv
            sm[3] += res["lost"]
            sm[4] += res["verdict"] != "ok"
            sm[5] += nf
            print(f"scenario={name} ops={res['ops']} checked={res['checked']}"
                  f" violations={nv} lost={res['lost']} findings={nf}"
                  f" verdict={res['verdict']}"
                  f" ok={res['ok']} unknown={res['unknown']}"
                  f" failed_reads={res['fail']} restarts={res['restarts']}"
                  f" seed={res['seed']} duration={res['duration']}s",
                  flush=True)
            for v in res["violations"][:10]:
                print(f"  VIOLATION: {v}")
            for u in res["unknown_search"]:
                print(f"  UNKNOWN: {u}")
            for u in res["notes"]:
                print(f"  note: {u}")
            for f in res["findings"]:
                print(f"  FINDING: {f}")
            if nv or nf:
                print(f"  history: {res['history']}")
                worst = max(worst, 1)
            elif res["verdict"] == "unknown":
                worst = max(worst, 2)
            elif not a.keep:
                # a passing run's data (3 x 64 MiB preallocated WAL) goes
                shutil.rmtree(wd, ignore_errors=True)
    for name, (runs, checked, nv, lost, bad, nf) in summary.items():
        print(f"summary scenario={name} runs={runs} checked={checked} "
              f"violations={nv} lost={lost} findings={nf} not_ok={bad}")
    if worst == 0 and total_viol == 0 and not a.keep:
        shutil.rmtree(base, ignore_errors=True)
        where = "removed"
    else:
        where = str(base)
    print(f"total ops={total_ops} violations={total_viol} (data: {where})")
    return 1 if total_viol else worst


if __name__ == "__main__":
    sys.exit(main())
