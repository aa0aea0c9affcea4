"""Reading and writing the workflow's TSV tables."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

# Columns that hold names even when every value looks like a number (a clip
# "001", a class folder "0", a clip "NA"): they are never read as numbers.
_TEXT_COLUMNS = (
    "clip_id",
    "path",
    "class",
    "group",
    "clip",
    "status",
    "reason",
    "split",
    "true",
    "predicted",
    "video",
    "shard",
)


def write_tsv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a table as TSV, atomically: the file appears only when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    df.to_csv(tmp, sep="\t", index=False)
    os.replace(tmp, path)


def read_tsv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table written by :func:`write_tsv`; empty text stays ''."""
    return pd.read_csv(
        path,
        sep="\t",
        dtype=dict.fromkeys(_TEXT_COLUMNS, str),
        keep_default_na=False,
        na_values={"fps": ["nan", ""], "duration": ["nan", ""]},
    )
