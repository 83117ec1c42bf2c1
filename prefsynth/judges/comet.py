"""COMET scores (unbabel-comet) for translation pairs, from the main environment.

unbabel-comet 2.2 pins transformers<5 and numpy<2 while vLLM needs transformers>=5, so COMET has
its own environment (.venv-comet, made by `make setup`) and runs there as a worker process
(comet_worker.py). A `CometScorer` starts the worker once, the worker loads the model once, and
every `score()` call is one request over a pipe: a pipeline stage pays the start-up and the
model load once, not per shard. Scores are exactly what `model.predict` returns for the same
samples and batch size.

Samples are dicts with `src`, `mt` and, for reference-based models, `ref` (all strings). Empty
strings are scored as COMET scores them (the encoder sees just <s></s>): no NaN, no special case,
so the score is whatever the model makes of an empty segment. Drop empty answers upstream (length
filter) where that matters.
"""
from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from prefsynth.models import FIXTURE_PREFIX, check_comet_ref

ENV_VAR = "PREFSYNTH_COMET_PYTHON"
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
WORKER = Path(__file__).with_name("comet_worker.py")
FIELDS = ("src", "mt", "ref")


class CometUnavailable(RuntimeError):
    """No Python with unbabel-comet to run the worker in."""


class CometWorkerError(RuntimeError):
    """The worker failed to load the model, failed a request, or died."""


def comet_python_path() -> str:
    """$PREFSYNTH_COMET_PYTHON, else <repo>/.venv-comet/bin/python (not checked)."""
    return os.environ.get(ENV_VAR) or str(REPO_ROOT / ".venv-comet" / "bin" / "python")


def comet_python() -> str:
    """The Python that runs COMET: $PREFSYNTH_COMET_PYTHON, else <repo>/.venv-comet/bin/python.

    Checks that it exists and has a `comet` package, without importing it (that takes seconds
    and the worker imports it anyway; a comet that is installed but fails to import is reported
    as CometUnavailable when the worker starts)."""
    python = comet_python_path()
    problem = _comet_problem(python)
    if problem:
        raise CometUnavailable(_unavailable(python, problem))
    return python


def _unavailable(python: str, problem: str) -> str:
    return (f"COMET is unavailable: {python} {problem}. Run `make setup` (it creates .venv-comet from the `comet` "
            f"extra of pyproject.toml) or set {ENV_VAR} to a Python with unbabel-comet 2.2.x. COMET has its own "
            f"environment because it pins transformers<5, while vLLM needs transformers>=5.")


_working: set[str] = set()  # Pythons that passed; failures are checked again (the fix may come meanwhile)


