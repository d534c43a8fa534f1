"""Running cosy_bench on several processes (DDP) and sharing one cache between jobs.

Three parts:

**Ranks.** :func:`session` starts the processes of a DDP trainer configuration
(``trainer=ddp``, ``trainer=ddp_cpu``) and joins them in one ``torch.distributed`` process
group *before* the pipeline starts, so every stage can agree on what to do (:func:`agreed`,
:func:`broadcast_object`, :func:`gather_objects`) and every rank runs the same predict loops
in the same order. Every rank runs the whole pipeline; only rank 0 writes results, logs
remotely and prints (:func:`is_rank_zero`).

Where the processes come from:

- ``python -m cosy_bench trainer=ddp_cpu`` (and ``-m`` sweeps, and Hydra's submitit
  launchers): the session of the first process starts ``devices - 1`` more processes on this
  machine, each re-running the Hydra app on *this job's* overrides with
  ``hydra.run.dir`` set to this job's folder (so no rank makes a new timestamped folder and
  a ``-m`` sweep is not re-run by every rank), ``hydra.output_subdir=null`` and its own log
  file ``<job>_rank<r>.log``. Lightning's own launcher cannot be used here: it re-runs
  ``sys.argv``, which in a sweep is the whole sweep and under submitit is submitit's command.
- ``torchrun``, ``srun`` (SLURM, also through ``hydra/launcher=slurm``), LSF, MPI: the
  scheduler starts one process per device; the session only joins them (Lightning's
  cluster environments read ranks and addresses from the environment).

**Shards.** :class:`ShardSampler` gives rank ``r`` of ``w`` the items ``r, r + w, ...``:
every item exactly once, no padding copies, for any length (7 items on 2 ranks: 4 + 3).
Outputs carry their dataset index; :func:`merge_by_index` puts the gathered pieces back in
input order.

**Claims.** :func:`compute_once` makes one process among all jobs sharing the cache compute
an artefact while the others wait and then read it: an atomic claim file
``<artefact>.lock`` created with ``O_CREAT | O_EXCL`` holding pid, host and time, refreshed
by a heartbeat while the holder works. A claim whose process is dead (same host) or whose
heartbeat is older than ``stale_after`` seconds (any host) is taken over. Artefacts are
written atomically (temporary file, then rename), so no one ever reads a half-written file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DistributedSampler

from cosy_bench.cache import Cache

log = logging.getLogger("cosy_bench")

# environment variables a local launch sets (and a session restores when it ends)
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE",
            "OMP_NUM_THREADS")


# ----------------------------------------------------------------------------- ranks


def is_distributed() -> bool:
    """Is this process one of several in an initialised process group?"""
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


def get_rank() -> int:
    """This process's rank in the process group; 0 without one."""
    return torch.distributed.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return torch.distributed.get_world_size() if is_distributed() else 1


def is_rank_zero() -> bool:
    return get_rank() == 0


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself in a single process)."""
    if not is_distributed():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def agreed(value: Any) -> Any:
    """Rank 0's ``value`` everywhere: decisions that gate a predict loop (is it cached?) must
    be the same on every rank, even when another job writes the cache in between."""
    return broadcast_object(value)


def gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_distributed():
        torch.distributed.barrier()


def require_session(trainer) -> None:
    """Refuse a multi-process trainer whose processes were not started by :func:`session`
    (Lightning would re-run ``sys.argv`` for the other ranks)."""
    n = int(getattr(trainer, "world_size", 1) or 1)
    if n > 1 and get_world_size() != n:
        raise RuntimeError(
            f"the trainer runs {n} processes but no distributed session joins them: run through "
            "`python -m cosy_bench trainer=ddp ...` (or torchrun/srun), or wrap the call in "
            "`with cosy_bench.distributed.session(cfg.trainer): ...`")


# ----------------------------------------------------------------------------- shards


def shard(n: int, rank: int, world: int) -> range:
    """Positions of ``n`` items handled by ``rank`` of ``world``: strided, no padding, so the
    shards are disjoint, cover every item and differ in length by at most one."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} of world {world}")
    return range(rank, n, world)


