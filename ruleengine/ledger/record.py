"""Recording a rating run: everything a rating depends on, stored content-addressed, chained by hash.

The expensive part (canonical input, leaf hashes, results digest, compression) runs before the
write lock is taken; under the lock only the previous run's hash is read and the rows inserted, in
one transaction: a writer killed half-way leaves nothing visible.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import json
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
    """A run ready to be appended: every hash that does not depend on the chain's tip."""

    header: dict[str, Any]
    blobs: dict[str, tuple[str, bytes]]  # digest -> (kind, uncompressed bytes)
    rows: list[tuple[Any, ...]]  # (seq, firm_id, year, rating, status, input_digest, leaf)


def rulebook_files(book: str | Path, plan: Any) -> tuple[str, dict[str, bytes]]:
    """(main file name, {relative path: bytes}) of the rulebook and every library it imports.

    Libraries are placed where the import lookup finds them first when the folder is rebuilt:
    relative to the rulebook's folder, or to the bundled rulebooks' folder for bundled libraries.
    The bytes are checked against the digests the plan was compiled from.
    """
    import hashlib

    from ..source import bundled_dir, resolve

    doc = getattr(plan, "document", None)
    if doc is None or not doc.digests:
        raise LedgerError("a run can be recorded only for a rulebook loaded from a file (ruleengine.load)")
    main = resolve(book).resolve()
    base = main.parent
    bundled = bundled_dir().resolve()
    files: dict[str, bytes] = {}
    for name, sha in doc.digests.items():
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
    return main.name, files


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


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
) -> Prepared:
    h = C.hasher(alg)
    if supersedes is not None and not (reason or "").strip():
        raise LedgerError("a correction (--supersedes RUN) needs a --reason")
    blobs: dict[str, tuple[str, bytes]] = {}

    def put(kind: str, data_: bytes) -> str:
        d = C.digest(data_, alg)
        blobs[d] = (kind, data_)
        return d

    main, files = rulebook_files(book, plan)
    manifest = {"main": main, "files": {rel: put("rulebook-file", b) for rel, b in sorted(files.items())}}
    manifest_digest = put("rulebook-manifest", C.canonical_json(manifest))

    csv_bytes, row_bytes, _cols = C.canonical_input(plan, data)
    input_hash = C.digest(csv_bytes, alg)
    input_blob = put("input-rows", csv_bytes) if store_rows else None
    if len(row_bytes) != len(results):
        raise LedgerError(f"the results have {len(results)} rows but the data has {len(row_bytes)}: rate this data")

    tables = C.tables_json(results.tables)
    tables_digest = put("benchmarks", tables)

    n = len(results)
    firms = results["firm_id"].tolist()
    years: list[int | None] = [None if y != y else int(y) for y in results["year"].tolist()]  # NaN: no year
    ratings_col = results["rating"].tolist() if "rating" in results.names else results[plan.primary].tolist()
    status = results["status"].tolist()
    rows: list[tuple[Any, ...]] = []
    leaves: list[bytes] = []
    append_row, append_leaf = rows.append, leaves.append
    for seq in range(n):
        idig = h(row_bytes[seq]).digest()
        year = years[seq]
        leaf = h(
            b"%d\x1e%s\x1e%s\x1e%s\x1e%s\x1e%s"
            % (
                seq,
                str(firms[seq]).encode(),
                b"" if year is None else b"%d" % year,
                str(ratings_col[seq]).encode(),
                str(status[seq]).encode(),
                idig,
            )
        ).digest()
        append_row((seq, str(firms[seq]), years[seq], str(ratings_col[seq]), str(status[seq]), idig, leaf))
        append_leaf(leaf)
    ratings_root = f"{alg}:{h(b''.join(leaves)).digest().hex()}"

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
        "input_hash": input_hash,
        "input_blob": input_blob,
        "input_name": input_name or (str(data) if isinstance(data, str | Path) else "<api>"),
        "n_ratings": n,
        "benchmarks_hash": tables_digest,
        "benchmarks_blob": tables_digest,
        "results_hash": C.results_digest(results, alg),
        "options": json.dumps(dict(options or {}), sort_keys=True, separators=(",", ":")),
        "supersedes": supersedes,
        "reason": reason,
        "hash_alg": alg,
        "ratings_root": ratings_root,
    }
    return Prepared(header, blobs, rows)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown"


