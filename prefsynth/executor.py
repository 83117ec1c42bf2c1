"""The local executor: runs each stage's pending shards on this machine, in order.

CPU stages run in this process. Stages that hold a model run in a worker process
(`python -m prefsynth.worker`) that loads the model once, processes every pending shard, and
exits, so memory is returned before the next model loads. Executors know how to move shards,
not what a stage computes.
"""
from __future__ import annotations

import codecs
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from prefsynth.feed import EngineFeed
from prefsynth.processes import die_with_parent, guard_children, kill_group, pause_if
from prefsynth.runs import RunDirError, RunDir, write_json_atomic
from prefsynth.stages import Op, ShardInput, ShardOutput, op_from_spec

PROMPTS_STAGE = "prompts"
ERROR_FD_ENV = "PREFSYNTH_ERROR_FD"  # the worker reports why it failed through this pipe
PROGRESS_FD_ENV = "PREFSYNTH_PROGRESS_FD"  # the worker's progress bar and status lines, for the terminal
DEBUG_ENV = "PREFSYNTH_DEBUG"  # set by `--debug`: full tracebacks, from the build and its workers
VERBOSE_ENV = "PREFSYNTH_VERBOSE"  # set by `--verbose`: workers' own output streams to the terminal too
LOG_TAIL_LINES = 30  # of a failed worker's log, shown with its error
MAX_REPORT = 16_000  # bytes of a worker's failure report that the build keeps
# `STAGE:N`: the process writing STAGE stops itself (SIGSTOP) after its N-th shard, so a
# crash-recovery test can kill the run from outside at an exact point instead of racing a
# toy model whose shards come milliseconds apart on a fast machine.
def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def worker_log(run: RunDir, stage: str) -> Path:
    """Where a model worker's own output goes (vLLM, torch, COMET and the processes they start):
    `RUN/logs/<stage>.log`, appended to by every build; a worker running several stages of one
    model logs under the first."""
    return run.path / "logs" / f"{stage}.log"