class ShardSampler(DistributedSampler):
    """A :class:`DistributedSampler` that never pads: rank ``r`` of ``w`` gets items
    ``r, r + w, r + 2w, ...`` of the dataset, in order. Lightning leaves a sampler of this type
    in place (it only injects its own into loaders without a distributed sampler)."""

    def __init__(self, dataset, num_replicas: int | None = None, rank: int | None = None):
        num_replicas = get_world_size() if num_replicas is None else num_replicas
        rank = get_rank() if rank is None else rank
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False,
                         drop_last=False)
        self.indices = shard(len(dataset), rank, num_replicas)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def merge_by_index(parts: Sequence[tuple[torch.Tensor, torch.Tensor] | None]
                   ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Concatenate (values [n_i, ...], index [n_i]) pieces and sort them by index; an index
    seen twice (a padded shard) is kept once. ``None`` when every piece is empty."""
    parts = [p for p in parts if p is not None and p[1].numel()]
    if not parts:
        return None
    values = torch.cat([v for v, _ in parts])
    index = torch.cat([i for _, i in parts])
    order = torch.argsort(index, stable=True)
    values, index = values[order], index[order]
    keep = torch.ones_like(index, dtype=torch.bool)
    keep[1:] = index[1:] != index[:-1]
    return values[keep], index[keep]


# ----------------------------------------------------------------------------- sessions


@dataclass
class Session:
    """The processes of one run: ``rank`` of ``world_size`` (1 of 1 without DDP)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    children: list[subprocess.Popen] = field(default_factory=list)

    @property
    def is_rank_zero(self) -> bool:
        return self.rank == 0


def _cfg_get(cfg, key: str, default=None):
    return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)


def _multi_process(trainer_cfg) -> bool:
    """Could this trainer configuration run more than one process?"""
    if trainer_cfg is None:
        return False
    devices = _cfg_get(trainer_cfg, "devices", "auto")
    nodes = int(_cfg_get(trainer_cfg, "num_nodes", 1) or 1)
    if nodes > 1:
        return True
    if isinstance(devices, int) or (isinstance(devices, str) and devices.strip().isdigit()):
        return int(devices) > 1
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()]) > 1
    if hasattr(devices, "__len__") and not isinstance(devices, str):
        return len(devices) > 1
    return True  # "auto" / -1: ask Lightning how many devices there are


