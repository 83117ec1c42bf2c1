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

from prefsynth.report.scan import (NO_LABEL, UNKNOWN_LANGUAGE, PairSummary, ScoreHistograms, confusion_counts,
                                   pair_summary, parquet_files, score_histograms)
from prefsynth.runs import write_text_atomic


FACETS_PER_ROW = 6  # small multiples per row, so many languages wrap instead of crowding one axis
FACETS_PER_PAGE = 36  # languages per image: 101 languages read as three pages, not one crowded figure
FUNNEL_PER_PAGE = 36
DPI = 90
LAYOUT_KEY = "prefsynth:layout"  # PNG text chunk: the figure's size and any texts that overlap


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure(width: float = 8, height: float = 4):
    return _pyplot().subplots(figsize=(width, height))


def _drawn_texts(fig) -> list:
    """Every text the figure draws: its own texts, each visible axes' titles, axis labels, the tick
    labels inside its view and legend entries (a hidden or switched-off axes draws none)."""
    texts = list(fig.texts) + [t for t in (getattr(fig, name, None) for name in ("_suptitle", "_supxlabel", "_supylabel"))
                               if t is not None]
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts += [ax.title, ax._left_title, ax._right_title]
        if ax.axison:
            texts += [ax.xaxis.label, ax.yaxis.label]
            for axis in (ax.xaxis, ax.yaxis):
                low, high = sorted(axis.get_view_interval())
                slack = (high - low) * 1e-9
                texts += [label for loc, label in zip(axis.get_majorticklocs(), axis.get_majorticklabels())
                          if low - slack <= loc <= high + slack]
        if ax.get_legend() is not None:
            texts += ax.get_legend().get_texts()
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def layout(fig) -> dict:
    """The drawn figure's size in pixels, how many texts it draws and which pairs of them overlap
    (bounding boxes, less half a pixel each side): what a test can check of readability."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = _drawn_texts(fig)
    boxes = np.array([t.get_window_extent(renderer).extents for t in texts]).reshape(-1, 4) + [0.5, 0.5, -0.5, -0.5]
    x0, y0, x1, y1 = boxes.T
    crossing = (x0[:, None] < x1[None]) & (x0[None] < x1[:, None]) & (y0[:, None] < y1[None]) & (y0[None] < y1[:, None])
    first, second = np.nonzero(np.triu(crossing, 1))
    width, height = fig.canvas.get_width_height()
    return {"width": int(width), "height": int(height), "texts": len(texts), "overlap_count": int(len(first)),
            "overlaps": [[texts[a].get_text(), texts[b].get_text()] for a, b in zip(first[:20], second[:20])]}


def _png(fig) -> bytes:
    """The figure as PNG, with its `layout` in the PNG's text chunk (`png_layout` reads it back)."""
    buffer = io.BytesIO()
    fig.set_dpi(DPI)
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={LAYOUT_KEY: json.dumps(layout(fig))})
    _pyplot().close(fig)
    return buffer.getvalue()


def png_layout(png: bytes) -> dict:
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    recorded = json.loads(image.text.get(LAYOUT_KEY, "{}"))
    return {**recorded, "width": image.width, "height": image.height}


def _pages(count: int, size: int) -> list[list[int]]:
    return [list(range(start, min(start + size, count))) for start in range(0, count, size)]


def funnel(coverage: pd.DataFrame) -> list[bytes]:
    """Horizontal bars, a group per language, FUNNEL_PER_PAGE languages to an image: the names stay
    horizontal and readable however many languages there are."""
    stages = {"prompts": coverage["prompts_in"], "candidates": coverage["candidates"],
              "kept after language ID": coverage["candidates"] - coverage["lid_rejected"], "pairs": coverage["pairs"]}
    names = coverage["language"].fillna(UNKNOWN_LANGUAGE).astype(str).to_numpy()
    pngs = []
    for rows in _pages(len(coverage), FUNNEL_PER_PAGE):
        fig, ax = _figure(8, max(2.5, 0.36 * len(rows) + 1.2))
        y = np.arange(len(rows))[::-1]
        for i, (label, values) in enumerate(stages.items()):
            ax.barh(y + (1.5 - i) * 0.2, values.to_numpy()[rows], height=0.2, label=label)
        ax.set_yticks(y, names[rows], fontsize=8)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_xlabel("count")
        ax.legend(fontsize=7, ncols=4, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)  # above the bars
        pngs.append(_png(fig))
    return pngs


