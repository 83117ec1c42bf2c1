"""`prefsynth report RUN_DIR`: one self-contained HTML page (PNG plots embedded as data URIs, also
written beside it) that shows what a build made, per language: the funnel from prompts to pairs,
score distributions with mu, mu +- 2 sigma and where chosen and rejected answers fell, margins,
length bias, language-ID confusion, judge agreement and diversity. It opens without network access.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from prefsynth.runs import write_text_atomic


def _figure(width: float = 8, height: float = 4):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _read(folder: Path, columns: list[str] | None = None) -> pd.DataFrame:
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return pd.DataFrame(columns=columns or [])
    return pd.concat([pq.read_table(f, columns=columns).to_pandas() for f in files], ignore_index=True)


def funnel(coverage: pd.DataFrame) -> bytes:
    fig, ax = _figure()
    stages = {"prompts": coverage["prompts_in"], "candidates": coverage["candidates"],
              "kept after language ID": coverage["candidates"] - coverage["lid_rejected"], "pairs": coverage["pairs"]}
    x = np.arange(len(coverage))
    for i, (label, values) in enumerate(stages.items()):
        ax.bar(x + (i - 1.5) * 0.2, values, width=0.2, label=label)
    ax.set_xticks(x, coverage["language"])
    ax.set_title("Per-language funnel")
    ax.legend()
    return _png(fig)


def score_distributions(candidates: pd.DataFrame, pairs: pd.DataFrame, score: str) -> bytes:
    languages = sorted(candidates["language"].fillna("und").unique())
    columns = min(4, max(1, len(languages)))
    rows = int(np.ceil(len(languages) / columns)) or 1
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False)
    for ax, language in zip(axes.ravel(), languages):
        values = candidates.loc[candidates["language"].fillna("und") == language, score].dropna().to_numpy(float)
        if len(values):
            ax.hist(values, bins=20, color="#9ab")
            mu, sigma = values.mean(), values.std()
            for position, style in ((mu, "-"), (mu - 2 * sigma, "--"), (mu + 2 * sigma, "--")):
                ax.axvline(position, color="black", linestyle=style, linewidth=1)
        mine = pairs[pairs["language"].fillna("und") == language]
        if "chosen_score" in mine:
            ax.plot(mine["chosen_score"], np.zeros(len(mine)), "^", color="green", label="chosen")
            ax.plot(mine["rejected_score"], np.zeros(len(mine)), "v", color="red", label="rejected")
        ax.set_title(f"{language} (mu, mu±2σ)", fontsize=9)
    for ax in axes.ravel()[len(languages):]:
        ax.axis("off")
    return _png(fig)


def margins(pairs: pd.DataFrame) -> bytes:
    fig, ax = _figure(6, 3.5)
    ax.hist(pairs["margin"].dropna(), bins=30, color="#c96")
    ax.set_xlabel("chosen - rejected score")
    ax.set_title("Margin")
    return _png(fig)


def length_bias(pairs: pd.DataFrame) -> bytes:
    fig, ax = _figure(5, 5)
    ax.scatter(pairs["rejected_tokens"], pairs["chosen_tokens"], s=12, alpha=0.7)
    top = float(max(pairs["chosen_tokens"].max(), pairs["rejected_tokens"].max(), 1))
    ax.plot([0, top], [0, top], color="grey", linewidth=1)
    ax.set_xlabel("rejected tokens")
    ax.set_ylabel("chosen tokens")
    share = float((pairs["chosen_tokens"] > pairs["rejected_tokens"]).mean())
    ax.set_title(f"Length bias: chosen longer in {share:.0%} of pairs")
    return _png(fig)


def confusion_table(candidates: pd.DataFrame) -> pd.DataFrame:
    """Prompt language x detected label, every label (the report writes it beside the HTML)."""
    return pd.crosstab(candidates["language"].fillna("und"), candidates["lid_lang"].fillna("none"))


def fold_confusion(table: pd.DataFrame, extra_labels: int = 12) -> pd.DataFrame:
    """The columns worth a look: every prompt language that was detected, then the `extra_labels`
    most frequent other labels; the rest summed into `other`. A backend returns well over a
    hundred labels on a large build, one column each was unreadable (a 6,417-pixel-wide plot)."""
    own = [label for label in table.index if label in table.columns]
    rest = table.drop(columns=own).sum().sort_values(ascending=False)
    shown = own + rest.index[:extra_labels].tolist()
    folded = table[shown].copy()
    if len(rest) > extra_labels:
        folded["other"] = table.drop(columns=shown).sum(axis=1)
    return folded


def lid_confusion(table: pd.DataFrame) -> bytes:
    """Each row normalised to the share of its prompt language's answers, so 1 and 101 languages
    read alike; the figure grows with the rows but never wider than the folded columns."""
    shares = table.div(table.sum(axis=1).replace(0, 1), axis=0)
    cell = 0.32 if max(shares.shape) <= 30 else 0.16  # inches: room for a 7-point label either way
    fig, ax = _figure(max(5, cell * shares.shape[1] + 2.5), max(3, cell * shares.shape[0] + 1.5))
    image = ax.imshow(shares.to_numpy(), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(shares.shape[1]), shares.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(shares.shape[0]), shares.index, fontsize=7 if shares.shape[0] > 40 else 8)
    fig.colorbar(image, ax=ax, fraction=0.03, label="share of the row's answers")
    ax.set_xlabel("detected language (rarer labels folded into `other`)")
    ax.set_ylabel("prompt language")
    ax.set_title("Language-ID confusion")
    return _png(fig)


def diversity_plot(diversity: dict[str, float]) -> bytes:
    fig, ax = _figure(6, 3)
    ax.bar(list(diversity), list(diversity.values()), color="#7a9")
    ax.set_ylabel("mean pairwise cosine distance")
    ax.set_title("Diversity per generation strategy")
    return _png(fig)


def _table(rows: list[dict]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values()) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def image_section(out: Path, name: str, title: str, png: bytes | None, missing: str = "") -> str:
    """A plot's section: the PNG written to out/<name>.png and embedded as a data URI."""
    if png is None:
        return f"<h2>{html.escape(title)}</h2><p>{html.escape(missing or 'no data')}</p>"
    (out / f"{name}.png").write_bytes(png)
    data = base64.b64encode(png).decode()
    return f'<h2>{html.escape(title)}</h2><img id="{html.escape(name)}" alt="{html.escape(name)}" src="data:image/png;base64,{data}">'


