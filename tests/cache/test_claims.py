"""Claims are written whole; unreadable ones go stale; split_work shares units between jobs
(cache/claims.py). Exclusivity, takeover and heartbeat: tests/distributed/test_distributed.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from cosy_bench.cache.claims import (
    UNREADABLE_AFTER,
    claim_is_stale,
    lock_path,
    split_work,
    try_claim,
)

REPO = Path(__file__).resolve().parents[2]


def test_a_claim_is_complete_from_the_moment_it_exists(tmp_path):
    claim = try_claim(tmp_path / "a.bin")
    info = json.loads(lock_path(tmp_path / "a.bin").read_text())
    assert info["pid"] == os.getpid() and info["token"] == claim.token
    assert try_claim(tmp_path / "a.bin") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin.lock"]  # no temporary left
    claim.release()


def test_an_empty_claim_is_stale_after_a_few_seconds_not_ten_minutes(tmp_path):
    lock = lock_path(tmp_path / "a.bin")
    lock.write_text("")  # what a writer killed between create and write used to leave
    assert not claim_is_stale(lock, stale_after=600)  # may be in the middle of a write
    old = time.time() - UNREADABLE_AFTER - 1
    os.utime(lock, (old, old))
    assert claim_is_stale(lock, stale_after=600)
    start = time.monotonic()
    claim = try_claim(tmp_path / "a.bin", stale_after=600)
    assert claim is not None and time.monotonic() - start < 5
    claim.release()


def test_split_work_does_every_missing_unit_once(tmp_path):
    done_files = {u: tmp_path / f"{u}.out" for u in "abcdef"}
    done_files["b"].write_text("b")
    worked = []

    def work(units):
        worked.append(list(units))
        for u in units:
            done_files[u].write_text(u)

    n = split_work(list(done_files), lambda u: done_files[u].exists(), work,
                   path_of=done_files.__getitem__, chunk=2)
    assert n == 5 and worked == [["a", "c"], ["d", "e"], ["f"]]
    assert not list(tmp_path.glob("*.lock"))


WORKER = """
import sys, time
from pathlib import Path
from cosy_bench.cache.claims import split_work
root, me = Path(sys.argv[1]), sys.argv[2]
(root / f"ready-{me}").write_text(me)  # start together: both imported, then go
while len(list(root.glob("ready-*"))) < 2:
    time.sleep(0.01)
units = [f"u{i:02d}" for i in range(12)]
def work(us):
    for u in us:
        (root / f"{u}.by-{me}").write_text(me)  # one marker per job that worked on it
        time.sleep(0.15)
        (root / f"{u}.out").write_text(me)
split_work(units, lambda u: (root / f"{u}.out").exists(), work,
           path_of=lambda u: root / f"{u}.out", chunk=1, poll=0.1)
"""


def test_two_jobs_started_together_split_the_units(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), name], env=env)
             for name in ("A", "B")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    markers = [sorted(p.suffix for p in tmp_path.glob(f"u{i:02d}.by-*")) for i in range(12)]
    assert all(len(m) == 1 for m in markers)  # no unit done twice
    assert {m[0] for m in markers} == {".by-A", ".by-B"}  # both jobs did a share
