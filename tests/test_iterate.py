"""`prefsynth iterate` on the demo: two on-policy rounds (round 1 samples with round 0's trained
model and its reward mean rises), killed during a round's generation and during its training and
rerun to the same summary, more rounds computing only the new ones, sDPO's reference and replay.

Round 0 of every root is the session's demo build (the same config, so its shards are reused as
they are): the tests pay for the round-1 builds and the trainings only.
"""
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from prefsynth.iteration import IterateError, iterate
from prefsynth.iteration.config import IterateConfig
from prefsynth.processes import PAUSE_ENV
from tests.conftest import REPO
from tests.test_kills import Build

DEMO = REPO / "pipelines" / "iterate-demo.yaml"

pytestmark = pytest.mark.slow


def _seed_round_zero(demo_build: Path, root: Path) -> None:
    """The demo build is round 0's build of the iterate demo: reuse it (every stage hash matches)."""
    shutil.copytree(demo_build, root / "round-00" / "build")


def _config(root: Path, **changes) -> Path:
    config = yaml.safe_load(DEMO.read_text())
    config["build"] = str(DEMO.parent / config["build"])
    config.update(changes)
    path = root.parent / f"{root.name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _candidates(build: Path):
    return pq.read_table(sorted((build / "generate.tiny-chat").glob("shard-*.parquet")), columns=["model"]).to_pandas()


@pytest.fixture(scope="module")
def iterated(tmp_path_factory, demo_build):
    """The demo, two rounds, uninterrupted, from Python."""
    root = tmp_path_factory.mktemp("iterate") / "root"
    _seed_round_zero(demo_build, root)
    result = iterate(DEMO, root, progress=False)
    return root, result


def test_two_rounds_sample_from_the_trained_policy_and_raise_the_reward(iterated):
    root, result = iterated
    rounds = result.summary["rounds"]
    assert [r["round"] for r in rounds] == [0, 1]
    assert [r["policy"] for r in rounds] == ["fixture:tiny-chat", "round-00/train/model"]
    assert json.loads((root / "summary.json").read_text()) == result.summary
    # round 1's candidates came from round 0's trained model (provenance names it), round 0's from the fixture
    assert set(_candidates(root / "round-00" / "build")["model"]) == {"fixture:tiny-chat"}
    assert set(_candidates(root / "round-01" / "build")["model"]) == {str(root / "round-00" / "train" / "model")}
    # the reward model that chose round 0's pairs prefers what the trained policy samples now
    assert rounds[1]["reward_mean"] > rounds[0]["reward_mean"]
    for r in rounds:
        assert r["pairs"] == sum(r["pairs_by_language"].values()) > 0
        assert r["train_steps"] == 60 and r["train_loss_last"] < 0.6931  # DPO's loss starts at log 2
        assert set(r["reward_mean_by_language"]) == set(r["pairs_by_language"])
        assert r["candidates"] == 48 * 4
        assert "win_rate" not in r  # no eval configured
    # the reference stays the initial policy (the default), through the reference cache's record
    for index in (0, 1):
        caches = list((root / f"round-0{index}" / "build" / "dataset" / "_ref_logps").glob("*.parquet"))
        assert [pq.read_schema(c).metadata[b"reference"] for c in caches] == [b"fixture:tiny-chat"]
    # each round trained on its own pairs
    for index, r in enumerate(rounds):
        trained = json.loads((root / f"round-0{index}" / "train" / "summary.json").read_text())["data"]
        assert trained["rows"] == r["pairs"]
    assert set(result.table()["round"]) == {0, 1}


