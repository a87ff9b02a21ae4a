"""Recording a rating run: everything a rating depends on, stored content-addressed, chained by hash.

The expensive part (canonical input, leaf hashes, results digest, compression) runs before the
write lock is taken; under the lock only the previous run's hash is read and the rows inserted, in
one transaction: a writer killed half-way leaves nothing visible.
"""

from __future__ import annotations

import datetime as _dt
import functools
import getpass
import json
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import canonical as C
from . import schema as S
from .db import write_transaction
from .errors import LedgerError

GENESIS = "genesis"
SIGN_CONTEXT = b"ruleengine-ledger-run\n"

Signer = Callable[[bytes], tuple[str, str]]  # message -> (signature hex, public key hex)


@dataclass
class Prepared:
    """A run ready to be appended: every hash that does not depend on the chain's tip.

    The rows needed by the insert (rating columns, fingerprints) are ready at once; the rest (input
    hash, stored rows, results digest, block hashes) may still be computed by a worker thread
    (``pending``) while :func:`append` inserts the ratings: :meth:`finish` waits for it."""

    header: dict[str, Any]
    blobs: dict[str, tuple[str, bytes]]  # digest -> (kind, uncompressed bytes)
    rows: RatingRows
    pending: Any = None  # a Future of (header fields, blobs, block hashes), or None
    # the caller's own writes that must land with this run or not at all (the service's access line
    # of a bank's rating): each called with the connection, inside the run's transaction, after it
    also: list[Callable[[Any], None]] = field(default_factory=list)

    def finish(self) -> None:
        if self.pending is None:
            return
        fields, blobs, blocks = self.pending.result()
        self.pending = None
        self.header.update(fields)
        self.blobs.update(blobs)
        self.rows.blocks = blocks


def rulebook_files(book: str | Path, plan: Any) -> tuple[str, dict[str, bytes]]:
    """(main file name, {relative path: bytes}) of the rulebook and every library it imports.

    Libraries are placed where the import lookup finds them first when the folder is rebuilt:
    relative to the rulebook's folder, or to the bundled rulebooks' folder for bundled libraries.
    The bytes are checked against the digests the plan was compiled from when they are read; once
    read, they are kept (per rulebook path and digests) and not read again: what a run records is
    the files the plan was compiled from, which those digests name, whatever the file holds now.
    """
    import hashlib

    from ..rulebook.source import bundled_dir, resolve

    digests = plan.source_map.files
    key = (str(book), tuple(sorted(digests.items())))
    hit = _RULEBOOK_FILES.get(key)
    if hit is not None:  # (no stat: a service records a run per request against the same files)
        return hit[0], dict(hit[1])
    if not digests:
        raise LedgerError("a run can be recorded only for a rulebook loaded from a file (ruleengine.load)")
    main = resolve(book).resolve()
    base = main.parent
    bundled = bundled_dir().resolve()
    files: dict[str, bytes] = {}
    for name, sha in digests.items():
        path = Path(name)
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha:
            raise LedgerError(f"{path} changed since the rulebook was loaded; load it again before recording")
        if path == main:
            rel = main.name
        else:
            for root in (base, bundled):
                try:
                    rel = path.relative_to(root).as_posix()
                    break
                except ValueError:
                    continue
            else:
                rel = path.name
        files[rel] = data
    if main.name not in files:
        raise LedgerError(f"{main} is not among the files the rulebook was compiled from")
    if len(_RULEBOOK_FILES) > 64:
        _RULEBOOK_FILES.clear()
    _RULEBOOK_FILES[key] = (main.name, dict(files))
    return main.name, files


# rulebook_files() results: (book, the files' SHA-256 digests) -> (main, files). The bytes match
# the digests (checked when read), so an entry stays right whatever later happens to the files.
_RULEBOOK_FILES: dict[Any, tuple[str, dict[str, bytes]]] = {}


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


