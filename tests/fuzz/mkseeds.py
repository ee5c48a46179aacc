#!/usr/bin/python3
"""mkseeds.py — writes the small seed corpora of the fuzz targets:
tests/data/http1, tests/data/wal, tests/data/proto, tests/data/peer.

The seeds are built here from the formats documented in the headers
(net/http.h, storage/wal.c, raft/io_codec.h, proto/*.proto), so they can be
regenerated after a format change: tests/fuzz/mkseeds.py
"""
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "tests" / "data"


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def write(sub, name, data):
    d = ROOT / sub
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


# ---- http1: mode byte, chunk byte, bytes -----------------------------------
def http1():
    reqs = {
        "get": b"GET /version HTTP/1.1\r\nHost: a\r\n\r\n",
        "post": b"POST /v3/kv/range HTTP/1.1\r\nHost: a\r\nContent-Type: "
                b"application/json\r\nContent-Length: 15\r\n\r\n"
                b'{"key":"Zm9v"}\n',
        "chunked": b"POST /v3/kv/put HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:"
                   b" chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n",
        "pipelined": b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: "
                     b"close\r\n\r\nGET /c HTTP/1.1\r\n\r\n",
        "http10": b"GET /health HTTP/1.0\r\n\r\n",
        "expect": b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 2\r\n\r\nhi",
        "bad": b"GET /\x00 HTTP/9.9\r\n\r\n",
    }
    for name, body in reqs.items():
        write("http1", f"{name}-0", bytes([0, 0]) + body)
        write("http1", f"{name}-async-stream", bytes([0x13, 7]) + body)
    write("http1", "limits", bytes([0x04, 0]) + reqs["post"] * 3)


# ---- wal: flags, u16 meta len, u16 seg1 len, meta, segments ----------------
def wal_meta(term, vote, gen=1, snap_index=0, snap_term=0):
    m = b"KVDWALM1" + struct.pack("<QQQQQI", term, vote, gen, snap_index,
                                  snap_term, 0)
    return m + struct.pack("<I", crc32c(m))


def wal_segment(first, entries, gen=1, batch_first=None):
    h = b"KVDWALS1" + struct.pack("<QQI", first, gen, 0)
    out = h + struct.pack("<I", crc32c(h))
    bf = first if batch_first is None else batch_first
    for i, (term, payload) in enumerate(entries):
        idx = first + i
        rest = struct.pack("<IQQQIBBH", crc32c(payload), idx, term, bf,
                           len(payload), 1, 1, 0)
        out += struct.pack("<I", crc32c(rest)) + rest
        out += payload + b"\0" * (-len(payload) % 8)
    return out


def wal_input(meta, seg1, seg2=None, fix=False):
    flags = (1 if meta is not None else 0) | (2 if fix else 0) | \
        (4 if seg2 is not None else 0)
    meta = meta or b""
    return bytes([flags]) + struct.pack("<HH", len(meta), len(seg1)) + \
        meta + seg1 + (seg2 or b"")


def wal():
    ents = [(1, b"hello"), (1, b""), (2, b"x" * 13), (2, b"\x01\x02\x03")]
    seg = wal_segment(1, ents)
    write("wal", "clean", wal_input(wal_meta(2, 1), seg))
    write("wal", "clean-fix", wal_input(wal_meta(2, 1), seg, fix=True))
    write("wal", "torn-tail", wal_input(wal_meta(2, 1), seg[:-7]))
    write("wal", "zero-tail", wal_input(wal_meta(2, 1), seg + b"\0" * 64))
    write("wal", "no-meta", wal_input(None, seg))
    write("wal", "two-segments",
          wal_input(wal_meta(3, 2), wal_segment(1, ents[:2]),
                    wal_segment(3, ents[2:], batch_first=3)))
    write("wal", "snapshot-meta",
          wal_input(wal_meta(5, 0, snap_index=10, snap_term=4),
                    wal_segment(11, [(5, b"after-snap")])))
    bad = bytearray(seg)
    bad[32 + 40 + 2] ^= 0xFF   # payload flip in the first record
    write("wal", "bitflip", wal_input(wal_meta(2, 1), bytes(bad)))


# ---- proto: protobuf bytes ------------------------------------------------
def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wt, data):
    key = varint(num << 3 | wt)
    if wt == 0:
        return key + varint(data)
    return key + varint(len(data)) + data


def proto():
    put = field(1, 2, b"foo") + field(2, 2, b"bar") + field(3, 0, 7)
    rng = field(1, 2, b"a") + field(2, 2, b"z") + field(3, 0, 10) + \
        field(4, 0, 5)
    cmp_ = field(1, 0, 0) + field(2, 0, 2) + field(3, 2, b"foo") + \
        field(6, 0, 12)
    txn = field(1, 2, cmp_) + field(2, 2, field(2, 2, put)) + \
        field(3, 2, field(1, 2, rng))
    write("proto", "put", put)
    write("proto", "range", rng)
    write("proto", "txn", txn)
    write("proto", "watch", field(1, 2, field(1, 2, b"k") + field(4, 0, 1)))
    write("proto", "lease", field(1, 0, 60) + field(2, 0, 1234))
    write("proto", "batch", field(1, 2, field(1, 0, 9) + field(3, 2, put)) +
          field(1, 2, field(1, 0, 10) + field(4, 2, rng)))
    write("proto", "empty", b"")


# ---- peer: raft message codec ----------------------------------------------
def u64(*vs):
    return b"".join(struct.pack("<Q", v) for v in vs)


def peer():
    hdr = lambda t: bytes([1, t]) + b"\0" * 6  # noqa: E731
    # type numbers follow raft.h: 1 append entries, 2 result, 3 request
    # vote, 4 result, 5 install snapshot, 6 timeout now
    write("peer", "request-vote", hdr(3) + u64(5, 2, 10, 4, 2))
    write("peer", "request-vote-result", hdr(4) + u64(5, 1, 0))
    ae = hdr(1) + u64(5, 9, 4, 8, 2) + u64(5, 1, 3) + u64(5, 2, 0) + b"abc"
    write("peer", "append-entries", ae)
    write("peer", "append-entries-empty", hdr(1) + u64(5, 9, 4, 8, 0))
    write("peer", "append-entries-result", hdr(2) + u64(5, 0, 11))
    conf = u64(2) + u64(1, 1, 14) + b"127.0.0.1:2380" + u64(2, 1, 1) + b"b"
    write("peer", "configuration", conf)
    write("peer", "install-snapshot",
          hdr(5) + u64(5, 100, 4, 90, len(conf)) + conf + u64(3) + b"snp")
    write("peer", "timeout-now", hdr(6) + u64(5, 10, 4))
    write("peer", "descriptor", b"KVSNAPD2" + u64(100, 4, 4096) +
          struct.pack("<II", 0xDEADBEEF, 0) + u64(101, 4))


if __name__ == "__main__":
    http1()
    wal()
    proto()
    peer()
