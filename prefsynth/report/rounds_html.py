"""`prefsynth report ROOT` of an iterate root: per-round curves from ROOT/summary.json (reward mean
and pairs per language, win-rate against the initial policy when eval ran, last training loss),
as ROOT/report/rounds.html, self-contained like the build report. Each round's build keeps its
own report (`prefsynth report ROOT/round-KK/build`)."""
from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from prefsynth.report.html import FACETS_PER_ROW, _png, _table, html_page, image_section
from prefsynth.runs import write_text_atomic



def _per_language(rounds: list[dict], field: str) -> pd.DataFrame:
    """round x language table of a per-language field."""
    return pd.DataFrame({r["round"]: r.get(field) or {} for r in rounds}).T.sort_index()


def language_curves(frame: pd.DataFrame, ylabel: str) -> bytes | None:
    """One small panel per language, the round on x, wrapped in rows of FACETS_PER_ROW."""
    if frame.empty:
        return None
    import matplotlib.pyplot as plt

    languages = list(frame.columns)
    columns = min(FACETS_PER_ROW, len(languages))
    rows = -(-len(languages) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 1.9 * rows), sharex=True, sharey=True, squeeze=False)
    for ax, language in zip(axes.flat, languages):
        ax.plot(frame.index, frame[language], marker="o")
        ax.set_title(language, fontsize=9)
        ax.set_xticks(list(frame.index))
    for ax in list(axes.flat)[len(languages):]:
        ax.set_visible(False)
    fig.supxlabel("round")  # the section heading is the title: a suptitle would sit on the first row's titles
    fig.supylabel(ylabel)
    return _png(fig)


def overall_curves(rounds: list[dict]) -> bytes:
    import matplotlib.pyplot as plt

    fields = [("reward_mean", "reward mean"), ("win_rate", "win-rate vs initial"), ("train_loss_last", "train loss (last step)")]
    fields = [(key, label) for key, label in fields if any(r.get(key) is not None for r in rounds)]
    fig, axes = plt.subplots(1, len(fields), figsize=(3.2 * len(fields), 2.8), squeeze=False)
    index = [r["round"] for r in rounds]
    for ax, (key, label) in zip(axes[0], fields):
        ax.plot(index, [r.get(key) for r in rounds], marker="o")
        ax.set_title(label, fontsize=10)
        ax.set_xticks(index)
        ax.set_xlabel("round")
    return _png(fig)


def write_rounds_report(root: str | Path) -> Path:
    root = Path(root)
    summary = json.loads((root / "summary.json").read_text())
    rounds = summary["rounds"]
    out = root / "report"
    out.mkdir(exist_ok=True)
    sections = [image_section(out, "rounds-overall", "Per round", overall_curves(rounds) if rounds else None)]
    sections.append(image_section(out, "rounds-reward", "Reward mean per language (the judge's mean score of the policy's candidates)",
                                  language_curves(_per_language(rounds, "reward_mean_by_language"), "reward mean")))
    sections.append(image_section(out, "rounds-pairs", "Pairs per language",
                                  language_curves(_per_language(rounds, "pairs_by_language").fillna(0), "pairs")))
    if any("win_rate" in r for r in rounds):
        sections.append(image_section(out, "rounds-winrate", "Win-rate against the initial policy per language",
                                      language_curves(_per_language(rounds, "win_rate_by_language"), "win-rate")))
    rows = [{key: value for key, value in r.items() if not isinstance(value, dict)} for r in rounds]
    sections.append("<h2>Rounds</h2>" + _table(rows))
    name = html.escape(summary.get("name", ""))
    heading = (f"<h1>{name}</h1><p>{len(rounds)} round(s); initial policy {html.escape(summary['initial_policy'])}, "
               f"reference {html.escape(summary['reference'])}, replay {html.escape(summary['replay'])}, "
               f"root {html.escape(str(root))}</p>")
    write_text_atomic(out / "rounds.html", html_page(f"prefsynth iterate: {name}", heading, sections))
    return out / "rounds.html"
