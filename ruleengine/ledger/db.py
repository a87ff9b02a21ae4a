"""Opening a ledger: URLs, engines, migrations (run programmatically) and write transactions.

A ledger URL is ``sqlite:///path/to/ruleengine.db``, ``postgresql://user@host:port/db`` (driven by
psycopg 3) or a plain file path (a SQLite file). Writes go through :func:`write_transaction`, which
serialises chain appends: ``BEGIN IMMEDIATE`` on SQLite (one writer at a time, others wait), a
transaction-scoped advisory lock on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import LedgerError

HEAD = "0006"
# every schema revision this ruleengine has a migration for (migrations/): a ledger at another one
# was written by a newer ruleengine (or its version table edited), and is refused, not "upgraded"
REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006")
_LOCK_KEY = 0x7275_6C65_6C65_6467  # "ruleledg": the advisory lock every PostgreSQL writer takes
SQLITE_TIMEOUT_S = 120.0


def _need_extra() -> None:
    try:
        import alembic  # noqa: F401
        import sqlalchemy  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise LedgerError(
            f"the ledger needs the 'ledger' extra ({exc.name} is not installed): pip install 'ruleengine[ledger]'"
        ) from None


def normalise_url(url: str | Path) -> str:
    """``sqlite:///…``/``postgresql://…`` as given (postgresql gets the psycopg 3 driver); a path → SQLite."""
    text = str(url)
    if text[:5].lower() == "file:":
        raise LedgerError(_file_url_refused(text))
    if text.startswith(("postgresql://", "postgres://")):
        return _checked("postgresql+psycopg://" + text.split("://", 1)[1], text)
    if "://" in text:
        if not text.startswith(("sqlite:", "postgresql+psycopg:")):
            raise LedgerError(
                f"unsupported ledger URL '{redact(text)}': use a file path, sqlite:///FILE or postgresql://…"
            )
        return _checked(text, text)
    return "sqlite:///" + str(Path(text))


def _file_url_refused(text: str) -> str:
    """Why a ``file:`` URL is refused, with the path or URL to give instead when there is one.

    Taken as a path it made a SQLite file named ``file:y.db`` in the working directory (and
    ``file:///…`` was "unsupported" without a word on what to give); RFC 8089 and SQLite URI
    filenames differ on hosts, query parameters (``?mode=ro``) and percent-escapes, so a ledger
    takes a plain path or ``sqlite:///FILE`` (a file really named ``file:…``: ``./file:…``)."""
    from urllib.parse import unquote, urlsplit

    hint = ""
    try:
        u = urlsplit(text)
        path = unquote(u.path)
        if u.netloc in ("", "localhost") and path and not u.query and not u.fragment:
            hint = f" ({path}) or sqlite:///{path}"
    except ValueError:
        pass
    shown = redact(text) if "@" in text else text
    instead = hint or ", sqlite:///FILE or postgresql://…"
    return f"unsupported ledger URL '{shown}': file: URLs are not read; give the file path itself{instead}"


def _checked(norm: str, given: str) -> str:
    """``norm`` once SQLAlchemy can read it: a port that is not a number, an unclosed ``[``, a
    ``sqlite://FILE`` (two slashes: FILE read as a host) are errors naming the URL, not bugs."""
    try:
        from sqlalchemy.engine import make_url
    except ImportError:  # (the ledger extra's absence is said where an engine is made)
        return norm
    try:
        u = make_url(norm)
        _ = u.port  # parsed lazily: "notaport" fails here
    except Exception as exc:  # noqa: BLE001 - ValueError, ArgumentError: the URL, not the code
        raise LedgerError(f"malformed ledger URL '{redact(given)}': {exc}") from None
    if u.drivername.startswith("sqlite") and u.host:
        raise LedgerError(
            f"malformed ledger URL '{redact(given)}': a SQLite URL is sqlite:///FILE (three slashes; "
            "four for an absolute path), or give the file path itself"
        )
    return norm


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a message helper must not fail
        return url.split("@")[-1] if "@" in url else url


def create_engine(url: str | Path) -> Any:
    _need_extra()
    import sqlalchemy as sa

    norm = normalise_url(url)
    if norm.startswith("sqlite:"):
        engine = sa.create_engine(norm, connect_args={"timeout": SQLITE_TIMEOUT_S}, poolclass=sa.pool.NullPool)
        _sqlite_events(engine, ())
    else:  # a small pool: a Ledger object reuses its server connection (history in milliseconds)
        engine = sa.create_engine(norm, pool_size=2, max_overflow=2)
    return engine


SYNC_MODES = ("full", "normal", "journal")
WRITER_CACHE_KIB = 16384  # the long-lived writer's SQLite page cache (16 MiB)