def test_killed_in_generation_and_in_training_resumes_to_the_same_summary(iterated, tmp_path):
    reference_root, reference = iterated
    root = tmp_path / "root"
    # round 0 finished (build and training, as a one-round run leaves it): rounds 2 computes round 1 only
    shutil.copytree(reference_root / "round-00", root / "round-00")
    finished = (root / "round-00" / "train" / "summary.json").stat().st_mtime_ns
    one_round = iterate(IterateConfig.model_validate(
        {**yaml.safe_load(_config(root).read_text()), "rounds": 1}), root, progress=False)
    assert one_round.summary["rounds"] == reference.summary["rounds"][:1]

    command = [sys.executable, "-m", "prefsynth.cli", "iterate", str(_config(root)), "--run-dir", str(root), "--quiet"]
    generated = root / "round-01" / "build" / "generate.tiny-chat"
    killed = Build(command, tmp_path / "generation.log", env={PAUSE_ENV: "generate.tiny-chat:1"})
    killed.wait_for(lambda: any(generated.glob("shard-*.parquet")), "round 1's first generated shard", 900)
    time.sleep(1)
    os.killpg(killed.process.pid, signal.SIGKILL)
    assert killed.process.wait(timeout=60) == -signal.SIGKILL
    assert len(list(generated.glob("shard-*.parquet"))) == 1

    state = root / "round-01" / "train" / "checkpoint" / "state.json"
    killed = Build(command, tmp_path / "training.log", env={PAUSE_ENV: "train:50"})
    killed.wait_for(state.is_file, "round 1's checkpoint at step 50", 900)
    time.sleep(1)
    os.killpg(killed.process.pid, signal.SIGKILL)
    assert killed.process.wait(timeout=60) == -signal.SIGKILL
    assert json.loads(state.read_text())["step"] == 50

    finished_run = Build(command, tmp_path / "rest.log")
    assert finished_run.process.wait(timeout=1800) == 0, (tmp_path / "rest.log").read_text()[-3000:]
    # the resumed training continued from step 50: its metrics carry every step once
    steps = [json.loads(line)["step"] for line in (root / "round-01" / "train" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 61))
    assert json.loads((root / "summary.json").read_text()) == reference.summary
    assert (root / "round-00" / "train" / "summary.json").stat().st_mtime_ns == finished  # round 0 not retrained


def test_previous_reference_and_replay_train_on_every_round_against_the_last_policy(iterated, tmp_path):
    from prefsynth.fixtures import cache_root
    from prefsynth.iteration.rounds import run_training, train_config

    reference_root, reference = iterated
    cfg = IterateConfig.model_validate({**yaml.safe_load(_config(tmp_path / "c").read_text()),
                                        "reference": "previous", "replay": "all"})
    # round 1 of an sDPO run over the reference run's builds: trains from round 0's policy on both rounds' pairs
    policy = str(reference_root / "round-00" / "train" / "model")
    data = train_config(cfg, reference_root, 1, policy) | {"output_dir": str(tmp_path / "train")}
    assert "ref_model" not in data  # null: a frozen copy of the round's starting policy
    run_training(cfg, data, reference_root, progress=False)
    summary = json.loads((tmp_path / "train" / "summary.json").read_text())
    assert summary["data"]["rows"] == sum(r["pairs"] for r in reference.summary["rounds"])
    caches = [pq.read_schema(p).metadata for p in (cache_root() / "ref_logps").glob("*.parquet")]
    assert {b"reference": policy.encode()} in caches


def test_a_round_without_pairs_stops_naming_it_and_the_reasons(tmp_path, demo_build):
    config = yaml.safe_load(DEMO.read_text())
    build = yaml.safe_load((DEMO.parent / config["build"]).read_text())
    build["sources"][0]["path"] = str(DEMO.parent / build["sources"][0]["path"])
    build["filters"].append({"type": "min_score", "column": "rm_score_raw", "min": 1.0e9})  # rejects everything
    (tmp_path / "build.yaml").write_text(yaml.safe_dump(build))
    config.update(build=str(tmp_path / "build.yaml"))
    _seed_round_zero(demo_build, tmp_path / "root")  # samples and scores reused: only filter onwards runs
    with pytest.raises(IterateError, match=r"round 0 selected no pairs \(.*min_score"):
        iterate(config, tmp_path / "root", progress=False)
    assert (tmp_path / "root" / "round-00" / "build" / "generate.tiny-chat").is_dir()  # the work is kept
    assert not (tmp_path / "root" / "round-00" / "train").exists()


def test_config_errors_name_the_field(tmp_path):
    from prefsynth.config import ConfigError
    from prefsynth.iteration import parse

    base = yaml.safe_load(DEMO.read_text()) | {"build": str(DEMO.parent / "demo.yaml")}
    with pytest.raises(ConfigError, match=r"train: .*model, output_dir are set by each round"):
        parse(base | {"train": {"model": "x", "output_dir": "y", "max_steps": 3}})
    with pytest.raises(ConfigError, match=r"build: .*does not exist"):
        parse(base | {"build": str(tmp_path / "missing.yaml")})
    with pytest.raises(ConfigError, match=r"with lora .*reference: previous"):
        parse(base | {"train": {"lora": {"r": 4}, "max_steps": 3}})
    with pytest.raises(IterateError, match=r"prompts_per_round 30 x 2 rounds needs 60 prompts; .* hold 48"):
        iterate(base | {"prompts_per_round": 30}, tmp_path / "root", progress=False)


