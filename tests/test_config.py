import subprocess
import sys

import pytest

from prefsynth import config
from prefsynth.config import ConfigError
from tests.conftest import REPO, demo_config, write_config


def test_demo_and_gpu_pipelines_validate(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")  # the GPU pipeline names Hub models that are not cached here
    demo = config.load(REPO / "pipelines" / "demo.yaml")
    assert demo.selector.score == "rm_score_raw"
    assert demo.sources[0].path.endswith("pipelines/data/demo-prompts.jsonl")
    gpu = config.load(REPO / "pipelines" / "multilingual-gpu.yaml")
    assert [g.model for g in gpu.generators] == ["CohereLabs/aya-expanse-8b", "Qwen/Qwen2.5-7B-Instruct"]


def test_every_error_is_reported_with_field_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\n"
        "sources:\n"
        "  - path: missing.jsonl\n"
        "    language: xx\n"
        "generators:\n"
        "  - name: g\n"
        "    model: ./no/such/model\n"
        "    temperature: -1\n"
        "    tempreature: 0.5\n"
        "judges:\n"
        "  - type: reward_model\n"
        "    model: fixture:tiny-reward\n"
    )
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    problems = {field: (line, message) for field, line, message in caught.value.problems}
    assert problems["sources[0].path"][0] == 3 and "does not exist" in problems["sources[0].path"][1]
    assert problems["sources[0].language"][0] == 4 and "'xx' is not in the registry" in problems["sources[0].language"][1]
    assert problems["generators[0].model"][0] == 7 and "does not exist" in problems["generators[0].model"][1]
    assert problems["generators[0].temperature"][0] == 8
    assert problems["generators[0].tempreature"] == (9, "unknown option")
    text = str(caught.value)
    assert "line 9, generators[0].tempreature: unknown option" in text


def test_cross_field_checks(tmp_path):
    cfg = demo_config()
    cfg["generators"].append(dict(cfg["generators"][0]))
    cfg["selector"] = {"score": "nope"}
    with pytest.raises(ConfigError) as caught:
        config.parse(cfg)
    assert "generator names must be unique; repeated: ['tiny-chat']" in str(caught.value)


def test_selector_score_must_be_a_judge_column():
    cfg = demo_config(selector={"method": "best_worst", "score": "other_score"})
    with pytest.raises(ConfigError, match="selector.score 'other_score' is not a score column"):
        config.parse(cfg)


def test_unknown_fixture_and_bad_model_reference():
    cfg = demo_config()
    cfg["generators"][0]["model"] = "fixture:huge"
    cfg["judges"][0]["model"] = "not a model"
    with pytest.raises(ConfigError) as caught:
        config.parse(cfg)
    text = str(caught.value)
    assert "unknown fixture model 'huge'" in text
    assert "judges[0].model" in text and "neither an existing folder" in text


def test_hub_ids_are_accepted_offline_only_when_cached(monkeypatch):
    cfg = demo_config()
    cfg["generators"][0]["model"] = "some-org/some-model"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert config.parse(cfg).generators[0].model == "some-org/some-model"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="not in the local Hub cache"):
        config.parse(cfg)


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nsources: [\n  - a: b\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        config.load(path)


def test_cli_validate_exit_codes(tmp_path):
    good = write_config(tmp_path / "good.yaml", demo_config())
    run = subprocess.run([sys.executable, "-m", "prefsynth.cli", "validate", str(good)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "ok" in run.stdout
    cfg = demo_config()
    cfg["judges"][0]["batch_sise"] = 3
    bad = write_config(tmp_path / "bad.yaml", cfg)
    run = subprocess.run([sys.executable, "-m", "prefsynth.cli", "validate", str(bad)], capture_output=True, text=True)
    assert run.returncode == 2
    assert "judges[0].batch_sise: unknown option" in run.stderr


def test_config_reference_lists_every_option():
    from prefsynth.docs import config_reference_markdown

    text = config_reference_markdown()
    for model in (config.Source, config.Generator, config.Engine, config.RewardModelJudge, config.EmbeddingJudge,
                  *config.SELECTORS.values()):
        for name in model.model_fields:
            assert f"| `{name}` |" in text, name
    for method in config.SELECTORS:
        assert f"#### `selector (method: {method})`" in text


def test_readme_config_reference_is_current():
    from prefsynth.docs import config_reference_markdown

    readme = (REPO / "README.md").read_text()
    start, end = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
    embedded = readme[readme.index(start) + len(start) : readme.index(end)].strip()
    assert embedded == config_reference_markdown().strip(), "run: prefsynth config-reference --update README.md"
