"""Claims are written whole; unreadable ones go stale; split_work shares units between jobs
(cache/claims.py). Exclusivity, takeover and heartbeat: tests/distributed/test_distributed.py."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cosy_bench.cache.claims import (
    HEARTBEAT_ENV,
    MISSED_BEATS,
    UNREADABLE_AFTER,
    claim_is_stale,
    compute_once,
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


def _held_by(lock: Path, pid: int, host: str) -> None:
    lock.write_text(json.dumps({"pid": pid, "host": host, "time": time.time(), "token": "x"}))


@pytest.mark.parametrize("host", ["here", "elsewhere"])
def test_a_claim_of_a_live_foreign_pid_is_taken_over_within_the_heartbeat_window(
        tmp_path, monkeypatch, caplog, host):
    """A live but unrelated PID (PID reuse, a restarted container) on this host, or a job
    on another host, that does not beat: taken over after a few missed beats, not 600 s."""
    import socket

    monkeypatch.setenv(HEARTBEAT_ENV, "0.25")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        target = tmp_path / "a.bin"
        _held_by(lock_path(target), sleeper.pid,
                 socket.gethostname() if host == "here" else "node-17")
        start = time.monotonic()
        with caplog.at_level(logging.INFO, logger="cosy_bench"):
            value, computed = compute_once(target, lambda: "made",
                                           lambda p, v: p.write_text(v),
                                           lambda p: p.read_text(), poll=0.05)
        took = time.monotonic() - start
    finally:
        sleeper.kill()
        sleeper.wait()
    assert computed and value == "made" and target.read_text() == "made"
    assert MISSED_BEATS * 0.25 - 0.1 <= took < 5  # the window, not stale_after (600 s)
    waiting = [r for r in caplog.records if "waiting" in r.getMessage()]
    assert waiting and waiting[0].levelno == logging.WARNING
    text = waiting[0].getMessage()
    assert f"pid {sleeper.pid} on" in text and "since" in text and "taken over at" in text
    assert "taking over the stale claim" in caplog.text
    assert not lock_path(target).exists()


def test_a_beating_holder_on_another_host_is_not_taken_over(tmp_path, monkeypatch):
    monkeypatch.setenv(HEARTBEAT_ENV, "0.1")
    lock = lock_path(tmp_path / "a.bin")
    _held_by(lock, 1, "node-17")
    for _ in range(12):  # 1.2 s: three windows, the holder beats on
        os.utime(lock)
        assert not claim_is_stale(lock)
        time.sleep(0.1)
    deadline = time.monotonic() + 3
    while not claim_is_stale(lock):  # it stops beating: stale after the window
        assert time.monotonic() < deadline
        time.sleep(0.05)
