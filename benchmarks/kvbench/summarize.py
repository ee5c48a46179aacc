#!/usr/bin/python3
"""Turns run-vs-etcd.sh output directories into Markdown tables.

    benchmarks/kvbench/summarize.py OUTDIR...

Per workload: kvd and etcd throughput (median of the rounds, and the
range), p50/p99 medians, and the kvd/etcd throughput ratio of each round's
pair (the two servers measured back to back). For apiserver-mix outputs,
p99 per op type; for lease-keep outputs, RSS per live lease and expiry."""
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt(x, nd=0):
    if x != x:  # NaN
        return "–"
    return f"{x:,.{nd}f}"


def quick_table(dirs):
    rows = defaultdict(lambda: defaultdict(dict))  # (n,mode,name)[server][r]
    for d in dirs:
        f = Path(d) / "summary.tsv"
        if not f.exists():
            continue
        lines = f.read_text().splitlines()
        for i, line in enumerate(lines):
            fields = line.split("\t")
            if len(fields) == 8 and i + 1 < len(lines):
                # early run-vs-etcd.sh printed the error count on its own
                # line: "ERR\t\t\t\t\t\t\t"
                fields.append(lines[i + 1].split("\t")[0])
            if len(fields) != 9 or not fields[1]:
                continue
            n, mode, server, r, name, thr, p50, p99, err = fields
            if name.startswith(("apiserver-mix", "lease-keep-")):
                continue
            try:
                rows[(n, mode, name)][server][r] = (
                    float(thr), float(p50), float(p99), int(err))
            except ValueError:
                rows[(n, mode, name)][server][r] = None
    print("| members | client TLS | workload | kvd req/s median (range) | "
          "etcd req/s median (range) | kvd/etcd per pair | kvd p50 / p99 ms "
          "| etcd p50 / p99 ms | errors kvd/etcd |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (n, mode, name), by in sorted(rows.items()):
        k = {r: v for r, v in by.get("kvd", {}).items() if v}
        e = {r: v for r, v in by.get("etcd", {}).items() if v}
        kt = [v[0] for v in k.values()]
        et = [v[0] for v in e.values()]
        ratios = [k[r][0] / e[r][0] for r in sorted(k) if r in e and e[r][0]]
        kerr = sum(v[3] for v in k.values())
        eerr = sum(v[3] for v in e.values())
        print(f"| {n} | {'yes' if mode == 'tls' else 'no'} | {name} | "
              f"{fmt(med(kt))} ({fmt(min(kt, default=float('nan')))}–"
              f"{fmt(max(kt, default=float('nan')))}) | "
              f"{fmt(med(et))} ({fmt(min(et, default=float('nan')))}–"
              f"{fmt(max(et, default=float('nan')))}) | "
              f"{', '.join(f'{x:.1f}×' for x in ratios)} | "
              f"{fmt(med([v[1] for v in k.values()]), 2)} / "
              f"{fmt(med([v[2] for v in k.values()]), 2)} | "
              f"{fmt(med([v[1] for v in e.values()]), 2)} / "
              f"{fmt(med([v[2] for v in e.values()]), 2)} | {kerr}/{eerr} |")


OPLINE = re.compile(r"^(\S.{27}|  .{26}) +([0-9.]*) +([0-9.]+) +(\d+) +"
                    r"([0-9.]+) +([0-9.]+) +([0-9.]+) +([0-9.]+) +([0-9.]+)$")


def mix_tables(dirs):
    for d in dirs:
        files = sorted(Path(d).glob("*-apiserver-mix-xs.txt"))
        if not files:
            continue
        per = defaultdict(lambda: defaultdict(list))  # op -> server -> [p99]
        rate = defaultdict(lambda: defaultdict(list))
        allp = defaultdict(list)
        errs = defaultdict(int)
        order = []
        for f in files:
            server = f.name.split("-")[0]
            text = f.read_text()
            for line in text.splitlines():
                m = OPLINE.match(line)
                if not m:
                    continue
                op = m.group(1).strip()
                if op not in order:
                    order.append(op)
                per[op][server].append(float(m.group(7)))
                rate[op][server].append(float(m.group(3)))
                errs[server] += int(m.group(4))
            m = re.search(r"\[all ops\][\s\S]*?p50 ([0-9.]+) p90 ([0-9.]+) "
                          r"p99 ([0-9.]+) p99\.9 ([0-9.]+) max ([0-9.]+)", text)
            if m:
                allp[server].append(tuple(float(x) for x in m.groups()))
        print(f"\n{d}: {len(files)} runs")
        print("| op | done/s kvd | done/s etcd | p99 ms kvd (runs) | "
              "p99 ms etcd (runs) |")
        print("|---|---|---|---|---|")
        for op in order:
            k, e = per[op].get("kvd", []), per[op].get("etcd", [])
            print(f"| {op} | {fmt(med(rate[op].get('kvd', [])), 1)} | "
                  f"{fmt(med(rate[op].get('etcd', [])), 1)} | "
                  f"{', '.join(fmt(x, 1) for x in k)} | "
                  f"{', '.join(fmt(x, 1) for x in e)} |")
        for s in ("kvd", "etcd"):
            for t in allp.get(s, []):
                print(f"all ops {s}: p50 {t[0]} p90 {t[1]} p99 {t[2]} "
                      f"p99.9 {t[3]} max {t[4]} ms")
            print(f"errors {s}: {errs[s]}")


def lease_tables(dirs):
    for d in dirs:
        for f in sorted(Path(d).glob("*-lease-keep-100k.txt")):
            t = f.read_text()
            thr = re.search(r"throughput: ([0-9.]+)", t)
            rss = {}
            for m in re.finditer(r"rss (\w+) pid (\d+): VmRSS (\d+) kB "
                                 r"VmHWM (\d+) kB", t):
                rss.setdefault(m.group(1), []).append(int(m.group(3)))
            exp = re.search(r"expired: (.*)", t)
            b, a = sum(rss.get("before", [0])), sum(rss.get("after", [0]))
            x = sum(rss.get("expired", [0]))
            per = (a - b) * 1024 / 100000 / max(1, len(rss.get("before", [1])))
            print(f"{f.name}: grants {thr.group(1) if thr else '-'} req/s; "
                  f"RSS before {b} kB, after {a} kB, after expiry {x} kB "
                  f"(summed over members); {per:.0f} B per live lease per "
                  f"member; {exp.group(1) if exp else 'no expiry line'}")


def main():
    dirs = sys.argv[1:]
    quick_table(dirs)
    mix_tables(dirs)
    lease_tables(dirs)


if __name__ == "__main__":
    main()
