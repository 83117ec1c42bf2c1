"""The HTML report, rendered by headless Chromium: it loads offline, every plot decodes."""
import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from prefsynth.report.html import write_report


@pytest.fixture
def run_dir(tmp_path):
    """A finished run's artefacts the report reads: manifest, filtered candidates, exported pairs."""
    rng = np.random.default_rng(0)
    run = tmp_path / "run"
    languages = np.repeat(["en", "hi", "ar"], 16)
    (run / "filter").mkdir(parents=True)
    pq.write_table(pa.table({
        "language": languages, "rm_score_raw": rng.normal(size=48),
        "lid_lang": np.where(rng.random(48) < 0.8, languages, "ur"), "keep": rng.random(48) < 0.8,
    }), run / "filter" / "shard-00000.parquet")
    (run / "dataset" / "data" / "pairs").mkdir(parents=True)
    pq.write_table(pa.table({
        "language": np.repeat(["en", "hi", "ar"], 4), "chosen_score": rng.normal(1, 0.2, 12),
        "rejected_score": rng.normal(-1, 0.2, 12), "margin": rng.normal(2, 0.3, 12),
        "chosen_tokens": rng.integers(10, 80, 12), "rejected_tokens": rng.integers(10, 80, 12),
    }), run / "dataset" / "data" / "pairs" / "train-00000-of-00001.parquet")
    coverage = [{"language": l, "prompts_in": 4, "translated": 0, "candidates": 16, "lid_rejected": 3, "kept": 13,
                 "pairs": 4} for l in ("en", "hi", "ar")]
    (run / "manifest.json").write_text(json.dumps({
        "pipeline": "report-test", "config": {"selector": {"method": "mu_sigma", "score": "rm_score_raw"}},
        "coverage": coverage, "agreement": [{"language": "en", "rho:llm_score_raw": 0.4}],
        "diversity": {"g/in_language": 0.31, "g/diverse": 0.52},
    }))
    return run


