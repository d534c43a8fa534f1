"""Claims on shared cache files: one process among all jobs sharing the cache computes
an artefact, the others wait and read it.

:func:`compute_once` takes an atomic claim file ``<artefact>.lock`` holding pid, host and
time. The claim is written whole to a temporary file first and then hard-linked to its name
(``link`` fails if the name exists), so an empty or half-written claim never exists; should
one appear anyway (a file system without hard links, an outside edit), it is stale once
``UNREADABLE_AFTER`` seconds old.

Liveness is what the holder proves, not what its PID suggests: a thread of the holder
refreshes the claim's modification time every :func:`heartbeat_s` seconds (5; environment
``COSY_CLAIM_HEARTBEAT``) while it works. A claim is taken over (:func:`claim_is_stale`) when

* its holder is on this host and its process is dead (or a zombie), at once;
* its holder is on this host and the last beat is older than :data:`MISSED_BEATS` beats (a
  live but unrelated process under a reused PID, a restarted container);
* its holder is on another host and this process has seen no new beat for
  :data:`MISSED_BEATS` beats on its own monotonic clock (no clock skew between hosts
  matters: only whether the time stamp moves);
* its last beat is older than ``stale_after`` seconds (any host; a first look at start-up).

A waiting process says at WARNING level who holds the claim, since when, and when it will
take over. Artefacts are written atomically (temporary file, then rename), so no
one ever reads a half-written file. :func:`split_work` claims many artefacts one by one, so
that jobs started together share the work.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosy_bench.distributed.ranks import agreed, broadcast_object, is_rank_zero

log = logging.getLogger("cosy_bench")

#: seconds after which a claim that cannot be parsed is stale (a claim is written whole)
UNREADABLE_AFTER = 5.0
#: beats a holder may miss before its claim is taken over
MISSED_BEATS = 4
#: the environment variable of the heartbeat interval (seconds)
HEARTBEAT_ENV = "COSY_CLAIM_HEARTBEAT"
#: (modification time in ns, monotonic time it was first seen) per claim this process watched
_BEATS: dict[str, tuple[int, float]] = {}


def heartbeat_s() -> float:
    """Seconds between a holder's beats: ``$COSY_CLAIM_HEARTBEAT``, default 5."""
    try:
        return max(0.05, float(os.environ.get(HEARTBEAT_ENV, "5")))
    except ValueError:
        return 5.0


def takeover_s() -> float:
    """Seconds without a beat after which a claim is taken over."""
    return MISSED_BEATS * heartbeat_s()


def writer_tag() -> str:
    """``<pid>@<host hash>``: temporary files carry it, so a cleaner can tell a dead writer's."""
    host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
    return f"{os.getpid()}@{host}"


@dataclass
class Claim:
    """A held claim on ``lock``; :meth:`release` it when the artefact is written."""

    lock: Path
    token: str
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def release(self) -> None:
        self._stop.set()
        info = read_claim(self.lock)
        if info is not None and info.get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                self.lock.unlink()


def lock_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".lock")