def html_page(title: str, heading: str, sections: list[str]) -> str:
    """A self-contained report page (title and heading: HTML already escaped)."""
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{title}</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>"
        + heading + "".join(sections)
        # counts the plots that decoded, so a headless browser can tell a rendered page from a broken one
        + "<script>window.addEventListener('load',()=>{document.body.dataset.rendered=[...document.images]"
          ".filter(i=>i.complete&&i.naturalWidth>0).length})</script></body></html>"
    )


def write_report(run_dir: str | Path) -> Path:
    run = Path(run_dir)
    manifest = json.loads((run / "manifest.json").read_text())
    coverage = pd.DataFrame(manifest.get("coverage") or [])
    score = manifest["config"]["selector"].get("score")
    candidates = _read(run / "filter")
    kind = "lists" if (run / "dataset" / "data" / "lists").is_dir() else "pairs"
    pairs = _read(run / "dataset" / "data" / kind)
    out = run / "report"
    out.mkdir(exist_ok=True)
    plots: list[tuple[str, str, bytes | None, str]] = [
        ("funnel", "Prompts, candidates, kept after language ID and pairs, per language", funnel(coverage) if len(coverage) else None, ""),
        ("scores", f"Distribution of `{score}` per language; triangles: chosen (green) and rejected (red)",
         score_distributions(candidates, pairs, score) if score in candidates else None, ""),
    ]
    if kind == "pairs" and len(pairs):
        plots += [("margins", "Margins of the selected pairs", margins(pairs), ""),
                  ("length", "Chosen vs rejected length", length_bias(pairs), "")]
    if "lid_lang" in candidates:
        full = confusion_table(candidates)
        full.columns.name = None
        full.reset_index().to_parquet(out / "lid-confusion.parquet", index=False)  # every label, for analysis
        plots.append(("lid", "Prompt language vs the language detected in the answer (share of each row; every "
                      "label in lid-confusion.parquet)", lid_confusion(fold_confusion(full)), ""))
    diversity = manifest.get("diversity")
    plots.append(("diversity", "Diversity per generation strategy", diversity_plot(diversity) if diversity else None,
                  "not computed: set report.diversity_model"))
    sections = [image_section(out, name, title, png, missing) for name, title, png, missing in plots]
    sections.append("<h2>Coverage</h2>" + _table(manifest.get("coverage") or []))
    sections.append("<h2>Judge agreement</h2>" + _table(manifest.get("agreement") or []))
    pipeline = html.escape(manifest.get("pipeline", ""))
    page = html_page(f"prefsynth report: {pipeline}", f"<h1>{pipeline}</h1><p>{len(pairs)} {kind}, selector "
                     f"{html.escape(manifest['config']['selector']['method'])}, run {html.escape(str(run))}</p>", sections)
    write_text_atomic(out / "index.html", page)
    return out / "index.html"
