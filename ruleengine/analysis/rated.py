"""The few columns ``diff --data`` and ``compare`` read of every firm-year, whatever rated it.

An analysis asks for a *view* of the results: a function ``view(plan, results, raw)`` of one
partition's :class:`~ruleengine.engine.results.Results` and its rows as read (``raw``: the plan's
inputs and the context columns) that returns a small pyarrow Table. In memory the view is applied
to the whole portfolio; on ``--engine chunked|spark|dask`` it runs inside every partition
(``ruleengine.scale.engines.Session.view``) and only the view travels back, in input order. Both
paths turn the table into the same :class:`Rated` columns, so the analyses' outputs are the same
bytes on every engine.

Views are module-level functions (bound with :func:`functools.partial`): Spark and Dask pickle them
to the executors.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..pipeline import release_memory, release_memory_if_large

if TYPE_CHECKING:
    from ..engine.results import Results
    from ..io.data import RawTable
    from ..rulebook.plan import Plan
    from ..scale.engines import Engine

View = Callable[["Plan", "Results", "RawTable"], Any]

SCORE = "__score"  # the primary rating's value (before banding), e.g. K or a points total


class Text:
    """A text column, dictionary-encoded: ``codes`` (int32, one per row) into ``labels`` (the few
    distinct strings, an object array; a missing cell is ``None``). 4 bytes a row instead of a
    Python string per row (issue #11.4). Reads like an object array of str: ``col[i]`` is a str,
    ``col == "x"`` a boolean array, ``np.asarray(col)`` / ``tolist()`` give the labels (shared
    objects, one per distinct value, not one per row)."""

    __slots__ = ("codes", "labels")

    def __init__(self, codes: np.ndarray, labels: np.ndarray):
        self.codes = codes
        self.labels = labels

    @classmethod
    def of(cls, col: Any) -> Text:
        """From a pyarrow string (or dictionary) array or chunked array."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        enc = col if pa.types.is_dictionary(col.type) else pc.dictionary_encode(col)
        labels = np.empty(len(enc.dictionary) + 1, dtype=object)
        labels[:-1] = enc.dictionary.to_pylist()
        labels[-1] = None  # a missing cell (as to_numpy gives it)
        codes = enc.indices.fill_null(len(enc.dictionary)).to_numpy(zero_copy_only=False)
        return cls(np.asarray(codes, dtype=np.int32), labels)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, int | np.integer):
            return self.labels[self.codes[i]]
        return Text(self.codes[i], self.labels)

    def __eq__(self, other: object) -> Any:
        return (self.labels == other)[self.codes]

    def __ne__(self, other: object) -> Any:
        return (self.labels != other)[self.codes]

    __hash__ = None  # type: ignore[assignment]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.labels[self.codes]
        return out if dtype is None else out.astype(dtype)

    def tolist(self) -> list[Any]:
        return self.labels[self.codes].tolist()

    def map(self, table: dict[Any, Any], default: Any = "") -> np.ndarray:
        """Each row's label through ``table`` (one look-up per distinct label), an object array."""
        out = np.empty(len(self.labels), dtype=object)
        out[:] = [table.get(x, default) for x in self.labels.tolist()]
        return out[self.codes]

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes)


class Rated:
    """Named columns of every firm-year rated with ``plan``, in input order: numbers as numpy
    arrays, text as :class:`Text` (dictionary codes)."""

    def __init__(self, plan: Plan, columns: dict[str, Any]):
        self.plan = plan
        self.columns = columns

    @classmethod
    def of(cls, plan: Plan, table: Any) -> Rated:
        """From a view's pyarrow Table: text as :class:`Text`, numbers as float64/int64."""
        import pyarrow as pa

        cols: dict[str, Any] = {}
        for name in table.column_names:
            col = table.column(name)
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_dictionary(col.type):
                cols[name] = Text.of(col)
            else:
                arr = col.to_numpy() if col.num_chunks != 1 else col.chunk(0).to_numpy(zero_copy_only=False)
                cols[name] = np.array(arr, copy=True)
        return cls(plan, cols)

    def __len__(self) -> int:
        return len(self.columns["year"])

    def __getitem__(self, name: str) -> Any:
        return self.columns[name]

    def distribution(self) -> list[tuple[str, int]]:
        """Counts per level of the primary rating, best first, then 'unrated' (as Results.distribution)."""
        col = self.columns["rating"]
        if isinstance(col, Text):  # one count per distinct label, from the codes
            counts: Counter[Any] = Counter()
            per_code = np.bincount(col.codes, minlength=len(col.labels)).tolist()
            for label, k in zip(col.labels.tolist(), per_code, strict=True):
                counts[label] += k
        else:
            counts = Counter(col.tolist())
        out = [(lv, counts.get(lv, 0)) for lv in self.plan.ratings[self.plan.primary].best_first()]
        if counts.get("", 0):
            out.append(("unrated", counts[""]))
        return out