def writer_engine(url: str | Path, sync: str = "full") -> Any:
    """An engine for one long-lived writer (the HTTP service's ledger writer thread).

    SQLite: ONE pooled connection, kept open between transactions (a new connection per
    transaction, as :func:`create_engine`'s NullPool does, costs ~2 ms of CPU: open, PRAGMAs, schema
    parse). ``sync``: ``full`` switches the file to WAL with ``synchronous=FULL``: one fsync of
    the WAL per commit (~1 ms of waiting, no CPU, shared by a group commit's runs), so a committed
    run survives the process being killed and a power cut; ``normal``: WAL with
    ``synchronous=NORMAL``, no fsync per commit: survives ``kill -9`` (the OS has the data) but an
    OS crash or power cut may lose the last commits (whole transactions, never part of one: the
    chain stays valid); ``journal``: SQLite's rollback journal with ``synchronous=FULL``, as the CLI
    writes (several fsyncs, ~10 ms per commit). The WAL mode stays with the file (other connections
    use it too); :func:`leave_wal` turns it back. PostgreSQL: the ordinary pooled engine (its
    durability is the server's)."""
    _need_extra()
    if sync not in SYNC_MODES:
        raise LedgerError(f"unknown SQLite sync mode '{sync}' (use {' or '.join(SYNC_MODES)})")
    norm = normalise_url(url)
    if not norm.startswith("sqlite:"):
        return create_engine(url)
    engine = _pooled_sqlite(norm, size=1, overflow=0)
    pragmas: tuple[str, ...] = ()
    if sync != "journal":
        pragmas = ("PRAGMA journal_mode=WAL", f"PRAGMA synchronous={sync.upper()}")
    # a connection kept open keeps every page it wrote in its cache, up to cache_size: the CLI's
    # 256 MiB (for one million-row run) would let a long-running service grow by the ledger's size
    pragmas += (f"PRAGMA cache_size=-{WRITER_CACHE_KIB}",)
    _sqlite_events(engine, pragmas)
    return engine


READER_CACHE_KIB = 2048  # each pooled reader connection's SQLite page cache (2 MiB, SQLite's default)


def reader_engine(url: str | Path, connections: int) -> Any:
    """An engine for a long-lived process's reads (the HTTP service's requests): SQLite connections
    kept open in a pool of ``connections`` (more are opened when all are busy, and closed again).

    :func:`create_engine` opens a new SQLite connection for every read (NullPool: right for a CLI
    run), ~1-2 ms of CPU each (open, PRAGMAs, schema parse): an explanation reads twice, a bank's
    consent check once per request. A pooled connection reads the latest commits at the start of
    each transaction (WAL or rollback journal alike); its page cache is bounded so that a service
    reading an ever-growing ledger does not grow with it. PostgreSQL: :func:`create_engine`."""
    _need_extra()
    norm = normalise_url(url)
    if not norm.startswith("sqlite:"):
        return create_engine(url)
    engine = _pooled_sqlite(norm, size=max(1, connections), overflow=max(1, connections))
    _sqlite_events(engine, (f"PRAGMA cache_size=-{READER_CACHE_KIB}",))
    return engine


def _pooled_sqlite(norm: str, size: int, overflow: int) -> Any:
    """A SQLite engine whose connections stay open in a pool (each used by one thread at a time: the
    pool's checkout), waiting up to SQLITE_TIMEOUT_S for a free one."""
    import sqlalchemy as sa

    return sa.create_engine(
        norm,
        connect_args={"timeout": SQLITE_TIMEOUT_S, "check_same_thread": False},
        poolclass=sa.pool.QueuePool,
        pool_size=size,
        max_overflow=overflow,
        pool_timeout=SQLITE_TIMEOUT_S,
    )


def leave_wal(engine: Any) -> bool:
    """Best effort: the SQLite file back to its rollback journal (what :func:`writer_engine`
    ``normal`` changed), checkpointing the WAL. False when another connection still has the file
    open (it stays in WAL mode: still a valid ledger, opened the same way)."""
    path = sqlite_path(engine)
    if path is None or not path.exists():
        return False
    import sqlite3

    try:
        con = sqlite3.connect(path, timeout=1.0, isolation_level=None)
        try:
            mode = con.execute("PRAGMA journal_mode=DELETE").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return False
    return bool(mode) and str(mode[0]).lower() == "delete"


def _sqlite_events(engine: Any, pragmas: tuple[str, ...]) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (IMMEDIATE for writes)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA cache_size=-262144")  # up to 256 MiB: a million-row run's index fits
        for pragma in pragmas:
            cur.execute(pragma)
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("ledger_begin", "DEFERRED")
        # on the DB-API connection (isolation_level None: autocommit until this BEGIN), not through
        # exec_driver_sql's execution context, which cost the service's writer ~60 µs a transaction
        conn.connection.dbapi_connection.execute(f"BEGIN {mode}")


def sqlite_path(engine: Any) -> Path | None:
    if engine.dialect.name != "sqlite":
        return None
    return _sqlite_file(engine.url.database)


@functools.lru_cache(maxsize=64)
def _sqlite_file(db: str | None) -> Path | None:
    """The file of a SQLite URL's database part (parsed once: every write transaction asks)."""
    return Path(db) if db and db != ":memory:" and not db.startswith("file:") else None


