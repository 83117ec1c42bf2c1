"""Faults a user can cause or a machine can suffer, against the real CLI, without any model: each
ends in one clear paragraph (file, line, field, what to do) and a non-zero exit, or a recorded
rejection, never a traceback. The kill and damaged-shard cases that need engines are in
test_kills.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from prefsynth.config import Source
from prefsynth.executor import PROMPTS_STAGE, LocalExecutor, StageFailed, StagePlan
from prefsynth.prompts import load_prompts, read_sources
from prefsynth.runs import DiskFullError, RunDir, RunDirError, RunDirLocked
from prefsynth.stages import Op, ShardOutput
from tests.conftest import demo_config, write_config


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "prefsynth.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def _clear_failure(result, *fragments, code=1):
    """A failure a user can act on: the exit code, every fragment in stderr, and no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def _config_with(tmp_path, path, **source):
    config = demo_config()
    config["sources"] = [{"path": str(path), "columns": {"prompt": "prompt", "language": "language", "id": "id"},
                          **source}]
    return write_config(tmp_path / "pipeline.yaml", config)


def _jsonl(path, rows):
    path.write_bytes(b"".join((r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode()) + b"\n"
                              for r in rows))
    return path


# ---------------------------------------------------------------- the run directory

def test_run_dir_that_is_a_file(tmp_path):
    config = write_config(tmp_path / "demo.yaml", demo_config())
    taken = tmp_path / "taken"
    taken.write_text("not a directory")
    _clear_failure(_cli("build", config, "--run-dir", taken), f"{taken}", "is a file, not a directory")
    _clear_failure(_cli("build", config, "--run-dir", taken / "run"), f"({taken} is a file)")
    assert taken.read_text() == "not a directory"


def test_second_build_on_a_locked_run_dir_names_the_first(tmp_path):
    config = write_config(tmp_path / "demo.yaml", demo_config())
    run_dir = tmp_path / "run"
    with RunDir(run_dir).lock():
        result = _cli("build", config, "--run-dir", run_dir)
        _clear_failure(result, f"in use by another build (PID {os.getpid()}", "Wait for it to finish")
        with pytest.raises(RunDirLocked):  # the same from Python
            with RunDir(run_dir).lock():
                pass
    assert not (run_dir / "manifest.json").exists()  # the refused build wrote nothing