def read_claim(lock: Path) -> dict | None:
    """The holder of ``lock`` (``{}`` while it is still being written); None if free."""
    try:
        text = lock.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        info = json.loads(text)
        return info if isinstance(info, dict) else {}
    except ValueError:
        return {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (dead, not yet reaped by its parent) still answers kill(pid, 0)
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _look(lock: Path) -> tuple[os.stat_result, dict] | None:
    """(stat, holder) of ``lock`` read through one open file (on NFS, opening fetches fresh
    attributes); None if free."""
    try:
        with open(lock, "rb") as f:
            st, data = os.fstat(f.fileno()), f.read()
    except FileNotFoundError:
        return None
    try:
        info = json.loads(data.decode("utf-8"))
        return st, info if isinstance(info, dict) else {}
    except ValueError:
        return st, {}


def _unchanged_for(lock: Path, mtime_ns: int) -> float:
    """Seconds this process has seen ``lock`` with the beat ``mtime_ns`` (monotonic clock)."""
    now = time.monotonic()
    seen = _BEATS.get(str(lock))
    if seen is None or seen[0] != mtime_ns:
        _BEATS[str(lock)] = (mtime_ns, now)
        return 0.0
    return now - seen[1]


def claim_is_stale(lock: Path, stale_after: float = 600.0) -> bool:
    """Is ``lock`` held by a dead process, or by one that stopped beating (see the module
    docstring), or without a beat for ``stale_after`` seconds?"""
    looked = _look(lock)
    if looked is None:
        return False
    st, info = looked
    age = time.time() - st.st_mtime
    if age > stale_after:
        return True
    if info == {}:
        return age > UNREADABLE_AFTER  # claims are written whole: an unparseable one is debris
    pid = info.get("pid")
    if info.get("host") == socket.gethostname():
        if isinstance(pid, int) and not _pid_alive(pid):
            return True
        return age > takeover_s()  # one clock: the beats stopped
    return _unchanged_for(lock, st.st_mtime_ns) > takeover_s()


def describe_claim(lock: Path) -> str:
    """Who holds ``lock``, since when, its last beat and when it will be taken over."""
    looked = _look(lock)
    if looked is None:
        return "released"
    st, info = looked
    stamp = lambda t: time.strftime("%H:%M:%S", time.localtime(t))  # noqa: E731
    since = info.get("time")
    since = stamp(since) if isinstance(since, (int, float)) else "?"
    if info.get("host") == socket.gethostname():
        due = st.st_mtime + takeover_s()
    else:
        due = time.time() + max(0.0, takeover_s() - _unchanged_for(lock, st.st_mtime_ns))
    return (f"pid {info.get('pid')} on {info.get('host')} since {since}, last beat "
            f"{max(0.0, time.time() - st.st_mtime):.0f} s ago; taken over at {stamp(due)} "
            f"unless it beats again (every {heartbeat_s():g} s)")


def _heartbeat(claim: Claim, every: float) -> None:
    while not claim._stop.wait(every):
        info = read_claim(claim.lock)
        if info is None or info.get("token") != claim.token:
            return  # released, or taken over after we stalled
        with contextlib.suppress(OSError):
            os.utime(claim.lock)


def _break(lock: Path, stale_after: float) -> None:
    """Remove a stale ``lock``, once, however many processes try at the same moment."""
    breaker = lock.with_name(lock.name + ".break")
    try:
        fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - breaker.stat().st_mtime > 60:  # a breaker that died mid-way
                breaker.unlink()
        return
    os.close(fd)
    try:
        if claim_is_stale(lock, stale_after):  # still the stale one, under the breaker
            log.warning("taking over the stale claim %s (%s)", lock,
                        describe_claim(lock).split("; taken over")[0])
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
    finally:
        with contextlib.suppress(FileNotFoundError):
            breaker.unlink()


def _create_claim(lock: Path, token: str) -> bool:
    """Create ``lock`` holding this process's claim, whole or not at all; False if it exists."""
    text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time(),
                       "token": token})
    tmp = lock.with_name(f".{lock.name}.{writer_tag()}.{token[:8]}.tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        os.link(tmp, lock)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links on this file system: exclusive create, then write
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def try_claim(path: str | os.PathLike, stale_after: float = 600.0) -> Claim | None:
    """Claim the right to compute ``path``: a :class:`Claim` if this process got it, None if
    a live holder has it. A stale holder (see :func:`claim_is_stale`) is taken over."""
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        token = uuid.uuid4().hex
        if not _create_claim(lock, token):
            if claim_is_stale(lock, stale_after):
                _break(lock, stale_after)
                continue
            return None
        claim = Claim(lock, token)
        threading.Thread(target=_heartbeat, args=(claim, min(heartbeat_s(), stale_after / 5)),
                         daemon=True, name="cosy-claim-heartbeat").start()
        return claim
    return None


def wait_for_file(path: Path, timeout: float = 60.0) -> Path:
    """``path`` once this process sees it (a shared file system may show a file renamed on
    another node a little later)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise FileNotFoundError(errno.ENOENT, "rank 0 saw this cache file, this rank does not "
                                    "(is paths.cache_dir on a file system all nodes share?)",
                                    str(path))
        time.sleep(0.2)
    return path


def compute_once(path: str | os.PathLike, compute: Callable[[], Any],
                 save: Callable[[Path, Any], None], load: Callable[[Path], Any], *,
                 what: str = "artefact", stale_after: float = 600.0, poll: float = 1.0
                 ) -> tuple[Any, bool]:
    """``(value, computed)``: ``load(path)`` if the artefact exists or another process makes
    it meanwhile, else ``compute()`` (then ``save(path, value)``) under a claim on ``path``.

    Of all processes and jobs that share the cache, one computes and the others wait for its
    file. Under DDP call it on every rank: rank 0 holds the claim and decides, every rank
    runs ``compute`` (a predict loop) together, rank 0 saves, every rank loads a hit.
    """
    path = Path(path)
    leader = is_rank_zero()
    since, said = time.monotonic(), False
    while True:
        claim, state = None, "wait"
        if leader:
            if path.exists():
                state = "hit"
            else:
                claim = try_claim(path, stale_after)
                if claim is not None and path.exists():  # finished just before we claimed
                    claim.release()
                    claim, state = None, "hit"
                elif claim is not None:
                    state = "compute"
        state = broadcast_object(state)
        if state == "hit":
            value = load(path)  # None: it did not verify and was moved aside
            if not agreed(value is not None):
                continue
            if value is None:  # rank 0 read it; a shared file system may show it later here
                value = load(wait_for_file(path))
            if said:
                log.info("%s: made by another process, read after %.1f s", what,
                         time.monotonic() - since)
            return value, False
        if state == "compute":
            try:
                value = compute()
                if leader:
                    save(path, value)
            finally:
                if claim is not None:
                    claim.release()
            return value, True
        if leader:
            if not said:
                log.warning("%s: another process is computing it (%s); waiting", what,
                            describe_claim(lock_path(path)))
                said = True
            time.sleep(poll)


def split_work(units: list, done: Callable[[Any], bool], work: Callable[[list], None], *,
               path_of: Callable[[Any], Path], chunk: int = 1, what: str = "work",
               stale_after: float = 600.0, poll: float = 1.0) -> int:
    """Do every unit of ``units`` not ``done`` yet, sharing them with the other jobs of the
    cache: claim up to ``chunk`` free units (a claim on ``path_of(unit)``), ``work`` on
    them, release; when every missing unit is held by another job, wait for it and check it
    (a dead holder's unit is taken over). Returns how many units this job did.

    Under DDP call it on every rank: rank 0 checks, claims and tells the others which units
    to ``work`` on together (``work`` may run a predict loop); ``done`` runs on rank 0 only.
    """
    leader = is_rank_zero()
    todo = [u for u in units if not done(u)] if leader else []
    did, said = 0, False
    while True:
        mine, claims, waiting = [], [], []
        if leader:
            for u in list(todo):
                if len(mine) >= chunk:
                    break
                claim = try_claim(path_of(u), stale_after)
                if claim is None:
                    waiting.append(u)
                elif done(u):  # finished by another job just before we claimed it
                    claim.release()
                    todo.remove(u)
                else:
                    mine.append(u)
                    claims.append(claim)
        mine = agreed(mine)
        if mine:
            try:
                work(mine)
            finally:
                for claim in claims:
                    claim.release()
            did += len(mine)
            todo = [u for u in todo if u not in mine]
            continue
        if leader and waiting and not said:
            log.warning("%s: %d held by other jobs; waiting (%s: %s)", what, len(waiting),
                        lock_path(path_of(waiting[0])).name,
                        describe_claim(lock_path(path_of(waiting[0]))))
            said = True
        if leader:
            todo = [u for u in todo if not (read_claim(lock_path(path_of(u))) is None
                                            and done(u))]
        if not agreed(bool(todo)):
            return did
        time.sleep(poll)