def _assert_renders(page, images: int, shot, window: str) -> None:
    """Headless Chromium decodes all `images` of the page and the screenshot is not blank."""
    browser = shutil.which("chromium")
    assert browser, "chromium is missing: `make test` installs it (Debian package chromium)"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert f'data-rendered="{images}"' in dom.stdout  # every plot decoded in the browser
    assert "Uncaught" not in dom.stderr
    subprocess.run([browser, *flags, f"--screenshot={shot}", f"--window-size={window}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50  # plots drawn, not a blank page


def test_report_renders_offline_with_every_plot(run_dir, tmp_path):
    page = write_report(run_dir)
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained
    names = ["funnel", "scores", "margins", "length", "lid", "diversity"]
    assert all((page.parent / f"{name}.png").is_file() for name in names)
    _assert_renders(page, len(names), tmp_path / "shot.png", "1200,1600")


def test_cli_report_and_missing_parts(run_dir):
    import sys

    (run_dir / "manifest.json").write_text(json.dumps(
        json.loads((run_dir / "manifest.json").read_text()) | {"diversity": None}))
    done = subprocess.run([sys.executable, "-m", "prefsynth.cli", "report", str(run_dir)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "not computed: set report.diversity_model" in (run_dir / "report" / "index.html").read_text()


def test_confusion_plot_stays_readable_at_101_languages(tmp_path):
    """101 prompt languages and 150 detected labels: the plot keeps every prompt language and the 12
    most frequent other labels, folds the rest into `other`, and stays a size a screen can show."""
    from prefsynth import langs
    from prefsynth.report.html import confusion_table, fold_confusion, lid_confusion

    rng = np.random.default_rng(0)
    codes = sorted(langs.codes())[:101]
    strays = [f"x{i:03d}" for i in range(150)]
    language = np.repeat(codes, 40)
    detected = np.where(rng.random(len(language)) < 0.9, language, rng.choice(strays, len(language)))
    full = confusion_table(pd.DataFrame({"language": language, "lid_lang": detected}))
    folded = fold_confusion(full)
    assert full.shape[1] > 200 and list(folded.columns[:101]) == codes and folded.columns[-1] == "other"
    assert folded.shape[1] == 101 + 12 + 1 and (folded.sum(axis=1) == full.sum(axis=1)).all()  # nothing lost
    image = Image.open(__import__("io").BytesIO(lid_confusion(folded)))
    assert image.width < 2600 and image.height < 2600, image.size
    small = fold_confusion(confusion_table(pd.DataFrame({"language": ["en", "hi"], "lid_lang": ["en", "ur"]})))
    assert list(small.columns) == ["en", "ur"]  # nothing to fold


def test_report_writes_the_full_confusion_matrix(run_dir):
    write_report(run_dir)
    full = pd.read_parquet(run_dir / "report" / "lid-confusion.parquet")
    assert set(full["language"]) == {"en", "hi", "ar"} and "ur" in full.columns
    assert int(full.drop(columns="language").to_numpy().sum()) == 48


@pytest.fixture(scope="module")
def run_101(tmp_path_factory):
    """A synthetic run of 101 languages (benchmarks/report_scale.py's, no models), reported once."""
    from benchmarks.report_scale import synthetic_run

    run = synthetic_run(tmp_path_factory.mktemp("scale") / "run", candidates=40_000, languages=101, mean_chars=40)
    write_report(run)
    return run


def test_report_at_101_languages_is_paged_and_readable(run_101, tmp_path):
    """Every plot decodes in the browser; facets and the funnel are paged; no image is too large to
    read on a screen and no two of its texts (tick labels, titles, legend) overlap."""
    out = run_101 / "report"
    layouts = json.loads((out / "plots.json").read_text())
    assert {name for name in layouts if name.startswith("scores-")} == {"scores-1.png", "scores-2.png", "scores-3.png"}
    assert {name for name in layouts if name.startswith("funnel-")} == {"funnel-1.png", "funnel-2.png", "funnel-3.png"}
    for name, found in layouts.items():
        assert found["width"] <= 2600 and found["height"] <= 2600, (name, found)
        assert found["overlap_count"] == 0, (name, found["overlaps"])
        assert found["texts"] > 5, name  # the layout was read from the drawn figure, not left empty
    # every language has its panel: 36 + 36 + 29 titles besides the tick labels
    assert sum(layouts[f"scores-{page}.png"]["texts"] for page in (1, 2, 3)) > 101
    _assert_renders(out / "index.html", len(layouts), tmp_path / "shot.png", "1200,4000")


def test_report_histograms_count_every_candidate_and_pair(run_101):
    """The report reads the run batch by batch: its per-language counts equal pandas' over all rows."""
    from prefsynth.report.scan import confusion_counts, pair_summary, parquet_files, score_histograms

    candidates = pd.read_parquet(run_101 / "filter", columns=["language", "rm_score_raw", "lid_lang"])
    pairs = pd.read_parquet(run_101 / "dataset" / "data" / "pairs")
    files = parquet_files(run_101 / "filter"), parquet_files(run_101 / "dataset" / "data" / "pairs")
    histograms = score_histograms(*files, "rm_score_raw")
    expected = candidates.groupby("language")["rm_score_raw"]
    assert histograms.languages == sorted(expected.groups)
    assert histograms.candidates.sum(axis=1).tolist() == expected.size().tolist()
    assert histograms.chosen.sum(axis=1).tolist() == pairs.groupby("language").size().reindex(histograms.languages, fill_value=0).tolist()
    np.testing.assert_allclose(histograms.mean, expected.mean().to_numpy())
    np.testing.assert_allclose(histograms.std, expected.std(ddof=0).to_numpy())
    first = candidates[candidates["language"] == histograms.languages[0]]["rm_score_raw"]
    np.testing.assert_array_equal(histograms.candidates[0], np.histogram(first, bins=histograms.edges[0])[0])
    confusion = confusion_counts(files[0])
    pd.testing.assert_frame_equal(confusion, pd.crosstab(candidates["language"], candidates["lid_lang"]), check_names=False)
    summary = pair_summary(files[1])
    assert summary.count == len(pairs) and summary.margin_counts.sum() == len(pairs)
    assert summary.chosen_longer == pytest.approx((pairs["chosen_tokens"] > pairs["rejected_tokens"]).mean())


def test_layout_finds_overlapping_labels():
    """The readability check is not blind: 200 tick labels on a narrow axis overlap, and it says so."""
    from prefsynth.report.html import _figure, _png, png_layout

    fig, ax = _figure(3, 2)
    ax.bar(range(200), np.ones(200))
    ax.set_xticks(range(200), [f"label{i}" for i in range(200)])
    crowded = png_layout(_png(fig))
    assert crowded["overlap_count"] > 100 and crowded["overlaps"][0][0].startswith("label")
    fig, ax = _figure(3, 2)
    ax.bar(range(3), np.ones(3))
    ax.set_xticks(range(3), ["a", "b", "c"])
    assert png_layout(_png(fig))["overlap_count"] == 0