def test_stale_lock_of_a_dead_build_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = RunDir(tmp_path / "run")
    run.ensure()
    (run.path / ".lock").write_text(json.dumps({"pid": dead.pid, "host": "here", "started": "earlier"}))
    with run.lock() as previous:  # no exception: the kernel holds no lock for a dead process
        assert previous["pid"] == dead.pid
        assert json.loads((run.path / ".lock").read_text())["pid"] == os.getpid()
    assert (run.path / ".lock").read_text() == ""  # a finished build leaves no holder behind
    with run.lock() as previous:
        assert previous is None


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MiB tmpfs, to fill up (needs root, as CI and the development machines have)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> None:
    descriptor = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(descriptor, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def test_full_disk_is_one_line_naming_the_file(tiny_disk, tmp_path):
    config = write_config(tmp_path / "demo.yaml", demo_config())
    run_dir = tiny_disk / "run"
    run_dir.mkdir()
    _fill(tiny_disk)
    result = _cli("build", config, "--run-dir", run_dir)
    _clear_failure(result, "no space left on the device writing", str(run_dir), "is free there",
                   "rerun the same command")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not list(run_dir.rglob(".*.tmp-*"))


def test_full_disk_while_writing_stage_state_keeps_the_old_state(tiny_disk):
    stage = RunDir(tiny_disk / "run").stage("judge.rm")
    stage.prepare("abc", {"x": 1})
    stage.write_shard(0, pa.table({"a": list(range(100))}))
    before = (stage.path / "_stage.json").read_text()
    _fill(tiny_disk)
    with pytest.raises(DiskFullError, match=r"writing .*judge\.rm/_stage\.json: it needs about .* is free"):
        stage.mark("complete", shards=1)
    assert (stage.path / "_stage.json").read_text() == before and not stage.is_complete("abc")
    with pytest.raises(DiskFullError, match=r"shard-00001\.parquet"):
        stage.write_shard(1, pa.table({"a": list(range(100_000))}))
    assert not stage.has_shard(1) and "shard-00001.parquet" not in stage.records()
    assert not list(stage.path.glob(".*.tmp-*"))


# ---------------------------------------------------------------- damaged files

def _stage_with_shards(tmp_path, count=3):
    stage = RunDir(tmp_path / "run").stage("judge.rm")
    stage.prepare("h", {})
    for shard in range(count):
        rejects = pa.table({"reason": ["x"] * (shard + 1)}) if shard == 1 else None
        stage.write_shard(shard, pa.table({"value": list(range(shard * 1000, shard * 1000 + 500))}), rejects)
    return stage


def test_verify_finds_cut_flipped_and_unreadable_files(tmp_path):
    stage = _stage_with_shards(tmp_path)
    assert stage.verify_shards() == {}
    files = stage.records()
    assert files["shard-00000.parquet"]["rows"] == 500 and files["rejects-00001.parquet"]["rows"] == 2
    cut = stage.shard_path(0)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    flipped = stage.rejects_dir / "rejects-00001.parquet"
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    damaged = stage.verify_shards()
    assert set(damaged) == {0, 1}
    assert "bytes on disk" in damaged[0] and "recorded" in damaged[0]
    assert damaged[1].startswith("rejects-00001.parquet: checksum")
    stage.discard_shards(sorted(damaged))
    assert stage.shards() == [2] and not flipped.exists() and stage.state()["status"] == "running"


def test_files_without_records_are_checked_then_adopted(tmp_path):
    stage = _stage_with_shards(tmp_path)
    (stage.path / "_stage.json").write_text("{ cut in the middl")  # a damaged state file
    (stage.path / "_files.jsonl").write_bytes(b'{"name": "shard-00002.par')  # records lost, one cut
    assert stage.state() == {} and stage.records() == {}
    stage.prepare("h", {})
    bad = stage.shard_path(2)
    bad.write_bytes(b"PAR1 not really parquet")
    damaged = stage.verify_shards()
    assert list(damaged) == [2] and "unreadable Parquet" in damaged[2]
    assert set(stage.records()) == {"shard-00000.parquet", "shard-00001.parquet", "rejects-00001.parquet"}


def test_damaged_manifest_is_rewritten(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_manifest(pipeline="x")
    run.manifest_path.write_text('{"pipeline": ')
    assert run.manifest() == {}
    run.write_manifest(pipeline="y")
    assert run.manifest()["pipeline"] == "y"


# ---------------------------------------------------------------- bad sources

def test_directory_as_source_is_caught_by_validate_and_build(tmp_path):
    folder = tmp_path / "prompts"
    folder.mkdir()
    config = _config_with(tmp_path, folder)
    for command in ("validate", "build"):
        result = _cli(command, config, *(["--run-dir", tmp_path / "run"] if command == "build" else []))
        _clear_failure(result, "sources[0].path", "is a directory, not a file", "dataset:", code=2)
        assert "line " in result.stderr


def test_unknown_extension_is_a_config_error(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text('{"prompt": "hi", "language": "en"}\n')
    _clear_failure(_cli("validate", _config_with(tmp_path, path)), "sources[0]", "set `format:`", code=2)


def _many_rows(count):
    return [{"prompt": f"Question number {i}: why is the sky blue?", "language": "en", "id": f"q{i}"}
            for i in range(count)]


def test_invalid_utf8_names_the_line_even_past_the_first_read_block(tmp_path):
    rows = _many_rows(3000)  # ~200 kB: the bad line lies far past any decoder buffer
    rows.insert(2500, b'{"prompt": "caf\xe9 au lait", "language": "fr"}')
    path = _jsonl(tmp_path / "prompts.jsonl", rows)
    result = _cli("validate", _config_with(tmp_path, path))
    _clear_failure(result, f"{path}: line 2501: invalid UTF-8 (byte 16 of the line: b'\\xe9')", "on_bad_row: skip")
    skipped = _cli("validate", _config_with(tmp_path, path, on_bad_row="skip"))
    assert skipped.returncode == 0, skipped.stderr
    assert "3000 prompt(s) (bad_row: 1 rejected)" in skipped.stdout
    prompts, rejects = load_prompts([Source(path=str(path), on_bad_row="skip")])
    assert prompts.num_rows == 3000
    [reject] = rejects.to_pylist()
    assert (reject["source_row"], reject["reason"]) == (2500, "bad_row") and "invalid UTF-8" in reject["detail"]


def test_byte_order_mark_is_not_a_bad_row(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"prompt": "Hello", "language": "en"}).encode() + b"\n")
    prompts, rejects = load_prompts([Source(path=str(path))])
    assert prompts.num_rows == 1 and rejects.num_rows == 0


def test_null_language_without_a_default(tmp_path):
    path = _jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Hello", "language": "en"},
                                               {"prompt": "Bonjour", "language": None}, {"prompt": "Hola"}])
    _clear_failure(_cli("validate", _config_with(tmp_path, path)),
                   f"{path}: line 2: field 'language': no language (missing or null)")
    prompts, rejects = load_prompts([Source(path=str(path), on_bad_row="skip")])
    assert prompts.column("language").to_pylist() == ["en"]
    assert rejects.column("source_row").to_pylist() == [1, 2] and set(rejects.column("reason").to_pylist()) == {"bad_row"}
    prompts, _ = load_prompts([Source(path=str(path), language="es")])  # a source default fills them
    assert prompts.column("language").to_pylist() == ["en", "es", "es"]
    config = demo_config()
    config["sources"] = [{"path": str(path), "columns": {"language": None}}]
    _clear_failure(_cli("validate", write_config(tmp_path / "nolang.yaml", config)),
                   "sources[0]", "rows get no language", code=2)


