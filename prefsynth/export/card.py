"""The dataset card: RUN/dataset/README.md, so the dataset folder is a valid Hugging Face dataset
repository (YAML front matter with languages, license, task, size, configs and tags) that also
tells a person how it was built, what each language holds and what to be careful about."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import yaml

from prefsynth.runs import write_text_atomic

PAPERS = {
    "best_worst": "highest vs lowest score per prompt",
    "mu_sigma": "Finding the Sweet Spot: Preference Data Construction for Scaling Preference Optimization "
                "(arXiv:2502.16825), rejected nearest mu + k sigma",
    "sweet_spot_scalable": "Finding the Sweet Spot (arXiv:2502.16825), scalable construction",
    "margin": "AIR: A Systematic Analysis of Annotations, Instructions, and Response Pairs in Preference Dataset "
              "(arXiv:2504.03612), margin band",
    "rso": "Statistical Rejection Sampling Improves Preference Optimization (arXiv:2309.06657), Algorithm 1",
    "ampo_bottomk": "Active Multi-Preference Optimization (arXiv:2502.18293), bottom-k",
    "ampo_coreset": "Active Multi-Preference Optimization (arXiv:2502.18293), coreset",
    "ampo_optselect": "Active Multi-Preference Optimization (arXiv:2502.18293), Opt-Select",
    "mpo": "Multi-Preference Optimization (arXiv:2412.15244), above-mean positives, weights |r - mean|",
}
SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
         (10_000_000, "1M<n<10M"), (math.inf, "10M<n<100M")]


def size_category(rows: int) -> str:
    return next(label for limit, label in SIZES if rows < limit)


def iso_languages(codes) -> list[str]:
    """The Hub's `language:` wants ISO 639 codes: the registry's BCP-47 codes without script/region."""
    return sorted({str(code).split("-")[0].lower() for code in codes if code and str(code) != "und"})


def mean_margins(dataset_dir: Path, kind: str) -> pd.Series:
    files = sorted((dataset_dir / "data" / kind).glob("*.parquet"))
    if not files:
        return pd.Series(dtype=float)
    if kind == "pairs":
        frame = pd.concat(pq.read_table(f, columns=["language", "margin"]).to_pandas() for f in files)
    else:
        frame = pd.concat(pq.read_table(f, columns=["language", "chosen_scores", "rejected_scores"]).to_pandas()
                          for f in files)
        frame["margin"] = frame["chosen_scores"].map(lambda s: sum(s) / len(s)) - frame["rejected_scores"].map(
            lambda s: sum(s) / len(s))
    return frame.groupby(frame["language"].fillna("und"))["margin"].mean()


def _models(config: dict) -> list[str]:
    lines = [f"- generator `{g['name']}`: `{g['model']}` ({g.get('strategy', 'in_language')}, n={g['n']}, "
             f"temperature {g['temperature']})" for g in config["generators"]]
    for judge in config["judges"]:
        lines.append(f"- judge `{judge['name']}` ({judge['type']}): `{judge['model']}`")
    if config.get("translate"):
        lines.append(f"- translation: `{config['translate'].get('model')}` into {config['translate'].get('targets')}")
    return lines


def _weak_language_checks(config: dict, languages: list[str]) -> list[str]:
    from prefsynth.config import LanguageIdFilter
    from prefsynth.filter.language import weak_checks

    notes = []
    for rule in config.get("filters") or []:
        if rule.get("type") == "language_id":
            notes += [f"Language ID, {note}" for note in weak_checks(LanguageIdFilter(**rule), languages)]
    return notes


def card_text(config: dict, coverage: pd.DataFrame, kind: str, rows: int, margins: pd.Series,
              license_id: str, tag: str = "") -> str:
    """`tag`: the build's export hash, also in the data file names. The config's file pattern names
    it because `datasets` caches a local folder's config by its options, not by the files' content:
    without it, a rebuilt dataset (or another folder called `dataset`) could be served stale."""
    languages = iso_languages(coverage["language"]) if len(coverage) else []
    front = {
        "language": languages, "license": license_id, "task_categories": ["text-generation"],
        "size_categories": [size_category(rows)],
        "tags": ["preference", "dpo", "synthetic", "multilingual", "prefsynth"],
        "configs": [{"config_name": kind, "data_files": [{"split": "train", "path": f"data/{kind}/*{tag}.parquet"}],
                     "default": True}],
    }
    selector = config["selector"]
    options = {k: v for k, v in selector.items() if k not in ("method",)}
    table = ["| language | prompts | candidates | language-ID rejections | " + kind + " | mean margin |",
             "|---|---|---|---|---|---|"]
    for row in coverage.itertuples():
        margin = margins.get(row.language, float("nan"))
        table.append(f"| {row.language} | {row.prompts_in} | {row.candidates} | {row.lid_rejected} | {row.pairs} | "
                     f"{'-' if math.isnan(margin) else f'{margin:.3f}'} |")
    toy = any(str(g["model"]).startswith("fixture:") for g in config["generators"])
    limitations = [
        "Scores come from automatic judges, which carry their own biases (length, style, language); "
        "a higher score is not a human preference.",
        "The language-ID filter (a backend per language, chosen by accuracy on held-out sentences, plus "
        "script checks) drops answers in the wrong language; short answers and closely related languages "
        "are where it errs.",
    ]
    limitations += _weak_language_checks(config, coverage["language"].tolist() if len(coverage) else [])
    if config.get("translate"):
        limitations.append("Some prompts are machine translations: see the `origin` column.")
    if toy:
        limitations.insert(0, "Built with prefsynth's tiny offline demo models: a pipeline test, not training data.")
    body = [
        f"# {config['name']}", "",
        f"A multilingual preference dataset built with [prefsynth](https://github.com/prefsynth/prefsynth): "
        f"{rows} {kind} in {len(languages)} language(s), TRL's conversational preference format "
        "(`prompt`, `chosen`, `rejected` as chat messages) with the provenance of every answer.", "",
        "## How it was built", *_models(config), "",
        f"Selector: `{selector['method']}` ({PAPERS.get(selector['method'], '')}); options "
        f"`{yaml.safe_dump(options, default_flow_style=True, sort_keys=True).strip()}`; score column "
        f"`{selector.get('score')}`.", "",
        "```python", "from datasets import load_dataset",
        f'data = load_dataset("path/or/hub-id", "{kind}", split="train")', "```", "",
        "## Per language", *table, "",
        "## Known limitations", *[f"- {item}" for item in limitations], "",
        "## Pipeline config", "```yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True).strip(), "```", "",
    ]
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + "\n".join(body)


def write_card(dataset_dir: Path, config: dict, coverage: pd.DataFrame, license_id: str) -> Path:
    kind = "lists" if (dataset_dir / "data" / "lists").is_dir() else "pairs"
    files = sorted((dataset_dir / "data" / kind).glob("*.parquet"))
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    marker = dataset_dir / "_dataset.json"
    export_hash = json.loads(marker.read_text()).get("export_hash", "") if marker.is_file() else ""
    tag = f"-{export_hash[:8]}" if export_hash else ""
    tag = tag if any(f.stem.endswith(tag) for f in files) else ""  # folders written before names carried it
    text = card_text(config, coverage, kind, rows, mean_margins(dataset_dir, kind), license_id, tag)
    write_text_atomic(dataset_dir / "README.md", text)
    return dataset_dir / "README.md"