def check_correction(supersedes: int | None, reason: str | None) -> None:
    """A correction says why: ``supersedes`` needs a reason that is not blank (recorded with it)."""
    if supersedes is not None and not (reason or "").strip():
        raise LedgerError(
            f"--supersedes {supersedes} needs --reason TEXT: why run {supersedes} is corrected (recorded with it)"
        )


def prepare(
    book: str | Path,
    plan: Any,
    data: Any,
    results: Any,
    *,
    alg: str = "sha256",
    store_rows: bool = True,
    options: Mapping[str, Any] | None = None,
    who: str | None = None,
    supersedes: int | None = None,
    reason: str | None = None,
    input_name: str | None = None,
    background: bool = True,
    fixed_tables: bool = False,
) -> Prepared:
    """Everything a run records, but the chain link. The rating rows (what the insert needs) are
    built here; the input hash, the stored rows' Parquet, the results digest and the block hashes
    are computed by a worker thread (``background``) that :func:`append` overlaps with the insert
    and waits for before the run row is written (hashlib, Arrow and SQLite release the GIL).

    ``fixed_tables``: the results' benchmark table objects are never changed (the service's tables
    of a recorded run): their canonical JSON is built and digested once per set of table objects,
    not per run."""
    from concurrent.futures import Future, ThreadPoolExecutor

    C.hasher(alg)  # an unknown algorithm fails here, before any work
    check_correction(supersedes, reason)
    blobs: dict[str, tuple[str, bytes]] = {}

    def put(into: dict[str, tuple[str, bytes]], kind: str, data_: bytes) -> str:
        d = C.digest(data_, alg)
        into[d] = (kind, data_)
        return d

    main, files = rulebook_files(book, plan)
    manifest_digest = _rulebook_blobs(blobs, alg, main, files)
    tables_digest = _tables_blob(blobs, alg, results.tables, fixed_tables)

    # a worker thread pays off for big runs only (a one-firm run: the thread costs more than it saves)
    background = background and len(results) >= BACKGROUND_ROWS
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ruleengine-ledger") if background else None
    # the results digest needs nothing from the input: start it at once
    results_future: Future[str] | None = pool.submit(C.results_digest, results, alg, C.FORMAT) if pool else None
    try:
        # a one-firm run given as records: hash, fingerprints and the bytes stored, without Arrow
        tiny = C.tiny_input(plan, data, alg) if pool is None else None
        table: Any = None
        if tiny is not None:
            known_hash, input_fp, canonical = tiny
        else:
            table = C.input_table(plan, data)
            if pool is None:  # one thread: the input hash and fingerprints in one pass
                known_hash, input_fp = C.input_digests(table, alg)
            else:  # the hash in the worker (rest), the fingerprints here
                known_hash, input_fp = None, C.input_fingerprints(table)
        if len(input_fp) != len(results):
            raise LedgerError(f"the results have {len(results)} rows but the data has {len(input_fp)}: rate this data")
        values = rating_values(results, plan, input_fp)
        if values is not None:  # a tiny run: fingerprints and its one block's hash from Python values
            rows = tiny_rating_rows(values, alg)
        else:
            cols = rating_columns(results, plan, input_fp)
            rows = RatingRows(cols, row_fingerprints(cols), [])
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        raise

    def rest() -> tuple[dict[str, Any], dict[str, tuple[str, bytes]], list[str]]:
        more: dict[str, tuple[str, bytes]] = {}
        input_hash = known_hash or C.input_hash(table, alg)
        input_blob = None
        if store_rows and table is None:  # the canonical bytes themselves: their digest is the input hash
            input_blob = input_hash
            more[input_hash] = ("input-rows", canonical)
        elif store_rows:
            input_blob = put(more, "input-rows", C.stored_bytes(table))
        blocks = rows.blocks if rows.values is not None else block_hashes(rows.cols, alg)
        h = C.hasher(alg)
        root = f"{alg}:{h(b''.join(bytes.fromhex(b.split(':', 1)[1]) for b in blocks)).digest().hex()}"
        digest = results_future.result() if results_future is not None else C.results_digest(results, alg, C.FORMAT)
        fields = {"input_hash": input_hash, "input_blob": input_blob, "results_hash": digest, "ratings_root": root}
        return fields, more, blocks

    from .. import __version__

    header: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "created_at": _now(),
        "who": who or os.environ.get("RULEENGINE_LEDGER_WHO") or _user(),
        "engine_version": __version__,
        "rulebook_id": plan.id,
        "rulebook_version": plan.version,
        "rulebook_hash": plan.hash,
        "rulebook_manifest": manifest_digest,
        "input_hash": None,
        "input_blob": None,
        "input_name": input_name or (str(data) if isinstance(data, str | Path) else "<api>"),
        "n_ratings": len(results),
        "benchmarks_hash": tables_digest,
        "benchmarks_blob": tables_digest,
        "results_hash": None,
        "options": json.dumps(dict(options or {}), sort_keys=True, separators=(",", ":")),
        "supersedes": supersedes,
        "reason": reason,
        "hash_alg": alg,
        "ratings_root": None,
        "format": C.FORMAT,  # the canonical form of this run's digests (canonical.results_digest)
    }
    prepared = Prepared(header, blobs, rows)
    if pool is None:
        fields, more, blocks = rest()
        header.update(fields)
        blobs.update(more)
        rows.blocks = blocks
    else:
        prepared.pending = pool.submit(rest)
        pool.shutdown(wait=False)  # the worker ends when its two tasks are done
    return prepared


