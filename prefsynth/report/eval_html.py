"""RUN/report/eval.html: an evaluation on one self-contained page (PNG plots as data URIs).

Per-language win-rates with their 95% CI (every judge), the judges' position inconsistency, each
model's language fidelity beside the baseline's, and preference against length difference; then
the table printed at the end of `prefsynth eval`. Languages are rows of horizontal charts, so
the plots stay readable from 1 to 100+ languages.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from prefsynth.report.html import _figure, _png, _table, html_page, image_section
from prefsynth.runs import write_text_atomic


def _languages(summary: dict, judge: str) -> list[str]:
    first = next(iter(summary["models"].values()))
    return sorted(first["judges"][judge]["languages"])


def _rows_height(rows: int) -> float:
    return min(60.0, 1.2 + 0.28 * rows)


def _grouped_bars(summary: dict, judge: str, value, title: str, xlabel: str, whiskers=None, reference: float | None = None):
    languages = ["overall", "macro"] + _languages(summary, judge)
    models = list(summary["models"])
    fig, ax = _figure(8, _rows_height(len(languages) * max(1, len(models)) / 1.5))
    height = 0.8 / max(1, len(models))
    y = np.arange(len(languages))
    for k, name in enumerate(models):
        scopes = summary["models"][name]["judges"][judge]
        stats = [scopes[s] if s in ("overall", "macro") else scopes["languages"][s] for s in languages]
        values = np.array([np.nan if value(s) is None else value(s) for s in stats], float)
        offset = y + (k - (len(models) - 1) / 2) * height
        error = None
        if whiskers is not None:
            low = np.array([np.nan if whiskers(s)[0] is None else whiskers(s)[0] for s in stats], float)
            high = np.array([np.nan if whiskers(s)[1] is None else whiskers(s)[1] for s in stats], float)
            error = np.nan_to_num(np.vstack([values - low, high - values]), nan=0.0).clip(min=0)
        ax.barh(offset, np.nan_to_num(values), height=height, xerr=error, capsize=2, label=name)
    if reference is not None:
        ax.axvline(reference, color="grey", linewidth=1, linestyle="--")
    ax.set_yticks(y, languages, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def win_rates(summary: dict, judge: str) -> bytes:
    return _grouped_bars(summary, judge, lambda s: s.get("win_rate"), f"Win-rate against {summary['baseline']} "
                         f"({judge}), 95% CI", "win-rate (ties 0.5)", lambda s: (s.get("ci_low"), s.get("ci_high")), 0.5)


def position_bias(summary: dict, judge: str) -> bytes:
    return _grouped_bars(summary, judge, lambda s: s.get("position_inconsistency"),
                         f"Position inconsistency of {judge} (orders disagree)", "share of judged pairs")


def fidelity(summary: dict, judge: str) -> bytes:
    languages = _languages(summary, judge)
    models = list(summary["models"])
    fig, ax = _figure(8, _rows_height(len(languages) * (len(models) + 1) / 1.5))
    y = np.arange(len(languages))
    series = [(summary["baseline"], lambda s: s.get("language_fidelity_baseline"), models[0])] + \
             [(name, lambda s: s.get("language_fidelity_model"), name) for name in models]
    height = 0.8 / len(series)
    for k, (label, value, source) in enumerate(series):
        scopes = summary["models"][source]["judges"][judge]["languages"]
        values = np.array([np.nan if value(scopes[l]) is None else value(scopes[l]) for l in languages], float)
        ax.barh(y + (k - (len(series) - 1) / 2) * height, np.nan_to_num(values), height=height, label=label)
    ax.set_yticks(y, languages, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of answers in the prompt's language")
    ax.set_title("Language fidelity")
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def length_preference(judgments: pd.DataFrame, judge: str) -> bytes:
    fig, ax = _figure(7, 4)
    mine = judgments[(judgments["judge"] == judge) & judgments["judge_outcome"].notna()]
    rng = np.random.default_rng(0)
    for name, rows in mine.groupby("model", sort=True):
        difference = (rows["model_chars"] - rows["baseline_chars"]).to_numpy(float)
        outcome = rows["judge_outcome"].to_numpy(float)
        ax.scatter(difference, outcome + rng.uniform(-0.04, 0.04, len(outcome)), s=10, alpha=0.5, label=name)
        if len(difference) >= 4:
            edges = np.unique(np.quantile(difference, np.linspace(0, 1, 6)))
            which = np.clip(np.searchsorted(edges, difference, side="right") - 1, 0, max(len(edges) - 2, 0))
            means = pd.Series(outcome).groupby(which).mean()
            centres = pd.Series(difference).groupby(which).mean()
            ax.plot(centres.to_numpy(), means.to_numpy(), marker="o")
    ax.set_xlabel("answer length difference, model - baseline (characters)")
    ax.set_ylabel("judge outcome (1 model wins)")
    ax.set_title(f"Preference vs length difference ({judge})")
    ax.legend(fontsize=8)
    return _png(fig)


def write_eval_report(run_dir: str | Path) -> Path:
    run = Path(run_dir)
    summary = json.loads((run / "eval" / "summary.json").read_text())
    judgments = pq.read_table(run / "eval" / "judgments.parquet").to_pandas()
    out = run / "report"
    out.mkdir(exist_ok=True)
    sections = []
    for judge in summary["judges"]:
        llm = bool((judgments.loc[judgments["judge"] == judge, "judge_type"] == "llm_judge").any())
        plots = [(f"winrate-{judge}", f"Win-rate per language ({judge})", win_rates(summary, judge))]
        if llm:
            plots.append((f"position-{judge}", f"Position bias ({judge})", position_bias(summary, judge)))
        plots.append((f"length-{judge}", f"Length difference vs preference ({judge})", length_preference(judgments, judge)))
        if judge == summary["judge"]:
            plots.insert(1, ("fidelity", "Language fidelity", fidelity(summary, judge)))
        sections += [image_section(out, f"eval-{name}", title, png) for name, title, png in plots]
        from prefsynth.eval.run import summary_frame

        frame = summary_frame(summary, judge).round(3)
        sections.append(f"<h2>Table ({html.escape(judge)})</h2>" + _table(frame.astype(object).where(frame.notna(), "-").to_dict("records")))
    rejects = [{"reason": k, "count": v} for k, v in summary.get("rejects", {}).items()]
    sections.append("<h2>Rejects</h2>" + _table(rejects))
    name = html.escape(summary.get("name", ""))
    page = html_page(f"prefsynth eval: {name}", f"<h1>{name}</h1><p>baseline {html.escape(summary['baseline'])}, models "
                     f"{html.escape(', '.join(summary['models']))}, judges {html.escape(', '.join(summary['judges']))}, "
                     f"wrong_language {html.escape(summary['wrong_language'])}, run {html.escape(str(run))}</p>", sections)
    write_text_atomic(out / "eval.html", page)
    return out / "eval.html"
