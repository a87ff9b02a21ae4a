"""``ledger check``: walk the chain and name the first broken link.

Links, in chain order: each run's ``prev_hash`` must be the previous run's ``run_hash`` (run ids
1, 2, 3 … without a gap); its ``run_hash`` must be the hash of its header; its ratings (seq 0, 1,
2 … without a gap, ``n_ratings`` of them) must match their row fingerprints (names the edited row)
and hash, block by block, to the stored block hashes, which hash to the header's
``ratings_root``. A signed run's signature must verify with the public key stored with it (an
edited signature, or a run edited and re-hashed); whether that key is one you trust is
``ledger verify --public-key``'s question. Every blob must hash to its digest, and every
digest a run names must be there. On SQLite the firm index table (derived, not hashed) must match
the ratings row for row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import canonical as C
from . import schema as S
from .db import translate_errors
from .record import GENESIS, decompress, run_hash
from .signing import stored_signature_problem


@dataclass
class CheckReport:
    runs: int = 0
    ratings: int = 0
    blobs: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> str | None:
        return self.problems[0] if self.problems else None


def check(engine: Any, limit: int = 20) -> CheckReport:
    import sqlalchemy as sa

    rep = CheckReport()
    with translate_errors(engine), engine.connect() as conn:
        all_runs = [dict(r._mapping) for r in conn.execute(sa.select(S.runs).order_by(S.runs.c.id))]
        prev_hash, prev_id = GENESIS, 0
        digests_needed: dict[str, int] = {}
        keys: dict[str, Any] = {}  # the signers' public keys, loaded once each
        for r in all_runs:
            rep.runs += 1
            rid = r["id"]
            if rid != prev_id + 1:
                rep.problems.append(f"run {rid}: run {prev_id + 1} is missing from the chain (after run {prev_id})")
            if r["prev_hash"] != prev_hash:
                rep.problems.append(
                    f"run {rid}: prev_hash {r['prev_hash']} is not run {prev_id}'s hash {prev_hash} "
                    "(a run was changed or removed)"
                )
            try:
                want = run_hash(r, r["prev_hash"], r["hash_alg"])
            except Exception as exc:  # noqa: BLE001 - an edited hash_alg is a broken link too
                want = f"<cannot hash: {exc}>"
            if want != r["run_hash"]:
                rep.problems.append(f"run {rid}: header does not hash to its run_hash (a run field was edited)")
            bad_signature = stored_signature_problem(r, keys)
            if bad_signature:
                rep.problems.append(bad_signature)
            prev_hash, prev_id = r["run_hash"], rid
            for key in ("rulebook_manifest", "input_blob", "benchmarks_blob"):
                if r[key]:
                    digests_needed.setdefault(r[key], rid)
            _check_ratings(conn, r, rep)
            if len(rep.problems) >= limit:
                return rep
        orphans = conn.execute(
            sa.select(S.ratings.c.run_id, sa.func.count())
            .where(S.ratings.c.run_id.not_in(sa.select(S.runs.c.id)))
            .group_by(S.ratings.c.run_id)
        ).all()
        for run_id, count in orphans:
            rep.problems.append(f"ratings of run {run_id}: {count} rows belong to no run (the run was removed)")
        if conn.dialect.name == "sqlite":
            _check_firm_index(conn, rep)
        # blobs: each hashes to its digest; each digest a run names is present
        present: set[str] = set()
        edited: set[str] = set()
        for b in conn.execution_options(stream_results=True).execute(sa.select(S.blobs)):
            rep.blobs += 1
            present.add(b.digest)
            alg = b.digest.split(":", 1)[0]
            try:
                ok = C.digest(decompress(b.encoding, b.data, b.size), alg) == b.digest
            except Exception:  # noqa: BLE001 - undecodable bytes are a broken link
                ok = False
            if not ok:
                edited.add(b.digest)
                rep.problems.append(f"blob {b.digest} ({b.kind}): its bytes do not hash to its digest (edited)")
        for d, rid in digests_needed.items():
            if d not in present:
                rep.problems.append(f"run {rid}: blob {d} is missing")
        manifests = [b for b in present if b in digests_needed and b not in edited]  # (an edited one: said above)
        for d in manifests:
            row = conn.execute(
                sa.select(S.blobs).where(S.blobs.c.digest == d, S.blobs.c.kind == "rulebook-manifest")
            ).first()
            if row is None:
                continue
            import json

            try:
                files = json.loads(decompress(row.encoding, row.data, row.size))["files"].items()
            except Exception:  # noqa: BLE001 - hashes to its digest yet unreadable: said, not a crash
                rep.problems.append(f"run {digests_needed[d]}: rulebook manifest {d} cannot be read")
                continue
            for rel, fd in files:
                if fd not in present:
                    rep.problems.append(f"run {digests_needed[d]}: rulebook file {rel} ({fd}) is missing")
    return rep


def _columns(chunk: list[Any]) -> dict[str, Any]:
    import pyarrow as pa

    seq, firm, year, rating, status, ifp = (list(x) for x in zip(*chunk, strict=True)) if chunk else ([],) * 6
    return {
        "seq": pa.array(seq, pa.int64()),
        "firm_id": pa.array(firm, pa.string()),
        "year": pa.array(year, pa.int64()),
        "rating": pa.array(rating, pa.string()),
        "status": pa.array(status, pa.string()),
        "input_fp": pa.array(ifp, pa.int64()),
    }


def _check_ratings(conn: Any, r: dict[str, Any], rep: CheckReport) -> None:
    import sqlalchemy as sa

    from .record import BLOCK_ROWS, block_hashes, row_fingerprints

    rid = r["id"]
    alg = r["hash_alg"] if r["hash_alg"] in C.ALGORITHMS else "sha256"
    h = C.hasher(alg)
    stored_blocks = conn.execute(
        sa.select(S.blocks.c.block, S.blocks.c.first_seq, S.blocks.c.n_rows, S.blocks.c.hash)
        .where(S.blocks.c.run_id == rid)
        .order_by(S.blocks.c.block)
    ).all()
    q = (
        sa.select(
            S.ratings.c.seq,
            S.ratings.c.firm_id,
            S.ratings.c.year,
            S.ratings.c.rating,
            S.ratings.c.status,
            S.ratings.c.input_fp,
            S.ratings.c.fp,
        )
        .where(S.ratings.c.run_id == rid)
        .order_by(S.ratings.c.seq)
    )
    result = conn.execution_options(stream_results=True, yield_per=BLOCK_ROWS).execute(q)
    root = h()
    expected = 0
    block = 0
    first_bad: str | None = None
    while True:
        chunk = result.fetchmany(BLOCK_ROWS)
        if not chunk:
            break
        rep.ratings += len(chunk)
        seqs = [c[0] for c in chunk]
        if first_bad is None and seqs != list(range(expected, expected + len(chunk))):
            missing = next(e for e, s in zip(range(expected, expected + len(chunk)), seqs, strict=True) if e != s)
            first_bad = f"run {rid}: rating #{missing} is missing"
        expected += len(chunk)
        cols = _columns([c[:6] for c in chunk])
        fps = row_fingerprints(cols)
        if first_bad is None:
            stored_fp = [c[6] for c in chunk]
            bad = [i for i, (a, b) in enumerate(zip(fps.tolist(), stored_fp, strict=True)) if a != b]
            if bad:
                c = chunk[bad[0]]
                first_bad = (
                    f"run {rid}: rating #{c[0]} (firm {c[1]}, year {c[2]}, rating {c[3]!r}) does not match its "
                    "fingerprint (the row was edited)"
                )
        mine = block_hashes(cols, alg, start_block=block)[0]
        if first_bad is None:
            if block >= len(stored_blocks) or stored_blocks[block][3] != mine:
                first_bad = (
                    f"run {rid}: ratings #{seqs[0]}–#{seqs[-1]} (block {block}) do not hash to their block hash "
                    "(rows or hashes were changed)"
                )
        root.update(bytes.fromhex(mine.split(":", 1)[1]))
        block += 1
    if first_bad:
        rep.problems.append(first_bad)
    elif expected != r["n_ratings"]:
        rep.problems.append(f"run {rid}: {expected} ratings stored, the run header says {r['n_ratings']}")
    elif len(stored_blocks) != block:
        rep.problems.append(f"run {rid}: {len(stored_blocks)} block hashes stored for {block} blocks of ratings")
    elif f"{alg}:{root.digest().hex()}" != r["ratings_root"]:
        rep.problems.append(
            f"run {rid}: its ratings do not hash to the header's ratings_root (rows changed or re-hashed)"
        )


def _check_firm_index(conn: Any, rep: CheckReport) -> None:
    """SQLite: every rating has its ``ledger_firm_index`` row (same firm) and no index row points
    elsewhere — the index is derived data, not hashed, but an edited one would mislead ``history``."""
    import sqlalchemy as sa

    def first_unmatched(rows: Any, other: Any) -> Any:
        """The first row of ``rows`` with no row of ``other`` on the same (firm_id, run_id, seq)."""
        same = [other.c[k] == rows.c[k] for k in ("firm_id", "run_id", "seq")]
        return conn.execute(
            sa.select(rows.c.run_id, rows.c.seq, rows.c.firm_id).where(~sa.exists().where(*same)).limit(1)
        ).first()

    unindexed = first_unmatched(S.ratings, S.firm_index)
    if unindexed is not None:
        rep.problems.append(
            f"firm index: rating #{unindexed.seq} of run {unindexed.run_id} (firm {unindexed.firm_id}) has no "
            "ledger_firm_index row (history would miss it)"
        )
    stray = first_unmatched(S.firm_index, S.ratings)
    if stray is not None:
        rep.problems.append(
            f"firm index: ledger_firm_index row (firm {stray.firm_id}, run {stray.run_id}, #{stray.seq}) "
            "matches no rating (the index was edited)"
        )