# Per-run-constant blobs, digested once: a service rating one firm after another against the same
# run's tables records the same rulebook files and benchmark tables every time. Keyed by the
# identity of the (immutable) objects, which the cache entry keeps alive (so an id is never reused
# while its entry exists); an entry's blobs are copied into each run's own dict.
_CONSTANT_BLOBS: dict[Any, tuple[Any, str, dict[str, tuple[str, bytes]]]] = {}
_CONSTANT_MAX = 32


def _cached_blobs(
    key: Any, keep: Any, into: dict[str, tuple[str, bytes]], make: Callable[[dict[str, tuple[str, bytes]]], str]
) -> str:
    hit = _CONSTANT_BLOBS.get(key)
    if hit is None:
        made: dict[str, tuple[str, bytes]] = {}
        digest = make(made)
        if len(_CONSTANT_BLOBS) >= _CONSTANT_MAX:
            _CONSTANT_BLOBS.clear()
        hit = _CONSTANT_BLOBS[key] = (keep, digest, made)
    into.update(hit[2])
    return hit[1]


def _rulebook_blobs(into: dict[str, tuple[str, bytes]], alg: str, main: str, files: Mapping[str, bytes]) -> str:
    """The rulebook files and their manifest as blobs; returns the manifest's digest."""
    items = sorted(files.items())

    def make(out: dict[str, tuple[str, bytes]]) -> str:
        def put(kind: str, data: bytes) -> str:
            d = C.digest(data, alg)
            out[d] = (kind, data)
            return d

        manifest = {"main": main, "files": {rel: put("rulebook-file", b) for rel, b in items}}
        return put("rulebook-manifest", C.canonical_json(manifest))

    key = ("rulebook", alg, main, tuple((rel, id(b)) for rel, b in items))
    return _cached_blobs(key, [b for _, b in items], into, make)


def _tables_blob(into: dict[str, tuple[str, bytes]], alg: str, tables: Mapping[str, Any], fixed: bool) -> str:
    """The benchmark tables as a blob (canonical JSON); returns its digest. Cached by the tables'
    identity only when the caller says they are ``fixed`` (a BenchmarkTable is mutable)."""
    items = sorted(tables.items())

    def make(out: dict[str, tuple[str, bytes]]) -> str:
        data = C.tables_json(tables)
        d = C.digest(data, alg)
        out[d] = ("benchmarks", data)
        return d

    if not fixed:
        return str(make(into))
    key = ("tables", alg, tuple((name, id(t)) for name, t in items))
    return _cached_blobs(key, [t for _, t in items], into, make)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown"


