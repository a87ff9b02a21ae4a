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


# -- one file per partition -------------------------------------------------------------------------

PART_NAME = "part-{:05d}.parquet"
_PART_RE = r"^part-\d{5,}\.parquet$"


def is_parts_dir(path: str | Path) -> bool:
    """Whether ``-o PATH`` asks for a dataset directory of one Parquet file per partition (an
    existing directory, a path ending in ``/``, or a name without an extension) rather than one
    file (``OUT.parquet``, ``OUT.csv``)."""
    import os

    text = str(path)
    return text.endswith(("/", os.sep)) or Path(text).is_dir() or not Path(text).suffix


def prepare_parts_dir(path: str | Path) -> Path:
    """The output directory made ready (created; the ``part-NNNNN.parquet`` files of an earlier
    run removed, so that no stale partition mixes with this run's; other files left alone)."""
    import re

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise DataError(f"{path}: not a directory (a dataset directory of one Parquet file per partition)")
    try:
        p.mkdir(parents=True, exist_ok=True)
        for f in p.iterdir():
            if re.match(_PART_RE, f.name) and f.is_file():
                f.unlink()
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None
    return p


def write_part(results: Any, directory: str | Path, part: int) -> int:
    """One partition's results (``engine.results.Results``, rows in input order) written as
    ``DIR/part-NNNNN.parquet``, the bytes ``Results.write`` gives (canonical row groups). Written
    under a hidden name first and renamed, so a retried or speculative task never leaves half a
    file; returns the rows written."""
    import os
    import uuid

    d = Path(directory)
    final = d / PART_NAME.format(part)
    tmp = d / f".{final.stem}.{uuid.uuid4().hex}.parquet"
    try:
        results.write(tmp)
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write {final}: {exc.strerror or exc}") from None
    return len(results)


def parts_of(directory: str | Path) -> list[Path]:
    """The partition files of an output directory, in partition order."""
    import re

    return sorted(f for f in Path(directory).iterdir() if re.match(_PART_RE, f.name))


def check_output(path: str | Path) -> bool:
    """``-o PATH`` of a chunked or distributed run checked before anything is read: True for a
    dataset directory (made ready: :func:`prepare_parts_dir`), False for one file (its format
    checked: .parquet or .csv)."""
    if is_parts_dir(path):
        prepare_parts_dir(path)
        return True
    ResultSink(path)
    return False
