"""COMET judge: the worker in .venv-comet against unbabel-comet's own `predict`, on the tiny
fixtures (reference-based and QE), plus the errors a caller can meet."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from prefsynth.fixtures import build_tiny_models
from prefsynth.judges.comet import (CometScorer, CometUnavailable, CometWorkerError, comet_python, resolve_comet_model,
                                   score)
from tests.conftest import REPO

BATCH = 4  # several length-sorted batches per call


def _samples() -> list[dict]:
    """Multilingual triples of very different lengths: demo prompts with their answers (the best
    answer as reference), cross-language sentence pairs, an empty translation and one longer than
    the encoder's 512 positions (truncated by COMET)."""
    corpus = [json.loads(line) for line in (REPO / "prefsynth/fixtures/data/demo_corpus.jsonl").read_text().splitlines()]
    sentences = [json.loads(line) for line in (REPO / "tests/data/langid_sentences.jsonl").read_text().splitlines()]
    samples = []
    for row in corpus[::4]:
        best = max(row["responses"], key=lambda r: r["score"])["text"]
        samples += [{"src": row["prompt"], "mt": r["text"], "ref": best} for r in row["responses"][:2]]
    for i in range(0, len(sentences), 37):
        samples.append({"src": sentences[i]["text"], "mt": sentences[(i * 7) % len(sentences)]["text"],
                        "ref": sentences[i]["text"]})
    samples.append({"src": corpus[0]["prompt"], "mt": "", "ref": corpus[0]["responses"][0]["text"]})
    samples.append({"src": "Erzähl mir alles.", "mt": " ".join(s["text"] for s in sentences[:60]), "ref": "Alles."})
    return samples


SAMPLES = _samples()
QE_SAMPLES = [{"src": s["src"], "mt": s["mt"]} for s in SAMPLES]

# unbabel-comet used directly, the way its README does, in the COMET environment.
DIRECT = """
import json, sys
import comet
jobs = json.load(open(sys.argv[1]))
out = []
for job in jobs:
    model = comet.load_from_checkpoint(job["checkpoint"], local_files_only=True)
    out.append([list(model.predict(job["samples"], batch_size=job["batch_size"], gpus=0, progress_bar=False,
                                   length_batching=sorted_).scores) for sorted_ in (True, False)])
json.dump(out, open(sys.argv[2], "w"))
"""


@pytest.fixture(scope="module")
def checkpoints() -> dict[str, str]:
    return {name: resolve_comet_model(f"fixture:{name}") for name in ("tiny-comet", "tiny-comet-qe")}


@pytest.fixture(scope="module")
def direct(checkpoints, tmp_path_factory) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{fixture: (scores with length batching, scores in input order)} from comet's own predict."""
    folder = tmp_path_factory.mktemp("direct")
    jobs = [{"checkpoint": checkpoints["tiny-comet"], "samples": SAMPLES, "batch_size": BATCH},
            {"checkpoint": checkpoints["tiny-comet-qe"], "samples": QE_SAMPLES, "batch_size": BATCH}]
    (folder / "jobs.json").write_text(json.dumps(jobs))
    subprocess.run([comet_python(), "-I", "-c", DIRECT, str(folder / "jobs.json"), str(folder / "out.json")],
                   check=True, capture_output=True)
    out = json.loads((folder / "out.json").read_text())
    return {"tiny-comet": tuple(map(np.array, out[0])), "tiny-comet-qe": tuple(map(np.array, out[1]))}


@pytest.fixture(scope="module")
def ref_scorer():
    with CometScorer("fixture:tiny-comet", batch_size=BATCH) as scorer:
        yield scorer


@pytest.fixture(scope="module")
def qe_scorer():
    with CometScorer("fixture:tiny-comet-qe", batch_size=BATCH) as scorer:
        yield scorer