def test_report_shows_per_round_curves(iterated):
    import subprocess

    root, result = iterated
    done = subprocess.run([sys.executable, "-m", "prefsynth.cli", "report", str(root)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    page = (root / "report" / "rounds.html").read_text()
    for image in ("rounds-overall", "rounds-reward", "rounds-pairs"):
        assert f'id="{image}"' in page and (root / "report" / f"{image}.png").stat().st_size > 1000
    assert "rounds-winrate" not in page  # no eval configured


def test_round_curves_wrap_at_101_languages(tmp_path):
    """Synthetic summary: the per-language panels wrap into rows instead of crowding one axis."""
    from PIL import Image

    from prefsynth.report.rounds_html import FACETS_PER_ROW, write_rounds_report

    languages = [f"l{i:03d}" for i in range(101)]
    rounds = [{"round": k, "policy": "p", "pairs": 101, "reward_mean": 0.1 * k, "train_loss_last": 0.6 - 0.1 * k,
               "win_rate": 0.5 + 0.1 * k, "pairs_by_language": dict.fromkeys(languages, 1),
               "reward_mean_by_language": {code: 0.1 * k + i / 1000 for i, code in enumerate(languages)},
               "win_rate_by_language": dict.fromkeys(languages, 0.5)} for k in range(3)]
    (tmp_path / "summary.json").write_text(json.dumps({"name": "wide", "initial_policy": "p", "reference": "initial",
                                                       "replay": "none", "rounds": rounds}))
    page = write_rounds_report(tmp_path).read_text()
    assert 'id="rounds-winrate"' in page
    width, height = Image.open(tmp_path / "report" / "rounds-reward.png").size
    rows = -(-101 // FACETS_PER_ROW)
    assert height > width and height >= rows * 1.5 * 90  # 1.9 in per row at 90 dpi, minus margins


def test_judge_with_policy_makes_the_round_policy_the_llm_judge(tmp_path):
    """Self-rewarding: the named llm_judge of every round's build is the round's policy; the
    generate stage's hash follows the policy folder's content (a retrained policy resamples)."""
    from prefsynth.config import ConfigError
    from prefsynth.iteration import parse
    from prefsynth.iteration.rounds import round_pipeline

    build = yaml.safe_load((DEMO.parent / "demo.yaml").read_text())
    build["sources"][0]["path"] = str(DEMO.parent / build["sources"][0]["path"])
    build["judges"].append({"type": "llm_judge", "name": "self", "model": "fixture:tiny-chat"})
    (tmp_path / "build.yaml").write_text(yaml.safe_dump(build))
    base = yaml.safe_load(DEMO.read_text()) | {"build": str(tmp_path / "build.yaml")}
    with pytest.raises(ConfigError, match=r"judge_with_policy 'rm' is not an llm_judge .*\['self'\]"):
        parse(base | {"judge_with_policy": "rm"})
    cfg = parse(base | {"judge_with_policy": "self"})
    policy = tmp_path / "round-00" / "train" / "model"
    shutil.copytree(REPO / "prefsynth" / "fixtures" / "data", policy)  # any folder stands for the trained model here
    plans = {plan.name: plan for plan in round_pipeline(cfg, str(policy), None, None).plan()}
    assert plans["judge.self"].op.judge.model == str(policy)
    assert plans["judge.rm"].op.judge.model == "fixture:tiny-reward"
    assert plans["generate.tiny-chat"].op.generator.model == str(policy)
    before = plans["generate.tiny-chat"].hash
    (policy / "model.safetensors").write_bytes(b"retrained")
    assert round_pipeline(cfg, str(policy), None, None).plan()[0].hash != before


def test_eval_after_a_round_compares_the_policy_with_the_initial_one(iterated, tmp_path):
    """`eval:` runs the eval config with the round's policy joining its baseline as `policy`; the
    round's record carries the win-rate overall and per language."""
    from prefsynth.iteration.rounds import round_record, run_eval
    from prefsynth.pipeline import BuildResult

    root, reference = iterated
    cfg = IterateConfig.model_validate({**yaml.safe_load(_config(tmp_path / "e").read_text()),
                                        "eval": str(REPO / "pipelines" / "eval-demo.yaml")})
    policy = str(root / "round-00" / "train" / "model")
    summary = run_eval(cfg, tmp_path / "eval", policy, None, progress=False)
    assert set(summary["models"]) == {"policy"} and summary["baseline"] == "base"
    assert summary["models_config"]["policy"] == policy
    record = round_record(cfg, root, 0, "fixture:tiny-chat", BuildResult(root / "round-00" / "build"), summary)
    assert 0 <= record["win_rate"] <= 1 and set(record["win_rate_by_language"]) == set(record["pairs_by_language"])
    assert {k: v for k, v in record.items() if not k.startswith("win_rate")} == reference.rounds[0]
