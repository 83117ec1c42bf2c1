"""A build killed with SIGKILL in the middle of generation resumes without losing or redoing work."""
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from tests.conftest import demo_config, write_config

pytestmark = pytest.mark.slow


def _snapshot(stage_dir):
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in stage_dir.glob("shard-*.parquet")}


def test_sigkill_during_generation_then_resume(tmp_path, tiny_models):
    config = demo_config(shard_size=1)
    # 144 distinct prompts: the demo prompts three times, with different system prompts.
    base = config["sources"][0]
    config["sources"] = [base, dict(base, system_prompt="Be helpful."), dict(base, system_prompt="Answer briefly.")]
    config["generators"][0]["max_tokens"] = 64
    path = write_config(tmp_path / "kill.yaml", config)
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "prefsynth.cli", "build", str(path), "--run-dir", str(run_dir), "--quiet"]
    generate = run_dir / "generate.tiny-chat"

    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 600
    while len(list(generate.glob("shard-*.parquet"))) < 5:
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "generation did not start"
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)  # the build, its worker and vLLM's engine processes
    first.wait()
    done_before = _snapshot(generate)
    assert 5 <= len(done_before) < 144, "the kill must land in the middle of generation"
    assert not (run_dir / "judge.rm").exists() or not list((run_dir / "judge.rm").glob("shard-*"))

    second = subprocess.run(command, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-4000:]
    after = _snapshot(generate)
    assert len(after) == 144
    assert {name: after[name] for name in done_before} == done_before  # finished shards untouched
    assert f"{144 - len(done_before)}/144" in second.stdout
    assert not list(run_dir.rglob(".*.tmp-*"))

    prompts = pq.read_table(run_dir / "prompts").column("prompt_id").to_pylist()
    assert len(prompts) == len(set(prompts)) == 144
    candidates = pq.read_table(generate).to_pandas()
    assert candidates.candidate_id.is_unique and len(candidates) == 144 * 4
    assert sorted(set(candidates.prompt_id)) == sorted(prompts)
    pairs = pq.read_table(run_dir / "dataset" / "data" / "pairs").to_pandas()
    rejects = pq.read_table(run_dir / "dataset" / "rejects.parquet").to_pandas()
    dropped = rejects[rejects.stage == "select"].prompt_id.tolist()
    assert pairs.prompt_id.is_unique
    assert sorted(pairs.prompt_id.tolist() + dropped) == sorted(prompts)  # every prompt exactly once
