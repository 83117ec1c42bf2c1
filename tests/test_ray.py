"""The Ray executor on a local Ray cluster (ray.init(num_cpus=2)): the demo pipeline gives the same
tables as the local executor, a killed engine actor is restarted without losing or repeating a row,
and a stage that fails on the cluster resumes from its finished shards."""
import os
import shutil
import signal
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray

from prefsynth.config import RayExecutor as RayExecutorConfig
from prefsynth.executor import StageFailed
from prefsynth.pipeline import Pipeline
from tests.conftest import demo_config

pytestmark = pytest.mark.slow

STAGES = ["prompts", "generate.tiny-chat", "judge.rm", "filter", "select", "export"]
JUDGE = "judge.rm"


@pytest.fixture(scope="module")
def cluster():
    # A small object store: shards are small, and CI containers often have a small /dev/shm.
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", object_store_memory=300 * 1024**2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_run(demo_build):
    return demo_build


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory, cluster, local_run):
    from prefsynth.ray_executor import RayExecutor

    root = tmp_path_factory.mktemp("ray")
    executor = RayExecutor(progress=False)
    result = Pipeline(demo_config()).run(root / "run", executor=executor, output=(root / "copy").as_uri())
    return {"run_dir": root / "run", "result": result, "executor": executor, "copy": root / "copy"}


def shard_tables(run_dir, stage):
    """Each shard of a stage, without file metadata (it records the shard's wall time)."""
    return {path.name: pq.read_table(path).replace_schema_metadata(None)
            for path in sorted((run_dir / stage).glob("shard-*.parquet"))}


def assert_stage_equal(run_dir, reference, stage):
    ours, theirs = shard_tables(run_dir, stage), shard_tables(reference, stage)
    assert ours.keys() == theirs.keys() and ours, stage
    for name in ours:
        assert ours[name].equals(theirs[name]), f"{stage}/{name} differs from the local executor's"


def test_demo_on_ray_equals_the_local_executor_table_by_table(ray_run, local_run):
    run_dir = ray_run["run_dir"]
    for stage in STAGES:
        assert_stage_equal(run_dir, local_run, stage)
        rejects = sorted(p.name for p in (run_dir / "rejects" / stage).glob("*.parquet"))
        assert rejects == sorted(p.name for p in (local_run / "rejects" / stage).glob("*.parquet"))
    ours = pq.read_table(run_dir / "dataset" / "data" / "pairs")
    assert ours.equals(pq.read_table(local_run / "dataset" / "data" / "pairs")) and ours.num_rows > 20
    assert pq.read_table(run_dir / "dataset" / "rejects.parquet").equals(pq.read_table(local_run / "dataset" / "rejects.parquet"))
    import json

    assert json.loads((run_dir / "manifest.json").read_text())["executor"] == "ray"
    # Model stages ran in actors (engine start-up recorded apart), CPU stages as tasks.
    def state(stage):
        return json.loads((run_dir / stage / "_stage.json").read_text())

    assert state("generate.tiny-chat")["startup_s"] > 0 and "startup_s" not in state("filter")
    assert not ray_run["executor"].actors  # engines are stopped at the end of their stage


def test_dataset_written_to_an_fsspec_url_loads_with_datasets(ray_run):
    import datasets

    copy = ray_run["copy"]
    local = ray_run["run_dir"] / "dataset"
    assert (copy / "README.md").read_bytes() == (local / "README.md").read_bytes()
    assert not (copy / "_dataset.json").exists()  # bookkeeping stays in the run directory
    loaded = datasets.load_dataset(str(copy))["train"]
    assert loaded.num_rows == ray_run["result"].pairs().num_rows


def _fresh_judge_stage(source, target):
    """A copy of a finished run without the reward-model stage and what follows it."""
    shutil.copytree(source, target)
    for stage in STAGES[2:]:
        shutil.rmtree(target / stage)
        shutil.rmtree(target / "rejects" / stage, ignore_errors=True)


def _killer(executor, kills: list):
    """on_shard hook: SIGKILL the reward model's actor process right after its first shard is
    written in this run, while other shards are queued on it or not sent yet."""

    def kill(stage, shard):
        if stage == JUDGE and not kills:
            pid = ray.get(executor.actors[0].pid.remote())
            group = os.getpgid(pid)
            os.kill(pid, signal.SIGKILL)
            kills.append((shard, pid, group))

    return kill


