"""The Ray executor: the same stage ops over the same shards, on a Ray cluster.

Model stages run as Ray actors, each holding one engine (loaded once, on its first shard) and
processing the shards sent to it; CPU stages (language ID, filters, selection, export) run as Ray
tasks, one per shard. The build process (the driver) reads each shard's input, ships it through
the object store and writes every output with the same atomic `ShardSink` the local executor
uses. So resume, rejects and the run directory behave exactly as on one machine, and worker nodes
need no shared filesystem.

Why actors and tasks, not Ray Data: a prefsynth shard is the unit of resume (a file that exists
only when complete). Ray Data's `map_batches` re-blocks rows and streams them to a sink, which
loses shard identity, and its LLM processors own the engine and its batching, while our stages
need vLLM's pooling runner (reward models), structured outputs (LLM judges) and our own sampling
(negatively-correlated generation). An actor per engine with a queue of shards keeps every engine
busy with the same code the local executor runs.

Failures: a dead actor is restarted by Ray (`max_restarts`) and its queued shards are retried on
the new one; the driver writes each shard once, when its result arrives, so every row appears
exactly once. When restarts are exhausted, the actor's shards move to the stage's other actors;
with none left, the stage fails after writing every result that did arrive (rerun to resume).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from prefsynth.config import RayExecutor as RayExecutorConfig
from prefsynth.executor import (ShardSink, StageFailed, StagePlan, _shutdown, debugging, describe, verbose, pending_shards,
                                read_input)
from prefsynth.processes import guard_children
from prefsynth.runs import RunDir
from prefsynth.stages import Op, ShardInput, ShardOutput

WORKER_ENV = {"VLLM_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false"}


def _worker_env() -> None:
    for key, value in WORKER_ENV.items():
        os.environ.setdefault(key, value)


class ShardWorker:
    """Ray actor body: one stage's op and its model. The model loads on the first shard (or an
    explicit `load()`), so an actor restarted after a crash reloads it by itself, and a model that
    fails to load is an ordinary task error, not a crash loop of restarts."""

    def __init__(self, op: Op):
        _worker_env()
        os.environ["PREFSYNTH_RAY_ACTOR"] = "1"  # engine.make_llm: tensor parallelism through Ray
        guard_children()  # the engine's processes die with this actor, however Ray ends it
        self.op, self.resource, self.loaded = op, None, False

    def load(self) -> None:
        if not self.loaded:
            self.resource, self.loaded = self.op.load(), True

    def process(self, inputs: ShardInput) -> tuple[ShardOutput, float, int]:
        self.load()
        t0 = time.perf_counter()
        output = self.op.process(self.resource, inputs)
        return output, time.perf_counter() - t0, os.getpid()

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        _shutdown(self.resource)
        self.resource = None


def process_cpu_shard(op: Op, inputs: ShardInput) -> tuple[ShardOutput, float, int]:
    """Ray task body for CPU stages."""
    _worker_env()
    t0 = time.perf_counter()
    output = op.process(None, inputs)
    return output, time.perf_counter() - t0, os.getpid()


def warm_up_worker(ops: list[Op]) -> None:
    """Ray task body: import the CPU stages' code and load their models in this worker process."""
    _worker_env()
    for op in ops:
        op.warm_up()


def tensor_parallel_size(op: Op) -> int:
    """The largest engine `tensor_parallel_size` in the op's config (1 without an engine)."""
    found = [1]

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("tensor_parallel_size"), int):
                found.append(value["tensor_parallel_size"])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(op.config())
    return max(found)


