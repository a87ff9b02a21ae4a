"""A ratings ledger with provenance (issue #16): every rating ever issued, replayable byte for
byte, tamper-evident, in SQLite (embedded default) or PostgreSQL.

Typical use::

    from ruleengine import ledger
    led = ledger.open_ledger("ratings.db")              # or "postgresql://user@host/db"
    plan = ruleengine.load("huzhou")
    res = ruleengine.rate(plan, "firms.csv")
    run = led.record("huzhou", "firms.csv", res)        # -> the run row (id, run_hash, …)
    led.check()                                         # the first broken link, if any
    led.replay(run["id"]).identical                     # re-rated from stored bytes: True
    led.history("91330500MA2B")                         # ratings over years and method versions

See docs/ledger.md for the schema, the chain and key handling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import LedgerError, TamperError

__all__ = ["Ledger", "LedgerError", "TamperError", "open_ledger"]


class Ledger:
    """A ledger database. Opening for writing creates the schema (migrations) when needed."""

    def __init__(self, url: str | Path, *, create: bool = True, pooled: int = 0) -> None:
        from . import db

        self.url = str(url)
        # pooled: keep up to that many SQLite connections open between reads (a long-lived service)
        self.engine = db.reader_engine(url, pooled) if pooled else db.create_engine(url)
        path = db.sqlite_path(self.engine)
        if path is not None and not path.exists():
            if not create:
                raise LedgerError(f"no ledger at {path} (record a run first: ruleengine rate ... --ledger {path})")
            if not path.parent.is_dir():
                what = (
                    f"{path.parent} is a file, not a folder"
                    if path.parent.exists()
                    else f"folder {path.parent} does not exist"
                )
                raise LedgerError(f"cannot create the ledger {path}: {what}")
        rev = db.current_revision(self.engine)
        if rev != db.HEAD:
            if not create and rev is None:
                raise LedgerError(f"{db.redact(self.url)} is not a ruleengine ledger (no ledger tables)")
            if rev is not None and rev not in db.REVISIONS:  # never "upgraded" by a ruleengine that lacks it
                raise LedgerError(
                    f"{db.redact(self.url)}: its schema revision '{rev}' is unknown to this ruleengine (it knows "
                    f"{', '.join(db.REVISIONS)}): written by a newer ruleengine, or edited; use a ruleengine that "
                    "knows it"
                )
            db.upgrade(self.engine)

    # --- writing ------------------------------------------------------------------------------
    def record(
        self,
        book: str | Path,
        data: Any,
        results: Any,
        *,
        plan: Any = None,
        hash_alg: str = "sha256",
        store_rows: bool = True,
        options: dict[str, Any] | None = None,
        who: str | None = None,
        supersedes: int | None = None,
        reason: str | None = None,
        signer: Any = None,
        input_name: str | None = None,
    ) -> dict[str, Any]:
        """Record ``results`` (rated from ``data`` with ``book``) as a new run; returns the run row."""
        import ruleengine

        from . import record as R

        plan = plan or ruleengine.load(book)
        prepared = R.prepare(
            book,
            plan,
            data,
            results,
            alg=hash_alg,
            store_rows=store_rows,
            options=options,
            who=who,
            supersedes=supersedes,
            reason=reason,
            input_name=input_name,
        )
        return R.append(self.engine, prepared, signer)

    # --- reading ------------------------------------------------------------------------------
    def runs(self) -> list[dict[str, Any]]:
        from . import read

        return read.runs(self.engine)

    def run(self, run_id: int) -> dict[str, Any]:
        from . import read

        return read.run(self.engine, run_id)

    def ratings(self, run_id: int, firm_id: str | None = None) -> list[dict[str, Any]]:
        from . import read

        return read.ratings(self.engine, run_id, firm_id)

    def blob(self, digest: str) -> bytes:
        from . import read

        return read.blob(self.engine, digest)

    def history(self, firm_id: str) -> list[dict[str, Any]]:
        from .history import history

        return history(self.engine, firm_id)

    def check(self) -> Any:
        from .chain import check

        return check(self.engine)

    def replay(self, run_id: int, data: Any = None) -> Any:
        from .replay import replay

        return replay(self, run_id, data)

    def dispose(self) -> None:
        """Close the ledger's database connections (also done when the object is collected)."""
        self.engine.dispose()

    def __del__(self) -> None:
        engine = self.__dict__.get("engine")
        if engine is not None:
            try:
                engine.dispose()
            except Exception:  # noqa: BLE001, S110 - interpreter shutdown: nothing left to close with
                pass


def open_ledger(url: str | Path, *, create: bool = True, pooled: int = 0) -> Ledger:
    """The ledger at ``url`` (created when ``create``). ``pooled``: for a long-lived process, keep
    up to that many SQLite connections open between reads instead of one per read."""
    return Ledger(url, create=create, pooled=pooled)