# -- the views ---------------------------------------------------------------------------------------


def _text(values: Any) -> Any:
    import pyarrow as pa

    return pa.array(np.asarray(values, dtype=object).tolist(), type=pa.string())


def _numbers(values: Any, n: int) -> Any:
    import pyarrow as pa

    return pa.array(np.ascontiguousarray(np.broadcast_to(np.asarray(values, dtype=np.float64), (n,))))


def rating_view(plan: Plan, results: Results, raw: RawTable) -> Any:
    """The primary rating's level of every firm-year ('' unrated): what attribution compares."""
    import pyarrow as pa

    return pa.table({"year": pa.array(results["year"], pa.int64()), "rating": _text(results["rating"])})


CATEGORY = "category:"  # a view's column holding one breakdown category (diff --data)


def _category(results: Results, raw: RawTable, name: str) -> np.ndarray | None:
    """Per row, one category's value: from the data as read, else the rated variable (a benchmark
    grouping the rulebook computes); ``division``: the first two digits of the industry."""
    from ..io.data import text_values

    if name == "division":
        industry = _category(results, raw, "industry")
        return None if industry is None else np.array([x[:2] for x in industry.tolist()], dtype=object)
    if name in raw.columns:
        return np.asarray(text_values(raw.columns[name], raw.n), dtype=object)
    ev, batch = results.evaluation, results.batch
    for src in (ev.values if ev is not None else {}, batch.columns if batch is not None else {}):
        col = src.get(name)
        if col is not None and hasattr(col, "to_strings"):
            return np.asarray(col.to_strings(), dtype=object)
    return None


def impact_view(
    plan: Plan,
    results: Results,
    raw: RawTable,
    *,
    ratings: Sequence[str] = (),
    categories: Sequence[str] = (),
) -> Any:
    """What ``diff --data`` reads of a side: firm, year, the primary rating, every other rating
    (label set) in ``ratings`` as ``rating:NAME``, the rate adjustment; the new side also its
    ``categories`` (``category:NAME``, those the data has) and the loan amount as read."""
    import pyarrow as pa

    from ..io.data import number_values

    n = len(results)
    cols: dict[str, Any] = {
        "firm_id": _text(results["firm_id"]),
        "year": pa.array(results["year"], pa.int64()),
        "rating": _text(results["rating"]),
    }
    for name in ratings:
        cols[f"rating:{name}"] = _text(results[name])
    if "incentive_rate_bp" in results.columns:
        cols["incentive_rate_bp"] = _numbers(results["incentive_rate_bp"], n)
    for name in categories:
        got = _category(results, raw, name)
        if got is not None and len(got) == n:
            cols[CATEGORY + name] = _text(got)
    if categories:
        loan = raw.columns.get("loan_amount_10k_cny")
        if loan is not None:
            cols["loan_amount_10k_cny"] = _numbers(number_values(loan, raw.n), n)
    return pa.table(cols)


def compare_view(plan: Plan, results: Results, raw: RawTable, *, names: bool = False) -> Any:
    """What ``compare`` reads of a method: year, rating, status, the rating's value, the
    boundary categories' CO2, the emissions, the peer group of every benchmark; with ``names``
    (the first method) the firm ids and the firm names as read (the rows are in input order for
    every method, so the other methods' ids would be the same)."""
    import pyarrow as pa

    from ..io.data import text_values
    from .compare import CATEGORY_VARIABLE

    n = len(results)
    ev = results.evaluation
    assert ev is not None
    cols: dict[str, Any] = {
        "year": pa.array(results["year"], pa.int64()),
        "rating": _text(results["rating"]),
        "status": _text(results["status"]),
        SCORE: _numbers(ev.values[f"rating:{plan.primary}"], n),
        "emissions_tco2": _numbers(results["emissions_tco2"], n),
    }
    for var in CATEGORY_VARIABLE.values():
        if var in results.columns:
            cols[var] = _numbers(results[var], n)
    for bm in plan.benchmarks:
        cols[f"{bm}_group"] = _text(results[f"{bm}_group"])
    if names:
        cols["firm_id"] = _text(results["firm_id"])
    if names and "firm_name" in raw.columns:
        cols["firm_name"] = _text(text_values(raw.columns["firm_name"], raw.n))
    return pa.table(cols)


