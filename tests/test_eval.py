"""`prefsynth eval` end to end on the toy models, in one run directory: the eval demo judged by
the toy reward model and by tiny-chat as a pair-wise LLM judge, through a SIGKILL during the
second model's generation and a resume; then tiny-chat trained on the demo dataset (DPO, 60
steps at 1e-4) is added (4 answers per prompt at temperature 1.0, like the demo's `sampled`: the
toy model's answers are often identical, so more answers give the comparison its signal), and
the baseline is changed twice.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from prefsynth.eval.config import parse
from prefsynth.eval.stats import final_outcomes
from prefsynth.processes import PAUSE_ENV
from tests.conftest import REPO
from tests.test_kills import Build, _shards

EVAL_DEMO = REPO / "pipelines" / "eval-demo.yaml"
ENGINE = {"max_model_len": 512, "dtype": "float32"}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "prefsynth.cli", *args], capture_output=True, text=True)


def eval_config(**changes) -> dict:
    config = yaml.safe_load(EVAL_DEMO.read_text())
    for source in config["sources"]:
        source["path"] = str((EVAL_DEMO.parent / source["path"]).resolve())
    config.update(changes)
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_build):
    from prefsynth.train import train

    root = tmp_path_factory.mktemp("eval")
    shutil.copytree(demo_build / "dataset", root / "dataset")  # the trainer caches reference log-probs beside it
    train({"model": "fixture:tiny-chat", "dataset": str(root / "dataset"), "loss": "sigmoid", "beta": 0.1,
           "learning_rate": 1e-4, "batch_size": 8, "max_steps": 60, "output_dir": str(root / "dpo")}, progress=False)
    return root


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_models):
    """The eval demo with an LLM judge beside its reward model, killed with SIGKILL while the
    second model generates, then rerun to the end."""
    root = tmp_path_factory.mktemp("eval-run")
    config = eval_config()
    config["judge"] = [config["judge"], {"type": "llm_judge", "name": "llm", "model": "fixture:tiny-chat",
                                         "max_tokens": 64, "max_rationale_chars": 40,
                                         "engine": ENGINE}]
    path = root / "eval.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    run = root / "run"
    # the worker freezes itself after the twin's first shard (greedy toy shards come milliseconds
    # apart, so polling alone races), then the run is killed from outside as a user would
    build = Build([sys.executable, "-m", "prefsynth.cli", "eval", str(path), "--run-dir", str(run), "--quiet"],
                  root / "killed.log", env={PAUSE_ENV: "generate.twin:1"})
    build.wait_for(lambda: any((run / "generate.twin").glob("shard-*.parquet")), "the twin's first shard", 600)
    time.sleep(1)  # a worker that did not pause would write more shards meanwhile
    os.killpg(build.process.pid, signal.SIGKILL)
    assert build.process.wait(timeout=60) == -signal.SIGKILL
    assert not build.survivors()
    before = {stage: _shards(run / stage) for stage in ("generate.base", "generate.twin")}
    assert len(before["generate.base"]) == 6 and len(before["generate.twin"]) == 1, before
    done = _cli("eval", str(path), "--run-dir", str(run), "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "eval" / "summary.json").read_text())
    return {"root": root, "config": config, "path": path, "run": run, "stdout": done.stdout, "before": before,
            "summary": summary}


@pytest.fixture(scope="module")
def with_tuned(evaluated, trained):
    """The same run directory, with the trained model added (4 answers at temperature 1.0, like
    `sampled`) and the reward model as the only judge."""
    from prefsynth import evaluate

    config = dict(evaluated["config"], judge=evaluated["config"]["judge"][:1])
    config["models"] = config["models"] + [{"name": "tuned", "model": str(trained / "dpo" / "model"),
                                            "temperature": 1.0, "n": 4, "max_tokens": 160, "engine": ENGINE}]
    return {"config": config, "result": evaluate(config, evaluated["run"], progress=False)}


def test_resume_after_sigkill_keeps_finished_shards_and_computes_the_rest(evaluated):
    run, before = evaluated["run"], evaluated["before"]
    after = {stage: _shards(run / stage) for stage in before}
    assert after["generate.base"] == before["generate.base"]  # untouched
    assert {k: after["generate.twin"][k] for k in before["generate.twin"]} == before["generate.twin"]
    assert len(after["generate.twin"]) == 6
    # greedy twin answers, from before and after the kill, equal the baseline's: the uninterrupted result
    base, twin = (pq.read_table(run / f"generate.{m}").sort_by("prompt_id") for m in ("base", "twin"))
    assert base["text"].to_pylist() == twin["text"].to_pylist()
    rerun = _cli("eval", str(evaluated["path"]), "--run-dir", str(run), "--quiet")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads((run / "eval" / "summary.json").read_text()) == evaluated["summary"]


def test_eval_report_renders_offline(evaluated, tmp_path):
    page = evaluated["run"] / "report" / "eval.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text
    plots = text.count("<img ")
    assert plots == 6  # rm: win-rate, fidelity, length; llm: win-rate, position bias, length
    browser = shutil.which("chromium")
    assert browser, "chromium is missing: `make test` installs it (Debian package chromium)"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0 and f'data-rendered="{plots}"' in dom.stdout, dom.stderr[-2000:]
    report = _cli("report", str(evaluated["run"]))
    assert report.returncode == 0 and "eval.html" in report.stdout


def test_a_model_against_itself_ties_in_every_language(evaluated):
    twin = evaluated["summary"]["models"]["twin"]
    for judge in ("rm", "llm"):
        scopes = twin["judges"][judge]
        assert len(scopes["languages"]) == 8
        for stats in [scopes["overall"], *scopes["languages"].values()]:
            assert stats["win_rate"] == 0.5 and stats["wins"] == stats["losses"] == 0 and stats["ties"] == stats["n"] > 0
    assert twin["overall"]["reasons"] == {"identical_answers": 48}


def test_summary_contract_and_the_judgments_behind_it(evaluated):
    summary, run = evaluated["summary"], evaluated["run"]
    assert summary["baseline"] == "base" and set(summary["models"]) == {"twin", "sampled"}
    judgments = pq.read_table(run / "eval" / "judgments.parquet").to_pandas()
    outcome, _ = final_outcomes(judgments, "lose")
    for name, entry in summary["models"].items():
        for key in ("overall", "macro", "languages"):
            assert entry[key] == entry["judges"]["rm"][key]
        for judge in ("rm", "llm"):
            overall = entry["judges"][judge]["overall"]
            mine = (judgments.model == name).to_numpy() & (judgments.judge == judge).to_numpy()
            valid = mine & np.isfinite(outcome)
            assert overall["n"] == valid.sum() and overall["judge_errors"] == (mine & ~np.isfinite(outcome)).sum()
            assert (overall["wins"], overall["ties"], overall["losses"]) == tuple(
                int(((outcome == v) & valid).sum()) for v in (1.0, 0.5, 0.0))
            assert overall["win_rate"] == pytest.approx(outcome[valid].mean())
            assert overall["ci_low"] <= overall["win_rate"] <= overall["ci_high"]
            assert {"lc_win_rate", "language_fidelity_model", "language_fidelity_baseline", "mean_chars_model",
                    "mean_tokens_baseline"} <= set(overall)
            fr = entry["judges"][judge]["languages"]["fr"]
            answers = next(m.get("n", 1) for m in evaluated["config"]["models"] if m["name"] == name)
            assert fr["n"] + fr["judge_errors"] == 6 * answers and fr["prompts"] <= 6
        assert entry["macro"]["languages"] == 8
    llm = judgments[judgments.judge == "llm"]
    asked = llm[llm.reason != "identical_answers"]
    assert len(asked) and asked.output_model_first.notna().all()  # each order's raw text is kept
    read = asked[asked.verdict_model_first.notna() & asked.verdict_baseline_first.notna()]
    assert (read.position_inconsistent == (read.verdict_model_first.map({"A": 1, "B": 0, "tie": 0.5})
                                           != read.verdict_baseline_first.map({"A": 0, "B": 1, "tie": 0.5}))).all()
    errors = asked[asked.judge_outcome.isna()]
    assert errors.reason.str.startswith("judge_error:").all()  # never a tie or a win
    assert "position_inconsistency" in summary["models"]["sampled"]["judges"]["llm"]["overall"]
    assert "prefsynth eval: win-rate % against base (judge rm)" in evaluated["stdout"]


def test_an_added_model_generates_only_its_own_answers(evaluated, with_tuned):
    result = with_tuned["result"]
    computed = {s.name: s.computed for s in result.stages if s.computed}
    assert computed == {"generate.tuned": 6, "language.tuned": 6, "score.rm.tuned": 6, "compare.rm.tuned": 6}
    before = evaluated["summary"]["models"]["sampled"]["judges"]["rm"]["overall"]
    after = result.summary["models"]["sampled"]["overall"]
    assert {k: v for k, v in after.items() if not k.startswith("bt_")} == {k: v for k, v in before.items() if not k.startswith("bt_")}
    assert after["bt_rating"] == pytest.approx(before["bt_rating"])
    # three models: Bradley-Terry ratings, each from that model's battles with the baseline
    for name in ("twin", "sampled", "tuned"):
        stats = result.summary["models"][name]["overall"]
        assert stats["bt_ci_low"] - 1e-6 <= stats["bt_rating"] <= stats["bt_ci_high"] + 1e-6
    assert result.summary["models"]["twin"]["overall"]["bt_rating"] == pytest.approx(1000)


def test_trained_model_beats_its_base_and_swapping_the_baseline_gives_one_minus(evaluated, with_tuned):
    from prefsynth import evaluate

    config, run = with_tuned["config"], evaluated["run"]
    against_sampled = evaluate(dict(config, baseline="sampled"), run, progress=False)
    computed = {s.name: s.computed for s in against_sampled.stages}
    assert all(computed[name] == 0 for name in computed if not name.startswith("compare."))  # answers and scores reused
    tuned = against_sampled.summary["models"]["tuned"]["overall"]
    assert tuned["win_rate"] > 0.5 and tuned["ci_low"] <= tuned["win_rate"] <= tuned["ci_high"], tuned
    reverse = evaluate(dict(config, baseline="tuned"), run, progress=False)
    sampled = reverse.summary["models"]["sampled"]
    assert sampled["overall"]["win_rate"] == pytest.approx(1 - tuned["win_rate"])
    for language, stats in against_sampled.summary["models"]["tuned"]["languages"].items():
        assert sampled["languages"][language]["win_rate"] == pytest.approx(1 - stats["win_rate"])
    assert sampled["overall"]["ci_low"] == pytest.approx(1 - tuned["ci_high"])  # same resamples, mirrored


def test_config_errors_name_the_field(tmp_path):
    from prefsynth.config import ConfigError

    cases = [
        (dict(models=eval_config()["models"][:1]), "models", "two or more models"),
        (dict(baseline="nobody"), "", "baseline 'nobody' is not one of the models"),
        (dict(models=[eval_config()["models"][0]] * 2), "", "names must be unique"),
        (dict(judge={"type": "llm_judge", "model": "fixture:tiny-chat", "mode": "pointwise"}), "judge[0].mode",
         "needs mode pairwise"),
        (dict(languages=["xx"]), "languages", "not in the registry"),
    ]
    for changes, field, message in cases:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(eval_config(**changes), sort_keys=False))
        done = _cli("eval", str(path), "--run-dir", str(tmp_path / "run"))
        assert done.returncode == 2 and message in done.stderr, (changes, done.stderr)
        assert field in done.stderr and "line " in done.stderr
    with pytest.raises(ConfigError, match="model path .* does not exist"):
        parse(eval_config(models=eval_config()["models"] + [{"name": "gone", "model": str(tmp_path / "nothing")}]))