def header_body(header: Mapping[str, Any]) -> dict[str, Any]:
    """The fields ``run_hash`` covers: :data:`schema.HEADER_FIELDS`, and ``format`` from format 2
    on (format-1 runs were hashed without it, and still verify)."""
    body = {k: header[k] for k in S.HEADER_FIELDS}
    fmt = header.get("format") or 1
    if fmt != 1:
        body["format"] = fmt
    return body


def run_hash(header: Mapping[str, Any], prev_hash: str, alg: str) -> str:
    """The chain link: hash of the previous run's hash and this run's header (canonical JSON)."""
    body = header_body(header)
    return C.digest(prev_hash.encode() + b"\n" + C.canonical_json(body), alg)


def append(engine: Any, prepared: Prepared, signer: Signer | None = None) -> dict[str, Any]:
    """Append the run to the ledger in one transaction under the write lock; returns the run row.

    Order inside the transaction: read the chain's tip, insert the ratings (the bulk of the time,
    overlapped with the worker still hashing), wait for the worker, then blobs, block hashes and
    the run row. Nothing is visible before the commit."""
    return append_many(engine, [prepared], signer)[0]


def append_many(engine: Any, prepared: Sequence[Prepared], signer: Signer | None = None) -> list[dict[str, Any]]:
    """Append several runs, in order, in ONE transaction under the write lock (one lock, one
    commit — what a service recording many small runs wants); all land, or none. Returns their
    run rows, chained one after the other.

    The statements go straight to the DB-API cursor (fixed SQL text, no SQLAlchemy statement
    building per run: for a one-firm run that was most of the append's CPU)."""
    out: list[dict[str, Any]] = []
    try:
        with write_transaction(engine) as conn:
            sql = _sql(conn.dialect.name)
            cur = conn.connection.dbapi_connection.cursor()
            try:
                cur.execute(sql.tip)
                tip = cur.fetchone()
                prev_id, prev_hash = (int(tip[0]), str(tip[1])) if tip else (0, GENESIS)
                for p in prepared:
                    row = _append_one(conn, cur, sql, p, prev_id + 1, prev_hash, signer)
                    for write in p.also:
                        write(conn)
                    out.append(row)
                    prev_id, prev_hash = row["id"], row["run_hash"]
            finally:
                cur.close()
    finally:
        for p in prepared:
            if p.pending is not None:  # an error before finish(): let the worker end
                p.pending.cancel()
    return out


@dataclass(frozen=True)
class _Sql:
    """The append's SQL text for a dialect (``?`` or ``%s`` placeholders)."""

    ph: str
    run_cols: tuple[str, ...]
    tip: str
    run_exists: str
    superseded_by: str
    insert_run: str
    insert_blob: str

    def have_blobs(self, n: int) -> str:
        return f"SELECT digest FROM ledger_blobs WHERE digest IN ({', '.join([self.ph] * n)})"


@functools.lru_cache(maxsize=4)
def _sql(dialect: str) -> _Sql:
    ph = "%s" if dialect == "postgresql" else "?"
    cols = tuple(c.name for c in S.runs.columns)
    return _Sql(
        ph,
        cols,
        tip="SELECT id, run_hash FROM ledger_runs ORDER BY id DESC LIMIT 1",
        run_exists=f"SELECT id FROM ledger_runs WHERE id = {ph}",
        superseded_by=f"SELECT id FROM ledger_runs WHERE supersedes = {ph} ORDER BY id LIMIT 1",
        insert_run=f"INSERT INTO ledger_runs ({', '.join(cols)}) VALUES ({', '.join([ph] * len(cols))})",
        insert_blob=f"INSERT INTO ledger_blobs (digest, kind, size, encoding, data) VALUES ({', '.join([ph] * 5)})",
    )


