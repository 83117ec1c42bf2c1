"""Copying a finished dataset to any fsspec filesystem: s3://, gs://, hf://datasets/..., memory://,
a local folder. RUN/dataset stays the working copy (resume and bookkeeping); this writes the files
a reader needs, the same ones `prefsynth push` uploads."""
from __future__ import annotations

from pathlib import Path

from prefsynth.publish import dataset_files


def write_output(dataset_dir: str | Path, url: str) -> list[str]:
    """Copy the card, data/**/*.parquet and rejects.parquet to `url`; return the written paths.

    Data first, the card last: object stores have no atomic rename, so a reader that finds the
    card finds the data it points at. Data files of an earlier export at `url` that this export
    no longer has are removed (file names carry the export hash, so they would be read together
    with the new ones)."""
    from fsspec.core import url_to_fs

    folder, files = dataset_files(dataset_dir)
    fs, root = url_to_fs(url)
    root = root.rstrip("/")

    def put(relative: str) -> str:
        target = f"{root}/{relative}"
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(folder / relative), target)
        return target

    written = [put(relative) for relative in files if relative != "README.md"]
    if fs.exists(f"{root}/data"):
        for existing in fs.find(f"{root}/data"):
            if existing not in written:
                fs.rm(existing)
    return written + [put("README.md")]