def score_distributions(histograms: ScoreHistograms) -> list[bytes]:
    """A panel per language, FACETS_PER_ROW to a row and FACETS_PER_PAGE to an image: the
    candidates' histogram with mu and mu +- 2 sigma, and the chosen (green) and rejected (red)
    answers' histograms on the same bins, scaled to the candidates' peak."""
    from matplotlib.ticker import MaxNLocator

    pngs = []
    for rows in _pages(len(histograms.languages), FACETS_PER_PAGE):
        columns = min(FACETS_PER_ROW, len(rows))
        lines = -(-len(rows) // columns)
        fig, axes = _pyplot().subplots(lines, columns, figsize=(2.6 * columns, 2.1 * lines), squeeze=False)
        for ax, row in zip(axes.flat, rows):
            edges, counts = histograms.edges[row], histograms.candidates[row]
            ax.stairs(counts, edges, fill=True, color="#9ab")
            peak = max(int(counts.max()), 1)
            for picked, colour in ((histograms.chosen[row], "green"), (histograms.rejected[row], "red")):
                if picked.any():
                    ax.stairs(picked * (peak / picked.max()), edges, color=colour, linewidth=1.2)
            mu, sigma = histograms.mean[row], histograms.std[row]
            for position, style in ((mu, "-"), (mu - 2 * sigma, "--"), (mu + 2 * sigma, "--")):
                ax.axvline(position, color="black", linestyle=style, linewidth=1)
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.yaxis.set_major_locator(MaxNLocator(3, integer=True))
            ax.tick_params(labelsize=7)
            ax.set_title(histograms.languages[row], fontsize=9)
        for ax in list(axes.flat)[len(rows):]:
            ax.set_visible(False)
        pngs.append(_png(fig))
    return pngs


def margins(summary: PairSummary) -> bytes:
    fig, ax = _figure(6, 3.5)
    ax.stairs(summary.margin_counts, summary.margin_edges, fill=True, color="#c96")
    ax.set_xlabel("chosen - rejected score")
    ax.set_ylabel("pairs")
    return _png(fig)


def length_bias(summary: PairSummary) -> bytes:
    """A seeded sample of the pairs (every pair up to SCATTER_SAMPLE); the share uses every pair."""
    sample = summary.sample
    fig, ax = _figure(5, 5)
    ax.scatter(sample["rejected_tokens"], sample["chosen_tokens"], s=8, alpha=0.5)
    top = float(max(sample["chosen_tokens"].max(), sample["rejected_tokens"].max(), 1)) if len(sample) else 1.0
    ax.plot([0, top], [0, top], color="grey", linewidth=1)
    ax.set_xlabel("rejected tokens")
    ax.set_ylabel("chosen tokens")
    shown = f"{len(sample):,} of {summary.count:,} pairs shown" if len(sample) < summary.count else f"{summary.count:,} pairs"
    ax.set_title(f"chosen longer in {summary.chosen_longer:.0%} of pairs ({shown})", fontsize=9)
    return _png(fig)


def confusion_table(candidates: pd.DataFrame) -> pd.DataFrame:
    """Prompt language x detected label, every label, from a frame (`confusion_counts` reads a run)."""
    return pd.crosstab(candidates["language"].fillna(UNKNOWN_LANGUAGE), candidates["lid_lang"].fillna(NO_LABEL))


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


def image_section(out: Path, name: str, title: str, png: bytes | list[bytes] | None, missing: str = "") -> str:
    """A plot's section: the PNG written to out/<name>.png and embedded as a data URI; a list of
    PNGs (pages of one plot) as out/<name>-1.png, out/<name>-2.png, ... one after the other."""
    pngs = [png] if isinstance(png, bytes) else list(png or [])
    if not pngs:
        return f"<h2>{html.escape(title)}</h2><p>{html.escape(missing or 'no data')}</p>"
    images = []
    for page, data in enumerate(pngs, 1):
        stem = name if len(pngs) == 1 else f"{name}-{page}"
        (out / f"{stem}.png").write_bytes(data)
        encoded = base64.b64encode(data).decode()
        images.append(f'<img id="{html.escape(stem)}" alt="{html.escape(stem)}" src="data:image/png;base64,{encoded}">')
    return f"<h2>{html.escape(title)}</h2>" + "".join(images)


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


def write_plot_layouts(out: Path) -> Path:
    """report/plots.json: each PNG's size, texts drawn and overlapping texts (see `layout`)."""
    layouts = {path.name: png_layout(path.read_bytes()) for path in sorted(out.glob("*.png"))}
    path = out / "plots.json"
    write_text_atomic(path, json.dumps(layouts, indent=1))
    return path


def write_report(run_dir: str | Path) -> Path:
    """RUN/report/index.html with its PNGs, lid-confusion.parquet and plots.json. Candidates and
    pairs are read a few columns at a time (scan.py): memory stays bounded at any run size."""
    run = Path(run_dir)
    manifest = json.loads((run / "manifest.json").read_text())
    coverage = pd.DataFrame(manifest.get("coverage") or [])
    score = manifest["config"]["selector"].get("score")
    candidates = parquet_files(run / "filter")
    kind = "lists" if (run / "dataset" / "data" / "lists").is_dir() else "pairs"
    pairs = parquet_files(run / "dataset" / "data" / kind)
    out = run / "report"
    out.mkdir(exist_ok=True)
    for stale in out.glob("*.png"):  # a page count that shrank must not leave old pages behind
        stale.unlink()
    histograms = score_histograms(candidates, pairs if kind == "pairs" else [], score) if score else None
    plots: list[tuple[str, str, bytes | list[bytes] | None, str]] = [
        ("funnel", "Prompts, candidates, kept after language ID and pairs, per language", funnel(coverage) if len(coverage) else None, ""),
        ("scores", f"Distribution of `{score}` per language, with mu (solid) and mu ± 2σ (dashed); chosen (green) and "
         "rejected (red) answers on the same bins, scaled to the candidates' peak", score_distributions(histograms) if histograms else None, ""),
    ]
    summary = pair_summary(pairs) if kind == "pairs" else None
    if summary is not None and summary.count:
        if summary.margin_counts is not None:
            plots.append(("margins", "Margins of the selected pairs", margins(summary), ""))
        if summary.chosen_longer is not None:
            plots.append(("length", "Chosen vs rejected length", length_bias(summary), ""))
    full = confusion_counts(candidates)
    if full is not None:
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
    write_plot_layouts(out)
    rows = sum(pq.read_metadata(path).num_rows for path in pairs)
    pipeline = html.escape(manifest.get("pipeline", ""))
    page = html_page(f"prefsynth report: {pipeline}", f"<h1>{pipeline}</h1><p>{rows} {kind}, selector "
                     f"{html.escape(manifest['config']['selector']['method'])}, run {html.escape(str(run))}</p>", sections)
    write_text_atomic(out / "index.html", page)
    return out / "index.html"