def _append_one(
    conn: Any, cur: Any, sql: _Sql, prepared: Prepared, run_id: int, prev_hash: str, signer: Signer | None
) -> dict[str, Any]:
    sup = prepared.header["supersedes"]
    if sup is not None:
        cur.execute(sql.run_exists, (sup,))
        if cur.fetchone() is None:
            raise LedgerError(f"run {sup} (to be superseded) is not in the ledger")
        # a run is corrected once: read under the write lock, in the transaction that inserts this
        # run (and sees the runs appended before it in the same append_many), so two corrections
        # of one run racing each other cannot both land
        cur.execute(sql.superseded_by, (sup,))
        already = cur.fetchone()
        if already is not None:
            raise LedgerError(
                f"run {sup} was already superseded by run {already[0]}: a run is corrected once; "
                f"to correct it again, supersede run {already[0]}"
            )
    _insert_ratings(conn, run_id, prepared.rows)
    prepared.finish()
    header = {**prepared.header, "id": run_id}
    alg = header["hash_alg"]
    link = run_hash(header, prev_hash, alg)
    row = {**header, "prev_hash": prev_hash, "run_hash": link, "signature": None, "public_key": None}
    if signer is not None:
        row["signature"], row["public_key"] = signer(SIGN_CONTEXT + link.encode())
    wanted = list(prepared.blobs)
    have: set[str] = set()
    for i in range(0, len(wanted), 500):
        part = wanted[i : i + 500]
        cur.execute(sql.have_blobs(len(part)), part)
        have.update(r[0] for r in cur.fetchall())
    new = []
    for d in wanted:
        if d not in have:
            kind, data = prepared.blobs[d]
            enc, stored = _compress(data, kind)
            new.append((d, kind, len(data), enc, stored))
    if new:
        cur.executemany(sql.insert_blob, new)
    _insert_blocks(conn, run_id, prepared.rows)
    cur.execute(sql.insert_run, tuple(row[c] for c in sql.run_cols))
    if conn.dialect.name == "postgresql" and len(prepared.rows.fps) >= 100_000:
        # a big run: fresh planner statistics, so `history` uses the firm index at once
        cur.execute("ANALYZE ledger_ratings")
    return row


def _compress(data: bytes, kind: str = "") -> tuple[str, bytes]:
    if len(data) < 4096 or kind == "input-rows":  # stored rows: Parquet (compressed already) or a tiny run's IPC
        return "identity", data
    import pyarrow as pa

    return "zstd", pa.Codec("zstd", compression_level=1).compress(data, asbytes=True)


def decompress(encoding: str, data: bytes, size: int) -> bytes:
    if encoding == "identity":
        return bytes(data)
    import pyarrow as pa

    return pa.Codec("zstd").decompress(bytes(data), decompressed_size=size, asbytes=True)


COLUMNS = ("run_id", "seq", "firm_id", "year", "rating", "status", "input_fp", "fp")
BACKGROUND_ROWS = 50_000  # runs from this size hash on a worker thread while the ratings are inserted
BLOCK_ROWS = 4096  # ratings hashed together (SHA-256/SM3) as one link of the chain


@dataclass
class RatingRows:
    """A run's ratings as columns (Arrow arrays), their row fingerprints and block hashes.

    ``values``: for a tiny run (a one-firm rating), the columns as ``(kind, Python values)``
    (:func:`rating_values`); their Arrow arrays are then made only if asked for (``cols``: the
    PostgreSQL COPY), the SQLite insert takes the values as they are."""

    _cols: dict[str, Any] | None
    fps: Any  # int64 per row
    blocks: list[str]
    values: dict[str, tuple[str, list[Any]]] | None = None

    @property
    def cols(self) -> dict[str, Any]:
        if self._cols is None:
            import pyarrow as pa

            assert self.values is not None
            types = {"int64": pa.int64(), "string": pa.string()}
            self._cols = {name: pa.array(vals, types[kind]) for name, (kind, vals) in self.values.items()}
        return self._cols