def _fabric(trainer_cfg):
    from lightning.fabric import Fabric

    strategy = _cfg_get(trainer_cfg, "strategy", "auto")
    if not isinstance(strategy, str):
        raise ValueError("trainer.strategy must be a strategy name (e.g. ddp) for multi-process "
                         f"runs, got {strategy!r}")
    if any(word in strategy for word in ("spawn", "fork", "notebook")):
        raise ValueError(f"trainer.strategy={strategy} starts processes that cannot run the "
                         "pipeline; use trainer=ddp or trainer=ddp_cpu (strategy: ddp)")
    return Fabric(accelerator=_cfg_get(trainer_cfg, "accelerator", "auto"),
                  devices=_cfg_get(trainer_cfg, "devices", "auto"),
                  num_nodes=int(_cfg_get(trainer_cfg, "num_nodes", 1) or 1), strategy=strategy)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _quote(value: str) -> str:
    """A Hydra override value quoted, so paths holding ``=``, ``,`` or spaces stay one value."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# hydra overrides a rank > 0 must not repeat: it runs one job, in the folder it is given
_CHILD_DROPS = ("hydra.mode", "hydra.run.dir", "hydra.job.name", "hydra.output_subdir")


def child_command(hydra_cfg, output_dir: str | os.PathLike, local_rank: int,
                  module: str = "cosy_bench") -> list[str]:
    """The command that starts rank ``local_rank`` of the current Hydra job: the app on this
    job's own overrides (not ``sys.argv``: in a ``-m`` sweep that is the whole sweep, under
    submitit it is submitit's), in this job's folder, with its own log file."""
    cmd = [sys.executable, "-m", module]
    name = hydra_cfg.job.get("config_name")
    if name and name != "config":
        cmd.append(f"--config-name={name}")
    for source in hydra_cfg.runtime.get("config_sources") or []:
        if source.get("provider") == "command-line" and source.get("schema") == "file":
            cmd.append(f"--config-dir={source.path}")
    cmd += list(hydra_cfg.overrides.task)
    cmd += [o for o in hydra_cfg.overrides.hydra
            if o.split("=", 1)[0].lstrip("+~") not in _CHILD_DROPS]
    cmd += [f"hydra.run.dir={_quote(str(Path(output_dir).resolve()))}",
            "hydra.output_subdir=null", f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}"]
    return cmd


def _start_children(fabric, output_dir) -> tuple[list[subprocess.Popen], dict]:
    """Start local ranks 1..n-1 of this job; set rank 0's DDP environment. Returns the
    processes and the environment to restore when the session ends."""
    from hydra.core.hydra_config import HydraConfig

    if fabric.strategy.num_nodes > 1:
        raise RuntimeError(
            f"trainer.num_nodes={fabric.strategy.num_nodes}: a run over several nodes needs a "
            "launcher that starts one process per device on every node: srun "
            "(launch/slurm_ddp.sbatch, hydra/launcher=slurm) or torchrun (see launch/README.md)")
    if not HydraConfig.initialized():
        raise RuntimeError("a multi-process trainer needs the Hydra app (python -m cosy_bench) "
                           "or an external launcher (torchrun, srun) to start its processes")
    hc = HydraConfig.get()
    n = len(fabric.strategy.parallel_devices)
    saved = {k: os.environ.get(k) for k in _DDP_ENV}
    os.environ.update(MASTER_ADDR=os.environ.get("MASTER_ADDR", "127.0.0.1"),
                      MASTER_PORT=str(free_port()), NODE_RANK="0", LOCAL_RANK="0",
                      WORLD_SIZE=str(n))
    if saved["OMP_NUM_THREADS"] is None:  # as Lightning: share the cores between the ranks
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    procs = []
    for r in range(1, n):
        cmd = child_command(hc, output_dir, r)
        log.debug("starting rank %d: %s", r, " ".join(cmd))
        procs.append(subprocess.Popen(cmd, env={**os.environ, "LOCAL_RANK": str(r)},
                                      cwd=hc.runtime.cwd))
    return procs, saved


def _watch(procs: list[subprocess.Popen], stop: threading.Event) -> None:
    """If a rank dies, end the others and interrupt rank 0 instead of letting it hang."""
    import _thread

    while not stop.wait(2.0):
        failed = [(i + 1, p.returncode) for i, p in enumerate(procs)
                  if p.poll() is not None and p.returncode != 0]
        if failed:
            log.error("rank %d exited with code %s; stopping the other ranks", *failed[0])
            for p in procs:
                if p.poll() is None:
                    p.kill()
            _thread.interrupt_main()
            if not stop.wait(60):
                os._exit(1)
            return


@contextlib.contextmanager
def session(trainer_cfg, output_dir: str | os.PathLike | None = None) -> Iterator[Session]:
    """Join (and where needed start) the processes of ``trainer_cfg`` for one run.

    A single-process configuration (``trainer=cpu``, ``trainer=gpu``) yields rank 0 of 1 and
    does nothing. A DDP configuration starts the local ranks (see the module docstring) or
    joins the ones a scheduler started, initialises the process group, and on leaving waits
    for the other ranks, destroys the group and restores the environment, so that the next
    job of a ``-m`` sweep starts afresh in the same process.
    """
    if not _multi_process(trainer_cfg) or torch.distributed.is_initialized():
        yield Session(get_rank(), get_world_size())
        return
    fabric = _fabric(trainer_cfg)
    if fabric.world_size <= 1:
        yield Session()
        return
    procs: list[subprocess.Popen] = []
    saved: dict = {}
    threads = torch.get_num_threads()
    stop = threading.Event()
    cosy_log = logging.getLogger("cosy_bench")
    log_level = cosy_log.level
    ok = False
    try:
        if not fabric.strategy.cluster_environment.creates_processes_externally:
            procs, saved = _start_children(fabric, output_dir or ".")
            threading.Thread(target=_watch, args=(procs, stop), daemon=True,
                             name="cosy-ddp-watch").start()
            fabric = _fabric(trainer_cfg)  # now reads LOCAL_RANK etc.: joins, starts nothing
        fabric.launch()  # initialises the process group (and the device of this rank)
        s = Session(fabric.global_rank, fabric.world_size, fabric.local_rank, procs)
        if s.rank:
            cosy_log.setLevel(logging.WARNING)  # rank 0 tells the story
        log.info("distributed: %d processes (%s, %s backend)", s.world_size,
                 type(fabric.strategy.cluster_environment).__name__,
                 torch.distributed.get_backend())
        yield s
        barrier()
        ok = True
    finally:
        stop.set()  # from here on, failures are read from the exit codes
        cosy_log.setLevel(log_level)
        if torch.distributed.is_initialized():
            with contextlib.suppress(Exception):
                torch.distributed.destroy_process_group()
        failed = []
        for i, p in enumerate(procs, start=1):
            try:
                code = p.wait(timeout=300 if ok else 10)
            except subprocess.TimeoutExpired:
                p.kill()
                code = p.wait()
            if code:
                failed.append((i, code))
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        torch.set_num_threads(threads)
        if failed and ok:
            raise RuntimeError(f"rank {failed[0][0]} exited with code {failed[0][1]}; see its "
                               f"log beside run.log")


# ----------------------------------------------------------------------------- claims


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


def claim_is_stale(lock: Path, stale_after: float) -> bool:
    """Is ``lock`` held by a dead process on this host, or without heartbeat for
    ``stale_after`` seconds?"""
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    if age > stale_after:
        return True
    info = read_claim(lock) or {}
    pid = info.get("pid")
    return (info.get("host") == socket.gethostname() and isinstance(pid, int)
            and not _pid_alive(pid))


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
            info = read_claim(lock) or {}
            log.warning("taking over the stale claim %s (pid %s on %s since %s)", lock,
                        info.get("pid"), info.get("host"), info.get("time"))
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
    finally:
        with contextlib.suppress(FileNotFoundError):
            breaker.unlink()


def try_claim(path: str | os.PathLike, stale_after: float = 600.0) -> Claim | None:
    """Claim the right to compute ``path``: a :class:`Claim` if this process got it, None if
    a live holder has it. A stale holder (see :func:`claim_is_stale`) is taken over."""
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if claim_is_stale(lock, stale_after):
                _break(lock, stale_after)
                continue
            return None
        token = uuid.uuid4().hex
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time(),
                       "token": token}, f)
        claim = Claim(lock, token)
        threading.Thread(target=_heartbeat, args=(claim, max(0.5, stale_after / 5)),
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
            if said:
                log.info("%s: made by another process, read after %.1f s", what,
                         time.monotonic() - since)
            return load(wait_for_file(path)), False
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
                info = read_claim(lock_path(path)) or {}
                log.info("%s: another process is computing it (pid %s on %s); waiting", what,
                         info.get("pid"), info.get("host"))
                said = True
            time.sleep(poll)


# ----------------------------------------------------------------------------- the cache


class RankAgreedCache(Cache):
    """A :class:`~cosy_bench.cache.Cache` whose reads rank 0 decides under DDP.

    Whether an artefact is cached decides whether a predict loop runs, and every rank must
    run the same loops. Another job may write the cache at any moment, so ranks looking at
    it a few milliseconds apart could disagree; here rank 0 looks and tells the others. Under
    DDP every rank must therefore make the same ``load_tensors`` calls in the same order (they
    do: every rank runs the same pipeline). In a single process it is a plain Cache.
    """

    def load_tensors(self, path: Path) -> dict[str, torch.Tensor] | None:
        if not is_distributed():
            return super().load_tensors(path)
        if not agreed(path.exists()):
            return None
        return super().load_tensors(wait_for_file(path))
