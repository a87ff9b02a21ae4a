"""``ledger replay RUN``: re-rate from the stored rulebook bytes, input rows and benchmark tables,
and prove the results byte-identical (same results digest, same rating leaves)."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from . import canonical as C
from .errors import LedgerError


class RowsNotStored(LedgerError):
    """The run was recorded with ``--no-store-rows`` and no data (or not its data) was given: it
    cannot be replayed. ``ledger replay --all`` reports such a run and goes on with the others."""


@dataclass
class Materials:
    run: dict[str, Any]
    plan: Any
    data: Path
    tables: dict[str, Any]
    folder: Path
    plan_path: Path


@dataclass
class ReplayReport:
    run_id: int
    results_hash: str
    replayed_hash: str
    n: int
    differences: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.differences and self.results_hash == self.replayed_hash


def _safe_rel(rel: str) -> PurePosixPath:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise LedgerError(f"stored rulebook file name {rel!r} is not a plain relative path")
    return p


@contextlib.contextmanager
def materials(ledger: Any, run_id: int, data: Any = None) -> Iterator[Materials]:
    """The run's rulebook, input and benchmark tables rebuilt in a temporary folder."""
    import ruleengine

    run = ledger.run(run_id)
    with tempfile.TemporaryDirectory(prefix=f"ruleengine-replay-{run_id}-") as tmp:
        folder = Path(tmp)
        manifest = json.loads(ledger.blob(run["rulebook_manifest"]))
        book_dir = folder / "book"
        for rel, d in manifest["files"].items():
            target = book_dir / _safe_rel(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(ledger.blob(d))
        plan_path = book_dir / _safe_rel(manifest["main"])
        plan = ruleengine.load(plan_path)
        if plan.hash != run["rulebook_hash"]:
            raise LedgerError(
                f"run {run_id}: the stored rulebook compiles to {plan.hash}, the run recorded {run['rulebook_hash']}"
            )
        stored_files = {C.digest(b, "sha256") for b in (ledger.blob(d) for d in manifest["files"].values())}
        used = {"sha256:" + s for s in plan.source_map.files.values()}
        if used and used != stored_files:
            raise LedgerError(f"run {run_id}: the rebuilt rulebook imported files that are not the stored ones")
        alg = run["hash_alg"]
        path = folder / "input.parquet"
        if type(data).__name__ == "_NoData":  # the rulebook only (history's method edits)
            yield Materials(run, plan, path, {}, folder, plan_path)
            return
        if run["input_blob"]:
            stored = C.stored_parquet(ledger.blob(run["input_blob"]))
        elif data is not None:
            table = C.input_table(plan, data)
            if C.input_hash(table, alg) != run["input_hash"]:
                raise RowsNotStored(
                    f"run {run_id}: the data given is not the data rated (its canonical hash "
                    f"{C.input_hash(table, alg)} differs from {run['input_hash']})"
                )
            stored = C.parquet_bytes(table)
        else:
            raise RowsNotStored(
                f"run {run_id} was recorded without its input rows (--no-store-rows): give the data with --data FILE"
            )
        path.write_bytes(stored)
        tables = C.tables_from_json(ledger.blob(run["benchmarks_blob"]))
        yield Materials(run, plan, path, tables, folder, plan_path)


def rerate(m: Materials) -> Any:
    from .. import pipeline

    raw = pipeline.read(m.data, [m.plan], [C.ROW_NUMBER])
    if C.ROW_NUMBER in raw.columns:  # stored inputs carry the file's row numbers
        import numpy as np

        raw.row_numbers = np.asarray(raw.columns.pop(C.ROW_NUMBER).to_numpy(), dtype=np.int64)
        raw.names = [n for n in raw.names if n != C.ROW_NUMBER]
    res = pipeline.rate(m.plan, None, raw=raw, benchmarks=m.tables)
    if json.loads(m.run["options"]).get("what_it_takes"):
        from ..analysis.whatif import columns

        res.columns.update(columns(m.plan, res))
    return res


def replay(ledger: Any, run_id: int, data: Any = None) -> ReplayReport:
    from .. import __version__

    with materials(ledger, run_id, data) as m:
        run = m.run
        res = rerate(m)
        rep = ReplayReport(
            run_id, run["results_hash"], C.results_digest(res, run["hash_alg"], run.get("format") or 1), len(res)
        )
        if run["engine_version"] != __version__:
            rep.differences.append(f"engine version: recorded {run['engine_version']}, replayed with {__version__}")
        if len(res) != run["n_ratings"]:
            rep.differences.append(f"{len(res)} rows re-rated, {run['n_ratings']} recorded")
            return rep
        if C.tables_json(res.tables) != ledger.blob(run["benchmarks_blob"]):
            rep.differences.append("benchmark tables differ")
        table = C.input_table(m.plan, m.data)
        if C.input_hash(table, run["hash_alg"]) != run["input_hash"]:
            rep.differences.append("the stored input rows do not hash to the run's input_hash")
        if rep.results_hash != rep.replayed_hash:
            # name the first firm-year whose rating differs
            from .record import rating_columns, row_fingerprints

            fps = row_fingerprints(rating_columns(res, m.plan, C.input_fingerprints(table))).tolist()
            for s in ledger.ratings(run_id):
                if fps[s["seq"]] != s["fp"]:
                    i = s["seq"]
                    rep.differences.append(
                        f"rating #{i} (firm {s['firm_id']}, year {s['year']}): recorded {s['rating']!r}, "
                        f"replayed {res['rating'][i]!r}"
                    )
                    break
            else:
                rep.differences.append("the results differ in a column other than the rating")
        return rep