def rating_values(results: Any, plan: Any, input_fp: Any) -> dict[str, tuple[str, list[Any]]] | None:
    """:func:`rating_columns` of a tiny run as ``(kind, Python values)`` per column (the values
    the Arrow arrays hold, None = missing), or None where the general path must run (more than
    ``fingerprint.TINY_ROWS`` rows, texts not given as str, big years beside missing ones)."""
    import numpy as np

    from .fingerprint import TINY_ROWS, ints_exact

    n = len(results)
    if not 0 < n <= TINY_ROWS:
        return None
    category = getattr(results.columns, "category", None)

    def text(name: str) -> list[Any] | None:
        cat = category(name) if category is not None else None
        if cat is not None and not cat.labels_from_arrow:
            return list(cat.to_strings().tolist())
        vals = np.asarray(results[name]).tolist() if cat is None else None
        return vals if vals is not None and all(v is None or type(v) is str for v in vals) else None

    years = [None if y != y else int(y) for y in np.asarray(results["year"], dtype=np.float64).tolist()]
    if None in years and not ints_exact(years):
        return None
    rating = "rating" if "rating" in results.names else plan.primary
    texts = {name: text(name) for name in ("firm_id", rating, "status")}
    if any(v is None for v in texts.values()):
        return None
    return {
        "seq": ("int64", list(range(n))),
        "firm_id": ("string", texts["firm_id"]),
        "year": ("int64", years),
        "rating": ("string", texts[rating]),
        "status": ("string", texts["status"]),
        "input_fp": ("int64", np.asarray(input_fp, dtype=np.int64).tolist()),
    }


def tiny_rating_rows(values: dict[str, tuple[str, list[Any]]], alg: str) -> RatingRows:
    """The RatingRows of :func:`rating_values`: row fingerprints and the one block's hash from the
    Python values (the bytes and hashes :func:`row_fingerprints` and :func:`block_hashes` give)."""
    from .fingerprint import combine_tiny, tiny_bytes, tiny_hash

    n = len(values["seq"][1])
    block = _block_hash(alg, 0, ((name, tiny_bytes(kind, vals)) for name, (kind, vals) in values.items()))
    fps = combine_tiny([tiny_hash(kind, vals) for kind, vals in values.values()], n)
    return RatingRows(None, fps, [block], values)


def rating_columns(results: Any, plan: Any, input_fp: Any) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa

    from .fingerprint import TINY_ROWS, plain

    n = len(results)

    def text(name: str) -> Any:
        cat = results.columns.category(name) if hasattr(results.columns, "category") else None
        if cat is not None and n <= TINY_ROWS and not cat.labels_from_arrow:
            # a one-firm run: the few texts from the labels (a missing code reads ''), the same array
            # as below without its half-dozen Arrow calls
            return pa.array(cat.to_strings().tolist(), pa.string())
        if cat is not None:  # codes into labels: build the Arrow array without Python strings
            labels = plain(cat.arrow_labels())
            idx = pa.array(np.where(cat.codes < 0, len(labels), cat.codes).astype(np.int32))
            return plain(pa.DictionaryArray.from_arrays(idx, pa.concat_arrays([labels, pa.array([""], pa.string())])))
        return plain(pa.array(results[name], pa.string()))

    year = np.asarray(results["year"], dtype=np.float64)
    rating = "rating" if "rating" in results.names else plan.primary
    return {
        "seq": pa.array(np.arange(n, dtype=np.int64)),
        "firm_id": text("firm_id"),
        "year": pa.array(np.nan_to_num(year, nan=0).astype(np.int64), mask=np.isnan(year)),
        "rating": text(rating),
        "status": text("status"),
        "input_fp": pa.array(np.asarray(input_fp, dtype=np.int64)),
    }


def row_fingerprints(cols: dict[str, Any]) -> Any:
    from .fingerprint import row_hashes

    return row_hashes(list(cols.values()), len(cols["seq"]))