def _comet_problem(python: str) -> str:
    """'' when `python` finds a `comet` package, else what is wrong."""
    if python in _working:
        return ""
    if not os.access(python, os.X_OK) or os.path.isdir(python):
        return "does not exist or is not executable"
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('comet') is None)"
    try:
        result = subprocess.run([python, "-I", "-c", probe], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"could not be run ({error})"
    if result.returncode != 0:
        return "has no `comet` package (unbabel-comet)"
    _working.add(python)
    return ""


def resolve_comet_model(ref: str) -> str:
    """What the worker loads: a checkpoint file, or a Hub name (downloaded or found in the HF cache).

    `fixture:tiny-comet` / `fixture:tiny-comet-qe` -> the fixture's checkpoints/model.ckpt (built
    on first use); a folder with checkpoints/model.ckpt -> that file; a .ckpt file -> itself."""
    from prefsynth.fixtures import ensure_fixture

    ref = check_comet_ref(ref)
    if ref.startswith(FIXTURE_PREFIX):
        return str(ensure_fixture(ref[len(FIXTURE_PREFIX):]) / "checkpoints" / "model.ckpt")
    path = Path(ref)
    if path.is_file():
        return str(path)
    if (path / "checkpoints" / "model.ckpt").is_file():
        return str(path / "checkpoints" / "model.ckpt")
    return ref


class CometScorer:
    """One COMET model in a worker process, scoring batch after batch until `close()`.

    `device`: "auto" (GPU when torch in the COMET environment sees one), "cpu" or "cuda".
    `info` holds what the worker reported: pid, loads (always 1), requests served, model class,
    device, load_s and `references` ("required", "optional" or "unused")."""

    def __init__(self, model: str, batch_size: int = 16, device: str = "auto"):
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        self.model, self.batch_size, self.device = model, batch_size, device
        python = comet_python()
        self.checkpoint = resolve_comet_model(model)
        # -I keeps the worker's own folder (which holds this comet.py) and PYTHONPATH off its
        # sys.path; start_new_session gives it a process group that close() can kill whole.
        self._process = subprocess.Popen(
            [python, "-I", str(WORKER), self.checkpoint, "--batch-size", str(batch_size), "--device", device],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
            start_new_session=True,
        )
        self._finalizer = weakref.finalize(self, _stop, self._process)
        # Drain stderr continuously (a full pipe would block the worker); keep the tail for errors.
        self._stderr: collections.deque[str] = collections.deque(maxlen=60)
        self._drain = threading.Thread(target=_collect, args=(self._process.stderr, self._stderr), daemon=True)
        self._drain.start()
        ready = self._receive()
        if not ready.get("ok"):
            self.close()
            if ready.get("unavailable"):
                raise CometUnavailable(_unavailable(python, f"cannot run the COMET worker ({ready['error']})"))
            raise CometWorkerError(f"{ready['error']}{self._tail()}")
        self.info: dict = {key: value for key, value in ready.items() if key not in ("ok", "ready")}
        self.info["requests"] = 0

    @property
    def references(self) -> str:
        return self.info["references"]

    def score(self, samples: Sequence[Mapping[str, str]]) -> np.ndarray:
        """One COMET score per sample (float64), in input order."""
        clean = _check_samples(samples, self.references, self.model, self.info["model_class"])
        if not clean:
            return np.empty(0, dtype=np.float64)
        if self._process is None:
            raise CometWorkerError("this CometScorer is closed")
        try:
            self._process.stdin.write(json.dumps({"samples": clean}) + "\n")
            self._process.stdin.flush()
        except BrokenPipeError:
            raise self._died() from None
        try:
            reply = self._receive()
        except BaseException:  # e.g. Ctrl-C: the unread answer would be taken for the next one
            self.close()
            raise
        if not reply.get("ok"):
            raise CometWorkerError(f"COMET ({self.model}) failed on {len(clean)} samples: {reply['error']}{self._tail()}")
        self.info.update(pid=reply["pid"], loads=reply["loads"], requests=reply["requests"])
        return np.asarray(reply["scores"], dtype=np.float64)

    def close(self) -> None:
        """Stop the worker (end of input, then its process group is killed if it lingers)."""
        self._finalizer()
        self._process = None
        self._drain.join(timeout=5)  # the worker is gone: its stderr ends, the tail is complete

    def __enter__(self) -> "CometScorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _receive(self) -> dict:
        line = self._process.stdout.readline() if self._process is not None else ""
        if not line:
            raise self._died()
        return json.loads(line)

    def _died(self) -> CometWorkerError:
        process = self._process
        self.close()
        code = process.returncode if process is not None else None
        return CometWorkerError(f"the COMET worker for {self.model!r} exited (code {code}){self._tail()}")

    def _tail(self) -> str:
        return "\nlast lines of its stderr:\n  " + "\n  ".join(self._stderr) if self._stderr else ""


def _collect(stream, lines: collections.deque) -> None:
    with stream:  # closed here, at end of stream, not under the reading thread by _stop
        for line in stream:
            lines.append(line.rstrip("\n"))


def _stop(process: subprocess.Popen) -> None:
    """Close the worker's input (it exits at end of input); kill its process group if it has not
    exited within a few seconds. Also runs at interpreter exit for scorers never closed."""
    try:
        process.stdin.close()
    except OSError:
        pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the leader is not reaped yet: the group is still ours
        except ProcessLookupError:
            pass
        process.wait()
    try:
        process.stdout.close()
    except OSError:
        pass


def _check_samples(samples: Sequence[Mapping[str, str]], references: str, model: str, model_class: str) -> list[dict]:
    """Plain {src, mt[, ref]} dicts for the worker, or an error naming the sample and field.
    `references` (from the worker) decides about `ref`: required for every sample, dropped when
    the model does not read it, and all-or-none when optional (COMET batches by the first one)."""
    if isinstance(samples, (str, bytes, Mapping)) or not isinstance(samples, Sequence):
        raise TypeError(f"samples must be a list of dicts with src, mt and optional ref, not {type(samples).__name__}")
    clean = []
    for index, sample in enumerate(samples):
        if not isinstance(sample, Mapping):
            raise TypeError(f"sample {index}: expected a dict with src, mt and optional ref, got {type(sample).__name__}")
        unknown = sorted(set(sample) - set(FIELDS))
        if unknown:
            raise ValueError(f"sample {index}: unknown field(s) {unknown}; COMET samples have src, mt and optional ref")
        for field in FIELDS:
            if field not in sample:
                if field != "ref":
                    raise ValueError(f"sample {index}: missing field {field!r}")
            elif not isinstance(sample[field], str):
                raise TypeError(f"sample {index}: field {field!r} must be a string, got {type(sample[field]).__name__}")
        if references == "required" and "ref" not in sample:
            raise ValueError(
                f"sample {index}: missing field 'ref': {model} ({model_class}) is reference-based and needs a "
                f"reference for every sample; for reference-free quality estimation use a QE model such as "
                f"Unbabel/wmt22-cometkiwi-da or fixture:tiny-comet-qe"
            )
        if references == "optional" and clean and ("ref" in sample) != ("ref" in clean[0]):
            raise ValueError(f"sample {index}: field 'ref' given for some samples and not others; {model} scores "
                             f"one batch either with references or without")
        clean.append({field: sample[field] for field in FIELDS if field in sample and
                      (field != "ref" or references != "unused")})
    return clean


def score(samples: Sequence[Mapping[str, str]], model: str = "fixture:tiny-comet", batch_size: int = 16) -> list[float]:
    """One-shot COMET scores (starts a worker, scores, stops it). For many calls, keep a CometScorer."""
    if not samples:
        return []
    with CometScorer(model, batch_size=batch_size) as scorer:
        return scorer.score(samples).tolist()
