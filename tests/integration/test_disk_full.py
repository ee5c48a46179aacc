"""A full disk under a running member: kvd stops cleanly (exit 1, an error
that says so, naming the file) instead of dying of SIGBUS inside LMDB, and
loses nothing it acknowledged: restarted with room, it has every write.
Needs root (a tmpfs mount), as CI has; bounded in time, the member is
stopped by PID and the mount removed in every case."""
import base64
import os
import subprocess
import time

import pytest
import requests

import kvtest


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def start(procs, bin_dir, data, cport, pport, name):
    argv = [bin_dir / "kvd", "--name", "solo", "--data-dir", data,
            "--listen-client-urls", f"http://127.0.0.1:{cport}",
            "--advertise-client-urls", f"http://127.0.0.1:{cport}",
            "--listen-peer-urls", f"http://127.0.0.1:{pport}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
            "--initial-cluster", f"solo=http://127.0.0.1:{pport}"]
    p = procs.start(name, argv)
    kvtest.wait_for(lambda: not p.alive() or kvtest.port_open(cport),
                    timeout=20, what="kvd to listen")
    assert p.alive(), p.log_text()
    return p


def test_full_disk_stops_cleanly_and_loses_nothing(procs, bin_dir,
                                                   tmp_path):
    if os.geteuid() != 0:
        pytest.fail("needs root to mount a tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=110m", "kvdtest",
                    str(mnt)], check=True, timeout=10)
    s = requests.Session()
    s.trust_env = False
    try:
        cport, pport = kvtest.free_ports(2)
        data = mnt / "solo.etcd"
        p = start(procs, bin_dir, data, cport, pport, "kvd-full")
        url = f"http://127.0.0.1:{cport}/v3/kv/put"
        assert s.post(url, json={"key": b64("k0"), "value": b64("v")},
                      timeout=10).status_code == 200
        # the WAL segment and the store's blocks are allocated: fill the
        # rest of the file system
        balloon = mnt / "balloon"
        with open(balloon, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass
        acked = ["k0"]
        value = "x" * (512 * 1024)
        deadline = time.monotonic() + 60
        i = 0
        while p.alive() and time.monotonic() < deadline:
            i += 1
            try:
                r = s.post(url, json={"key": b64(f"big{i:04d}"),
                                      "value": b64(value)}, timeout=10)
            except requests.RequestException:
                break
            if r.status_code == 200:
                acked.append(f"big{i:04d}")
        kvtest.wait_for(lambda: not p.alive(), timeout=15,
                        what="kvd to stop on the full disk")
        rc = p.popen.returncode
        log = p.log_text()
        assert rc == 1, (rc, log)
        assert "Sanitizer" not in log, log
        assert "no space left on device" in log, log
        assert "data.mdb" in log, log
        # room again: every acknowledged write is there after a restart
        balloon.unlink()
        p2 = start(procs, bin_dir, data, cport, pport, "kvd-after")
        r = s.post(f"http://127.0.0.1:{cport}/v3/kv/range",
                   json={"key": b64("\0"), "range_end": b64("\0"),
                         "keys_only": True}, timeout=10).json()
        have = {base64.b64decode(kv["key"]).decode()
                for kv in r.get("kvs", [])}
        assert set(acked) <= have, sorted(set(acked) - have)
        assert len(acked) > 5  # it wrote until the disk was really full
        p2.stop()
    finally:
        procs.stop_all()
        subprocess.run(["umount", "-l", str(mnt)], timeout=10)
