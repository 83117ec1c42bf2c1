"""Launching training in other processes: torchrun with N ranks on this machine."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


class TrainingFailed(RuntimeError):
    """A torchrun training ended with a non-zero exit code (each rank printed its error)."""


def torchrun(config: str | Path, nproc: int, resume: bool = False) -> None:
    """One machine, `nproc` ranks, through torchrun itself (its elastic agent forwards signals and
    tears every rank down when one fails). Several machines: run torchrun on each (README)."""
    from prefsynth.processes import die_with_parent

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "prefsynth.train", str(config), *(["--resume"] if resume else [])]
    parent = os.getpid()
    code = subprocess.Popen(command, preexec_fn=lambda: die_with_parent(parent)).wait()
    if code != 0:
        raise TrainingFailed(f"training {config} with {nproc} processes failed (torchrun exit code {code}); "
                             "each rank's error is printed above")