def run_hash(header: Mapping[str, Any], prev_hash: str, alg: str) -> str:
    """The chain link: hash of the previous run's hash and this run's header (canonical JSON)."""
    body = {k: header[k] for k in S.HEADER_FIELDS}
    return C.digest(prev_hash.encode() + b"\n" + C.canonical_json(body), alg)


def append(engine: Any, prepared: Prepared, signer: Signer | None = None) -> dict[str, Any]:
    """Append the run to the ledger in one transaction under the write lock; returns the run row."""
    import sqlalchemy as sa

    header = dict(prepared.header)
    alg = header["hash_alg"]
    with write_transaction(engine) as conn:
        tip = conn.execute(sa.select(S.runs.c.id, S.runs.c.run_hash).order_by(S.runs.c.id.desc()).limit(1)).first()
        prev_id, prev_hash = (tip[0], tip[1]) if tip else (0, GENESIS)
        header["id"] = prev_id + 1
        if header["supersedes"] is not None:
            old = conn.execute(sa.select(S.runs.c.id).where(S.runs.c.id == header["supersedes"])).first()
            if old is None:
                raise LedgerError(f"run {header['supersedes']} (to be superseded) is not in the ledger")
        link = run_hash(header, prev_hash, alg)
        row = {**header, "prev_hash": prev_hash, "run_hash": link, "signature": None, "public_key": None}
        if signer is not None:
            row["signature"], row["public_key"] = signer(SIGN_CONTEXT + link.encode())
        have: set[str] = set()
        wanted = list(prepared.blobs)
        for i in range(0, len(wanted), 500):
            have.update(
                r[0] for r in conn.execute(sa.select(S.blobs.c.digest).where(S.blobs.c.digest.in_(wanted[i : i + 500])))
            )
        for d in wanted:
            if d not in have:
                kind, data = prepared.blobs[d]
                enc, stored = _compress(data)
                conn.execute(sa.insert(S.blobs).values(digest=d, kind=kind, size=len(data), encoding=enc, data=stored))
        conn.execute(sa.insert(S.runs).values(**row))
        _insert_ratings(conn, header["id"], prepared.rows)
    return row


def _compress(data: bytes) -> tuple[str, bytes]:
    if len(data) < 4096:
        return "identity", data
    import pyarrow as pa

    return "zstd", pa.Codec("zstd", compression_level=1).compress(data, asbytes=True)


def decompress(encoding: str, data: bytes, size: int) -> bytes:
    if encoding == "identity":
        return bytes(data)
    import pyarrow as pa

    return pa.Codec("zstd").decompress(bytes(data), decompressed_size=size, asbytes=True)


COLUMNS = "run_id, seq, firm_id, year, rating, status, input_digest, leaf"


def _insert_ratings(conn: Any, run_id: int, rows: list[tuple[Any, ...]]) -> None:
    """Bulk insert through the driver's fast path: executemany on SQLite, COPY on PostgreSQL."""
    raw = conn.connection.dbapi_connection
    if conn.dialect.name == "postgresql":
        with raw.cursor() as cur, cur.copy(f"COPY ledger_ratings ({COLUMNS}) FROM STDIN") as copy:
            write = copy.write_row
            for r in rows:
                write((run_id, *r))
    else:
        cur = raw.cursor()
        try:
            cur.executemany(
                f"INSERT INTO ledger_ratings ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ((run_id, *r) for r in rows),
            )
        finally:
            cur.close()
