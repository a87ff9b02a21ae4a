"""Results written in canonical row groups, whoever computed them.

:meth:`ruleengine.engine.results.Results.write` cuts its rows into row groups of
``CHUNK_ROWS`` and writes each in canonical form (``canonical_row_group``: text columns as
dictionaries of the labels present in the row group, sorted; firm ids plain). A runner that
produces the same rows in the same order in pieces of any size feeds them here: the pieces are
re-cut into the same row groups, so the file is byte-identical to the in-memory run's (Parquet
and CSV).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..engine import results as _results
from ..engine.results import canonical_row_group, parquet_writer
from ..errors import DataError

FORMATS = (".parquet", ".csv")


class ResultSink:
    """Write result tables (plain pyarrow Tables from ``Results.to_arrow()``, in row order)."""

    def __init__(self, path: str | Path, row_group: int | None = None):
        self.path = Path(path)
        self.suffix = self.path.suffix.lower()
        if self.suffix not in FORMATS:
            raise DataError(f"{path}: the chunked and distributed runners write .parquet or .csv, not '{self.suffix}'")
        self.row_group = row_group or _results.CHUNK_ROWS  # the in-memory writer's row groups
        self._pending: list[Any] = []
        self._pending_rows = 0
        self._writer: Any = None
        self.rows = 0

    def write(self, table: Any) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        while self._pending_rows >= self.row_group:
            self._flush(self.row_group)

    def _take(self, n: int) -> Any:
        import pyarrow as pa

        whole = pa.concat_tables(self._pending) if len(self._pending) > 1 else self._pending[0]
        head, rest = whole.slice(0, n), whole.slice(n)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows
        return head.combine_chunks()

    def _flush(self, n: int) -> None:
        table = self._take(n)
        self.rows += table.num_rows
        if self.suffix == ".parquet":
            table = canonical_row_group(table)
            if self._writer is None:
                self._writer = parquet_writer(self.path, table.schema)
            self._writer.write_table(table, row_group_size=self.row_group)
        else:
            import pyarrow.csv as pacsv

            if self._writer is None:
                self._writer = pacsv.CSVWriter(self.path, table.schema)
            self._writer.write_table(table)

    def close(self) -> None:
        """Write what is left (an empty table too, when nothing was written: the header/schema)."""
        if self._pending_rows or (self._writer is None and self._pending):
            self._flush(self._pending_rows)
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> ResultSink:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        elif self._writer is not None:
            self._writer.close()
            self._writer = None
