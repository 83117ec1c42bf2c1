"""pipelines/demo-mt.yaml end to end, offline: translate, COMET quality gate, generate, reward
model + LLM judge + language ID, calibration and ensemble, selection."""
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO
from tests.test_comet import DIRECT

pytestmark = pytest.mark.slow
PIPELINE = REPO / "pipelines" / "demo-mt.yaml"


@pytest.fixture(scope="module")
def build(tmp_path_factory, tiny_models):
    run_dir = tmp_path_factory.mktemp("demo-mt") / "run"
    result = subprocess.run([sys.executable, "-m", "prefsynth.cli", "build", str(PIPELINE), "--run-dir", str(run_dir), "--quiet"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return run_dir, result.stdout


def test_comet_gate_scores_like_comet_predict_and_drops_low_translations(build, tmp_path):
    from prefsynth.judges.comet import comet_python, resolve_comet_model

    run_dir, _ = build
    translated = pq.read_table(run_dir / "translate").to_pandas()
    translated = translated[translated.origin == "translated"].reset_index(drop=True)
    kept = pq.read_table(run_dir / "translate_quality").to_pandas()
    rejects = pq.read_table(run_dir / "rejects" / "translate_quality").to_pandas()
    assert len(kept[kept.origin == "translated"]) + len(rejects) == len(translated) > 0
    assert len(rejects) and (rejects.reason == "comet_below:-0.2").all()
    assert (kept[kept.origin == "translated"].mt_comet >= -0.2).all() and kept[kept.origin == "source"].mt_comet.isna().all()

    samples = [{"src": s, "mt": m} for s, m in zip(translated.src, translated.mt)]
    job = [{"checkpoint": resolve_comet_model("fixture:tiny-comet-qe"), "samples": samples, "batch_size": 16}]
    (tmp_path / "jobs.json").write_text(json.dumps(job))
    subprocess.run([comet_python(), "-I", "-c", DIRECT, str(tmp_path / "jobs.json"), str(tmp_path / "out.json")],
                   check=True, capture_output=True)
    direct = dict(zip(translated.prompt_id, json.loads((tmp_path / "out.json").read_text())[0][0]))
    for row in kept[kept.origin == "translated"].itertuples():
        assert row.mt_comet == pytest.approx(direct[row.prompt_id], abs=1e-6)
    for row in rejects.itertuples():
        assert direct[row.prompt_id] < -0.2


def test_judges_calibration_and_ensemble_reach_the_pairs(build):
    run_dir, stdout = build
    candidates = pq.read_table(run_dir / "filter").to_pandas()
    for column in ("rm_score_raw", "judge_score_raw", "judge_rationale", "judge_error", "lid_lang",
                   "rm_score_language_z", "ensemble_score", "ensemble_variance", "ensemble_judges"):
        assert column in candidates.columns
    scored = candidates.judge_score_raw.notna()
    assert scored.any() and candidates.loc[scored, "judge_score_raw"].between(1, 10).all()
    assert candidates.loc[~scored, "judge_error"].notna().all()
    assert set(candidates.language) == {"en", "fr", "hi", "ar"}
    pairs = pq.read_table(run_dir / "export").to_pandas()
    assert set(pairs.language) >= {"en", "ar"}
    by_id = candidates.set_index("candidate_id").ensemble_score
    assert (by_id[pairs.chosen_id].to_numpy() > by_id[pairs.rejected_id].to_numpy()).all()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    coverage = {row["language"]: row for row in manifest["coverage"]}
    assert coverage["en"]["prompts_in"] == 6 and all(coverage[c]["translated"] >= 1 for c in ("fr", "hi", "ar"))
    agreement = {row["language"]: row for row in manifest["agreement"]}
    assert set(agreement) == {"en", "fr", "hi", "ar"}
    assert all(0 <= row["rm_top_removed_by_lid"] <= 1 for row in agreement.values())
    assert "judge agreement per language" in stdout