def block_hashes(cols: dict[str, Any], alg: str, start_block: int = 0) -> list[str]:
    """Hash of each block of BLOCK_ROWS ratings: the canonical bytes of every rating field."""
    from .fingerprint import column_bytes

    n = len(cols["seq"])
    return [
        _block_hash(
            alg,
            start_block + a // BLOCK_ROWS,
            ((name, column_bytes(arr.slice(a, BLOCK_ROWS))) for name, arr in cols.items()),
        )
        for a in range(0, n, BLOCK_ROWS)
    ]


def _block_hash(alg: str, block: int, columns: Iterable[tuple[str, Iterable[Any]]]) -> str:
    """The hash of one block of ratings: its number, then each column's name and canonical bytes."""
    m = C.hasher(alg)()
    m.update(b"ruleengine-ratings-v1\n%d\n" % block)
    for name, parts in columns:
        m.update(name.encode() + b"\x00")
        for part in parts:
            m.update(part)
    return f"{alg}:{m.digest().hex()}"


def _insert_ratings(conn: Any, run_id: int, rows: RatingRows) -> None:
    """Bulk insert of the ratings through the driver's fast path: COPY on PostgreSQL (CSV written
    by Arrow, in 256k-row pieces); on SQLite :func:`_insert_sqlite` (inside the run's transaction)."""

    import numpy as np
    import pyarrow as pa

    n = len(rows.fps)
    raw = conn.connection.dbapi_connection
    if conn.dialect.name == "postgresql":
        import pyarrow.csv as pacsv

        c = rows.cols

        table = pa.table(
            {
                "run_id": pa.array(np.full(n, run_id, dtype=np.int64)),
                "seq": c["seq"],
                "firm_id": c["firm_id"],
                "year": c["year"],
                "rating": c["rating"],
                "status": c["status"],
                "input_fp": c["input_fp"],
                "fp": pa.array(rows.fps),
            }
        )
        with raw.cursor() as cur:
            with cur.copy(f"COPY ledger_ratings ({', '.join(COLUMNS)}) FROM STDIN WITH (FORMAT csv)") as copy:
                for start in range(0, n, 262_144):
                    sink = pa.BufferOutputStream()
                    pacsv.write_csv(
                        table.slice(start, 262_144),
                        sink,
                        pacsv.WriteOptions(include_header=False, quoting_style="needed"),
                    )
                    copy.write(sink.getvalue())
        return
    _insert_sqlite(raw, run_id, rows)


SQLITE_ROWS_PER_STATEMENT = 64  # ratings per INSERT … VALUES (…), (…): fewer statement steps per row


def _insert_sqlite(raw: Any, run_id: int, rows: RatingRows) -> None:
    """SQLite: the ratings in seq order (the table is clustered on (run_id, seq): appended at its
    end), then the firm index rows (``ledger_firm_index``, clustered on (firm_id, run_id, seq))
    sorted by firm, so both B-trees are filled in key order — a secondary index on
    ``ledger_ratings(firm_id)`` took its inserts in the portfolio's (random) firm order, about
    half the CPU time of a 1M-row insert. Several rows per statement; the parameters are the
    column lists interleaved by ``zip``/``chain`` in C, no per-row Python (a one-firm run's few rows
    go as Python values: the same rows, without a dozen numpy/Arrow calls)."""
    import numpy as np

    n = len(rows.fps)
    rid = int(run_id)  # an int from the database: a literal, one parameter less per row
    if n <= SQLITE_ROWS_PER_STATEMENT:  # a one-firm run: its few rows as Python values, no numpy/Arrow
        names = ("firm_id", "year", "rating", "status", "input_fp")
        v = rows.values
        firms, years, ratings_, status, input_fp = (
            [v[k][1] for k in names] if v is not None else [rows.cols[k].to_pylist() for k in names]
        )
        ratings = zip(range(n), firms, years, ratings_, status, input_fp, np.asarray(rows.fps).tolist(), strict=True)
        order = sorted(range(n), key=firms.__getitem__)  # by firm (code points: UTF-8's byte order), then seq
        fi: Any = ((firms[i], i) for i in order)
    else:
        ratings, fi = _sqlite_rows(rows)
    cur = raw.cursor()
    try:
        head = f"INSERT INTO ledger_ratings ({', '.join(COLUMNS)}) VALUES "
        _insert_many(cur, head, f"({rid}, ?, ?, ?, ?, ?, ?, ?)", 7, ratings, n)
        _insert_many(cur, "INSERT INTO ledger_firm_index (firm_id, run_id, seq) VALUES ", f"(?, {rid}, ?)", 2, fi, n)
    finally:
        cur.close()


