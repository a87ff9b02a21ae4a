"""Data helpers shared by the implementations and the measurement."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# -- data ---------------------------------------------------------------------------------------


def text_codes(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Factorise a text column to int32 codes (-1 = missing) with pyarrow's hash encoder."""
    import pyarrow as pa

    enc = pa.array(values, type=pa.string()).dictionary_encode()
    labels = enc.dictionary.to_pylist()
    codes = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
    if "" in labels:
        blank = labels.index("")
        codes = np.where(codes == blank, -1, codes).astype(np.int32)
    return codes, labels


def input_bytes(pq_path: Path) -> int:
    """Size of the portfolio's columns in memory (Arrow buffers of the whole file)."""
    import pyarrow.parquet as pq

    return int(pq.read_table(pq_path).nbytes)