@pytest.mark.parametrize("content, kind", [(b"", "empty (0 bytes)"), (b"\n  \n\n", "empty (only blank lines)")])
def test_empty_source(tmp_path, content, kind):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(content)
    good = _jsonl(tmp_path / "good.jsonl", _many_rows(3))
    config = demo_config()
    config["sources"] = [{"path": str(empty)}, {"path": str(good)}]
    result = _cli("validate", write_config(tmp_path / "two.yaml", config))
    assert result.returncode == 0, result.stderr
    assert f"warning: {empty}: {kind}, no prompts from this source" in result.stderr
    assert "3 prompt(s)" in result.stdout
    config["sources"] = [{"path": str(empty)}]
    only = write_config(tmp_path / "only.yaml", config)
    for command in ("validate", "build"):
        result = _cli(command, only, *(["--run-dir", tmp_path / "run"] if command == "build" else []))
        _clear_failure(result, f"no prompts to build from: {empty}: {kind}")


def test_every_row_rejected_is_an_error_saying_why(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", [{"prompt": ""}, {"prompt": "x", "language": "zz"}])
    result = _cli("validate", _config_with(tmp_path, path, on_bad_row="skip"))
    _clear_failure(result, f"no prompts to build from: {path}: 2 row(s), 0 kept (bad_row: 2)")


def test_duplicate_source_ids(tmp_path):
    path = _jsonl(tmp_path / "prompts.jsonl", [
        {"id": "q1", "prompt": "Why is the sky blue?", "language": "en"},
        {"id": "q1", "prompt": "Pourquoi le ciel est-il bleu ?", "language": "fr"},  # parallel set: fine
        {"id": "q2", "prompt": "What is rain?", "language": "en"},
        {"id": "q2", "prompt": "What is snow?", "language": "en"},  # a different prompt, same id
    ])
    result = _cli("validate", _config_with(tmp_path, path))
    assert result.returncode == 0, result.stderr
    assert "4 prompt(s)" in result.stdout
    assert (f"warning: {path}: duplicate_source_id: 1 row(s) reuse an id of a different prompt in the same "
            "language, all kept (first: id 'q2' (en) at line 3 and line 4)") in result.stderr
    prompts, _, warnings = read_sources([Source(path=str(path))])
    assert prompts.column("source_id").to_pylist() == ["q1", "q1", "q2", "q2"] and len(warnings) == 1


def test_unexpected_errors_have_no_traceback_without_debug(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir).mkdir()
    (run_dir / "manifest.json").write_text("{}")
    _clear_failure(_cli("inspect", run_dir), "error: FileNotFoundError", str(run_dir / "dataset"))
    (run_dir / "manifest.json").write_text("[]")  # not what any build writes
    result = _cli("inspect", run_dir)
    _clear_failure(result, "error: AttributeError", "rerun with --debug for the traceback")
    debug = _cli("inspect", run_dir, "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr



def test_a_shard_retried_without_rejects_forgets_the_old_rejects(tmp_path):
    stage = RunDir(tmp_path / "run").stage("generate.x")
    stage.prepare("h", {})
    stage.rejects_dir.mkdir(parents=True)
    stage.write_file(stage.rejects_dir / "rejects-00000.parquet", pa.table({"reason": ["too_long"]}))  # attempt 1
    stage.write_shard(0, pa.table({"value": [1, 2]}))  # attempt 2: no rejects this time
    assert not (stage.rejects_dir / "rejects-00000.parquet").exists()
    assert set(stage.records()) == {"shard-00000.parquet"} and stage.verify_shards() == {}


def test_a_shard_deleted_from_a_finished_stage_is_recomputed(tmp_path):
    stage = _stage_with_shards(tmp_path)
    stage.mark("complete", shards=3)
    stage.shard_path(1).unlink()
    assert stage.verify_shards() == {1: "shard-00001.parquet: missing, but recorded"}
    stage.discard_shards([1])
    assert not stage.is_complete("h") and stage.verify_shards() == {}


def test_run_dir_of_a_newer_format_is_refused(tmp_path):
    stage = RunDir(tmp_path / "run").stage("prompts")
    stage.prepare("h", {})
    stage.record(format=99)
    with pytest.raises(RunDirError, match="written by a newer prefsynth"):
        stage.prepare("h", {})


class _FailsOnShardOne(Op):
    def config(self):
        return {}

    def process(self, resource, shard):
        if shard.shard == 1:
            raise ValueError("no score column")
        return ShardOutput(shard.prompts)


def test_a_cpu_stage_failure_names_the_stage_and_shard(tmp_path):
    run = RunDir(tmp_path / "run")
    prompts = run.stage(PROMPTS_STAGE)
    prompts.prepare("p", {})
    for shard in range(3):
        prompts.write_shard(shard, pa.table({"prompt_id": [f"p{shard}"]}))
    plan = StagePlan("filter", _FailsOnShardOne(), [])
    run.stage("filter").prepare("f", {})
    with pytest.raises(StageFailed) as failed:
        LocalExecutor(progress=False).run_stage(run, plan, [0, 1, 2])
    assert str(failed.value).startswith("stage filter: shard 1: ValueError: no score column")
    assert "1/3 pending shards were written" in str(failed.value) and run.stage("filter").shards() == [0]