def log_tail(path: Path, offset: int = 0, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log from `offset`, as a terminal would have shown them: a
    progress bar redrawn with carriage returns counts once, in its last state."""
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return ""
    shown = [line.rsplit("\r", 1)[-1].rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return "\n".join([line for line in shown if line.strip()][-lines:])


def describe(error: BaseException) -> str:
    """One line for a failure: our own errors say what to do already; others get their type."""
    if isinstance(error, (RunDirError, ShardFailed)):
        return str(error)
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


@dataclass
class StagePlan:
    name: str  # folder name in the run directory
    op: Op
    inputs: list[str]  # upstream stages whose shard k is concatenated as this stage's input
    context: dict[str, str] = field(default_factory=dict)  # extra upstream tables, by key
    prompts: str = PROMPTS_STAGE  # where this stage reads the prompt set (translate, when configured)
    hash: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "op": self.op.spec(), "inputs": self.inputs, "context": self.context,
                "prompts": self.prompts, "hash": self.hash}

    @classmethod
    def from_json(cls, data: dict) -> "StagePlan":
        return cls(data["name"], op_from_spec(data["op"]), data["inputs"], data["context"], data["prompts"], data["hash"])


class StageFailed(RuntimeError):
    pass


class ShardFailed(RuntimeError):
    """A stage's op failed on one shard: names the shard and the cause."""

    def __init__(self, shard: int, cause: BaseException):
        self.shard, self.cause = shard, cause
        super().__init__(f"shard {shard}: {describe(cause)}")


def read_input(run: RunDir, plan: StagePlan, shard: int) -> ShardInput:
    prompts = run.stage(plan.prompts).read_shard(shard)
    tables = [run.stage(name).read_shard(shard) for name in plan.inputs]
    table = pa.concat_tables(tables, promote_options="default") if tables else None
    context = {key: run.stage(name).read_shard(shard) for key, name in plan.context.items()}
    return ShardInput(shard, prompts, table, context)


class ShardSink:
    """Writes finished shards atomically, in any order, and shows progress: every executor's
    outputs go through here, so a shard on disk always means the same thing."""

    def __init__(self, run: RunDir, plan: StagePlan, shards: list[int], *, progress: bool = True, file: Any = None):
        self.stage = run.stage(plan.name)
        prompts = run.stage(plan.prompts)
        self.rows = {s: pq.read_metadata(prompts.shard_path(s)).num_rows for s in shards}
        self.bar = tqdm(total=sum(self.rows.values()), desc=plan.name, unit="prompt", disable=not progress,
                        dynamic_ncols=True, file=file)
        self.started, self.tokens, self.written = time.perf_counter(), 0.0, 0
        self.lock = threading.Lock()

    def write(self, shard: int, output: ShardOutput, seconds: float) -> None:
        with self.lock:  # shards in flight finish in threads of their own (feed.py): one writes at a time
            self.stage.write_shard(shard, output.table, output.rejects, wall_s=f"{seconds:.3f}")
            self.written += 1
            pause_if(self.stage.name, self.written)
            self.tokens += output.stats.get("output_tokens", 0)
            self.bar.update(self.rows[shard])
            if self.tokens:
                self.bar.set_postfix_str(f"{self.tokens / (time.perf_counter() - self.started):,.0f} tok/s")

    def __enter__(self) -> "ShardSink":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.close()


def process_shards(run: RunDir, plan: StagePlan, shards: list[int], resource: Any, *, progress: bool = True,
                   in_flight: int = 1, file: Any = None) -> None:
    """Map the op over shards, writing each output atomically as soon as it is done. With
    `in_flight` > 1 and a generating vLLM engine, that many shards run at once against the one
    engine (feed.py), so its queue never drains at a shard boundary."""
    fed = EngineFeed.over(resource) if in_flight > 1 and len(shards) > 1 else None
    with ShardSink(run, plan, shards, progress=progress, file=file) as sink:
        if fed is None:
            for shard in shards:
                _process_shard(run, plan, shard, resource, sink)
        else:
            feed, wrapped = fed
            feed.run([functools.partial(_process_shard, run, plan, shard, wrapped, sink) for shard in shards], in_flight)


def _process_shard(run: RunDir, plan: StagePlan, shard: int, resource: Any, sink: ShardSink) -> None:
    try:
        inputs = read_input(run, plan, shard)
        t0 = time.perf_counter()
        output = plan.op.process(resource, inputs)
        sink.write(shard, output, time.perf_counter() - t0)
    except RunDirError:
        raise  # a full disk: the message names the file already
    except Exception as error:
        raise ShardFailed(shard, error) from error


def fit_inputs(run: RunDir, plan: StagePlan, shards: list[int]) -> None:
    """Stages with statistics over the whole input (per-language calibration) see the columns
    they name from every shard, finished or not, before any shard is processed."""
    columns = plan.op.fit_columns() if hasattr(plan.op, "fit_columns") else []
    if columns:
        tables = [pq.read_table(run.stage(name).shard_path(s), columns=columns) for s in shards for name in plan.inputs]
        plan.op.fit(pa.concat_tables(tables, promote_options="default"))


def pending_shards(run: RunDir, plan: StagePlan, shards: list[int]) -> list[int]:
    """The shards of `plan` not on disk yet. When there are any, the stage's whole-input
    statistics are fitted first (fit_inputs), so every executor starts a stage the same way."""
    stage = run.stage(plan.name)
    pending = [s for s in shards if not stage.has_shard(s)]
    if pending:
        fit_inputs(run, plan, shards)
    return pending


class LocalExecutor:
    name = "local"

    def __init__(self, progress: bool = True, in_flight: int | None = None):
        # None: the build's `max_shards_in_flight` (Pipeline.run sets it), else 1
        self.progress, self.in_flight = progress, in_flight

    def start(self, plans: list[StagePlan]) -> None:
        pass  # CPU stages run in this process and load what they need on their first shard

    def close(self) -> None:
        pass

    def run_stages(self, run: RunDir, plans: list[StagePlan], shards: list[int]) -> dict[str, list[int]]:
        """Run stages that share one model (see `engine_groups`) in one worker process, which
        loads the model once; returns {stage: shards it processed}."""
        if len(plans) == 1:
            return {plans[0].name: self.run_stage(run, plans[0], shards)}
        work = [(plan, pending_shards(run, plan, shards)) for plan in plans]
        work = [(plan, pending) for plan, pending in work if pending]
        if work:
            self._run_worker(run, work)
        return {plan.name: pending for plan, pending in work}

    def run_stage(self, run: RunDir, plan: StagePlan, shards: list[int]) -> list[int]:
        """Process the shards of `plan` that are not on disk yet; return those it processed."""
        pending = pending_shards(run, plan, shards)
        if not pending:
            return []
        if plan.op.uses_model:
            self._run_worker(run, [(plan, pending)])
            return pending
        try:
            process_shards(run, plan, pending, None, progress=self.progress)
        except ShardFailed as error:  # the same message a model worker's failure gets
            done = sum(run.stage(plan.name).has_shard(s) for s in pending)
            raise StageFailed(f"stage {plan.name}: {error} (rerun with --debug for the traceback). "
                              f"{done}/{len(pending)} pending shards were written; finished shards are kept, "
                              "rerun the same command to resume") from error
        return pending

    def _run_worker(self, run: RunDir, work: list[tuple[StagePlan, list[int]]]) -> None:
        """One worker process loads the model of `work`'s stages once and processes each stage's
        pending shards in turn. Its own output goes to its log (`worker_log`); its progress bar and
        status lines come back through a pipe and are shown here (with `--verbose`, everything)."""
        log_path = worker_log(run, work[0][0].name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        spec_path = run.stage(work[0][0].name).path / "_worker.json"
        write_json_atomic(spec_path, {"run_dir": str(run.path), "progress": self.progress, "in_flight": self.in_flight or 1,
                                      "spawned": time.time(), "log": str(log_path),
                                      "stages": [{"plan": plan.to_json(), "shards": pending} for plan, pending in work]})
        report_read, report_write = os.pipe()
        progress_read, progress_write = os.pipe()
        env = dict(os.environ)
        env.setdefault("VLLM_LOGGING_LEVEL", "INFO")  # into the log, where the engine's configuration helps
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env.setdefault("PYTHONUNBUFFERED", "1")  # the log is complete up to the moment a worker dies
        env[ERROR_FD_ENV], env[PROGRESS_FD_ENV] = str(report_write), str(progress_write)
        size = _terminal_size()
        if size:  # the bar's width, which the worker cannot ask a pipe for (tqdm reads both)
            env.setdefault("COLUMNS", str(size.columns))
            env.setdefault("LINES", str(size.lines))
        streaming = verbose()
        log = open(log_path, "ab")
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} worker for {', '.join(p.name for p, _ in work)} ===\n".encode())
        log.flush()
        offset = log.tell()
        # The worker leads its own session and process group, so that whatever its engine spawned
        # (vLLM's engine core and its workers) is killed with it; see processes.py.
        try:
            worker = subprocess.Popen(
                [sys.executable, "-m", "prefsynth.worker", str(spec_path)], env=env, start_new_session=True,
                preexec_fn=functools.partial(die_with_parent, os.getpid()), pass_fds=(report_write, progress_write),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if streaming else log, stderr=subprocess.STDOUT,
            )
        finally:
            os.close(report_write)
            os.close(progress_write)
        report: list[bytes] = []  # drained while the worker runs: a full pipe must never block it
        readers = [threading.Thread(target=_drain, args=(report_read, report), daemon=True),
                   threading.Thread(target=_relay, args=(progress_read, None), daemon=True)]
        if streaming:
            readers.append(threading.Thread(target=_relay, args=(worker.stdout.fileno(), log), daemon=True))
        for reader in readers:
            reader.start()
        try:
            # Exited but not reaped: its pid, which is also its group's id, cannot be reused yet.
            os.waitid(os.P_PID, worker.pid, os.WEXITED | os.WNOWAIT)
        finally:
            kill_group(worker.pid)  # also on Ctrl-C or SIGTERM of the build: nothing outlives it
        returncode = worker.wait()
        for reader in readers:
            reader.join(timeout=5)  # EOF once every holder of the pipe is gone
        if worker.stdout is not None:
            worker.stdout.close()
        log.close()
        cause = b"".join(report)[:MAX_REPORT].decode("utf-8", "replace").strip()
        # the stage that failed: the first with shards missing (the last one when all are written)
        plan, pending = next(((p, s) for p, s in work if not all(run.stage(p.name).has_shard(x) for x in s)), work[-1])
        done = sum(run.stage(plan.name).has_shard(s) for s in pending)
        if returncode != 0 and done == len(pending):
            print(f"warning: stage {plan.name}: worker exited with code {returncode} after writing "
                  f"all {done} shards; continuing (its log: {log_path})", file=sys.stderr)
        elif returncode != 0:
            if not cause and returncode < 0:
                name = signal.Signals(-returncode).name
                first = next(s for s in pending if not run.stage(plan.name).has_shard(s))
                cause = f"the worker was killed by {name} with shard {first} pending" + (
                    " (on a machine short of memory, often the out-of-memory killer: lower the engine's "
                    "gpu_memory_utilization / kv_cache_gib or max_num_seqs)" if name == "SIGKILL" else "")
            tail = log_tail(log_path, offset)
            shown = f"\nlast lines of its log ({log_path}):\n{textwrap.indent(tail, '  ')}" if tail else f" (its log: {log_path})"
            raise StageFailed(
                f"stage {plan.name}: {cause or f'the worker exited with code {returncode}'}. "
                f"{done}/{len(pending)} pending shards were written; finished shards are kept, rerun the same "
                f"command to resume{shown}"
            )


def _terminal_size() -> os.terminal_size | None:
    try:
        return os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return None


def _relay(descriptor: int, log: Any) -> None:
    """Copy a worker's pipe to this process's `sys.stderr` as it arrives (and to `log` when given):
    through the Python stream, so a notebook shows it as well as a terminal."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    with os.fdopen(descriptor, "rb", buffering=0, closefd=log is None) as pipe:
        while chunk := pipe.read(65536):
            if log is not None:
                log.write(chunk)
                log.flush()
            try:
                sys.stderr.write(decoder.decode(chunk))
                sys.stderr.flush()
            except (OSError, ValueError):  # the terminal is gone: keep draining so the worker never blocks
                pass


def _drain(descriptor: int, into: list[bytes]) -> None:
    with os.fdopen(descriptor, "rb", buffering=0) as pipe:
        while chunk := pipe.read(4096):
            into.append(chunk)


def make_executor(config: Any = None, *, progress: bool = True, in_flight: int = 1) -> Any:
    """The executor a config's `executor:` section names (config.LocalExecutor / config.RayExecutor).
    `in_flight`: shards a local model worker runs at once against its engine (Ray actors take one
    shard at a time; a cluster keeps busy through its many actors)."""
    if config is not None and config.type == "ray":
        from prefsynth.ray_executor import RayExecutor

        return RayExecutor(config, progress=progress)
    return LocalExecutor(progress=progress, in_flight=in_flight)


def _shutdown(resource: Any) -> None:
    """Stop a vLLM engine's core process explicitly rather than at interpreter teardown. The
    engine is the resource itself or held by it as `.llm` (translators). Other resources with a
    `close()` (the COMET worker) are closed."""
    if callable(getattr(resource, "close", None)):
        try:
            resource.close()
        except Exception:
            if debugging():
                traceback.print_exc()
    for candidate in (resource, getattr(resource, "llm", None)):
        core = getattr(getattr(candidate, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            try:
                core.shutdown()
            except Exception:  # the shards are written; a failing shutdown must not fail the stage
                if debugging():
                    traceback.print_exc()


def _report_failure(error: BaseException, stage: str, phase: str) -> None:
    """Tell the build why this worker failed (one line), through the pipe it gave us."""
    message = describe(error)
    if not isinstance(error, (RunDirError, ShardFailed)):
        message = f"{phase}: {message}"
    if debugging():
        traceback.print_exc()
    else:
        message += " (rerun with --debug for the traceback)"
    fd = os.environ.get(ERROR_FD_ENV)
    if fd is None:
        print(f"error: stage {stage}: {message}", file=sys.stderr)
        return
    try:
        os.write(int(fd), message.encode("utf-8", "replace")[:MAX_REPORT])
    except OSError:
        print(f"error: stage {stage}: {message}", file=sys.stderr)


def engine_groups(plans: list[StagePlan]) -> list[list[StagePlan]]:
    """`plans` in order, consecutive model stages whose ops load the same model the same way
    (equal `load_key()`) grouped, so the model loads once for all of them. A stage that reads
    another stage of its group starts a new group."""
    groups: list[list[StagePlan]] = []
    for plan in plans:
        key = plan.op.load_key() if plan.op.uses_model else None
        last = groups[-1] if groups else None
        reads = set(plan.inputs) | set(plan.context.values()) | {plan.prompts}
        if (key is not None and last is not None and last[0].op.uses_model and last[0].op.load_key() == key
                and not reads & {p.name for p in last}):
            last.append(plan)
        else:
            groups.append([plan])
    return groups


def _progress_stream() -> Any:
    """Where the worker's progress bar and status lines go: the pipe its build reads for the
    terminal (`PREFSYNTH_PROGRESS_FD`), or stderr when it was started by hand."""
    descriptor = os.environ.get(PROGRESS_FD_ENV)
    if descriptor is None:
        return sys.stderr
    return os.fdopen(int(descriptor), "w", buffering=1, encoding="utf-8", errors="replace")


def worker_main(spec_path: str) -> None:
    code, resource, phase, stage = 0, None, "starting failed", Path(spec_path).parent.name
    try:
        guard_children()  # before any engine starts: nothing it spawns outlives this process
        spec = json.loads(Path(spec_path).read_text())
        work = [(StagePlan.from_json(item["plan"]), item["shards"]) for item in spec["stages"]]
        run = RunDir(spec["run_dir"])
        terminal = _progress_stream()
        # the worker's stderr is its log: INFO from vLLM, transformers and ours belongs there
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        phase = "loading its model failed"
        names = ", ".join(plan.name for plan, _ in work)
        if spec["progress"]:
            print(f"{names}: loading its model (log: {spec.get('log', 'stderr')})", file=terminal)
        resource = work[0][0].op.load()
        phase = "failed after loading its model"
        # engine start-up: from spawning this worker to a loaded model
        startup = round(time.time() - spec["spawned"], 3)
        run.stage(work[0][0].name).record(startup_s=startup)
        if spec["progress"]:
            print(f"{names}: model loaded in {startup:.0f} s", file=terminal)
        for plan, shards in work:
            stage = plan.name
            t0 = time.perf_counter()
            process_shards(run, plan, shards, resource, progress=spec["progress"], in_flight=spec["in_flight"],
                           file=terminal)
            run.stage(plan.name).record(worker_s=round(time.perf_counter() - t0, 3))
    except BaseException as error:
        _report_failure(error, stage, phase)
        code = 1
    finally:
        _shutdown(resource)
    # Every shard is on disk. Skip interpreter teardown: native threads of the engine and
    # tokenizers can abort there ("terminate called without an active exception").
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