# -- rating several plans on one portfolio -----------------------------------------------------------


class Portfolio:
    """One portfolio rated with several plans, in memory or on an engine: ``rated(plan, view)``.

    In memory the data is read once (the plans' inputs and ``extra`` context columns) and each plan
    rated on it; on an engine one session holds the firm-complete partitions for every plan."""

    def __init__(self, plans: Sequence[Plan], data: Any, engine: Engine | None, extra: Sequence[str]):
        self.engine = engine if engine is not None and not engine.local else None
        self.data = data
        self.extra = tuple(extra)
        self.plans = list(plans)
        self._session: Any = None
        self._stack: Any = None
        self.raw: RawTable | None = None

    def __enter__(self) -> Portfolio:
        if self.engine is None:
            from .. import pipeline

            self.raw = pipeline.read(self.data, self.plans, self.extra)
        else:
            import contextlib

            self._stack = contextlib.ExitStack()
            self._session = self._stack.enter_context(self.engine.session(str(self.data), self.extra))
        return self

    def __exit__(self, *exc: object) -> None:
        self.raw = None
        if self._stack is not None:
            self._stack.close()
        release_memory()

    def rated(self, plan: Plan, view: View) -> Rated:
        """``plan``'s view of every firm-year, in input order."""
        if self._session is not None:
            return Rated.of(plan, self._session.view(plan, view))
        assert self.raw is not None
        table = _view_in_chunks(plan, self.raw, view, CHUNK_ROWS)
        out = Rated.of(plan, table)
        del table
        release_memory()
        return out

    def keep_for(self, plans: Sequence[Plan]) -> None:
        """Only ``plans`` are rated from now on (without reading the context columns again): in
        memory, release every column as read that none of them takes as an input (issue #11.4)."""
        if self.raw is None:
            return
        from dataclasses import replace

        keep = {"firm_id", "year", "region"}
        for plan in plans:
            keep.update(plan.inputs)
        cols = {k: v for k, v in self.raw.columns.items() if k in keep}
        if len(cols) < len(self.raw.columns):
            self.raw = replace(self.raw, columns=cols)
            release_memory()


CHUNK_ROWS = 250_000  # in memory, a portfolio larger than this is rated in firm-complete chunks


def _view_in_chunks(plan: Plan, raw: RawTable, view: View, chunk_rows: int) -> Any:
    """``view`` of ``plan`` rated on ``raw`` in memory, in firm-complete chunks of about
    ``chunk_rows`` rows: the benchmark tables from partials merged exactly over the chunks (so
    every number is the one-batch run's), then each chunk's final pass and view, put back in input
    order. Memory: the data as read, one chunk's evaluation and the views (issue #11.4)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from .. import pipeline
    from ..scale.partition import (
        benchmark_passes,
        final_of,
        firm_chunks,
        firm_text,
        partials_of,
        prepare,
        tables_of,
        take_raw,
    )

    pipeline.require_rulebook(plan)
    chunks: list[np.ndarray] = []
    if "firm_id" in raw.columns and raw.n > chunk_rows:
        codes = pc.dictionary_encode(firm_text(raw.columns["firm_id"])).indices
        chunks = list(firm_chunks(np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int64), chunk_rows))
    if len(chunks) <= 1:
        return view(plan, pipeline.rate(plan, None, raw=raw), raw)
    tables: dict[str, Any] = {}
    for _ in range(benchmark_passes(plan)):
        parts = []
        for r in chunks:  # memory freed after each chunk, not after the pass (issue #11.4)
            parts.append(partials_of(plan, prepare(plan, take_raw(raw, r), r), tables))
            release_memory_if_large()
        tables.update(tables_of(plan, parts))
        del parts
    pieces = []
    for rows in chunks:
        sub = take_raw(raw, rows)
        pieces.append(view(plan, final_of(plan, prepare(plan, sub, rows), tables), sub))
        del sub
        release_memory_if_large()
    order = np.argsort(np.concatenate(chunks), kind="stable")
    return pa.concat_tables(pieces).take(pa.array(order))


def impact_views(ratings: Sequence[str] = (), categories: Sequence[str] = ()) -> tuple[View, View]:
    """(the old side's view, the new side's view) for ``diff --data``: both with the label sets
    ``ratings``, the new side with the breakdown ``categories`` and the loan amount."""
    return (
        functools.partial(impact_view, ratings=tuple(ratings)),
        functools.partial(impact_view, ratings=tuple(ratings), categories=tuple(categories)),
    )