def _sqlite_rows(rows: RatingRows) -> tuple[Any, Any]:
    """The ratings' row tuples in seq order and the firm index's (firm_id, seq) in firm order."""
    import numpy as np
    import pyarrow.compute as pc

    c = rows.cols
    n = len(c["seq"])
    years = c["year"]
    year_list = (
        np.asarray(years.to_numpy(zero_copy_only=False), dtype=np.int64).tolist()
        if years.null_count == 0
        else years.to_pylist()
    )
    # firm ids: each distinct text made once; the firm index order from the labels' sorted ranks
    # (a stable argsort of int ranks keeps seq order within a firm): no string sort of every row
    enc = c["firm_id"].dictionary_encode()
    labels = enc.dictionary
    codes = np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)  # firm_id is never null
    rank = np.empty(len(labels), dtype=np.int64)
    rank[np.asarray(pc.sort_indices(labels).to_numpy(zero_copy_only=False), dtype=np.int64)] = np.arange(len(labels))
    order = np.argsort(rank[codes], kind="stable")
    label_obj = np.array(labels.to_pylist(), dtype=object)
    ratings = zip(
        range(n),
        label_obj[codes].tolist(),
        year_list,
        _text_list(c["rating"]),
        _text_list(c["status"]),
        np.asarray(c["input_fp"].to_numpy(zero_copy_only=False)).tolist(),
        np.asarray(rows.fps).tolist(),
        strict=True,
    )
    fi = zip(label_obj[codes[order]].tolist(), order.tolist(), strict=True)
    return ratings, fi


def _insert_many(cur: Any, head: str, one: str, width: int, tuples: Any, n: int) -> None:
    """``executemany`` of ``n`` row tuples, :data:`SQLITE_ROWS_PER_STATEMENT` rows per statement."""
    import itertools

    k = SQLITE_ROWS_PER_STATEMENT
    full = n // k
    flat = itertools.chain.from_iterable(tuples)
    if full:
        batch = iter(flat)
        cur.executemany(head + ", ".join([one] * k), itertools.islice(zip(*[batch] * (width * k), strict=False), full))
        flat = batch
    rest = n - full * k
    if rest:
        cur.execute(head + ", ".join([one] * rest), tuple(itertools.islice(flat, width * rest)))


def _text_list(arr: Any) -> list[Any]:
    """A string column's values as Python strings, each distinct text made once."""
    import numpy as np

    enc = arr.dictionary_encode()
    labels = np.array([*enc.dictionary.to_pylist(), None], dtype=object)
    idx = np.asarray(enc.indices.fill_null(len(labels) - 1).to_numpy(zero_copy_only=False), dtype=np.int64)
    return labels[idx].tolist()


def _insert_blocks(conn: Any, run_id: int, rows: RatingRows) -> None:
    n = len(rows.fps)
    blocks = [(run_id, i, i * BLOCK_ROWS, min(BLOCK_ROWS, n - i * BLOCK_ROWS), b) for i, b in enumerate(rows.blocks)]
    raw = conn.connection.dbapi_connection
    ph = "%s" if conn.dialect.name == "postgresql" else "?"
    cur = raw.cursor()
    try:
        cur.executemany(
            f"INSERT INTO ledger_blocks (run_id, block, first_seq, n_rows, hash) VALUES ({', '.join([ph] * 5)})", blocks
        )
    finally:
        cur.close()
