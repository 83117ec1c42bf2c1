"""Model worker processes die with the build, whatever ends it.

A model stage runs in a worker process, and the worker's engine starts processes of its own
(vLLM's engine core and its workers, a multiprocessing resource tracker, the COMET process). On a
GPU those hold the accelerator's memory, so none may outlive the build. Three layers, each for a
way the build can end:

- the worker gets SIGKILL when the build process dies (Linux parent-death signal), so a SIGKILL of
  the build itself, which runs no cleanup, still ends the worker;
- the worker leads its own process group, which everything it starts inherits, so the whole
  group can be killed at once (the build does that whenever a worker returns or it stops);
- a watchdog in that group kills the group as soon as the worker is gone, however it went
  (parent-death signal, OOM killer, a crash, `ray.kill` of an actor): nothing the engine started
  can be left behind, even though vLLM's own processes do not watch their parent.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1
WATCH_INTERVAL_S = 0.2

# Run with `python -S -c` (no site imports: it starts in ~20 ms). argv: the watched pid, the group.
_WATCHDOG = f"""
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
watched, group = int(sys.argv[1]), int(sys.argv[2])
while os.getppid() == watched:
    time.sleep({WATCH_INTERVAL_S})
os.killpg(group, signal.SIGKILL)
"""


def die_with_parent(parent: int) -> None:
    """Linux: this process gets SIGKILL when `parent` (its parent) dies. For `preexec_fn`, as
    `functools.partial(die_with_parent, os.getpid())`: a parent that died before the signal was
    armed is caught by comparing pids, and this process exits before it runs anything."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


def guard_children() -> int | None:
    """Make this process lead a process group (if it does not already) and start the watchdog
    that kills the group when this process is gone. Call it before starting an engine; returns
    the group id (None where this process cannot lead a group of its own)."""
    if os.getpgrp() != os.getpid():
        try:
            os.setpgrp()  # e.g. a Ray actor: its own group, apart from the raylet's
        except OSError:
            return None
    group = os.getpgrp()
    if group != os.getpid():
        return None  # never kill a group that holds processes other than ours
    subprocess.Popen([sys.executable, "-S", "-c", _WATCHDOG, str(os.getpid()), str(group)],
                     stdin=subprocess.DEVNULL, close_fds=True)
    return group


def kill_group(group: int) -> None:
    try:
        os.killpg(group, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


PAUSE_ENV = "PREFSYNTH_PAUSE_AFTER"


def pause_point(name: str) -> int | None:
    """`PREFSYNTH_PAUSE_AFTER=NAME:N` (tests): the count after which `NAME` stops its own process,
    so a test's kill lands at a known moment (a stage's N-th shard, training's checkpoint at step N)."""
    found, _, count = os.environ.get(PAUSE_ENV, "").rpartition(":")
    return int(count) if found == name and count.isdigit() else None


def pause_if(name: str, count: int) -> None:
    if pause_point(name) == count:
        os.kill(os.getpid(), signal.SIGSTOP)
