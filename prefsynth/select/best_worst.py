"""Best-vs-worst selection per prompt, vectorised with pandas.

chosen = the highest usable score, rejected = the lowest. Ties are broken by candidate_id
(smallest first) so results are deterministic. A candidate is usable when `keep` is true and the
score is not null. Every prompt ends up in exactly one of: pairs, or dropped with a reason
(no_candidates, too_few_candidates, all_tied, margin_below_min).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from prefsynth import schemas
from prefsynth.config import Selector
from prefsynth.stages import Op, ShardInput, ShardOutput

NAME = "best_worst"


def best_worst(candidates: pa.Table, prompt_ids: list[str], score: str, min_margin: float = 0.0) -> tuple[pa.Table, pd.DataFrame]:
    """Returns (pairs table, dropped frame with prompt_id, reason, detail)."""
    frame = candidates.select(["prompt_id", "candidate_id", score, "keep"]).to_pandas()
    frame = frame.rename(columns={score: "score"})
    totals = frame.groupby("prompt_id").size()
    usable = frame[frame["keep"].fillna(False).astype(bool) & frame["score"].notna()]
    counts = usable.groupby("prompt_id").size()

    ordered = usable.sort_values(["prompt_id", "score", "candidate_id"], ascending=[True, False, True])
    chosen = ordered.groupby("prompt_id", sort=False).head(1).set_index("prompt_id")
    ordered = usable.sort_values(["prompt_id", "score", "candidate_id"], ascending=[True, True, True])
    rejected = ordered.groupby("prompt_id", sort=False).head(1).set_index("prompt_id")

    pairs = pd.DataFrame({
        "chosen_id": chosen["candidate_id"], "chosen_score": chosen["score"],
    }).join(pd.DataFrame({"rejected_id": rejected["candidate_id"], "rejected_score": rejected["score"]}))
    pairs["margin"] = pairs["chosen_score"] - pairs["rejected_score"]
    pairs["usable"] = counts

    all_ids = pd.Index(prompt_ids, name="prompt_id")
    reason = pd.Series(pd.NA, index=all_ids, dtype="object")
    detail = pd.Series("", index=all_ids, dtype="object")
    n_total = totals.reindex(all_ids).fillna(0).astype(int)
    n_usable = counts.reindex(all_ids).fillna(0).astype(int)
    margin = pairs["margin"].reindex(all_ids)

    def mark(mask: pd.Series, why: str, text: pd.Series) -> None:
        mask = mask & reason.isna()
        reason[mask] = why
        detail[mask] = text[mask]

    counts_text = n_usable.astype(str) + " usable of " + n_total.astype(str)
    mark(n_total == 0, "no_candidates", pd.Series("no candidate was generated", index=all_ids))
    mark(n_usable < 2, "too_few_candidates", counts_text)
    mark(margin <= 0, "all_tied", "all usable scores equal " + pairs["chosen_score"].reindex(all_ids).astype(str))
    if min_margin > 0:
        mark(margin <= min_margin, "margin_below_min", "margin " + margin.round(6).astype(str) + f" <= {min_margin}")

    kept = reason.index[reason.isna()]
    selected = pairs.loc[pairs.index.intersection(kept)].reindex([p for p in prompt_ids if p in set(kept)])
    table = pa.table({
        "prompt_id": pa.array(selected.index.to_numpy(dtype=object), pa.string()),
        "chosen_id": pa.array(selected["chosen_id"].to_numpy(dtype=object), pa.string()),
        "rejected_id": pa.array(selected["rejected_id"].to_numpy(dtype=object), pa.string()),
        "chosen_score": pa.array(selected["chosen_score"].to_numpy(dtype=np.float64)),
        "rejected_score": pa.array(selected["rejected_score"].to_numpy(dtype=np.float64)),
        "margin": pa.array(selected["margin"].to_numpy(dtype=np.float64)),
        "selector": pa.array([NAME] * len(selected), pa.string()),
    }, schema=schemas.PAIRS)
    dropped = pd.DataFrame({"prompt_id": reason.index, "reason": reason.to_numpy(), "detail": detail.to_numpy()})
    return table, dropped[dropped["reason"].notna()].reset_index(drop=True)


class SelectPairs(Op):
    def __init__(self, selector: Selector):
        self.selector = selector

    def config(self) -> dict:
        return {"selector": self.selector.model_dump(mode="json")}

    @classmethod
    def from_config(cls, config: dict) -> "SelectPairs":
        return cls(Selector.model_validate(config["selector"]))

    def process(self, resource, shard: ShardInput) -> ShardOutput:
        pairs, dropped = best_worst(
            shard.table, shard.prompts.column("prompt_id").to_pylist(), self.selector.score, self.selector.min_margin
        )
        rejects = schemas.rejects_table([
            {"stage": "select", "prompt_id": row.prompt_id, "reason": row.reason, "detail": row.detail}
            for row in dropped.itertuples()
        ])
        return ShardOutput(pairs, rejects, {"pairs": pairs.num_rows})
