"""Read one prompt source into raw rows: (position in the source, row dict), plus unparsable rows.

Rows stay Python values here because a bad file can mix types in a column; normalize.py checks
each field and names file, row and field when something is wrong. Ingestion is a one-off pass,
dwarfed by generation, so a per-row pass is fine here.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from prefsynth.config import SOURCE_SUFFIXES as _FORMATS
from prefsynth.config import Source

Row = tuple[int, dict | None, str | None]  # (0-based position, row or None, problem or None)


def source_label(source: Source) -> str:
    if source.path is not None:
        return source.path
    subset = f"/{source.subset}" if source.subset else ""
    return f"hf:{source.dataset}{subset}[{source.split}]"


def row_label(source: Source, position: int) -> str:
    """How a row is named in messages: JSONL by line (1-based), others by 0-based row index."""
    if source.path is not None and file_format(source) == "jsonl":
        return f"line {position + 1}"
    return f"row {position}"


def file_format(source: Source) -> str:
    if source.format != "auto":
        return source.format
    suffix = Path(source.path).suffix.lower()
    if suffix not in _FORMATS:
        raise ValueError(f"{source.path}: cannot tell the format from {suffix!r}; set `format:`")
    return _FORMATS[suffix]


def read_rows(source: Source) -> Iterator[Row]:
    if source.dataset is not None:
        yield from enumerate_rows(_read_hf(source).to_pylist())
        return
    fmt = file_format(source)
    if fmt == "jsonl":
        yield from _read_jsonl(Path(source.path))
    elif fmt == "parquet":
        yield from enumerate_rows(pq.read_table(source.path).to_pylist())
    else:
        options = pcsv.ConvertOptions(strings_can_be_null=True, quoted_strings_can_be_null=False)
        yield from enumerate_rows(pcsv.read_csv(source.path, convert_options=options).to_pylist())


def enumerate_rows(rows: list[dict]) -> Iterator[Row]:
    for position, row in enumerate(rows):
        yield position, row, None


def _read_jsonl(path: Path) -> Iterator[Row]:
    # Bytes, decoded line by line: invalid UTF-8 is then a bad row naming its line (and skippable),
    # not a decoder error at a position inside a read buffer.
    with open(path, "rb") as handle:
        for position, raw in enumerate(handle):
            try:
                line = raw.decode("utf-8-sig" if position == 0 else "utf-8")
            except UnicodeDecodeError as error:
                yield position, None, f"invalid UTF-8 (byte {error.start + 1} of the line: {raw[error.start:error.start + 1]!r})"
                continue
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                yield position, None, f"invalid JSON: {error.msg} at column {error.colno}"
                continue
            if not isinstance(value, dict):
                yield position, None, f"expected a JSON object, got {type(value).__name__}"
                continue
            yield position, value, None


def _read_hf(source: Source):
    import datasets

    location = Path(source.dataset)
    if location.is_dir() and any((location / name).exists() for name in ("state.json", "dataset_dict.json")):
        dataset = datasets.load_from_disk(str(location))  # saved with Dataset.save_to_disk
        if isinstance(dataset, datasets.DatasetDict):
            dataset = dataset[source.split]
    else:  # a Hub name, or a local folder of data files
        dataset = datasets.load_dataset(source.dataset, source.subset, split=source.split)
    return dataset.data.table if hasattr(dataset.data, "table") else dataset.data
