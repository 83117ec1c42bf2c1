"""The multilingual layer end to end on vLLM (CPU): quotas, prompt translation, per-language
routing with registry system prompts, language-ID filtering and the coverage table."""
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from tests.conftest import demo_config, write_config

pytestmark = pytest.mark.slow
ROUTES = {"latin": ["en", "fr", "es", "de"], "other": ["ja", "ar", "hi", "ru"]}


@pytest.fixture(scope="module")
def build(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("multilingual")
    config = demo_config()
    config["balance"] = {"per_language": 3, "quotas": {"en": 6}}
    config["translate"] = {"source_language": "en", "targets": ["fr", "ja", "ar"], "model": "fixture:tiny-chat",
                           "max_tokens": 96, "engine": {"max_model_len": 512, "dtype": "float32"}}
    base = config["generators"][0]
    config["generators"] = [
        dict(base, name="latin", languages=ROUTES["latin"]),
        dict(base, name="other", languages=ROUTES["other"], system_prompt="registry"),
        dict(base, name="tc", languages=["fr", "ja"], strategy="translate_completions",
             translator={"backend": "seq2seq", "model": "fixture:tiny-mt", "max_tokens": 64}),
        dict(base, name="diverse", languages=["fr", "ja"], strategy="diverse", n=3, max_tokens=80, diverse_max_chars=48),
    ]
    config["report"] = {"diversity_model": "sentence-transformers/all-MiniLM-L6-v2"}
    config["filters"] = [{"type": "finish_reason"}, {"type": "language_id"}]
    path = write_config(root / "multilingual.yaml", config)
    run_dir = root / "run"
    result = subprocess.run([sys.executable, "-m", "prefsynth.cli", "build", str(path), "--run-dir", str(run_dir), "--quiet"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return run_dir, result.stdout


def test_quotas_sample_each_language_and_record_the_rest(build):
    run_dir, _ = build
    prompts = pq.read_table(run_dir / "prompts").to_pandas()
    assert prompts.language.value_counts().to_dict() == {"en": 6, "fr": 3, "es": 3, "de": 3, "ja": 3, "ar": 3, "hi": 3, "ru": 3}
    rejects = pq.read_table(run_dir / "rejects" / "prompts").to_pandas()
    assert (rejects.reason == "over_quota").sum() == 48 - 27
    assert "fr: kept 3 of 6" in set(rejects.detail)


def test_translations_keep_their_source_and_are_in_the_target_language(build):
    run_dir, _ = build
    prompts = pq.read_table(run_dir / "translate").to_pandas()
    originals = prompts[prompts.origin == "source"].set_index("prompt_id")
    translated = prompts[prompts.origin == "translated"]
    assert len(originals) == 27 and len(translated) >= 9  # most of 6 x 3 translations pass the checks
    assert set(translated.language) == {"fr", "ja", "ar"}
    for row in translated.itertuples():
        source = originals.loc[row.source_prompt_id]
        assert source.language == "en" and row.src_language == "en"
        assert row.src == source.messages[-1]["content"] and row.mt == row.messages[-1]["content"]
        assert row.translator == "fixture:tiny-chat" and row.prompt_id.startswith("t")
    from prefsynth import langid

    detected = [code for code, _ in langid.detect(translated.mt.tolist())]
    assert detected == translated.language.tolist()


def test_translate_completions_answer_in_the_source_language_then_translate(build):
    run_dir, _ = build
    prompts = pq.read_table(run_dir / "translate").to_pandas().set_index("prompt_id")
    candidates = pq.read_table(run_dir / "translate_completions.tc").to_pandas()
    translated = candidates[candidates.strategy == "translate_completions"]
    direct = candidates[candidates.strategy == "in_language"]
    assert len(translated) and len(direct)
    assert (prompts.loc[translated.prompt_id, "origin"] == "translated").all()
    assert (prompts.loc[direct.prompt_id, "origin"] == "source").all()
    assert translated.source_text.notna().all() and (translated.translator == "fixture:tiny-mt").all()
    assert translated.note.isna().all() and direct.source_text.isna().all()
    english = pq.read_table(run_dir / "generate.tc").to_pandas()
    assert set(english[english.strategy == "translate_completions"].note) == {"awaiting_translation"}


def test_diverse_strategy_and_its_diversity_report(build):
    run_dir, stdout = build
    candidates = pq.read_table(run_dir / "generate.diverse").to_pandas()
    diverse = candidates[candidates.strategy == "diverse"]
    fallback = candidates[candidates.note.fillna("").str.startswith("diverse_fallback:")]
    assert len(diverse) + len(fallback) == len(candidates) and len(candidates)
    assert (diverse.groupby("prompt_id").size() == 3).all()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert {"latin/in_language", "other/in_language"} <= set(manifest["diversity"])
    assert all(0 <= value <= 2 for value in manifest["diversity"].values())
    assert "diversity (mean pairwise embedding distance" in stdout


def test_routing_sends_each_language_to_its_generator(build):
    run_dir, _ = build
    for name, languages in ROUTES.items():
        candidates = pq.read_table(run_dir / f"generate.{name}").to_pandas()
        assert set(candidates.language) <= set(languages) and len(candidates)
        system = json.loads(candidates.sampling_params.iloc[0])["system_prompt"]
        assert system == ("registry" if name == "other" else "keep")


def test_language_id_filter_and_coverage_table(build):
    run_dir, stdout = build
    candidates = pq.read_table(run_dir / "filter").to_pandas()
    kept = candidates[candidates.keep]
    assert (kept.lid_lang == kept.language).all() and (kept.lid_prob >= 0.5).all()
    assert candidates.reason.fillna("").str.startswith("wrong_language:").sum() > 0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    coverage = {row["language"]: row for row in manifest["coverage"]}
    assert coverage["en"]["prompts_in"] == 6 and coverage["fr"]["translated"] >= 1
    for row in coverage.values():
        assert row["kept"] <= row["candidates"] and row["pairs"] <= row["prompts_in"] + row["translated"]
        assert row["lid_rejected"] + row["kept"] <= row["candidates"]
    pairs = pq.read_table(run_dir / "dataset" / "data" / "pairs").to_pandas()
    assert {"ar", "ja", "hi"} <= set(pairs.language) and len(set(pairs.language)) >= 5
    assert "coverage per language" in stdout
