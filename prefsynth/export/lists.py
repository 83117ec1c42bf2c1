"""Join list-wise selections (AMPO, MPO) with their prompts and candidates: one row per prompt with
lists of assistant answers, `chosen` best first and `rejected` worst first, plus their provenance.
Lookups are vectorised over the flattened id lists, then re-wrapped with the lists' offsets."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from prefsynth import schemas
from prefsynth.export.pairs import assistant_messages, lookup


def _rewrap(like: pa.ChunkedArray, values: pa.Array, type_: pa.DataType) -> pa.Array:
    """values (one per flattened element of `like`) back into `like`'s list structure."""
    like = like.combine_chunks()
    offsets = pc.subtract(like.offsets, like.offsets[0])
    return pa.ListArray.from_arrays(offsets, values, type=pa.list_(type_))


def _answers(ids: pa.ChunkedArray, candidates: pa.Table) -> tuple[pa.Table, pa.ChunkedArray]:
    flat = pc.list_flatten(ids)
    return candidates.take(lookup(pa.chunked_array([flat]), candidates["candidate_id"])), ids


def export_lists(lists: pa.Table, candidates: pa.Table, prompts: pa.Table, score_column: str) -> pa.Table:
    prompt = prompts.take(lookup(lists["prompt_id"], prompts["prompt_id"]))
    columns = {
        "prompt_id": lists["prompt_id"], "language": prompt["language"], "prompt": prompt["messages"],
        "chosen_scores": lists["chosen_scores"], "rejected_scores": lists["rejected_scores"], "weights": lists["weights"],
        "score_column": pa.array([score_column] * lists.num_rows, pa.string()), "selector": lists["selector"],
        "chosen_ids": lists["chosen_ids"], "rejected_ids": lists["rejected_ids"],
        **{name: prompt[name] for name, _ in schemas.PROMPT_PROVENANCE},
    }
    for side in ("chosen", "rejected"):
        rows, ids = _answers(lists[f"{side}_ids"], candidates)
        columns[side] = _rewrap(ids, assistant_messages(rows["text"]), schemas.MESSAGES)
        columns[f"{side}_models"] = _rewrap(ids, rows["model"].combine_chunks(), pa.string())
        columns[f"{side}_strategies"] = _rewrap(ids, rows["strategy"].combine_chunks(), pa.string())
        columns[f"{side}_tokens"] = _rewrap(ids, rows["completion_tokens"].combine_chunks(), pa.int32())
        if side == "chosen":
            first = pc.list_element(columns["chosen_ids"], 0)
            columns["prompt_tokens"] = candidates.take(lookup(first, candidates["candidate_id"]))["prompt_tokens"]
    return pa.table({name: columns[name] for name in schemas.DATASET_LISTS.names}, schema=schemas.DATASET_LISTS)