def _recorded_cluster() -> str | None:
    """The cluster `ray start` recorded on this machine (what Ray's convention connects to when
    RAY_ADDRESS is not set), or None: then it starts a local one."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(None)
    except Exception:  # Ray's private helper moved or the record is unreadable: start a local one
        return None


@dataclass
class ActorPlan:
    """How many engine actors a model stage gets, and what each reserves."""

    actors: int
    options: dict[str, Any]  # ray .options() for the actor class
    bundles: list[dict[str, float]] | None  # placement group per actor (tensor parallelism)


def actor_plan(op: Op, config: RayExecutorConfig, cluster_gpus: float) -> ActorPlan:
    tp = tensor_parallel_size(op)
    gpus = config.gpus_per_actor if config.gpus_per_actor is not None else (float(tp) if cluster_gpus else 0.0)
    if tp > 1 and not cluster_gpus:
        raise StageFailed(f"tensor_parallel_size={tp} needs GPUs, and the Ray cluster has none")
    actors = config.actors_per_stage or (max(1, int(cluster_gpus // gpus)) if gpus else 1)
    options: dict[str, Any] = {
        "num_cpus": config.cpus_per_actor,
        "max_restarts": config.max_restarts,
        "max_task_retries": config.max_restarts,
    }
    bundles = None
    if tp > 1:
        # vLLM's Ray backend places its tp workers in the actor's placement group: one GPU each.
        bundles = [{"GPU": 1.0, "CPU": 1.0}] * tp
        options["num_gpus"] = 0
    else:
        options["num_gpus"] = gpus
    return ActorPlan(actors, options, bundles)


@dataclass
class Lane:
    """Somewhere shards go: one actor, or the task pool."""

    submit: Callable[[Any], Any]  # ObjectRef of a ShardInput -> ObjectRef of (output, seconds, pid)
    capacity: int
    is_actor: bool = False  # actors keep one process: a new pid means Ray restarted it
    in_flight: int = 0
    alive: bool = True
    pid: int | None = None
    restarts: int = 0


class RayExecutor:
    name = "ray"

    def __init__(self, config: RayExecutorConfig | None = None, *, progress: bool = True,
                 on_shard: Callable[[str, int], None] | None = None):
        self.config = config or RayExecutorConfig()
        self.progress = progress
        self.on_shard = on_shard  # called after each shard is written (stage name, shard): hooks, tests
        self.actors: list[Any] = []  # the current model stage's actors
        self._groups: list[Any] = []  # their placement groups (tensor parallelism)
        self._warm_ups: list[Any] = []  # warm-up tasks (never awaited: a failure shows in the stage itself)
        self.started_ray = False

    # ------------------------------------------------------------------ cluster
    def connect(self) -> None:
        import ray

        if ray.is_initialized():
            return
        address = self.config.address  # "local": Ray starts a new local cluster, whatever is recorded
        # address null, Ray's convention: RAY_ADDRESS (strict, like an address given), else the
        # cluster `ray start` recorded, else a new local one
        if self.config.address is None and os.environ.get("RAY_ADDRESS"):
            address = os.environ["RAY_ADDRESS"]
        found = _recorded_cluster() if self.config.address is None and address is None else None
        on_sigterm = signal.getsignal(signal.SIGTERM)
        # actors' own output (vLLM, torch) stays in Ray's session logs (`ray logs`) unless --verbose
        options = dict(runtime_env=self.config.runtime_env, log_to_driver=verbose(), logging_level="WARNING",
                       include_dashboard=False)
        try:
            ray.init(address=found or address, **options)
        except ConnectionError as error:
            if found is None:
                raise StageFailed(
                    f"no Ray cluster at address {address!r} ({error}); start one with `ray start --head`, "
                    "or set executor.address: local (or leave it unset, without RAY_ADDRESS) to start one on this machine"
                ) from None
            # Ray's record of a cluster that is gone: its convention is then a new local one
            print(f"ray: the cluster recorded at {found} does not answer ({error}); starting a local one",
                  file=sys.stderr, flush=True)
            found = None
            ray.init(address="local", **options)
        if self.config.address is None:
            cpus = int(ray.cluster_resources().get("CPU", 0))
            where = found or address
            print(f"ray: connected to the running cluster at {where} ({cpus} CPUs)" if where else
                  f"ray: no running cluster found; started a local one ({cpus} CPUs)", file=sys.stderr, flush=True)
        self.started_ray = True
        if threading.current_thread() is threading.main_thread() and callable(on_sigterm):
            signal.signal(signal.SIGTERM, on_sigterm)  # ray.init replaces it with sys.exit(15): keep the CLI's

    def start(self, plans: list[StagePlan]) -> None:
        """Called once before the stages with those that have work to do: connect, and ready the
        CPU stages' worker processes (imports, language-ID model) while the first engines load.
        The warm-up reserves no CPU, so it never delays an engine's placement."""
        if not plans:
            return
        self.connect()
        import ray

        cpu_ops = [plan.op for plan in plans if not plan.op.uses_model]
        if cpu_ops:
            slots = max(1, int(ray.cluster_resources().get("CPU", 1) // self.config.cpus_per_task))
            ops_ref = ray.put(cpu_ops)
            self._warm_ups = [ray.remote(warm_up_worker).options(num_cpus=0).remote(ops_ref) for _ in range(slots)]

    def close(self) -> None:
        self._stop_actors(graceful=sys.exc_info()[0] is None)
        if self.started_ray:
            import ray

            ray.shutdown()
            self.started_ray = False

    # ------------------------------------------------------------------ stages
    def run_stages(self, run: RunDir, plans: list[StagePlan], shards: list[int]) -> dict[str, list[int]]:
        """Stages sharing a model run one after another, each with its own actors."""
        return {plan.name: self.run_stage(run, plan, shards) for plan in plans}

    def run_stage(self, run: RunDir, plan: StagePlan, shards: list[int]) -> list[int]:
        """Process the shards of `plan` that are not on disk yet; return those it processed."""
        pending = pending_shards(run, plan, shards)
        if not pending:
            return []
        stage = run.stage(plan.name)
        self.connect()
        import ray

        op_ref = ray.put(plan.op)  # once per stage: a fitted op (calibration) travels with its statistics
        if plan.op.uses_model:
            sizing = actor_plan(plan.op, self.config, ray.cluster_resources().get("GPU", 0.0))
            lanes = self._start_actors(run, plan, op_ref, sizing, min(len(pending), sizing.actors))
        else:
            lanes = [self._task_lane(op_ref)]
        try:
            self._map(run, plan, pending, lanes)
        except BaseException:
            self._stop_actors(graceful=False)  # Ctrl-C, or a failed stage: kill the engines now
            raise
        self._stop_actors()
        restarts = sum(lane.restarts for lane in lanes)
        if restarts:
            stage.record(actor_restarts=int(stage.state().get("actor_restarts", 0)) + restarts)
        return pending

    def _start_actors(self, run: RunDir, plan: StagePlan, op_ref: Any, sizing: ActorPlan, count: int) -> list[Lane]:
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        worker_class = ray.remote(ShardWorker)
        self.actors, self._groups = [], []
        t0 = time.perf_counter()  # start-up: actor processes, imports, engines
        for _ in range(count):
            options = dict(sizing.options)
            if sizing.bundles:
                group = placement_group(sizing.bundles, strategy="PACK")
                ray.get(group.ready())
                self._groups.append(group)
                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    group, placement_group_capture_child_tasks=True)
            self.actors.append(worker_class.options(**options).remote(op_ref))
        try:  # engines start in parallel; a model that fails to load fails the stage here
            ray.get([actor.load.remote() for actor in self.actors])
        except ray.exceptions.RayError as error:
            self._stop_actors(graceful=False)
            raise StageFailed(f"stage {plan.name}: the model failed to load on the cluster:\n{_cause(error)}") from None
        run.stage(plan.name).record(startup_s=round(time.perf_counter() - t0, 3))
        return [Lane(lambda ref, actor=actor: actor.process.remote(ref), self.config.max_in_flight, is_actor=True)
                for actor in self.actors]

    def _task_lane(self, op_ref: Any) -> Lane:
        import ray

        task = ray.remote(process_cpu_shard).options(num_cpus=self.config.cpus_per_task,
                                                     max_retries=self.config.max_restarts)
        slots = max(1, int(ray.available_resources().get("CPU", 1) // self.config.cpus_per_task)) * 2
        return Lane(lambda ref: task.remote(op_ref, ref), slots)

    def _stop_actors(self, graceful: bool = True) -> None:
        if not self.actors:
            return
        import ray

        try:
            if graceful:
                ray.get([actor.close.remote() for actor in self.actors], timeout=60)
        except Exception:  # a dead or hung actor is killed below either way
            pass
        for actor in self.actors:
            ray.kill(actor)
        for group in self._groups:
            ray.util.remove_placement_group(group)
        self.actors, self._groups = [], []

    def _map(self, run: RunDir, plan: StagePlan, pending: list[int], lanes: list[Lane]) -> None:
        """Keep every lane's queue full, write results as they arrive, reroute a dead actor's shards."""
        import ray

        queue, in_flight, errors = deque(pending), {}, []
        with ShardSink(run, plan, pending, progress=self.progress) as sink:
            while queue or in_flight:
                while queue and not errors:
                    free = [lane for lane in lanes if lane.alive and lane.in_flight < lane.capacity]
                    if not free:
                        break
                    lane = min(free, key=lambda item: item.in_flight)
                    shard = queue.popleft()
                    in_flight[lane.submit(ray.put(read_input(run, plan, shard)))] = (shard, lane)
                    lane.in_flight += 1
                if not in_flight:
                    break
                [ready], _ = ray.wait(list(in_flight), num_returns=1)
                shard, lane = in_flight.pop(ready)
                lane.in_flight -= 1
                try:
                    output, seconds, pid = ray.get(ready)
                except ray.exceptions.RayActorError as error:
                    lane.alive = False  # restarts exhausted: its shards go to the stage's other actors
                    print(f"warning: stage {plan.name}: an engine actor died for good ({_cause(error).splitlines()[0]})",
                          file=sys.stderr)
                    if any(item.alive for item in lanes):
                        queue.appendleft(shard)
                    else:
                        errors.append((shard, error))
                    continue
                except ray.exceptions.RayError as error:
                    errors.append((shard, error))
                    continue
                if lane.is_actor and lane.pid is not None and pid != lane.pid:
                    lane.restarts += 1
                    print(f"warning: stage {plan.name}: an engine actor was restarted (pid {lane.pid} -> {pid}); "
                          "its queued shards were retried", file=sys.stderr)
                lane.pid = pid
                sink.write(shard, output, seconds)
                if self.on_shard is not None:
                    self.on_shard(plan.name, shard)
        if errors or queue:
            done = sum(run.stage(plan.name).has_shard(s) for s in pending)
            shard, error = errors[0] if errors else (queue[0], None)
            cause = _cause(error) if error is not None else "no live actors"
            raise StageFailed(
                f"stage {plan.name}: shard {shard} failed on the Ray cluster after {done}/{len(pending)} pending shards "
                f"were written; finished shards are kept, rerun the same command to resume.\n{cause}"
            )


def _cause(error: BaseException) -> str:
    """What went wrong on the worker side of a Ray error: one line, or with --debug its traceback."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        if debugging():
            return "".join(traceback.format_exception(type(cause), cause, cause.__traceback__)).strip()
        return describe(cause) + " (rerun with --debug for the traceback)"
    text = str(error).strip()
    return text if debugging() else text.splitlines()[0] if text else type(error).__name__
