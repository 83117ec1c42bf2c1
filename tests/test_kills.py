"""A build killed at several moments, in several ways, leaves no process behind and resumes
without losing or redoing work; a damaged shard of a finished build is recomputed with what was
computed from it, and nothing else.

One run directory goes through: SIGKILL of the whole process group while the engine starts,
Ctrl-C (SIGINT to the group) during generation, SIGTERM of the build during generation, SIGKILL
of the build process alone while the reward model starts, then a rerun to the end. Every process
a build starts carries a tag in its environment, so the test finds all of them (vLLM's engine
core, its workers, the resource tracker, the watchdog) in /proc.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import demo_config, write_config

pytestmark = pytest.mark.slow

TAG = "PREFSYNTH_TEST_BUILD"
PROMPTS = 144


def _processes() -> dict[int, tuple[int, bytes, str]]:
    """Every live process: pid -> (session id, environment, command line). Zombies hold nothing: left out."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, _ppid, _group, session = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:4]
            if state == "Z":
                continue
            environ = (entry / "environ").read_bytes()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):  # gone meanwhile
            continue
        found[int(entry.name)] = (int(session), environ, command[:120])
    return found


def _members(tag: str, sessions: set[int]) -> list[str]:
    """'pid command' of the processes of a build: those whose environment carries its tag, and every
    process in a session one of them leads (vLLM's engine core and workers overwrite their
    environment when they set their process titles, but stay in the worker's session)."""
    marker = f"{TAG}={tag}".encode()
    processes = _processes()
    sessions.update(pid for pid, (session, environ, _) in processes.items()
                    if pid == session and marker in environ.split(b"\0"))
    return [f"{pid} {command}" for pid, (session, environ, command) in processes.items()
            if session in sessions or marker in environ.split(b"\0")]


def _shards(stage_dir: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in stage_dir.glob("shard-*.parquet")}


class Build:
    def __init__(self, command: list[str], log: Path, env: dict[str, str] | None = None):
        self.tag, self.log, self.sessions = uuid.uuid4().hex, log, set()
        self.process = subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                        start_new_session=True, env=dict(os.environ, **(env or {}), **{TAG: self.tag}))

    def wait_for(self, condition, what: str, timeout: float = 900) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            _members(self.tag, self.sessions)  # notes each worker's session while it runs
            assert self.process.poll() is None, f"build ended before {what}:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    def engine_running(self) -> bool:
        """vLLM's engine core process is up (it names itself VLLM::EngineCore)."""
        return any("EngineCore" in process for process in _members(self.tag, self.sessions))

    def survivors(self, seconds: float = 10) -> list[str]:
        deadline = time.monotonic() + seconds
        while (alive := _members(self.tag, self.sessions)) and time.monotonic() < deadline:
            time.sleep(0.2)
        return alive

    def stop(self, sig: int, group: bool, timeout: float = 60) -> dict:
        _members(self.tag, self.sessions)
        stopped = time.monotonic()
        (os.killpg if group else os.kill)(self.process.pid, sig)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        return {"code": code, "exit_s": time.monotonic() - stopped, "survivors": self.survivors(),
                "log": self.log.read_text()}


