"""Fault injection: ``kill -9`` a run at random moments and inside its writes, rerun it, and
check that the rerun's results are identical to an undisturbed run and that the cache holds
no temporary file, no claim, no damaged artefact.

    python -m cosy_bench.bench faults --trials 10 [--seed 0] [--out DIR] [OVERRIDE ...]

Each trial starts the app (default: the toy-world default run) on an empty cache and kills
it in one of two ways, alternating: odd trials **inside a write** (the environment hook
``COSY_FAULT_KILL_AT=<n>:<opened|written>`` of :mod:`cosy_bench.cache.faults` kills the
process in its ``n``-th atomic write, ``n`` uniform over the reference run's artefacts,
right after the temporary file is created or after it is written, before the rename); even
trials by SIGKILL of its process group after a uniform random time in ``[0.5 s, T]`` (``T``:
the reference run's wall time). Every third trial (1, 4, 7, ...) runs with the default
logger (W&B offline into the run folder), the others with ``logger=none``. The rerun goes to
the end on the same cache; ``results.csv`` and ``explanations.csv`` must be byte-identical to
the reference and ``summary.json`` equal apart from its time fields and the fields that
count the work this run did rather than found cached (:data:`WORK_FIELDS`). The cache is
audited after the kill and after the rerun (:func:`audit`: temporary files, claims, files
moved aside, artefacts that do not verify, synthetic PNGs by their digest). One line per
trial, a computed verdict, and ``faults.json`` in ``--out``. Exit status 1 if any trial
failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from cosy_bench.cache.checked import load_tensors_checked, read_text_checked
from cosy_bench.cache.faults import KILL_AT, STAGES
from cosy_bench.cache.images import png_problem, recorded_key
from cosy_bench.cache.store import stable_hash

COMPARED = ("results.csv", "explanations.csv")
#: summary.json fields that say when the run happened
TIME_FIELDS = ("date",)
#: summary.json fields that count what this run computed rather than found in the cache
#: (a rerun after a kill finds part of the work done)
WORK_FIELDS = ("images_generated", "control_activations_computed",
               "probe_activations_computed", "concept_activation_sets_computed",
               "exemplars_computed")
DEBRIS = ("temporary", "claims", "moved_aside", "unverified")


def _start(cache: Path, out: Path, overrides: Sequence[str], log: Path, logger: str = "none",
           kill_at: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "COSY_CACHE_DIR": str(cache),
           "WANDB_MODE": "offline" if logger == "default" else "disabled"}
    env.pop(KILL_AT, None)
    if kill_at:
        env[KILL_AT] = kill_at
    # "default": W&B offline (logger=auto logs only with WANDB_API_KEY, so name it)
    chosen = ["logger=none"] if logger == "none" else ["logger=wandb"]
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, "-m", "cosy_bench", *chosen,
                                 f"paths.cache_dir={cache}", f"hydra.run.dir={out}",
                                 *overrides], stdout=f, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL what is left of the run's process group (data loader workers, W&B)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _run(cache: Path, out: Path, overrides: Sequence[str], logger: str = "none") -> float:
    start = time.monotonic()
    proc = _start(cache, out, overrides, out.with_suffix(".log"), logger)
    rc = proc.wait()
    _kill_group(proc)
    if rc != 0:
        raise RuntimeError(f"run failed: see {out.with_suffix('.log')}")
    return time.monotonic() - start


def _last_stage(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if "[cosy_bench]" in ln]
    if not lines:
        return "start-up"
    return lines[-1].split(" - ", 1)[-1][:70]


def png_ok(path: Path) -> bool:
    """Does the synthetic image ``path`` verify against the key it records, and is that key
    the one of its place (folder ``images/<generator>/<hash of the prompt>``, file
    ``<index>.png``)?"""
    data = path.read_bytes()
    key = recorded_key(data)
    if key is None or png_problem(data, key) is not None:
        return False
    prompt, index, _seed = key.rsplit("\x1f", 2)
    return stable_hash(prompt) == path.parent.name and index.isdigit() and \
        int(index) == int(path.stem)


def audit(cache: Path) -> dict[str, int]:
    """Debris and damage in ``cache``: temporary files, claims, files moved aside, artefacts
    that do not verify (safetensors and checked CSVs by checksum and key, PNGs by digest
    and key)."""
    found = {"temporary": 0, "claims": 0, "moved_aside": 0, "unverified": 0, "artefacts": 0}
    for path in cache.rglob("*"):
        name = path.name
        if not path.is_file():
            continue
        if name.endswith(".tmp"):
            found["temporary"] += 1
        elif name.endswith(".lock") or name.endswith(".break"):
            found["claims"] += 1
        elif ".corrupt-" in name:
            found["moved_aside"] += 1
        else:
            found["artefacts"] += 1
            ok = True
            if name.endswith(".safetensors"):
                ok = load_tensors_checked(path, move=False) is not None
            elif name.endswith(".csv") or path.parent.name == "fingerprints":
                ok = read_text_checked(path, move=False) is not None
            elif name.endswith(".png"):
                ok = png_ok(path)
            found["unverified"] += not ok
    return found


def comparable_summary(path: Path) -> dict:
    """summary.json without its time fields and the fields counting this run's work."""
    summary = json.loads(path.read_text(encoding="utf-8"))
    run = summary.get("run", {})
    for name in (*TIME_FIELDS, *WORK_FIELDS):
        run.pop(name, None)
    return summary


