"""The ledger's command-line pieces: the options ``rate`` takes and what the ``ledger`` commands
print. Imports only click at module level, so ``ruleengine --help`` stays fast."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

DEFAULT_NAME = "ruleengine.db"


def rate_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options of ``ruleengine rate`` that record the run in a ledger (all land in ``**ledger``)."""
    opts = [
        click.option(
            "--ledger",
            "ledger_url",
            is_flag=False,
            flag_value="",
            default=None,
            metavar="[URL]",
            help=f"Record the run in a ledger: a SQLite file path, sqlite:///FILE or postgresql://…; "
            f"given without a value (last on the line, or before another option): {DEFAULT_NAME} in "
            "DATA's folder.",
        ),
        click.option("--supersedes", type=int, metavar="RUN", help="With --ledger: this run corrects run RUN."),
        click.option("--reason", help="With --supersedes: why the correction was made."),
        click.option(
            "--no-store-rows", is_flag=True, help="With --ledger: keep only the input rows' hashes, not the rows."
        ),
        click.option(
            "--hash",
            "hash_alg",
            type=click.Choice(["sha256", "sm3"]),
            default="sha256",
            show_default=True,
            help="With --ledger: hash for the chain (sm3: GB/T 32905).",
        ),
        click.option(
            "--sign-key",
            type=click.Path(dir_okay=False),
            help="With --ledger: sign the run with this Ed25519 key file.",
        ),
        click.option(
            "--sign-key-env",
            metavar="NAME",
            help="With --ledger: sign with the Ed25519 key in environment variable NAME.",
        ),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def resolve_url(url: str, data: str) -> str:
    return str(Path(data).resolve().parent / DEFAULT_NAME) if url == "" else url


def record_from_rate(book: str, data: str, results: Any, what: bool, opts: dict[str, Any]) -> None:
    """Called by ``ruleengine rate`` after rating: records the run, prints one line on stderr."""
    url = opts.get("ledger_url")
    if url is None:
        if any(opts.get(k) for k in ("supersedes", "reason", "no_store_rows", "sign_key", "sign_key_env")):
            raise click.UsageError("--supersedes, --reason, --no-store-rows and --sign-key need --ledger")
        return
    from . import open_ledger
    from .signing import load_private_key, signer

    sign = None
    if opts.get("sign_key") or opts.get("sign_key_env"):
        sign = signer(load_private_key(key_file=opts.get("sign_key"), key_env=opts.get("sign_key_env")))
    led = open_ledger(resolve_url(url, data))
    run = led.record(
        book,
        data,
        results,
        plan=results.plan,
        hash_alg=opts.get("hash_alg") or "sha256",
        store_rows=not opts.get("no_store_rows"),
        options={"what_it_takes": bool(what)},
        supersedes=opts.get("supersedes"),
        reason=opts.get("reason"),
        signer=sign,
        input_name=str(data),
    )
    signed = ", signed" if run["signature"] else ""
    click.echo(f"recorded run {run['id']} in {shown(led)} ({run['run_hash']}{signed})", err=True)


def shown(led: Any) -> str:
    from .db import redact, sqlite_path

    return str(sqlite_path(led.engine) or redact(led.url))


# --- printing -----------------------------------------------------------------------------------


def print_runs(led: Any, fmt: str) -> None:
    runs = led.runs()
    if fmt == "json":
        click.echo(json.dumps([_jsonable(r) for r in runs], indent=1, ensure_ascii=False))
        return
    superseded = {r["supersedes"] for r in runs if r["supersedes"] is not None}
    if not runs:
        click.echo("no runs")
    for r in runs:
        flags = []
        if r["id"] in superseded:
            flags.append("superseded")
        if r["supersedes"] is not None:
            flags.append(f"corrects run {r['supersedes']}: {r['reason']}")
        if r["signature"]:
            flags.append("signed")
        click.echo(
            f"{r['id']:>5}  {r['created_at'][:19]}Z  {r['who']}  {r['rulebook_id']} {r['rulebook_version']}  "
            f"{r['n_ratings']:,} ratings  {r['input_name']}" + (f"  [{'; '.join(flags)}]" if flags else "")
        )


def print_show(led: Any, run_id: int, firm: str | None, fmt: str) -> None:
    from collections import Counter

    run = led.run(run_id)
    if firm is not None:
        rows = led.ratings(run_id, firm)
        if not rows:
            from .errors import LedgerError

            raise LedgerError(f"run {run_id} has no rating of firm '{firm}'")
        if fmt == "json":
            click.echo(json.dumps([_jsonable(r) for r in rows], indent=1, ensure_ascii=False))
        else:
            for r in rows:
                click.echo(
                    f"run {run_id}  firm {r['firm_id']}  year {r['year']}  rating {r['rating']}  ({r['status']})"
                )
        return
    if fmt == "json":
        click.echo(json.dumps(_jsonable(run), indent=1, ensure_ascii=False))
        return
    for key in (
        "id",
        "uuid",
        "created_at",
        "who",
        "engine_version",
        "rulebook_id",
        "rulebook_version",
        "rulebook_hash",
        "rulebook_manifest",
        "input_name",
        "input_hash",
        "input_blob",
        "n_ratings",
        "benchmarks_hash",
        "results_hash",
        "options",
        "supersedes",
        "reason",
        "superseded_by",
        "hash_alg",
        "format",
        "ratings_root",
        "prev_hash",
        "run_hash",
        "public_key",
    ):
        value = run.get(key)
        if value is None or value == []:
            continue
        click.echo(f"{key:>18}: {value}")
    click.echo(f"{'signature':>18}: {'yes' if run['signature'] else 'no'}")
    counts = Counter(r["rating"] or "(unrated)" for r in led.ratings(run_id))
    click.echo(f"{'ratings':>18}: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))


def print_history(led: Any, firm: str, fmt: str, edits: bool = False) -> None:
    rows = led.history(firm)
    if edits:
        from .history import method_edits

        seen: dict[tuple[int, int], list[str]] = {}
        for r in rows:
            if r["previous_run"] and any(w.startswith("method:") for w in r["why"]):
                key = (r["previous_run"], r["run_id"])
                if key not in seen:
                    seen[key] = method_edits(led, *key)
                r["method_edits"] = seen[key]
    if fmt == "json":
        click.echo(json.dumps([_jsonable(r) for r in rows], indent=1, ensure_ascii=False))
        return
    click.echo(f"firm {firm}: {len(rows)} rating(s)")
    for r in rows:
        mark = "changed" if r["changed"] else "       "
        sup = f"  (superseded by run {r['superseded_by']})" if r["superseded_by"] else ""
        click.echo(
            f"  {r['year']}  run {r['run_id']:>4}  {r['created_at'][:10]}  {r['rulebook_id']} {r['rulebook_version']}  "
            f"rating {r['rating'] or '-':<6} {mark}  {'; '.join(r['why'])}{sup}"
        )
        for e in r.get("method_edits", []):
            click.echo(f"        method edit: {e}")


def print_check(led: Any) -> bool:
    """Print the chain check; True if every link holds (the CLI decides the exit code)."""
    rep = led.check()
    if rep.ok:
        click.echo(f"ledger intact: {rep.runs} runs, {rep.ratings:,} ratings, {rep.blobs} blobs; every link holds")
        return True
    click.echo(f"ledger BROKEN: first broken link: {rep.first}", err=True)
    for p in rep.problems[1:]:
        click.echo(f"  also: {p}", err=True)
    return False


def print_replay(led: Any, run_ids: list[int], data: str | None) -> bool:
    """Replay and print; True if every run replayed was byte-identical (the CLI: exit 0, else 1).

    One run asked for that cannot be replayed (recorded with ``--no-store-rows``, and no ``--data``
    or not its data) is an error, as before. Of several (``--all``) such a run is reported "not
    replayable (rows not stored)" and the others are replayed: it is not a failure (its rows were
    deliberately not kept), unless no run at all could be replayed (nothing was proven)."""
    from .replay import RowsNotStored

    bad = skipped = 0
    for rid in run_ids:
        try:
            rep = led.replay(rid, data)
        except RowsNotStored:
            if len(run_ids) == 1:
                raise
            skipped += 1
            why = "give its input with --data FILE" if data is None else f"{data} is not its input"
            click.echo(f"run {rid}: not replayable (rows not stored): {why}")
            continue
        if rep.identical:
            click.echo(f"run {rid}: replayed {rep.n:,} ratings: byte-identical ({rep.replayed_hash})")
        else:
            bad += 1
            click.echo(f"run {rid}: replay DIFFERS: " + "; ".join(rep.differences or ["results digest differs"]))
            click.echo(f"    recorded {rep.results_hash}\n    replayed {rep.replayed_hash}")
    if skipped and skipped == len(run_ids):
        click.echo(f"no run could be replayed: all {skipped} were recorded without their rows", err=True)
        return False
    return not bad


def print_verify(led: Any, run_id: int, public_key: str, replay: bool) -> None:
    from .errors import TamperError
    from .signing import load_public_key, verify_run

    key = load_public_key(public_key)
    run = led.run(run_id)
    verify_run(run, key)
    click.echo(f"run {run_id}: signature valid ({run['run_hash']})")
    rep = led.check()
    mine = [p for p in rep.problems if p.startswith((f"run {run_id}:", f"run {run_id + 1}: prev_hash"))]
    if mine:
        raise TamperError(mine[0])
    click.echo(f"run {run_id}: digests hold (header, {run['n_ratings']:,} ratings, blobs)")
    if replay:
        r = led.replay(run_id)
        if not r.identical:
            raise TamperError(f"run {run_id}: recomputation differs: {'; '.join(r.differences) or 'results digest'}")
        click.echo(f"run {run_id}: recomputed byte-identical ({r.replayed_hash})")


def export(led: Any, output: str | None, run_id: int | None, blobs: bool) -> None:
    """JSON Lines: one object per run, rating and (with ``blobs``) blob; binary values as hex."""
    import base64

    import sqlalchemy as sa

    from . import schema as S

    out = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    try:
        with led.engine.connect() as conn:
            q = sa.select(S.runs).order_by(S.runs.c.id)
            if run_id is not None:
                led.run(run_id)
                q = q.where(S.runs.c.id == run_id)
            wanted: set[str] = set()
            for r in conn.execute(q):
                d = _jsonable(dict(r._mapping))
                out.write(json.dumps({"type": "run", **d}, ensure_ascii=False, sort_keys=True) + "\n")
                wanted.update(x for x in (d["rulebook_manifest"], d["input_blob"], d["benchmarks_blob"]) if x)
                rq = sa.select(S.ratings).where(S.ratings.c.run_id == d["id"]).order_by(S.ratings.c.seq)
                for x in conn.execution_options(stream_results=True, yield_per=50_000).execute(rq):
                    out.write(json.dumps({"type": "rating", **_jsonable(dict(x._mapping))}, ensure_ascii=False) + "\n")
            if blobs:
                from .record import decompress

                for b in conn.execute(sa.select(S.blobs).order_by(S.blobs.c.digest)):
                    if run_id is not None and b.digest not in wanted and b.kind != "rulebook-file":
                        continue
                    data = decompress(b.encoding, b.data, b.size)
                    out.write(
                        json.dumps(
                            {
                                "type": "blob",
                                "digest": b.digest,
                                "kind": b.kind,
                                "base64": base64.b64encode(data).decode(),
                            }
                        )
                        + "\n"
                    )
    finally:
        if output:
            out.close()


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (bytes(v).hex() if isinstance(v, bytes | memoryview) else v) for k, v in d.items()}


def print_explain(led: Any, run_id: int, firm: str, year: int | None, fmt: str, data: str | None) -> None:
    """The audit trail of one firm-year as rated in RUN: re-rated from the stored materials
    (replay), so the trace is the one the run produced, whatever the files on disk say today."""
    import ruleengine

    from .replay import materials, rerate

    with materials(led, run_id, data) as m:
        res = rerate(m)
        trace = ruleengine.explain(m.plan, m.data, firm_id=firm, year=year, results=res)
    if fmt == "json":
        sys.stdout.write(trace.to_json())
        return
    from rich.console import Console

    from ..render.text import trace_markdown, trace_text

    run = m.run
    click.echo(
        f"run {run_id} ({run['created_at'][:19]}Z, {run['rulebook_id']} {run['rulebook_version']}, {run['run_hash']})"
    )
    if fmt == "markdown":
        sys.stdout.write(trace_markdown(trace))
    else:
        console = Console(highlight=False, soft_wrap=True)
        if not console.is_terminal:
            console.width = 200
        trace_text(console, trace)


def write_report(
    led: Any, run_id: int, firm: str, year: int | None, lang: str, output: str, appendix: bool, data: str | None
) -> None:
    """A firm's report as rated in RUN: re-rated from the stored rulebook, rows and benchmark tables
    (replay), so it shows the recorded rating whatever the files on disk say today."""
    from .. import report as rep
    from .replay import materials, rerate

    with materials(led, run_id, data) as m:
        res = rerate(m)
        rated = rep.rated_from(m.plan, res, m.data, f"ledger run {run_id}")
        out = rep.write_firm(rated, firm, year, output, lang, None, appendix)
    run = m.run
    click.echo(
        f"wrote {out} (run {run_id}, {run['rulebook_id']} {run['rulebook_version']}, rulebook {run['rulebook_hash']})"
    )