def test_reference_based_scores_equal_comet_predict(ref_scorer, direct):
    ours = ref_scorer.score(SAMPLES)
    assert ours.dtype == np.float64 and ours.shape == (len(SAMPLES),)
    np.testing.assert_allclose(ours, direct["tiny-comet"][0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours, direct["tiny-comet"][1], rtol=0, atol=1e-6)  # batching order changes nothing
    assert ours.std() > 0.05  # the fixture's scores spread: a mix-up of samples would show
    assert ref_scorer.info["model_class"] == "RegressionMetric" and ref_scorer.references == "required"


def test_quality_estimation_scores_equal_comet_predict(qe_scorer, direct):
    ours = qe_scorer.score(QE_SAMPLES)
    np.testing.assert_allclose(ours, direct["tiny-comet-qe"][0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours, direct["tiny-comet-qe"][1], rtol=0, atol=1e-6)
    assert ours.std() > 0.05
    assert qe_scorer.info["model_class"] == "UnifiedMetric" and qe_scorer.references == "unused"
    np.testing.assert_array_equal(qe_scorer.score(SAMPLES), ours)  # a QE model ignores references


def test_one_shot_score_matches(direct):
    ours = score(QE_SAMPLES[:9], model="fixture:tiny-comet-qe", batch_size=BATCH)
    assert isinstance(ours, list) and len(ours) == 9
    np.testing.assert_allclose(ours, direct["tiny-comet-qe"][0][:9], rtol=0, atol=1e-6)


def test_one_worker_and_one_model_load_serve_every_call(ref_scorer):
    pid, requests = ref_scorer.info["pid"], ref_scorer.info["requests"]
    results = [ref_scorer.score(SAMPLES[i:i + 5]) for i in (0, 5, 0)]
    assert ref_scorer.info["pid"] == pid and ref_scorer.info["loads"] == 1
    assert ref_scorer.info["requests"] == requests + 3
    np.testing.assert_array_equal(results[0], results[2])  # deterministic


def test_an_empty_list_never_reaches_the_worker(ref_scorer, monkeypatch):
    requests = ref_scorer.info["requests"]
    empty = ref_scorer.score([])
    assert empty.shape == (0,) and empty.dtype == np.float64
    assert ref_scorer.info["requests"] == requests
    monkeypatch.setenv("PREFSYNTH_COMET_PYTHON", "/nonexistent/python")
    assert score([]) == []  # no worker started, so no environment needed


@pytest.mark.parametrize("samples, error, match", [
    ([{"src": "a", "ref": "c"}], ValueError, "sample 0: missing field 'mt'"),
    ([{"src": "a", "mt": "b", "ref": "c"}, {"src": 3, "mt": "b", "ref": "c"}], TypeError,
     "sample 1: field 'src' must be a string, got int"),
    ([{"src": "a", "mt": "b", "ref": None}], TypeError, "sample 0: field 'ref' must be a string, got NoneType"),
    ([{"src": "a", "mt": "b", "hyp": "c"}], ValueError, r"sample 0: unknown field\(s\) \['hyp'\]"),
    ([{"src": "a", "mt": "b", "ref": "c"}, ["a", "b"]], TypeError, "sample 1: expected a dict"),
    ({"src": "a", "mt": "b"}, TypeError, "samples must be a list"),
])
def test_bad_samples_name_the_index_and_field(ref_scorer, samples, error, match):
    with pytest.raises(error, match=match):
        ref_scorer.score(samples)
    assert ref_scorer.score(SAMPLES[:2]).shape == (2,)  # the worker is untouched


def test_a_reference_based_model_needs_references(ref_scorer):
    samples = SAMPLES[:2] + QE_SAMPLES[2:4]
    with pytest.raises(ValueError, match=r"sample 2: missing field 'ref'.*reference-based.*fixture:tiny-comet-qe"):
        ref_scorer.score(samples)


@pytest.mark.parametrize("python, problem", [("/nonexistent/bin/python", "does not exist"),
                                             (sys.executable, "has no `comet` package")])
def test_without_a_comet_environment_the_error_says_how_to_fix_it(monkeypatch, python, problem):
    monkeypatch.setenv("PREFSYNTH_COMET_PYTHON", python)
    for attempt in (comet_python, lambda: CometScorer("fixture:tiny-comet")):
        with pytest.raises(CometUnavailable) as raised:
            attempt()
        message = str(raised.value)
        assert problem in message and "make setup" in message and "PREFSYNTH_COMET_PYTHON" in message
        assert "transformers<5" in message


def test_comet_fixtures_fail_only_when_asked_for_by_name(monkeypatch, tmp_path, capsys):
    from prefsynth.fixtures import _build_comet

    monkeypatch.setenv("PREFSYNTH_COMET_PYTHON", "/nonexistent/bin/python")
    with pytest.raises(CometUnavailable, match="make setup"):
        build_tiny_models(tmp_path, groups=["comet"])
    assert _build_comet(tmp_path, explicit=False) == {}  # `fixtures tiny-models DIR` builds the rest
    assert "warning: COMET fixtures (tiny-comet, tiny-comet-qe) not built" in capsys.readouterr().err


def test_model_references_resolve(checkpoints, tmp_path, monkeypatch):
    folder = os.path.dirname(os.path.dirname(checkpoints["tiny-comet"]))
    assert checkpoints["tiny-comet"].endswith(os.path.join("tiny-comet", "checkpoints", "model.ckpt"))
    assert resolve_comet_model(folder) == checkpoints["tiny-comet"]
    assert resolve_comet_model(checkpoints["tiny-comet-qe"]) == checkpoints["tiny-comet-qe"]
    with pytest.raises(ValueError, match="not in the local Hub cache"):  # conftest sets HF_HUB_OFFLINE=1
        resolve_comet_model("Unbabel/wmt22-comet-da")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert resolve_comet_model("Unbabel/wmt22-comet-da") == "Unbabel/wmt22-comet-da"
    with pytest.raises(ValueError, match="not a COMET fixture"):
        resolve_comet_model("fixture:tiny-chat")
    with pytest.raises(ValueError, match="has no checkpoints/model.ckpt"):
        resolve_comet_model(str(tmp_path))


def test_a_failed_load_or_a_dead_worker_is_reported_with_its_stderr(tmp_path):
    broken = tmp_path / "checkpoints" / "model.ckpt"
    broken.parent.mkdir()
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(CometWorkerError, match=r"(?s)loading COMET model .* failed.*last lines of its stderr"):
        CometScorer(str(broken))
    scorer = CometScorer("fixture:tiny-comet-qe")
    os.kill(scorer.info["pid"], signal.SIGKILL)
    with pytest.raises(CometWorkerError, match=r"worker for 'fixture:tiny-comet-qe' exited \(code -9\)"):
        scorer.score(QE_SAMPLES[:1])
    with pytest.raises(CometWorkerError, match="closed"):
        scorer.score(QE_SAMPLES[:1])
