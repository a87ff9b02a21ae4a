"""Comparing a per-partition output (a directory of part-NNNNN.parquet) with one results file.

Partitions differ between runners (chunks, firm-hash buckets), so the rows are compared after a
sort by firm and year; rows of one firm are in one partition, in input order, so a stable sort
(ties broken by the position in the part files taken in order) puts duplicate firm-years in input
order on both sides. Both sorted tables are written through the canonical sink: equal bytes mean
every value of every row is the same, bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ruleengine.scale.sink import ResultSink, parts_of


def read_parts(directory: Path) -> pa.Table:
    """The part files of ``directory`` (partition order) as one table; each part is a complete
    results file (its own canonical row groups)."""
    files = parts_of(directory)
    assert files, f"no part files in {directory}"
    assert not [f for f in Path(directory).iterdir() if f.name.startswith(".")], "a half-written part file was left"
    return pa.concat_tables([pq.read_table(f) for f in files])


def sorted_bytes(table: pa.Table, tmp: Path, name: str) -> bytes:
    """``table`` stably sorted by firm and year, written canonically; its bytes."""
    t = table.append_column("__pos", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    order = pc.sort_indices(t, [("firm_id", "ascending"), ("year", "ascending"), ("__pos", "ascending")])
    out = tmp / f"{name}-sorted.parquet"
    with ResultSink(out) as sink:
        sink.write(table.take(order))
    return out.read_bytes()


def same_rows(parts_dir: Path, reference: Path, tmp: Path) -> bool:
    """The per-partition output holds the reference file's rows, byte for byte per row."""
    return sorted_bytes(read_parts(parts_dir), tmp, "parts") == sorted_bytes(pq.read_table(reference), tmp, "ref")
