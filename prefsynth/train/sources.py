"""Where training rows come from: files, folders, prefsynth runs, `datasets` names and mixtures.

Every source becomes one Arrow table with the columns it has (formats.py decides what they mean):
- a Parquet or JSONL file, or a folder of them (Hub-style `data/<split>-*.parquet` folders too);
- a prefsynth run or dataset directory (its exported pairs or lists);
- a `datasets.save_to_disk` folder (a Dataset, or a DatasetDict with `split`);
- a Hugging Face dataset name with `split` / `subset`, loaded through `datasets` (offline: the
  local cache only);
- a mixture: several of the above, each `weight` times its rows (seeded).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FILE_SUFFIXES = (".parquet", ".jsonl", ".json")


class DatasetSourceError(ValueError):
    """A source that cannot be read, with the path or name that failed."""


@dataclass(frozen=True)
class Source:
    path: str
    split: str = "train"
    subset: str | None = None
    weight: float = 1.0

    @property
    def local(self) -> Path | None:
        path = Path(self.path).expanduser()
        return path if path.exists() else None

    @property
    def label(self) -> str:
        return self.path + (f" ({self.subset})" if self.subset else "") + f" [{self.split}]"


def _read_file(file: Path) -> pa.Table:
    try:
        if file.suffix == ".parquet":
            return pq.read_table(file)
        import pyarrow.json as pj

        return pj.read_json(file, read_options=pj.ReadOptions(block_size=1 << 26))
    except (pa.ArrowInvalid, OSError) as error:
        raise DatasetSourceError(f"{file}: {error}") from None


def _concat(tables: list[pa.Table], where: str) -> pa.Table:
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise DatasetSourceError(f"{where}: its files disagree on column types: {error}") from None


def exported_files(path: Path) -> tuple[list[Path], str] | None:
    """A prefsynth run's or dataset directory's exported Parquet files and their kind."""
    for folder in (path / "dataset" / "data", path / "data", path):
        for kind in ("pairs", "lists"):
            files = sorted((folder / kind).glob("*.parquet"))
            if files:
                return files, kind
    return None


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def _folder_files(path: Path, split: str) -> list[Path]:
    """Data files of a plain folder: the split's files (`<split>-*`, `<split>/`, `<split>.*`) when
    the folder names splits, else every file."""
    files = sorted(f for f in path.rglob("*") if f.suffix in FILE_SUFFIXES and f.is_file()
                   and not any(part.startswith((".", "_")) for part in f.relative_to(path).parts))
    named = [f for f in files if f.name.startswith(f"{split}-") or f.stem == split or split in f.relative_to(path).parts[:-1]]
    return named or files


def _read_saved(path: Path, split: str) -> pa.Table:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DatasetSourceError(f"{path}: no split {split!r} (has {', '.join(loaded)})")
        loaded = loaded[split]
    return loaded.with_format("arrow")[:]


def _read_hub(source: Source) -> pa.Table:
    import datasets

    try:
        loaded = datasets.load_dataset(source.path, source.subset, split=source.split)
    except Exception as error:  # datasets raises many types; all mean "cannot load this name"
        raise DatasetSourceError(
            f"dataset {source.label}: not a local file or folder, and `datasets` could not load it "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); offline, only names "
            "already in the local Hugging Face cache load") from None
    return loaded.with_format("arrow")[:]


def read_source(source: Source) -> tuple[pa.Table, Path | None]:
    """One source's rows, and the folder its reference log-prob cache lives beside (None: not local)."""
    path = source.local
    if path is None:
        return _read_hub(source), None
    if path.is_file():
        return _read_file(path), path.parent
    exported = exported_files(path)
    if exported is not None:
        files, _ = exported
        return _concat([pq.read_table(f) for f in files], str(path)), files[0].parent
    if _is_saved_dataset(path):
        return _read_saved(path, source.split), path
    files = _folder_files(path, source.split)
    if not files:
        raise DatasetSourceError(f"{path}: no Parquet or JSONL files, no exported prefsynth dataset "
                                 "(dataset/data/pairs/*.parquet) and no `save_to_disk` dataset")
    return _concat([_read_file(f) for f in files], str(path)), path


def mix(tables: list[pa.Table], weights: list[float], seed: int) -> pa.Table:
    """Each table `weight` times: whole copies for the integer part, a seeded sample of its rows for
    the rest (weight 0.5: half the rows; 2: every row twice)."""
    rng = np.random.default_rng(seed)
    parts = []
    for table, weight in zip(tables, weights):
        whole, fraction = divmod(weight, 1.0)
        index = [np.arange(table.num_rows)] * int(whole)
        extra = math.floor(fraction * table.num_rows + 0.5)
        if extra:
            index.append(np.sort(rng.choice(table.num_rows, size=extra, replace=False)))
        if index:
            parts.append(table.take(np.concatenate(index)))
    if not parts:
        raise DatasetSourceError("the mixture's weights select no rows")
    return _concat(parts, "the mixture")