@pytest.fixture(scope="module")
def killed_build(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("kills")
    config = demo_config(shard_size=1)
    # 144 distinct prompts: the demo prompts three times, with different system prompts.
    base = config["sources"][0]
    config["sources"] = [base, dict(base, system_prompt="Be helpful."), dict(base, system_prompt="Answer briefly.")]
    # Every answer exactly 48 tokens: answers the toy model ends early made whole shards finish
    # in a few milliseconds, and on a fast machine a build could finish generating between the
    # test seeing 5 new shards and its signal arriving (CI: all 144 written before SIGTERM landed).
    config["generators"][0].update(max_tokens=48, ignore_eos=True)
    path = write_config(root / "kill.yaml", config)
    run_dir = root / "run"
    command = [sys.executable, "-m", "prefsynth.cli", "build", str(path), "--run-dir", str(run_dir), "--quiet"]
    generate, judge = run_dir / "generate.tiny-chat", run_dir / "judge.rm"
    done = lambda: len(list(generate.glob("shard-*.parquet")))  # noqa: E731
    seen: dict = {"run_dir": run_dir, "command": command}

    build = Build(command, root / "a.log")  # 1. SIGKILL of the process group while the engine starts
    build.wait_for(build.engine_running, "the generation engine to start")
    seen["startup"] = build.stop(signal.SIGKILL, group=True)

    build = Build(command, root / "b.log")  # 2. Ctrl-C during generation
    build.wait_for(lambda: done() >= 5, "5 generated shards")
    seen["ctrl_c"] = build.stop(signal.SIGINT, group=True)
    seen["after_ctrl_c"] = _shards(generate)

    build = Build(command, root / "c.log")  # 3. SIGTERM of the build during generation
    start = done()
    build.wait_for(lambda: done() >= start + 5, "5 more generated shards")
    seen["sigterm"] = build.stop(signal.SIGTERM, group=False)
    seen["after_sigterm"] = _shards(generate)

    build = Build(command, root / "d.log")  # 4. SIGKILL of the build process alone, reward model starting
    build.wait_for(lambda: (judge / "_worker.json").exists() and build.engine_running(), "the reward model to start")
    seen["driver_kill"] = build.stop(signal.SIGKILL, group=False)
    seen["killed_pid"] = build.process.pid
    seen["generated"] = _shards(generate)

    seen["final"] = subprocess.run(command, capture_output=True, text=True)
    return seen


@pytest.mark.parametrize("moment", ["startup", "ctrl_c", "sigterm", "driver_kill"])
def test_no_process_of_the_build_survives(killed_build, moment):
    stopped = killed_build[moment]
    assert stopped["code"] is not None, f"the build did not exit after the signal:\n{stopped['log'][-3000:]}"
    assert stopped["survivors"] == [], f"left alive 10 s after the kill: {stopped['survivors']}"


@pytest.mark.parametrize("moment", ["ctrl_c", "sigterm"])
def test_interrupt_stops_within_seconds_with_a_message(killed_build, moment):
    stopped = killed_build[moment]
    assert stopped["code"] == 130 and stopped["exit_s"] < 30, (stopped["code"], stopped["exit_s"])
    assert "interrupted: finished shards are kept in" in stopped["log"] and "rerun the same command" in stopped["log"]
    assert "Traceback" not in stopped["log"]


def test_rerun_finishes_without_redoing_work(killed_build):
    final, run_dir = killed_build["final"], killed_build["run_dir"]
    assert final.returncode == 0, final.stderr[-4000:]
    generate = run_dir / "generate.tiny-chat"
    after = _shards(generate)
    assert len(after) == PROMPTS
    for earlier in ("after_ctrl_c", "after_sigterm", "generated"):
        finished = killed_build[earlier]
        assert 5 <= len(finished) and {name: after[name] for name in finished} == finished  # untouched
    assert len(killed_build["after_ctrl_c"]) < len(killed_build["after_sigterm"]) < PROMPTS
    assert f"{PROMPTS - len(killed_build['generated'])}/{PROMPTS}" in final.stdout or \
        len(killed_build["generated"]) == PROMPTS
    # the killed build's lock was taken over, and said so
    assert f"took over the run directory from build PID {killed_build['killed_pid']}" in final.stderr
    assert not list(run_dir.rglob(".*.tmp-*"))

    prompts = pq.read_table(run_dir / "prompts").column("prompt_id").to_pylist()
    assert len(prompts) == len(set(prompts)) == PROMPTS
    candidates = pq.read_table(generate).to_pandas()
    assert candidates.candidate_id.is_unique and len(candidates) == PROMPTS * 4
    assert sorted(set(candidates.prompt_id)) == sorted(prompts)
    pairs = pq.read_table(run_dir / "dataset" / "data" / "pairs").to_pandas()
    rejects = pq.read_table(run_dir / "dataset" / "rejects.parquet").to_pandas()
    dropped = rejects[rejects.stage == "select"].prompt_id.tolist()
    assert pairs.prompt_id.is_unique
    assert sorted(pairs.prompt_id.tolist() + dropped) == sorted(prompts)  # every prompt exactly once


def test_damaged_shards_are_recomputed_with_their_downstream(killed_build, tmp_path):
    assert killed_build["final"].returncode == 0
    run_dir = tmp_path / "run"
    shutil.copytree(killed_build["run_dir"], run_dir)
    judged = run_dir / "judge.rm" / "shard-00007.parquet"
    original = pq.read_table(judged)
    judged.write_bytes(judged.read_bytes()[: judged.stat().st_size // 2])  # cut to half its size
    filtered = run_dir / "filter" / "shard-00020.parquet"
    data = bytearray(filtered.read_bytes())
    data[len(data) // 3] ^= 0x55  # same size, other bytes
    filtered.write_bytes(bytes(data))
    (run_dir / "filter" / "_stage.json").unlink()  # and its state lost: its files are still checked
    before = {stage: _shards(run_dir / stage) for stage in ("generate.tiny-chat", "judge.rm", "filter", "export")}

    command = killed_build["command"][:]
    command[command.index("--run-dir") + 1] = str(run_dir)
    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "Traceback" not in rerun.stderr
    assert "judge.rm: damaged file recomputed (shard-00007.parquet: " in rerun.stderr
    assert "bytes on disk" in rerun.stderr
    assert "filter: damaged file recomputed (shard-00020.parquet: checksum does not match" in rerun.stderr
    summary = {stage["name"]: stage for stage in json.loads((run_dir / "manifest.json").read_text())["summary"]}
    assert (summary["generate.tiny-chat"]["computed"], summary["generate.tiny-chat"]["repaired"]) == (0, 0)
    assert (summary["judge.rm"]["computed"], summary["judge.rm"]["repaired"]) == (1, 1)
    for stage in ("filter", "select", "export"):  # shards 7 and 20
        assert (summary[stage]["computed"], summary[stage]["repaired"]) == (2, 2), stage
    assert "repaired" in rerun.stdout

    after = {stage: _shards(run_dir / stage) for stage in before}
    assert after["generate.tiny-chat"] == before["generate.tiny-chat"]
    for stage, recomputed in (("judge.rm", {7}), ("filter", {7, 20}), ("export", {7, 20})):
        changed = {int(name[6:11]) for name in after[stage] if after[stage][name] != before[stage].get(name)}
        assert changed == recomputed, stage
    assert pq.read_table(judged).equals(original)  # the reward model scores the same candidates the same
    prompts = pq.read_table(run_dir / "prompts").column("prompt_id").to_pylist()
    pairs = pq.read_table(run_dir / "dataset" / "data" / "pairs").to_pandas()
    dropped = pq.read_table(run_dir / "dataset" / "rejects.parquet").to_pandas().query("stage == 'select'")
    assert sorted(pairs.prompt_id.tolist() + dropped.prompt_id.tolist()) == sorted(prompts)