def _group_members(group: int, seconds: float = 10) -> list[int]:
    """Live processes of a process group, waiting up to `seconds` for it to empty."""
    deadline = time.monotonic() + seconds
    while True:
        alive = []
        for entry in Path("/proc").iterdir():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split() if entry.name.isdigit() else []
            except OSError:
                continue
            if fields and fields[0] != "Z" and int(fields[2]) == group:
                alive.append(int(entry.name))
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def test_killed_engine_actor_fails_the_stage_keeps_shards_and_a_rerun_resumes(ray_run, local_run, tmp_path):
    from prefsynth.ray_executor import RayExecutor

    run_dir = tmp_path / "run"
    _fresh_judge_stage(ray_run["run_dir"], run_dir)
    shards = len(list((run_dir / "prompts").glob("shard-*.parquet")))
    assert shards >= 4

    # No restarts allowed: the stage fails, with what finished kept on disk.
    no_restarts = RayExecutor(RayExecutorConfig(max_restarts=0), progress=False)
    kills: list = []
    no_restarts.on_shard = _killer(no_restarts, kills)
    with pytest.raises(StageFailed, match="rerun the same command to resume"):
        Pipeline(demo_config()).run(run_dir, executor=no_restarts)
    kept = sorted(p.name for p in (run_dir / JUDGE).glob("shard-*.parquet"))
    assert kills and 1 <= len(kept) < shards
    # The actor led its own process group: vLLM's engine core and workers died with it.
    _, pid, group = kills[0]
    assert group == pid and _group_members(group) == []

    # The rerun computes only the missing shards; its actor is killed too, and restarted by Ray.
    restarting = RayExecutor(RayExecutorConfig(max_restarts=2), progress=False)
    kills.clear()
    restarting.on_shard = _killer(restarting, kills)
    result = Pipeline(demo_config()).run(run_dir, executor=restarting)
    computed = {s.name: s.computed for s in result.stages}
    assert computed[JUDGE] == shards - len(kept) and computed["generate.tiny-chat"] == 0
    assert kills
    state = (run_dir / JUDGE / "_stage.json").read_text()
    assert '"actor_restarts": 1' in state

    # Every candidate exactly once, with the scores the local executor computed.
    judged = pq.read_table(run_dir / JUDGE)
    assert judged.num_rows == pq.read_table(local_run / JUDGE).num_rows
    assert len(set(judged.column("candidate_id").to_pylist())) == judged.num_rows
    for stage in STAGES[2:]:
        assert_stage_equal(run_dir, local_run, stage)
    assert pq.read_table(run_dir / "dataset" / "data" / "pairs").equals(pq.read_table(local_run / "dataset" / "data" / "pairs"))


def test_actor_sizing_follows_gpus_and_tensor_parallelism():
    from prefsynth.config import Engine, Generator
    from prefsynth.generate.vllm_generate import Generate
    from prefsynth.ray_executor import actor_plan

    def op(tp):
        return Generate(Generator(name="g", model="fixture:tiny-chat", engine=Engine(tensor_parallel_size=tp)), 0)

    cpu = actor_plan(op(1), RayExecutorConfig(), cluster_gpus=0)
    assert (cpu.actors, cpu.options["num_gpus"], cpu.bundles) == (1, 0.0, None)
    gpu = actor_plan(op(1), RayExecutorConfig(), cluster_gpus=8)
    assert (gpu.actors, gpu.options["num_gpus"]) == (8, 1.0)
    halves = actor_plan(op(1), RayExecutorConfig(gpus_per_actor=0.5), cluster_gpus=2)
    assert (halves.actors, halves.options["num_gpus"]) == (4, 0.5)
    tp = actor_plan(op(4), RayExecutorConfig(), cluster_gpus=8)
    assert tp.actors == 2 and tp.options["num_gpus"] == 0 and tp.bundles == [{"GPU": 1.0, "CPU": 1.0}] * 4
    fixed = actor_plan(op(1), RayExecutorConfig(actors_per_stage=3, max_restarts=5), cluster_gpus=8)
    assert fixed.actors == 3 and fixed.options["max_restarts"] == fixed.options["max_task_retries"] == 5
    with pytest.raises(StageFailed, match="needs GPUs"):
        actor_plan(op(2), RayExecutorConfig(), cluster_gpus=0)


def test_cli_executor_ray_starts_a_local_cluster_and_resumes_cpu_stages(ray_run, local_run, tmp_path):
    """`prefsynth build --executor ray` (no address: Ray's convention) in its own process, with no
    cluster recorded on this machine: the build starts a local one and says so; the finished model
    stages are reused, select and export run as Ray tasks on it."""
    import json
    import subprocess
    import sys

    from tests.conftest import write_config

    run_dir = tmp_path / "run"
    shutil.copytree(ray_run["run_dir"], run_dir)
    for stage in ("select", "export"):
        shutil.rmtree(run_dir / stage)
    config = write_config(tmp_path / "demo.yaml", demo_config())
    built = subprocess.run([sys.executable, "-m", "prefsynth.cli", "build", str(config), "--run-dir", str(run_dir),
                            "--quiet", "--executor", "ray", "--output", str(tmp_path / "out")],
                           capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert built.returncode == 0, built.stderr[-3000:]
    assert "ray: no running cluster found; started a local one (" in built.stderr
    assert json.loads((run_dir / "manifest.json").read_text())["executor"] == "ray"
    summary = {s["name"]: s["computed"] for s in json.loads((run_dir / "manifest.json").read_text())["summary"]}
    assert summary["generate.tiny-chat"] == 0 and summary["select"] == summary["export"] > 0
    for stage in ("select", "export"):
        assert_stage_equal(run_dir, local_run, stage)
    assert "dataset also written to" in built.stdout and (tmp_path / "out" / "README.md").is_file()
    refused = subprocess.run([sys.executable, "-m", "prefsynth.cli", "build", str(config), "--run-dir", str(run_dir),
                              "--executor", "spark"], capture_output=True, text=True)
    assert refused.returncode == 2 and "--executor must be local or ray" in refused.stderr
