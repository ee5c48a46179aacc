"""walfault — damage a stopped member's files the way a crash or a bad
disk would, knowing kvd's WAL layout (storage/wal.c):

    segment: 32-byte header ("KVDWALS1", first index, generation, 0, crc)
    record:  40-byte header (hcrc, dcrc, index, term, batch_first, u32 len,
             kind, type, 0) + payload padded with zeros to 8 bytes
    after the last record: zeros (segments are preallocated)

Every function takes a member's data dir and a random.Random and returns a
one-line description of what it did (for the nemesis log), or None when
there was nothing to damage. Expectations (what kvd must do on restart):

    torn_tail     cut the newest segment inside its last record, or zero
                  the record's tail -> the member starts, truncates the
                  torn record, catches up from the leader
    flip_last     flip bytes in the newest segment's last record (header
                  or payload) -> same as a torn tail (nothing follows it)
    flip_middle   flip one byte in a record that has later writes after
                  it -> the member refuses to start, naming the file
    flip_store    flip bytes in the LMDB file db/data.mdb -> the member
                  refuses to start naming the file, or starts and holds
                  exactly what the others hold (the harness compares)
"""
import os
import struct
from pathlib import Path

SEG_HDR = 32
REC_HDR = 40
SEG_MAGIC = b"KVDWALS1"


def segments(data_dir):
    """The member's WAL segment files, oldest first."""
    return sorted(Path(data_dir, "wal").glob("*.wal"))


def records(path):
    """[(offset, size, index, batch_first)] of the records of a segment,
    stopping at the first all-zero header or the end of the file."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != SEG_MAGIC:
        return out
    off = SEG_HDR
    while off + REC_HDR <= len(data):
        h = data[off:off + REC_HDR]
        if h == bytes(REC_HDR):
            break
        index, term, batch_first, ln = struct.unpack_from("<QQQI", h, 8)
        size = REC_HDR + ((ln + 7) & ~7)
        if off + size > len(data):
            break
        out.append((off, size, index, batch_first))
        off += size
    return out


def _newest_with_records(data_dir):
    for seg in reversed(segments(data_dir)):
        recs = records(seg)
        if recs:
            return seg, recs
    return None, []


def _flip(path, off, rnd, nbytes=1):
    with open(path, "r+b") as f:
        for k in range(nbytes):
            f.seek(off + k)
            b = f.read(1)
            if not b:
                break
            f.seek(off + k)
            f.write(bytes([b[0] ^ (1 << rnd.randrange(8))]))
        f.flush()
        os.fsync(f.fileno())


def torn_tail(data_dir, rnd):
    seg, recs = _newest_with_records(data_dir)
    if not recs:
        return None
    off, size, index, _ = recs[-1]
    cut = off + rnd.randrange(1, size)
    if rnd.random() < 0.5:
        os.truncate(seg, cut)
        return f"truncated {seg} at {cut} (inside entry {index} " \
               f"at {off}+{size})"
    with open(seg, "r+b") as f:
        f.seek(cut)
        f.write(bytes(off + size - cut))
        f.flush()
        os.fsync(f.fileno())
    return f"zeroed {seg} bytes {cut}..{off + size} (tail of entry {index})"


def flip_last(data_dir, rnd):
    seg, recs = _newest_with_records(data_dir)
    if not recs:
        return None
    off, size, index, _ = recs[-1]
    at = off + rnd.randrange(size)
    n = rnd.choice([1, 1, 2, 4])
    _flip(seg, at, rnd, n)
    return f"flipped {n} byte(s) at {at} in {seg} (last entry {index} " \
           f"at {off}+{size})"


def flip_middle(data_dir, rnd):
    """Flips one byte of a record that a *later write* follows (its
    batch_first is below the last record's), so it cannot pass for a torn
    tail. Prefers the newest segment; returns None if no such record."""
    for seg in reversed(segments(data_dir)):
        recs = records(seg)
        if len(recs) < 4:
            continue
        last_batch = recs[-1][3]
        cands = [r for r in recs[:-1] if r[2] < last_batch]
        if not cands:
            continue
        off, size, index, _ = cands[rnd.randrange(len(cands) // 4,
                                                   len(cands))]
        at = off + rnd.randrange(size)
        _flip(seg, at, rnd, 1)
        return f"flipped 1 byte at {at} in {seg} (entry {index} at " \
               f"{off}+{size}, later writes follow)"
    return None


def flip_store(data_dir, rnd):
    """Flips 1-4 bytes of the LMDB file, in its used part (the file is
    sparse: the first pages, up to the last non-zero 4 KiB block)."""
    p = Path(data_dir, "db", "data.mdb")
    if not p.exists():
        return None
    with open(p, "rb") as f:
        data = f.read(64 << 20)
    used = len(data.rstrip(b"\0"))
    if used == 0:
        return None
    at = rnd.randrange(used)
    n = rnd.choice([1, 2, 4])
    _flip(p, at, rnd, n)
    return f"flipped {n} byte(s) at {at} of {used} used bytes in {p}"


FAULTS = {"torn_tail": torn_tail, "flip_last": flip_last,
          "flip_middle": flip_middle, "flip_store": flip_store}
