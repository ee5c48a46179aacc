#!/usr/bin/env python3
"""check-etcd-compat.py — compares kvd's .proto files with etcd's.

Parses both sides (messages, nested messages, enums, oneofs, fields, services
and rpcs) and reports every difference in name, number, type, label, oneof
membership and streaming shape. etcd's sources are read from the Debian
package golang-etcd-server-dev (nothing of etcd is copied into the repo).

Usage: proto/check-etcd-compat.py [etcd-src-dir]
Exit status 0 when everything matches.
"""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ETCD = sys.argv[1] if len(sys.argv) > 1 else \
    "/usr/share/gocode/src/go.etcd.io/etcd"
GRPC = "/usr/share/gocode/src/google.golang.org/grpc/debian/missing-sources/" \
       "grpc/grpc-proto/master/grpc/health/v1/health.proto"

PAIRS = [
    ("mvccpb/kv.proto", ETCD + "/mvcc/mvccpb/kv.proto"),
    ("authpb/auth.proto", ETCD + "/auth/authpb/auth.proto"),
    ("etcdserverpb/rpc.proto", ETCD + "/etcdserver/etcdserverpb/rpc.proto"),
    ("v3lockpb/v3lock.proto",
     ETCD + "/etcdserver/api/v3lock/v3lockpb/v3lock.proto"),
    ("v3electionpb/v3election.proto",
     ETCD + "/etcdserver/api/v3election/v3electionpb/v3election.proto"),
    ("grpc/health/v1/health.proto", GRPC),
]


def tokens(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.findall(r'"[^"]*"|[A-Za-z_][\w.]*|\d+|[{}()\[\];=<>,]', text)


def skip_block(t, i):
    """t[i] is '{'; returns index after the matching '}'."""
    depth = 0
    while True:
        if t[i] == "{":
            depth += 1
        elif t[i] == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1


def skip_stmt(t, i):
    while t[i] != ";":
        if t[i] == "{":
            return skip_block(t, i)
        i += 1
    return i + 1


def parse(path):
    t = tokens(open(path).read())
    out = {"package": "", "items": {}}
    parse_body(t, 0, len(t), "", out, top=True)
    return out


def parse_body(t, i, end, prefix, out, top=False, oneof=None):
    items = out["items"]
    while i < end:
        w = t[i]
        if w == "}":
            return i + 1
        if w == ";":  # a stray ';' after a block, as in "};"
            i += 1
        elif w == "package":
            out["package"] = t[i + 1]
            i += 3
        elif w in ("syntax", "import", "option", "reserved"):
            i = skip_stmt(t, i)
        elif w == "message":
            name = prefix + t[i + 1]
            items["message " + name] = "message"
            i = parse_body(t, i + 3, end, name + ".", out)
        elif w == "enum":
            name = prefix + t[i + 1]
            i += 3
            while t[i] != "}":
                if t[i] == "option":
                    i = skip_stmt(t, i)
                    continue
                items["enum %s.%s" % (name, t[i])] = t[i + 2]
                i += 3
                if t[i] == "[":
                    while t[i] != "]":
                        i += 1
                    i += 1
                i += 1  # ';'
            i += 1
        elif w == "oneof":
            i = parse_body(t, i + 3, end, prefix, out, oneof=t[i + 1])
        elif w == "service":
            svc = t[i + 1]
            i += 3
            while t[i] != "}":
                if t[i] == "option":
                    i = skip_stmt(t, i)
                    continue
                assert t[i] == "rpc", t[i:i + 5]
                name = t[i + 1]
                j = i + 3
                cs = t[j] == "stream"
                if cs:
                    j += 1
                req = t[j]
                j += 3  # ) returns (
                ss = t[j] == "stream"
                if ss:
                    j += 1
                resp = t[j]
                items["rpc %s.%s" % (svc, name)] = "(%s%s) returns (%s%s)" % (
                    "stream " if cs else "", short(req),
                    "stream " if ss else "", short(resp))
                i = skip_stmt(t, j + 1)
            i += 1
        else:
            label = ""
            if w in ("repeated", "optional"):
                label = w + " "
                i += 1
            typ, name, num = t[i], t[i + 1], t[i + 3]
            items["field %s%s" % (prefix, name)] = "%s%s = %s%s" % (
                label, short(typ), num, " oneof " + oneof if oneof else "")
            i = skip_stmt(t, i)
    return i


def short(typ):
    """Type name without an 'etcd/...' style package path difference."""
    return typ


def main():
    bad = 0
    for ours, theirs in PAIRS:
        if not os.path.exists(theirs):
            print("MISSING reference %s (install golang-etcd-server-dev)"
                  % theirs)
            bad += 1
            continue
        a = parse(os.path.join(HERE, ours))
        b = parse(theirs)
        if a["package"] != b["package"]:
            print("%s: package %s != %s" % (ours, a["package"],
                                            b["package"]))
            bad += 1
        keys = sorted(set(a["items"]) | set(b["items"]))
        diffs = 0
        for k in keys:
            va, vb = a["items"].get(k), b["items"].get(k)
            if va != vb:
                print("%s: %s: ours %r, etcd %r" % (ours, k, va, vb))
                diffs += 1
        bad += diffs
        print("%-32s %4d items, %d differences" % (ours, len(keys), diffs))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