def _kill_plan(i: int, rng: random.Random, ref_time: float, writes: int) -> dict:
    """How trial ``i`` is disturbed: odd trials inside a write, even ones at a random time;
    every third one (1, 4, 7, ...) with the default logger."""
    plan = {"logger": "default" if i % 3 == 1 else "none"}
    if i % 2 == 1:
        plan.update(kind="write", write=rng.randint(1, max(1, writes)),
                    point=rng.choice(STAGES))
    else:
        plan.update(kind="time", at=round(rng.uniform(0.5, ref_time), 2))
    return plan


def _trial(i: int, work: Path, plan: dict, ref_time: float, reference: dict,
           ref_summary: dict, overrides: Sequence[str]) -> dict:
    cache, out = work / f"t{i:02d}-cache", work / f"t{i:02d}"
    killed_log = work / f"t{i:02d}-killed.log"
    kill_at = f"{plan['write']}:{plan['point']}" if plan["kind"] == "write" else None
    start = time.monotonic()
    proc = _start(cache, work / f"t{i:02d}-killed", overrides, killed_log, plan["logger"],
                  kill_at)
    try:  # a write kill comes from inside; a time kill from here
        rc = proc.wait(timeout=plan["at"] if plan["kind"] == "time" else 4 * ref_time + 120)
        killed = rc == -signal.SIGKILL
    except subprocess.TimeoutExpired:
        killed = True
    _kill_group(proc)
    died_after = time.monotonic() - start
    debris = audit(cache) if cache.exists() else {}
    rerun = _run(cache, out, overrides, plan["logger"])
    same = {n: (out / n).read_bytes() == reference[n] for n in COMPARED}
    same["summary.json"] = comparable_summary(out / "summary.json") == ref_summary
    after = audit(cache)
    ok = all(same.values()) and not any(after[k] for k in DEBRIS)
    return {"trial": i, **plan, "killed": killed, "died_after_s": round(died_after, 2),
            "stage": _last_stage(killed_log), "left_by_kill": debris,
            "rerun_s": round(rerun, 1), "identical": same, "after_rerun": after, "ok": ok}


def verdict(trials: list[dict]) -> str:
    """The closing line, computed from the trials."""
    n_ok = sum(t["ok"] for t in trials)
    killed = [t for t in trials if t["killed"]]
    in_write = [t for t in killed if t["kind"] == "write"]
    left = {k: sum(t["left_by_kill"].get(k, 0) for t in trials) for k in DEBRIS}
    kept = [t["trial"] for t in trials if any(t["after_rerun"][k] for k in DEBRIS)]
    differ = sorted({n for t in trials for n, same in t["identical"].items() if not same})
    parts = [f"{n_ok}/{len(trials)} trials ok",
             f"{len(killed)} killed mid-run ({len(in_write)} inside a write: "
             + ", ".join(f"{sum(t['point'] == s for t in in_write)} {s}" for s in STAGES) + ")",
             f"the kills left {left['temporary']} temporary files, {left['claims']} claims, "
             f"{left['moved_aside']} moved-aside and {left['unverified']} unverified files",
             "all cleared by the reruns" if not kept else
             f"debris left after the reruns of trials {kept}",
             "every rerun identical (results.csv, explanations.csv, summary.json)" if not differ
             else f"{', '.join(differ)} differed in some reruns"]
    return "; ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cosy_bench.bench faults",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temp dir)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the run")
    args = parser.parse_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="cosy-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    began = time.monotonic()

    ref_time = _run(work / "ref-cache", work / "ref", args.overrides)
    reference = {n: (work / "ref" / n).read_bytes() for n in COMPARED}
    ref_summary = comparable_summary(work / "ref" / "summary.json")
    writes = audit(work / "ref-cache")["artefacts"]
    print(f"reference run: {ref_time:.1f} s, {writes} artefacts written; time kills uniform "
          f"in [0.5, {ref_time:.1f}] s, write kills uniform over the writes", flush=True)
    trials = []
    for i in range(args.trials):
        plan = _kill_plan(i, rng, ref_time, writes)
        trial = _trial(i, work, plan, ref_time, reference, ref_summary, args.overrides)
        trials.append(trial)
        how = (f"in write {plan['write']} ({plan['point']})" if plan["kind"] == "write"
               else f"at {plan['at']:5.1f} s")
        left = {k: v for k, v in trial["left_by_kill"].items() if v and k != "artefacts"}
        after = {k: trial["after_rerun"][k] for k in DEBRIS if trial["after_rerun"][k]}
        print(f"trial {i:2d} [logger={plan['logger']}]: kill {how}"
              f"{'' if trial['killed'] else ' (finished first)'}, {trial['stage']}; "
              f"left {left or 'nothing'}; rerun {trial['rerun_s']:5.1f} s, identical "
              f"{all(trial['identical'].values())}, after rerun {after or 'clean'} -> "
              f"{'ok' if trial['ok'] else 'FAILED'}", flush=True)
    line = verdict(trials)
    n_ok = sum(t["ok"] for t in trials)
    summary = {"trials": len(trials), "ok": n_ok, "reference_s": round(ref_time, 1),
               "total_s": round(time.monotonic() - began, 1), "verdict": line,
               "killed_mid_run": sum(t["killed"] for t in trials),
               "killed_in_write": sum(t["killed"] and t["kind"] == "write" for t in trials),
               "overrides": list(args.overrides), "details": trials}
    (work / "faults.json").write_text(json.dumps(summary, indent=2))
    print(f"{line}; {summary['total_s']:.0f} s in all; {work / 'faults.json'}")
    return 0 if n_ok == len(trials) else 1