def _alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("ruleengine.ledger") / "migrations"))
    cfg.attributes["connection"] = connection
    return cfg


def current_revision(engine: Any) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with translate_errors(engine), engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": "ledger_alembic_version"})
        return ctx.get_current_revision()


def upgrade(engine: Any, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (default: the newest), holding the ledger's write lock
    (:func:`write_transaction`): several processes opening a new ledger at once (``serve
    --processes N``, two CLI runs) migrate it one after the other — the later ones find it done —
    instead of one failing with "database is locked" (SQLite refuses a read transaction's upgrade to
    a write when another writer holds the lock, at once, without waiting)."""
    from alembic import command

    with write_transaction(engine) as conn:
        command.upgrade(_alembic_config(conn), revision)


def downgrade(engine: Any, revision: str = "base") -> None:
    from alembic import command

    with translate_errors(engine), engine.begin() as conn:
        command.downgrade(_alembic_config(conn), revision)


@contextlib.contextmanager
def write_transaction(engine: Any) -> Iterator[Any]:
    """One transaction holding the ledger's write lock: everything in it lands, or nothing does.

    SQLite file: the writers of this package first take an OS lock on ``FILE.writelock`` (see
    :func:`_queue_for_writes`), then SQLite's own (``BEGIN IMMEDIATE``)."""
    with translate_errors(engine):
        if engine.dialect.name == "sqlite":
            with (
                _queue_for_writes(sqlite_path(engine)),
                engine.connect().execution_options(ledger_begin="IMMEDIATE") as conn,
                conn.begin(),
            ):
                yield conn
        else:
            import sqlalchemy as sa

            with engine.begin() as conn:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY - (1 << 63)})
                yield conn


@contextlib.contextmanager
def _queue_for_writes(path: Path | None) -> Iterator[None]:
    """Writers of one SQLite ledger (``serve --processes N``'s writer threads, CLI runs) wait for
    each other on an exclusive ``flock`` of ``FILE.writelock`` before SQLite's write lock.

    Without it, a writer that finds the ledger locked sleeps in SQLite's busy handler — 1, 2, 5 …
    up to 100 ms at a time, polling — while a busy other process takes the lock again and again the
    moment it frees it: measured, one server process's commits waited 0.5–1.9 s while the other
    committed group after group (the service's p99 under load). The kernel wakes a ``flock``
    waiter as soon as the holder lets go (and a process that dies lets go), so writers take turns.
    Best effort: where the lock file cannot be made (no ``fcntl``, a read-only folder) SQLite's busy
    handler still serialises the writers, as before. The file is left in place (removing a lock
    file races with the next writer); it holds nothing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Windows
        fcntl = None  # type: ignore[assignment]
    fd = -1
    if path is not None and fcntl is not None:
        lock = f"{path}.writelock"
        for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):  # (a flock needs no write access)
            try:
                fd = os.open(lock, flags | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0), 0o600)
                break
            except OSError:
                fd = -1
    try:
        if fd >= 0:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd >= 0:
            os.close(fd)  # (closing the descriptor releases the lock)


@contextlib.contextmanager
def translate_errors(engine: Any) -> Iterator[None]:
    """Database errors become :class:`LedgerError` with what it means for the user."""
    import sqlalchemy.exc as sx

    caught: tuple[type[BaseException], ...] = (sx.DBAPIError, *_driver_errors())
    try:
        yield
    except caught as exc:
        where = str(sqlite_path(engine) or redact(str(engine.url)))  # (only now: every transaction passes here)
        orig = getattr(exc, "orig", exc)
        text = str(orig) if orig is not None else str(exc)
        low = text.lower()
        if "readonly" in low or "read-only" in low or "read only" in low:
            msg = f"the ledger {where} is read-only: nothing was recorded (runs already there are untouched)"
        elif "disk is full" in low or "no space" in low or "disk full" in low:
            msg = f"the ledger {where}: disk full: nothing was recorded (runs already there are untouched)"
        elif "append-only" in low:
            msg = f"the ledger {where} is append-only: {text.splitlines()[0]}"
        elif not text:
            msg = f"ledger {where}: {type(orig).__name__}"
        elif "unable to open" in low:
            msg = f"cannot open the ledger {where}: {text.splitlines()[0]}"
        elif isinstance(exc, sx.OperationalError) or type(orig).__name__ == "OperationalError":
            msg = f"ledger {where}: {text.splitlines()[0]}"
        else:
            msg = f"ledger {where}: {type(orig).__name__}: {text.splitlines()[0] if text else ''}"
        raise LedgerError(msg) from None


@functools.lru_cache(maxsize=1)
def _driver_errors() -> tuple[type[BaseException], ...]:
    import sqlite3

    out: list[type[BaseException]] = [sqlite3.Error]
    try:
        import psycopg

        out.append(psycopg.Error)
    except ImportError:  # pragma: no cover - SQLite-only installation
        pass
    return tuple(out)
