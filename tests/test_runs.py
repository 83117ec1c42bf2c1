import os

import pyarrow as pa
import pytest

from prefsynth.pipeline import Pipeline
from prefsynth.runs import RunDir
from tests.conftest import demo_config


def _hashes(config, limit=None):
    return {plan.name: plan.hash for plan in Pipeline(config).plan(limit)}


def test_changing_a_stage_invalidates_it_and_downstream_only():
    base = _hashes(demo_config())
    order = ["generate.tiny-chat", "judge.rm", "filter", "select", "export"]
    assert list(base) == order

    def changed(config):
        new = _hashes(config)
        return [name for name in order if new[name] != base[name]]

    assert changed(demo_config()) == []
    assert changed(demo_config(selector={"method": "best_worst", "min_margin": 0.1})) == ["select", "export"]
    assert changed(demo_config(filters=[])) == ["filter", "select", "export"]
    cfg = demo_config()
    cfg["judges"][0]["batch_size"] = 3
    assert changed(cfg) == ["judge.rm", "filter", "select", "export"]
    cfg = demo_config()
    cfg["generators"][0]["temperature"] = 0.7
    assert changed(cfg) == order
    assert changed(demo_config(seed=1)) == order
    assert _hashes(demo_config(), limit=5) != base  # the prompt set changed


def test_two_generators_are_independent():
    cfg = demo_config()
    cfg["generators"].append(dict(cfg["generators"][0], name="second", temperature=0.5))
    base = _hashes(cfg)
    cfg["generators"][1]["temperature"] = 0.6
    new = _hashes(cfg)
    assert new["generate.tiny-chat"] == base["generate.tiny-chat"]
    assert new["generate.second"] != base["generate.second"] and new["judge.rm"] != base["judge.rm"]


def test_shards_are_written_atomically_and_stale_stages_discarded(tmp_path, monkeypatch):
    run = RunDir(tmp_path)
    stage = run.stage("select")
    assert stage.prepare("h1", {}) is False
    stage.write_shard(0, pa.table({"x": [1]}))
    (stage.path / ".shard-00001.parquet.tmp-123").write_bytes(b"half")
    assert stage.prepare("h1", {}) is False
    assert stage.shards() == [0] and not list(stage.path.glob(".*tmp*"))

    calls = []
    real_replace = os.replace

    def crash_on_rename(src, dst):
        calls.append(dst)
        raise KeyboardInterrupt  # the process dies between writing and renaming

    monkeypatch.setattr(os, "replace", crash_on_rename)
    with pytest.raises(KeyboardInterrupt):
        stage.write_shard(1, pa.table({"x": [2]}))
    monkeypatch.setattr(os, "replace", real_replace)
    assert not stage.has_shard(1)  # only the temporary file exists: the shard counts as not done

    stage.mark("complete")
    assert stage.is_complete("h1")
    assert stage.prepare("h2", {}) is True  # config changed: earlier output discarded
    assert stage.shards() == [] and not stage.is_complete("h2")
