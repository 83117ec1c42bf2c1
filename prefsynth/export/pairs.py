"""Join pairs (or lists, see lists.py) with their prompts and candidates into TRL's conversational preference format.

`prompt` is the prompt's chat messages, `chosen`/`rejected` are one assistant message each, so
`DPOTrainer` applies the model's chat template itself. Every row keeps the provenance of both
candidates. Joins are index lookups (pandas Index.get_indexer + Table.take), no per-row Python.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from prefsynth import schemas
from prefsynth.config import Export
from prefsynth.runs import StageDir, write_json_atomic, write_parquet_atomic
from prefsynth.stages import Op, ShardInput, ShardOutput

SPLIT = "train"


def lookup(keys, index: pa.ChunkedArray) -> np.ndarray:
    positions = pd.Index(index.to_numpy(zero_copy_only=False)).get_indexer(keys.to_numpy(zero_copy_only=False))
    if (positions < 0).any():
        missing = keys.to_numpy(zero_copy_only=False)[positions < 0][:3]
        raise KeyError(f"pairs reference unknown ids {list(missing)}")
    return positions


def assistant_messages(texts: pa.ChunkedArray) -> pa.Array:
    """[{role: assistant, content: text}] per row, built as one ListArray."""
    texts = texts.combine_chunks()
    roles = pa.array(["assistant"] * len(texts), pa.string())
    structs = pa.StructArray.from_arrays([roles, texts], fields=list(schemas.MESSAGE))
    offsets = pa.array(np.arange(len(texts) + 1, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, structs, type=schemas.MESSAGES)


def export_pairs(pairs: pa.Table, candidates: pa.Table, prompts: pa.Table, score_column: str) -> pa.Table:
    chosen = candidates.take(lookup(pairs["chosen_id"], candidates["candidate_id"]))
    rejected = candidates.take(lookup(pairs["rejected_id"], candidates["candidate_id"]))
    prompt = prompts.take(lookup(pairs["prompt_id"], prompts["prompt_id"]))
    columns = {
        "prompt_id": pairs["prompt_id"], "language": prompt["language"], "prompt": prompt["messages"],
        "chosen": assistant_messages(chosen["text"]), "rejected": assistant_messages(rejected["text"]),
        "chosen_score": pairs["chosen_score"], "rejected_score": pairs["rejected_score"], "margin": pairs["margin"],
        "score_column": pa.array([score_column] * pairs.num_rows, pa.string()), "selector": pairs["selector"],
        "chosen_id": pairs["chosen_id"], "rejected_id": pairs["rejected_id"],
        "prompt_tokens": chosen["prompt_tokens"],
        **{name: prompt[name] for name, _ in schemas.PROMPT_PROVENANCE},
    }
    for side, table in (("chosen", chosen), ("rejected", rejected)):
        columns[f"{side}_model"] = table["model"]
        columns[f"{side}_generator"] = table["generator"]
        columns[f"{side}_strategy"] = table["strategy"]
        columns[f"{side}_sampling_params"] = table["sampling_params"]
        columns[f"{side}_seed"] = table["seed"]
        columns[f"{side}_finish_reason"] = table["finish_reason"]
        columns[f"{side}_tokens"] = table["completion_tokens"]
    return pa.table({name: columns[name] for name in schemas.DATASET_PAIRS.names}, schema=schemas.DATASET_PAIRS)


class ExportPairs(Op):
    """Pairs -> DATASET_PAIRS rows, or lists (list-wise selectors) -> DATASET_LISTS rows."""

    def __init__(self, export: Export, score_column: str):
        self.export, self.score_column = export, score_column

    def config(self) -> dict:
        return {"export": self.export.model_dump(mode="json"), "score_column": self.score_column}

    @classmethod
    def from_config(cls, config: dict) -> "ExportPairs":
        return cls(Export.model_validate(config["export"]), config["score_column"])

    def process(self, resource, shard: ShardInput) -> ShardOutput:
        from prefsynth.export.lists import export_lists

        listwise = "chosen_ids" in shard.table.column_names
        build = export_lists if listwise else export_pairs
        table = build(shard.table, shard.context["candidates"], shard.prompts, self.score_column)
        return ShardOutput(table, None, {"lists" if listwise else "pairs": table.num_rows})


def write_dataset(stage: StageDir, rejects: list[Path], dataset_dir: Path, rows_per_file: int, marker: dict,
                  kind: str = "pairs") -> int:
    """Gather the export shards into dataset_dir/data/{kind}/train-XXXXX-of-YYYYY-HASH.parquet (kind:
    pairs or lists; swapped in whole, the other kind's folder removed so the dataset is what this
    selector made), plus dataset_dir/rejects.parquet with every rejected row. Returns the rows."""
    tables = [stage.read_shard(shard) for shard in stage.shards()]
    empty = (schemas.DATASET_LISTS if kind == "lists" else schemas.DATASET_PAIRS).empty_table()
    rows = pa.concat_tables(tables) if tables else empty
    dataset_dir.mkdir(parents=True, exist_ok=True)
    staging = dataset_dir / f".{kind}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    files = max(1, math.ceil(rows.num_rows / rows_per_file))
    for index in range(files):
        part = rows.slice(index * rows_per_file, rows_per_file)
        # the export hash in the name: a rebuilt dataset gets new file names, so `datasets` never serves
        # a cached copy of an earlier build (it caches by file path)
        name = f"{SPLIT}-{index:05d}-of-{files:05d}-{str(marker.get('export_hash', 'local'))[:8]}.parquet"
        pq.write_table(part, staging / name, compression="zstd")
    target = dataset_dir / "data" / kind
    target.parent.mkdir(exist_ok=True)
    old = dataset_dir / f".{kind}.old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(dataset_dir / "data" / ("pairs" if kind == "lists" else "lists"), ignore_errors=True)
    all_rejects = [pq.read_table(path) for path in rejects]
    write_parquet_atomic(
        pa.concat_tables(all_rejects) if all_rejects else schemas.REJECTS.empty_table(),
        dataset_dir / "rejects.parquet",
    )
    write_json_atomic(dataset_dir / "_dataset.json", marker | {"rows": rows.num_rows, "files": files, "kind": kind})
    return rows.num_rows
