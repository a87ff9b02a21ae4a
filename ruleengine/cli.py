"""The command line: a thin layer over the Python API. Exit codes: 0 ok, 1 error, 2 usage."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click

from .errors import DataError, RulebookError, RuleEngineError

BOOK_HELP = "a bundled rulebook name (huzhou) or a path to a rulebook .yaml file"


# Exit codes are decided here, at the edge, not by the exceptions: 0 ok, 1 an error the engine
# reports (invalid rulebook, unreadable data, failing test, trace mismatch), 2 a usage error
# (click's), 3 an internal error (a bug), 130 interrupted.
EXIT_ERROR = 1
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


class _Group(click.Group):
    """Turns engine errors into messages and exit codes; never shows a Python traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RulebookError as exc:
            for d in exc.diagnostics:
                click.echo(d.format(), err=True)
            n = len(exc.errors)
            click.echo(f"{n} error{'s' if n != 1 else ''}", err=True)
            sys.exit(EXIT_ERROR)
        except RuleEngineError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_ERROR)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:  # an engine bug: say so plainly, keep the traceback for --debug
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(
                f"internal error: {type(exc).__name__}: {exc}\n"
                "This is a bug in ruleengine; rerun with --debug for the traceback and "
                "please report it.",
                err=True,
            )
            sys.exit(EXIT_INTERNAL)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="ruleengine")
@click.option("--debug", is_flag=True, help="Show Python tracebacks for internal errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Carbon-rating methodologies as versioned, declarative YAML rulebooks.

    \b
    Typical use:
      ruleengine validate rulebooks/*.yaml        check rulebooks, every error with file:line:col
      ruleengine rate huzhou firms.csv -o out.csv rate a firm-year portfolio
      ruleengine explain huzhou firms.csv --firm ID   audit trail of one firm's rating
      ruleengine test huzhou                      run the rulebook's own test cases

    BOOK is a bundled rulebook name (see `ruleengine books`) or a path to a .yaml file.
    DATA is a CSV, JSON (list of objects), JSON Lines or Parquet file, one row per firm-year.
    """
    ctx.obj = {"debug": debug}


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal:  # files and pipes get whole lines, not an 80-column crop
        console.width = 200
    return console


@main.command()
def books() -> None:
    """List the bundled rulebooks."""
    from . import load
    from .rulebook.source import bundled_names

    for name in bundled_names():
        try:
            plan = load(name)
            click.echo(f"{name:12} {plan.version:8} {plan.title}")
        except RuleEngineError as exc:
            click.echo(f"{name:12} (invalid: {str(exc).splitlines()[0]})")


@main.command()
@click.argument("book", nargs=-1, required=True)
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@click.option("-q", "--quiet", is_flag=True, help="Print only problems.")
def validate(book: tuple[str, ...], strict: bool, quiet: bool) -> None:
    """Check rulebooks: YAML, schema, names, cycles, units, bands. Reports every problem found.

    Each problem is printed as FILE:LINE:COL: error|warning: MESSAGE (at YAML.PATH).
    Exit code 1 if any rulebook has an error (or a warning, with --strict).
    """
    from . import load

    failed = 0
    errors = 0
    for name in book:
        try:
            plan = load(name)
        except RulebookError as exc:
            for d in exc.diagnostics:
                click.echo(d.format(), err=True)
            errors += len(exc.errors)
            failed += 1
            continue
        except RuleEngineError as exc:
            click.echo(f"error: {exc}", err=True)
            errors += 1
            failed += 1
            continue
        for w in plan.warnings:
            click.echo(w.format(), err=True)
        if strict and plan.warnings:
            failed += 1
            errors += len(plan.warnings)
            continue
        if not quiet:
            counts = Counter(plan.nodes[n].kind for n in plan.order)
            click.echo(
                f"ok: {plan.file}: {plan.id} {plan.version} ({plan.hash}); "
                f"{len(plan.inputs)} inputs, {len(plan.parameters)} parameters, "
                f"{counts['variable']} variables, {counts['benchmark']} benchmarks, "
                f"{counts['rating']} ratings, {len(plan.warnings)} warnings"
            )
    if failed:
        click.echo(
            f"{errors} error{'s' if errors != 1 else ''} in {failed} rulebook{'s' if failed != 1 else ''}", err=True
        )
        sys.exit(EXIT_ERROR)


@main.command()
@click.argument("book")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["dot", "mermaid", "json"]),
    default="dot",
    show_default=True,
    help="Graph format.",
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write to a file instead of stdout."
)
def graph(book: str, fmt: str, output: str | None) -> None:
    """Print the dependency graph of a rulebook (inputs → variables → benchmarks → ratings)."""
    from . import load
    from .render.text import graph_text

    text = graph_text(load(book), fmt)
    if output:
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise _cannot_write(output, exc) from None
    else:
        click.echo(text, nl=False)


def _cannot_write(output: str | Path, exc: OSError) -> DataError:
    """The error for a file that could not be written: a path through a file (``out.csv/x``: mkdir
    says "File exists", open says "Not a directory") names the file that is in the way."""
    if isinstance(exc, FileExistsError | NotADirectoryError):
        blocker = next((p for p in Path(output).parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return DataError(f"cannot write {output}: {blocker} is a file, not a folder")
    return DataError(f"cannot write {output}: {exc.strerror or exc}")


def _not_an_input(inputs: Any, **outputs: str | None) -> None:
    """Refuse an output (``-o``, ``--report``) that is one of the inputs, or inside an input folder
    (the next run would read it as a source): it would be overwritten, or read back, silently."""
    srcs = [Path(i).resolve() for i in inputs]
    for option, out in outputs.items():
        if not out:
            continue
        o = Path(out).resolve()
        for src in srcs:
            if o == src or (src.is_dir() and src in o.parents):
                where, fate = ("is", "overwritten") if o == src else ("is inside", "read as a source")
                raise click.BadParameter(
                    f"{out} {where} the input {src.name}: it would be {fate}; write it elsewhere",
                    param_hint=f"--{option}",
                )


def _write_or_fail(results: Any, output: str) -> None:
    try:
        results.write(output)
    except OSError as exc:
        raise _cannot_write(output, exc) from None


from .ledger.cli import rate_options as _ledger_options  # noqa: E402 - click options only


def _engine_options(f: Any) -> Any:
    """--master, --scheduler, --partitions: where a distributed --engine runs (docs/scale.md)."""
    for opt in reversed(
        [
            click.option(
                "--master",
                help="Spark master for --engine spark: local[N], spark://HOST:7077, yarn (default: local[*]).",
            ),
            click.option(
                "--scheduler", help="Dask scheduler address for --engine dask, tcp://HOST:8786 (default: in-process)."
            ),
            click.option(
                "--partitions",
                type=click.IntRange(1),
                help="Firm-complete partitions for --engine spark|dask (default: as many as the input has).",
            ),
        ]
    ):
        f = opt(f)
    return f


def _analysis_engine_options(f: Any) -> Any:
    """--engine and its options for the analyses that rate a portfolio (diff --data, compare)."""
    f = _engine_options(f)
    f = click.option(
        "--chunk-rows",
        type=click.IntRange(1),
        help="Rows per chunk for --engine chunked (default: 500,000).",
    )(f)
    return click.option(
        "--engine",
        type=click.Choice(["local", "chunked", "spark", "dask"]),
        default="local",
        show_default=True,
        help="Rate the portfolio in memory (local), or a Parquet dataset (a file, a directory, a glob; "
        "for spark also s3a://… and other URLs) in chunks, on Spark or on Dask: the same output.",
    )(f)


def _engine_of(
    engine: str, master: str | None, scheduler: str | None, partitions: int | None, chunk_rows: int | None
) -> Any:
    from .scale.engines import DEFAULT_CHUNK_ROWS, Engine

    if engine == "local" and (master or scheduler or partitions or chunk_rows):
        raise click.UsageError(
            "--master, --scheduler, --partitions and --chunk-rows go with --engine chunked|spark|dask"
        )
    return Engine(engine, master, scheduler, partitions, chunk_rows or DEFAULT_CHUNK_ROWS)


@main.command()
@click.argument("book")
@click.argument("data", type=click.Path())
@click.option(
    "-o",
    "--output",
    type=click.Path(),
    help="Write results to OUT.csv, OUT.json, OUT.jsonl, OUT.parquet or OUT.xlsx (by extension). "
    "With --engine chunked|spark|dask (or --chunk-rows) also a directory, DIR/ or a name without an "
    "extension: one Parquet file per partition (part-00000.parquet, …), written by the executors or "
    "workers themselves (the driver never holds the results; rows of a partition in input order).",
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(1),
    help="Rate a Parquet dataset larger than memory (DATA: a .parquet file, a directory or a glob) "
    "in chunks of about this many rows; needs -o OUT.parquet|OUT.csv.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "chunked", "spark", "dask"]),
    default="local",
    show_default=True,
    help="Where to rate: local (in memory), or a Parquet dataset in chunks (chunked, = --chunk-rows), "
    "on Spark or on Dask (DATA may then be a URL: s3a://…, hdfs://…, file://…); the same bytes as "
    "the in-memory run; needs -o. docs/scale.md.",
)
@_engine_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["summary", "json", "csv"]),
    default="summary",
    show_default=True,
    help="What to print on stdout: a summary, or all results as JSON/CSV.",
)
@click.option(
    "--max-issues", type=click.IntRange(0), default=20, show_default=True, help="How many data problems to list."
)
@click.option(
    "--what-it-takes",
    "what",
    is_flag=True,
    help="Add columns: next better/worse level, margins, and the emissions cut that reaches the "
    "better level with benchmarks held fixed (about 30 extra evaluations of the batch).",
)
@click.option(
    "--mapping", type=click.Path(dir_okay=False), help="Column mapping file (YAML): provider headers → inputs."
)
@click.option("--encoding", help="Text encoding of a CSV (default: UTF-8 with or without BOM, else GB18030).")
@click.option("--delimiter", help="CSV delimiter (default: sniffed among , ; and tab).")
@click.option("--thousands", help="Thousands separator in numbers (default: ',' where unambiguous; '' none).")
@click.option("--sheet", help="Excel sheet name or 0-based index (default: the first).")
@click.option(
    "--id-check",
    type=click.Choice(["warn", "error", "off"]),
    default="warn",
    show_default=True,
    help="Unified social credit codes (GB 32100-2015): warn, or error (the row is unrated), or off.",
)
@click.option("--missing", "missing", multiple=True, help="An extra missing-value token (repeatable).")
@click.option(
    "--any-jurisdiction",
    is_flag=True,
    help="Also rate firms outside the divisions the rulebook declares (jurisdiction) and count them in its "
    "peer groups; recorded per row (jurisdiction, fallbacks columns). Default: they are unrated.",
)
@click.option(
    "--benchmarks",
    "benchmarks_file",
    type=click.Path(dir_okay=False),
    help="Rate against the benchmark tables of FILE (written by --export-benchmarks with the same rulebook) "
    "instead of this data's own peer groups: one firm or a small portfolio against its city.",
)
@click.option(
    "--export-benchmarks",
    "export_file",
    type=click.Path(dir_okay=False),
    help="Write the run's benchmark tables to FILE (JSON: rulebook hash, data years, peer counts, exact values).",
)
@_ledger_options
def rate(
    book: str,
    data: str,
    output: str | None,
    chunk_rows: int | None,
    engine: str,
    master: str | None,
    scheduler: str | None,
    partitions: int | None,
    fmt: str,
    max_issues: int,
    what: bool,
    mapping: str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    thousands: str | None = None,
    sheet: str | None = None,
    id_check: str = "warn",
    missing: tuple[str, ...] = (),
    any_jurisdiction: bool = False,
    benchmarks_file: str | None = None,
    export_file: str | None = None,
    **ledger: Any,
) -> None:
    """Rate every firm-year in DATA with BOOK.

    Prints the rating distribution, what each level means for lending (rate, credit policy,
    services, subsidy) and every data problem found (file, row, column). Bad rows
    never stop the batch: they are rated where the rulebook allows, and `unrated` with the
    reason otherwise (see the `status` and `reasons` columns). Every default taken is listed in
    the `defaults` column.

    DATA is CSV/TSV, JSON, JSON Lines, Parquet or Excel .xlsx. The data contract (columns,
    missing-value tokens, mapping files, identifiers, encodings, jurisdiction, benchmark files):
    docs/data-contract.md.

    A rulebook that declares its jurisdiction (GB/T 2260 divisions) rates only the firms in it:
    the others are `unrated` (outside jurisdiction) and left out of its peer groups. A rating that
    used a placeholder (unpublished) benchmark value is marked in the `provisional` column.
    """
    recording = any(v is not None and v is not False for k, v in ledger.items() if k != "hash_alg")
    if (engine != "local" or chunk_rows is not None) and (any_jurisdiction or benchmarks_file or export_file):
        raise click.UsageError(
            "--any-jurisdiction, --benchmarks and --export-benchmarks work with the local runner only "
            "(not with --engine or --chunk-rows)"
        )
    if any_jurisdiction and recording:
        raise click.UsageError(
            "--any-jurisdiction runs are not recorded in the ledger (its replay rates by jurisdiction)"
        )
    if recording:
        _ledger_checked(ledger, data, local=engine == "local" and chunk_rows is None)
    if engine in ("spark", "dask"):
        from . import load
        from .scale.engines import rate_on

        if fmt != "summary" or what or chunk_rows is not None:
            raise click.UsageError(
                "--engine writes its results to -o only (no --format, --what-it-takes, --chunk-rows)"
            )
        line = rate_on(engine, load(book), data, output, master=master, scheduler=scheduler, partitions=partitions)
        click.echo(line, err=True)
        return
    if master or scheduler or partitions:
        raise click.UsageError("--master, --scheduler and --partitions go with --engine spark|dask")
    if output and engine == "local" and chunk_rows is None:
        from .scale.sink import is_parts_dir

        if is_parts_dir(output):
            raise click.UsageError(
                f"-o {output}: a directory (one Parquet file per partition) goes with --engine "
                "chunked|spark|dask or --chunk-rows; in memory give -o OUT.parquet, .csv, .json, .jsonl or .xlsx"
            )
    if engine == "chunked" or chunk_rows is not None:
        from .scale.engines import DEFAULT_CHUNK_ROWS

        chunk_rows = chunk_rows or DEFAULT_CHUNK_ROWS
        from . import load
        from .scale.chunked import rate_command, summary

        if fmt != "summary" or what:
            raise click.UsageError("--chunk-rows writes its results to -o only (no --format json/csv, --what-it-takes)")
        plan = load(book)
        run = rate_command(plan, data, output, chunk_rows, max_issues, _console(stderr=True))
        for line in summary(run, plan):
            click.echo(line, err=True)
        _chunked_incentives(plan, run)
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .io.formats import MISSING_TOKENS, ReadOptions

    read_options = ReadOptions(
        encoding=encoding,
        delimiter="\t" if delimiter in ("\\t", "tab") else delimiter,
        thousands=thousands,
        sheet=int(sheet) if sheet is not None and sheet.isdigit() else sheet,
        missing=(*MISSING_TOKENS, *missing),
        id_check=id_check,
    )
    from . import load
    from .api import rate as rate_api
    from .pipeline import PHASES

    err = _console(stderr=True)
    plan = load(book)
    show_progress = err.is_terminal and Path(data).is_file() and Path(data).stat().st_size > 5_000_000
    steps = [*PHASES, "write"] if output else list(PHASES)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not show_progress,
    ) as progress:
        task = progress.add_task(f"reading {data}", total=len(steps))

        def tick(phase: str, done: int, total: int) -> None:
            following = steps[steps.index(phase) + 1] if phase in steps[:-1] else phase
            progress.update(task, completed=steps.index(phase) + 1, description=following)

        results = rate_api(
            plan,
            data,
            progress=tick,
            mapping=mapping,
            read_options=read_options,
            benchmarks=benchmarks_file,
            any_jurisdiction=any_jurisdiction,
        )
        if what:
            from .analysis.whatif import columns

            results.columns.update(columns(plan, results))
        if output:
            progress.update(task, description=f"writing {output}")
            _write_or_fail(results, output)
            progress.update(task, completed=len(steps))
    if fmt == "json":  # written chunk by chunk: memory does not grow with the text
        results.write_json(sys.stdout)
    elif fmt == "csv":
        sys.stdout.flush()
        results.write_csv(sys.stdout.buffer)
        sys.stdout.buffer.flush()
    if export_file:
        from .api import export_benchmarks

        export_benchmarks(results, export_file)
    from .render.text import contract_summary, rate_summary

    console = err if fmt != "summary" else _console()
    rate_summary(console, results, data, output, max_issues)
    contract_summary(console, results, benchmarks_file, export_file)
    if recording:
        from .ledger.cli import record_from_rate

        record_from_rate(book, data, results, what, ledger)


def _ledger_checked(ledger: dict[str, Any], data: str, local: bool) -> None:
    """``rate``'s ledger options, checked before any rating work (the ledger itself checks them only
    when it records the run: after the rating, with -o already written): the URL's form, a
    correction's reason, the signing key. The ledger is not opened here (that would create it)."""
    from .ledger.cli import resolve_url
    from .ledger.db import normalise_url
    from .ledger.errors import LedgerError
    from .ledger.record import check_correction

    url = ledger.get("ledger_url")
    if url is None:
        raise click.UsageError("--supersedes, --reason, --no-store-rows and --sign-key need --ledger")
    if not local:
        raise click.UsageError(
            "--ledger records runs of the local runner only (not with --engine chunked|spark|dask or --chunk-rows)"
        )
    try:
        normalise_url(resolve_url(url, data))
    except LedgerError as exc:
        raise LedgerError(f"--ledger: {exc}") from None
    check_correction(ledger.get("supersedes"), ledger.get("reason"))
    if ledger.get("sign_key") or ledger.get("sign_key_env"):
        _signing_key(ledger.get("sign_key"), ledger.get("sign_key_env"), ("--sign-key", "--sign-key-env"))


def _signing_key(key_file: str | None, key_env: str | None, options: tuple[str, str]) -> Any:
    """The Ed25519 private key of the command's ``options`` (its key-file and key-variable options,
    named in the messages; the ledger's ``load_private_key``); a file holding the public key instead
    is said to be one."""
    from .ledger.errors import LedgerError
    from .ledger.signing import load_private_key, load_public_key

    def public(path: str) -> bool:
        try:
            load_public_key(path)
        except (LedgerError, OSError, ValueError):
            return False
        return True

    try:
        return load_private_key(key_file=key_file, key_env=key_env, options=options)
    except LedgerError:
        if key_file and not key_env and Path(key_file).is_file() and public(key_file):
            raise LedgerError(
                f"{options[0]} {key_file} is a public key: give the private key "
                "(`ruleengine ledger keygen --private FILE`)"
            ) from None
        raise


def _chunked_incentives(plan: Any, run: Any) -> None:
    """`rate --chunk-rows`: what each level means for lending (issue #19.4; continuous pricing
    shows no per-firm range here, the run keeps only the distribution)."""
    from .render.text import incentive_table, level_terms

    if plan.incentives and str(plan.incentives["rating"]) == plan.primary:
        incentive_table(_console(stderr=True), plan, level_terms(plan, run.distribution))


@main.command()
@click.argument("book")
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--firm", required=True, help="firm_id of the firm to explain.")
@click.option("--year", type=int, help="Reporting year (default: the firm's latest).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True)
@click.option(
    "--all", "show_all", is_flag=True, help="Text: show every value of the calculation (zero and unused ones too)."
)
@click.option(
    "--benchmarks",
    "benchmarks_file",
    type=click.Path(dir_okay=False),
    help="Rate against the benchmark tables of FILE (rate --export-benchmarks, same rulebook).",
)
@click.option(
    "--any-jurisdiction", is_flag=True, help="Also rate firms outside the rulebook's jurisdiction (recorded)."
)
def explain(
    book: str,
    data: str,
    firm: str,
    year: int | None,
    fmt: str,
    show_all: bool,
    benchmarks_file: str | None,
    any_jurisdiction: bool,
) -> None:
    """Show why one firm got its rating, and the audit trail behind it.

    The text starts with what a credit officer needs: the firm (name, industry with its GB/T 4754
    name, city), the decision and the numbers and band or condition behind it, the incentive and
    what it opens (with this borrower's interest effect when the data has loan_amount_10k_cny),
    what it would take to move up, last year's rating and what changed, and data quality
    (defaults taken, fallbacks, where acquired inputs came from). Then the calculation: every
    formula with its numbers; zero, missing and unused values are folded unless --all.
    JSON (verifiable with `ruleengine verify`) and Markdown carry the same content in full.
    With --benchmarks FILE the firm is rated against the exported tables of an earlier run."""
    from .api import explain as explain_api
    from .render.text import trace_markdown, trace_text

    trace = explain_api(book, data, firm, year, benchmarks=benchmarks_file, any_jurisdiction=any_jurisdiction)
    if fmt == "json":
        sys.stdout.write(trace.to_json())
    elif fmt == "markdown":
        sys.stdout.write(trace_markdown(trace))
    else:
        trace_text(_console(), trace, show_all)


@main.command()
@click.argument("trace_file", metavar="FILE", type=click.Path(exists=True, dir_okay=False))
@click.option("--book", help="Rulebook to replay a trace with (default: the one named in the trace).")
@click.option(
    "--public-key",
    metavar="KEY",
    help="Check FILE's signature (FILE.sig) with this Ed25519 public key you trust: a PEM file or raw hex. "
    "Needed for a report; for a trace it adds the signature to the checks.",
)
@click.option(
    "--signature", type=click.Path(dir_okay=False), help="The signature file (default: FILE.sig next to FILE)."
)
@click.option(
    "--data",
    type=click.Path(dir_okay=False),
    help="A signed report: the data it was made from, to make it again (default: the file it names, next to it).",
)
@click.option("--no-recompute", is_flag=True, help="A signed report: check signature and digest only.")
def verify(
    trace_file: str,
    book: str | None,
    public_key: str | None,
    signature: str | None,
    data: str | None,
    no_recompute: bool,
) -> None:
    """Verify a trace (explain --format json) or a signed trace or report (HTML/PDF).

    A trace: re-rates the traced firm's input rows (kept in the trace) with the benchmark values
    it was given, and compares every value, level and the status. With --public-key (or for a
    report, which needs it): first the Ed25519 signature in FILE.sig (written by `ruleengine sign`
    or `report --sign-key`) with the key you trust, then the file's digest against the signed one,
    then recomputation (a report is made again from the recipe signed with it and its data, and
    compared byte for byte). Exit code 1 names the first check that failed.
    """
    from .analysis.trace import TraceError
    from .analysis.trace import verify as verify_trace

    path = Path(trace_file)
    if not path.is_file():
        raise DataError(f"{trace_file}: no such file")
    is_report = path.suffix.lower() in (".html", ".htm", ".pdf")
    if public_key is not None or is_report:
        if public_key is None:
            raise click.UsageError("a report is verified by its signature: give --public-key KEY (the signer's)")
        _verify_signed(path, public_key, signature, data, book, not no_recompute)
        return
    if path.stat().st_size > 256 * 2**20:
        raise DataError(f"{trace_file}: {path.stat().st_size:,} bytes is too large for a trace (256 MiB at most)")
    try:
        trace = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{trace_file}: not a ruleengine trace (not UTF-8 text at byte {exc.start})") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise DataError(f"{trace_file}: not a ruleengine trace (not JSON: {exc})") from None
    from .ledger.artifacts import trace_rulebook_mismatch

    why = trace_rulebook_mismatch(trace, book)  # another rulebook: one line, not every field it changes
    if why:
        click.echo(f"mismatch: {why}", err=True)
        sys.exit(EXIT_ERROR)
    try:
        checked, problems = verify_trace(trace, book)
    except TraceError as exc:
        raise DataError(f"{trace_file}: {exc}") from None
    meta = trace["rulebook"]
    if problems:
        click.echo(f"mismatch: {problems[0]}", err=True)
        for p in problems[1:]:
            click.echo(f"  also: {p}", err=True)
        sys.exit(EXIT_ERROR)
    click.echo(
        f"verified: {trace['firm_id']} {trace['year']} under {meta['id']} {meta['version']} "
        f"({meta['hash']}): {checked} values match"
    )


def _verify_signed(
    path: Path, public_key: str, signature: str | None, data: str | None, book: str | None, recompute: bool
) -> None:
    from .ledger.artifacts import verify as verify_artifact
    from .ledger.signing import load_public_key

    verdict = verify_artifact(
        path, load_public_key(public_key), sig_path=signature, data=data, book=book, recompute=recompute
    )
    for line in verdict.passed:
        click.echo(f"  ok: {line}")
    if not verdict.ok:
        click.echo(f"mismatch: {verdict.failed[0]}", err=True)
        for p in verdict.failed[1:]:
            click.echo(f"  also: {p}", err=True)
        sys.exit(EXIT_ERROR)
    click.echo(
        f"verified: {path.name} (signed {verdict.artifact}): signature, digest and recomputation hold"
        if recompute or verdict.artifact == "trace"
        else f"verified: {path.name} (signed {verdict.artifact}): signature and digest hold (not recomputed)"
    )


@main.command("sign")
@click.argument("file", metavar="FILE", type=click.Path(exists=True, dir_okay=False))
@click.option("--key", "key_file", type=click.Path(dir_okay=False), help="The Ed25519 private key file (PEM PKCS#8).")
@click.option(
    "--key-env",
    metavar="NAME",
    help="The NAME of an environment variable holding the private key (PEM, or the 32-byte seed as hex/base64): "
    "the key stays off the command line and out of shell history.",
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Where to write the signature (default FILE.sig)."
)
def sign_cmd(file: str, key_file: str | None, key_env: str | None, output: str | None) -> None:
    """Sign a trace (explain --format json) or a report (HTML/PDF) with an operator-held Ed25519 key.

    Writes a detached signature (FILE.sig: the file's SHA-256, what it is, the public key, the
    signature); the file itself is unchanged. Check it with `ruleengine verify FILE --public-key KEY`.
    A report signed here has no recipe, so verify can check its signature and digest but not make it
    again: sign reports with `ruleengine report ... --sign-key` for that. The private key is never
    printed or written anywhere.
    """
    from .ledger.artifacts import sign
    from .ledger.signing import signer

    if not key_file and not key_env:
        raise click.UsageError("give the private key: --key FILE or --key-env NAME")
    if output and Path(output).resolve() == Path(file).resolve():
        raise click.BadParameter("the signature would overwrite the file it signs; name another file", param_hint="-o")
    out = sign(file, signer(_signing_key(key_file, key_env, ("--key", "--key-env"))), out=output)
    click.echo(f"signed {file}: {out}")


@main.command()
@click.argument("old")
@click.argument("new")
@click.option(
    "--data",
    help="A portfolio to measure the impact on (rating migration, lending, attribution): a data file; "
    "with --engine chunked|spark|dask a Parquet dataset (for spark also a URL).",
)
@_analysis_engine_options
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the change report: change.html or .pdf.")
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True, help="Language of -o.")
def diff(
    old: str,
    new: str,
    data: str | None,
    engine: str,
    chunk_rows: int | None,
    master: str | None,
    scheduler: str | None,
    partitions: int | None,
    fmt: str,
    output: str | None,
    lang: str,
) -> None:
    """What changed between two rulebooks, on meaning, and what it does to a portfolio.

    Reformatting (key order, whitespace, comments, redundant parentheses) is not a change. Each
    change is shown with its location in both files. With --data: old × new rating migration,
    firms that moved (by industry division and size), the change in rate adjustments and, when
    the data has loan_amount_10k_cny, the annual interest effect in CNY; and which change moved how
    many firms, applied one at a time and in both orders.

    With --engine chunked|spark|dask every rulebook (old, new and each change applied alone and
    in order) rates the portfolio where it lives: a province sees a method change on all its firms.
    The output is the same as the in-memory run's.
    """
    from .analysis.diff import run, to_json, to_markdown
    from .render.text import diff_text

    eng = _engine_of(engine, master, scheduler, partitions, chunk_rows)
    if data is not None and eng.local:
        _local_file(data, "--data")
    elif data is None and not eng.local:
        raise click.UsageError("--engine rates a portfolio: give --data")
    result = run(old, new, data, engine=eng)
    if output:  # the change report (issue #15), ruleengine/report/
        from .report import write_change

        click.echo(f"wrote {write_change(result, output, lang)}")
        return
    if fmt == "json":
        sys.stdout.write(to_json(result))
    elif fmt == "markdown":
        sys.stdout.write(to_markdown(result))
    else:
        diff_text(_console(), result)


@main.command()
@click.argument("book", nargs=-1, required=True)
@click.option(
    "--data",
    required=True,
    help="The portfolio to rate under every method: a data file; with --engine chunked|spark|dask a "
    "Parquet dataset (for spark also a URL).",
)
@_analysis_engine_options
@click.option("--top", default=10, show_default=True, help="How many largest differences to list per pair.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True)
def compare(
    book: tuple[str, ...],
    data: str,
    engine: str,
    chunk_rows: int | None,
    master: str | None,
    scheduler: str | None,
    partitions: int | None,
    top: int,
    fmt: str,
) -> None:
    """Rate the same firms under several methods and show where they disagree, and why.

    Per method: the rating distribution. Per pair: rank agreement (Spearman, Kendall tau-b on each
    method's rated value), a cross-tab on a common scale (the national draft's crosswalk), and the
    firms whose relative position differs most, with the reason: boundary (emissions one method
    leaves out), benchmark (a coarser peer group or fallback) or scale.

    With --engine chunked|spark|dask every method rates the dataset where it lives and only a few
    columns per firm-year come back; the output is the same as in memory (docs/scale.md).
    """
    from .analysis.compare import run, to_json, to_markdown
    from .render.text import compare_text

    if len(book) < 2:
        raise click.UsageError("compare needs at least two rulebooks")
    eng = _engine_of(engine, master, scheduler, partitions, chunk_rows)
    if eng.local:
        _local_file(data, "--data")
    result = run(list(book), data, top, engine=eng)
    # a pair of methods that rate no firm-year in common (each only its own jurisdiction) has no
    # rank agreement: said so in one line, not printed as nan statistics (JSON: null; Markdown: n/a).
    # Not an error: each method's own distribution is still the comparison's first table
    apart = [f"{p['a']} vs {p['b']}" for p in result["pairs"] if not p["both_rated"]]
    if fmt == "json":
        sys.stdout.write(to_json(result))
    elif fmt == "markdown":
        sys.stdout.write(to_markdown(result))
    else:
        compare_text(_console(), {**result, "pairs": [p for p in result["pairs"] if p["both_rated"]]})
        if apart:
            click.echo(f"no firm-year rated by both (nothing to compare): {', '.join(apart)}")


def _local_file(path: str, option: str) -> None:
    """An in-memory run reads one data file: click's wording for a path that is not one."""
    p = Path(path)
    if not p.exists():
        raise click.BadParameter(f"Path '{path}' does not exist.", param_hint=f"'{option}'")
    if p.is_dir():
        raise click.BadParameter(
            f"Path '{path}' is a directory (a Parquet dataset is read with --engine chunked|spark|dask).",
            param_hint=f"'{option}'",
        )


def _years(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        years = sorted({int(y) for y in value.split(",") if y.strip()})
    except ValueError:
        raise click.BadParameter("give years as a comma-separated list, e.g. 2022,2023") from None
    if not years or any(y < 1990 or y > 2100 for y in years):
        raise click.BadParameter("years must lie between 1990 and 2100")
    return years


@main.command()
@click.option("--firms", type=click.IntRange(1, 20_000_000), default=300, show_default=True, help="Number of firms.")
@click.option(
    "--years",
    default="2022,2023",
    show_default=True,
    callback=_years,
    help="Comma-separated reporting years; every firm reports every year.",
)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Random seed: same seed, same file.")
@click.option(
    "--messy",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Fraction of rows given one defect each (blank, negative, non-numeric, duplicate...).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="OUT.csv, OUT.json, OUT.jsonl or OUT.parquet.",
)
def sample(firms: int, years: list[int], seed: int, messy: float, output: str) -> None:
    """Generate a realistic synthetic firm-year portfolio (DATA.md columns).

    GB/T 4754 industries with realistic energy mixes and intensities (cement, steel, chemicals,
    textiles next to light industry), many SMEs, consecutive years with plausible change, some
    green power, rooftop solar, vehicles and process emissions; optionally messy rows.
    """
    from .io import sample as gen

    if Path(output).suffix.lower() not in (".csv", ".json", ".jsonl", ".parquet"):
        raise click.BadParameter("use a .csv, .json, .jsonl or .parquet file", param_hint="--output")
    cols = gen.generate(firms, years, seed=seed, messy=messy)
    try:
        gen.write(cols, output)
    except OSError as exc:
        raise _cannot_write(output, exc) from None
    n = len(next(iter(cols.values())))
    click.echo(
        f"wrote {n:,} firm-years ({firms:,} firms × {len(years)} years, seed {seed}, messy {messy:g}) to {output}"
    )


@main.command("test")
@click.argument("book", nargs=-1, required=True)
@click.option("-k", "select", help="Run only the cases whose name contains this text.")
def test_cmd(book: tuple[str, ...], select: str | None) -> None:
    """Run the test cases written in the rulebooks (their `tests:` section).

    Each case rates its input rows and compares the expected outputs (with tolerances);
    a failing case shows expected against actual. Exit code 1 if any case fails, or if -k
    selects no case.
    """
    from . import load
    from .analysis.authortests import run_cases

    total = failed = 0
    for name in book:
        plan = load(name)
        outcomes = run_cases(plan, select)
        if not plan.tests:
            click.echo(f"{plan.file}: no test cases")
        elif not outcomes:
            click.echo(f"{plan.file}: no test case name contains {select!r}")
        for oc in outcomes:
            total += 1
            if oc.ok:
                click.echo(f"PASS {plan.id}: {oc.name}")
            else:
                failed += 1
                click.echo(f"FAIL {plan.id}: {oc.name}  ({oc.location})")
                for line in oc.diff:
                    click.echo(f"    {line}")
    if select is not None and not total:
        click.echo(f"error: -k {select!r} matched no test case; run without -k to list them all", err=True)
        sys.exit(EXIT_ERROR)
    click.echo(f"{total - failed} passed, {failed} failed")
    if failed:
        sys.exit(EXIT_ERROR)


# --- data acquisition (issue #14): meter readings and tax e-invoices -> firm-year panel -------------


@main.group()
def acquire() -> None:
    """Turn raw meter readings or tax e-invoices into the firm-year data contract.

    \b
      ruleengine acquire meters readings/*.parquet --register register.yaml -o firm_years.parquet
      ruleengine acquire invoices invoices/ --mapping mapping.yaml -o firm_years.parquet
      ruleengine acquire crossval meters.parquet invoices.parquet -o firm_years.parquet
      ruleengine acquire sample DIR        realistic meter exports and invoices with defects

    Every column filled comes with X_source, X_coverage, X_policy, ... columns; the quality report
    (--report, or stdout) lists what was found, where, and what was done. `ruleengine rate` reads
    the output directly.
    """


def _acq_report_out(acq: Any, output: str, report: str | None, fmt: str, strict: bool) -> None:
    from .acquire.meters import write_table

    write_table(acq.table, Path(output))
    text = acq.report.render(fmt)
    counts = acq.report.counts()
    if report:
        try:
            Path(report).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise _cannot_write(report, exc) from None
        click.echo(
            f"wrote {acq.table.num_rows} firm-year(s) to {output}; report {report}: "
            f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} note(s)"
        )
    else:
        click.echo(text, nl=False)
    if strict and counts["error"]:
        sys.exit(1)


_ACQ_FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
    help="Format of the quality report.",
)
_ACQ_REPORT = click.option(
    "--report", type=click.Path(dir_okay=False), help="Write the quality report here (default: stdout)."
)
_ACQ_OUT = click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="OUT.parquet or OUT.csv."
)
_ACQ_STRICT = click.option("--strict", is_flag=True, help="Exit 1 when the report holds any error.")
_ACQ_YEAR = click.option(
    "--year", type=click.IntRange(1990, 2100), help="Reporting year (default: the register/mapping's)."
)


@acquire.command("meters")
@click.argument("sources", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--register", required=True, type=click.Path(dir_okay=False), help="Meter register YAML.")
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes for independent groups of files (files sharing no meter).",
)
@_ACQ_YEAR
@_ACQ_OUT
@_ACQ_REPORT
@_ACQ_FORMAT
@_ACQ_STRICT
def acquire_meters_cmd(
    sources: tuple[str, ...],
    register: str,
    jobs: int,
    year: int | None,
    output: str,
    report: str | None,
    fmt: str,
    strict: bool,
) -> None:
    """Meter exports (long or 96-point wide; CSV, Parquet, xlsx) -> firm-year energy."""
    from .acquire.meters import acquire_meters

    _not_an_input([*sources, register], output=output, report=report)
    _acq_report_out(acquire_meters(list(sources), register, year, jobs=jobs), output, report, fmt, strict)


@acquire.command("invoices")
@click.argument("sources", nargs=-1, required=True, type=click.Path())
@click.option("--mapping", required=True, type=click.Path(dir_okay=False), help="Invoice mapping YAML (firms, rules).")
@_ACQ_YEAR
@_ACQ_OUT
@_ACQ_REPORT
@_ACQ_FORMAT
@_ACQ_STRICT
def acquire_invoices_cmd(
    sources: tuple[str, ...], mapping: str, year: int | None, output: str, report: str | None, fmt: str, strict: bool
) -> None:
    """数电票 XML, OFD and CSV/xlsx invoice ledgers (files or folders) -> firm-year fuels and energy."""
    from .acquire.invoices import acquire_invoices

    _not_an_input([*sources, mapping], output=output, report=report)
    _acq_report_out(acquire_invoices(list(sources), mapping, year), output, report, fmt, strict)


@acquire.command("crossval")
@click.argument("meters", type=click.Path(dir_okay=False))
@click.argument("invoices", type=click.Path(dir_okay=False))
@click.option(
    "--tolerance",
    type=click.FloatRange(0, 1),
    default=0.05,
    show_default=True,
    help="Largest relative difference |m - i| / max(m, i) accepted.",
)
@click.option(
    "--prefer",
    type=click.Choice(["meters", "invoices"]),
    default="meters",
    show_default=True,
    help="Source used where both cover a firm-year and carrier.",
)
@_ACQ_OUT
@_ACQ_REPORT
@_ACQ_FORMAT
@_ACQ_STRICT
def acquire_crossval_cmd(
    meters: str, invoices: str, tolerance: float, prefer: str, output: str, report: str | None, fmt: str, strict: bool
) -> None:
    """Compare meter- and invoice-based firm-years; write one panel saying which source was used."""
    from .acquire.crossval import crossvalidate

    _not_an_input([meters, invoices], output=output, report=report)
    _acq_report_out(crossvalidate(meters, invoices, tolerance=tolerance, prefer=prefer), output, report, fmt, strict)


@acquire.command("sample")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--firms", type=click.IntRange(1, 100_000), default=20, show_default=True, help="Number of firms.")
@click.option("--year", type=click.IntRange(1990, 2100), default=2024, show_default=True)
@click.option(
    "--seed", type=click.IntRange(0), default=0, show_default=True, help="Random seed: same seed, same files."
)
@click.option("--defects/--clean", default=True, show_default=True, help="Inject the real-world defects.")
def acquire_sample_cmd(directory: str, firms: int, year: int, seed: int, defects: bool) -> None:
    """Write realistic meter exports, a register, invoices (XML, OFD, ledger) and a mapping."""
    from .acquire.samplegen import generate_sample

    try:
        written = generate_sample(directory, firms=firms, year=year, seed=seed, defects=defects)
    except OSError as exc:
        raise _cannot_write(exc.filename or directory, exc) from None
    for kind, paths in written.items():
        shown = ", ".join(str(p) for p in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        click.echo(f"{kind}: {len(paths)} file{'s' if len(paths) != 1 else ''} ({shown})")


# -- reports (issue #15): ruleengine/report/ ---------------------------------------------------------


def _report_file(output: str) -> None:
    """A single report's -o: the extension picks the format (checked before any rating work)."""
    if Path(output).suffix.lower() not in (".html", ".htm", ".pdf"):
        raise click.BadParameter("write report.html or report.pdf (the extension picks the format)", param_hint="-o")


@main.command("report")
@click.argument("book")
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--firm", help="firm_id of the firm to report on.")
@click.option("--all", "all_firms", is_flag=True, help="A report for every firm, into the directory -o DIR/.")
@click.option("--portfolio", is_flag=True, help="The portfolio report (for a bank) instead of a firm report.")
@click.option("--year", type=int, help="Reporting year (default: each firm's latest; the portfolio's latest).")
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True, help="Report language.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "pdf"]),
    default="html",
    show_default=True,
    help="File format with --all (a single report takes it from the -o extension).",
)
@click.option("--date", "date", help="Report date YYYY-MM-DD (default: the end of the reporting year, never today).")
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True, help="Processes writing --all.")
@click.option(
    "--appendix/--no-appendix",
    default=True,
    show_default=True,
    help="Firm reports: include the full audit trail as an appendix. --no-appendix leaves it out (a line says "
    "how to make it with `ruleengine explain`; the digest and QR code stay): a PDF of one or two pages fewer, "
    "about a fifth faster for --all.",
)
@click.option(
    "-o", "--output", required=True, type=click.Path(), help="report.html or report.pdf; a directory with --all."
)
@click.option(
    "--sign-key",
    type=click.Path(dir_okay=False),
    help="Sign the report (--firm or --portfolio) with this Ed25519 private key: writes OUTPUT.sig with the recipe "
    "(rulebook, data digest, options) so that `ruleengine verify` can make it again.",
)
@click.option("--sign-key-env", metavar="NAME", help="As --sign-key, the key in environment variable NAME.")
def report_cmd(
    book: str,
    data: str,
    firm: str | None,
    all_firms: bool,
    portfolio: bool,
    year: int | None,
    lang: str,
    fmt: str,
    date: str | None,
    jobs: int,
    appendix: bool,
    output: str,
    sign_key: str | None,
    sign_key_env: str | None,
) -> None:
    """Write a rating report people read: a firm's (--firm), every firm's (--all) or a portfolio's.

    HTML is one self-contained file (inline CSS and SVG charts, no JavaScript, no network); PDF
    embeds its fonts (CJK included). Needs the extra: pip install 'ruleengine[report]'.
    """
    from . import report as rep

    if sum((firm is not None, all_firms, portfolio)) != 1:
        raise click.UsageError("give exactly one of --firm ID, --all or --portfolio")
    if date is not None:
        import datetime as _dt
        import re as _re

        try:  # the form, and a day the calendar has (2023-02-30 was printed in the report as given)
            ok = bool(_re.fullmatch(r"\d{4}-\d{2}-\d{2}", date)) and bool(_dt.date.fromisoformat(date))
        except ValueError:
            ok = False
        if not ok:
            raise click.BadParameter(f"{date!r}: use a date YYYY-MM-DD that the calendar has", param_hint="--date")
    if not all_firms:
        _report_file(output)
    sign = None
    if sign_key or sign_key_env:
        if all_firms:
            raise click.UsageError("--sign-key signs one report (--firm or --portfolio); sign --all reports one by one")
        from .ledger.signing import signer

        sign = signer(
            _signing_key(sign_key, sign_key_env, ("--sign-key", "--sign-key-env"))
        )  # a bad key fails before rating
    # the what-it-takes columns (about 30 evaluations of the batch) serve the portfolio report's
    # "closest to a band edge"; a firm's page takes its own from the trace
    rated = rep.rate_portfolio(book, data, what_it_takes=portfolio)
    if firm is not None or portfolio:
        if firm is not None:
            out = rep.write_firm(rated, firm, year, output, lang, date, appendix)
        else:
            out = rep.write_portfolio(rated, output, year, lang, date)
        click.echo(f"wrote {out}")
        if sign is not None:
            from .ledger.artifacts import report_recipe
            from .ledger.artifacts import sign as sign_file

            kind = "firm" if firm is not None else "portfolio"
            recipe = report_recipe(book, rated.plan, data, kind, firm, year, lang, date, appendix)
            click.echo(f"signed: {sign_file(out, sign, artifact='report', recipe=recipe)}")
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        n = len({str(f) for f in rated.results["firm_id"].tolist()})
        years = sorted({int(y) for y in rated.results["year"].tolist() if y is not None})
        if not n or (year is not None and year not in years):  # no report to write: say so, make no folder
            what = f"no firm-year in {year} (its years: {', '.join(map(str, years))})" if n else "no firm-years"
            click.echo(f"error: --all wrote no report: {data} has {what}", err=True)
            sys.exit(EXIT_ERROR)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=_console(stderr=True),
            transient=True,
        ) as progress:
            task = progress.add_task(f"writing {fmt.upper()} reports", total=n)
            written = rep.write_all(
                rated,
                output,
                fmt,
                lang,
                year,
                date,
                progress=lambda k: progress.update(task, completed=k),
                jobs=jobs,
                appendix=appendix,
            )
        click.echo(f"wrote {len(written)} reports to {output}")


# --- ledger (issue #16): ruleengine ledger runs|show|history|check|replay|verify|export|keygen ---


@main.group()
@click.option(
    "-l",
    "--ledger",
    "ledger_url",
    envvar="RULEENGINE_LEDGER",
    default="ruleengine.db",
    show_default=True,
    metavar="URL",
    help="The ledger: a SQLite file path, sqlite:///FILE or postgresql://… (env RULEENGINE_LEDGER).",
)
@click.pass_context
def ledger(ctx: click.Context, ledger_url: str) -> None:
    """The ratings ledger: every recorded run, replayable and tamper-evident (docs/ledger.md)."""
    ctx.obj["ledger_url"] = ledger_url


def _open_ledger(ctx: click.Context) -> Any:
    from .ledger import open_ledger

    return open_ledger(ctx.obj["ledger_url"], create=False)


_LEDGER_FMT = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)


@ledger.command("runs")
@_LEDGER_FMT
@click.pass_context
def ledger_runs(ctx: click.Context, fmt: str) -> None:
    """List the runs, oldest first."""
    from .ledger.cli import print_runs

    print_runs(_open_ledger(ctx), fmt)


@ledger.command("show")
@click.argument("run", type=int)
@click.option("--firm", help="Show this firm's ratings in the run instead of the run's provenance.")
@_LEDGER_FMT
@click.pass_context
def ledger_show(ctx: click.Context, run: int, firm: str | None, fmt: str) -> None:
    """Show a run's provenance (or one firm's ratings in it)."""
    from .ledger.cli import print_show

    print_show(_open_ledger(ctx), run, firm, fmt)


@ledger.command("history")
@click.argument("firm")
@click.option("--edits", is_flag=True, help="List the rulebook edits behind each method change (ruleengine diff).")
@_LEDGER_FMT
@click.pass_context
def ledger_history(ctx: click.Context, firm: str, edits: bool, fmt: str) -> None:
    """A firm's ratings over years and method versions, with why each changed."""
    from .ledger.cli import print_history

    print_history(_open_ledger(ctx), firm, fmt, edits)


@ledger.command("check")
@click.pass_context
def ledger_check(ctx: click.Context) -> None:
    """Walk the hash chain; name the first broken link (exit 1)."""
    from .ledger.cli import print_check

    if not print_check(_open_ledger(ctx)):
        sys.exit(EXIT_ERROR)


@ledger.command("replay")
@click.argument("run", type=int, required=False)
@click.option(
    "--all",
    "every",
    is_flag=True,
    help="Replay every run; a run recorded with --no-store-rows (and no --data that is its input) is reported "
    "'not replayable (rows not stored)' and skipped.",
)
@click.option("--data", type=click.Path(dir_okay=False), help="The input, for a run recorded with --no-store-rows.")
@click.pass_context
def ledger_replay(ctx: click.Context, run: int | None, every: bool, data: str | None) -> None:
    """Re-rate RUN from its stored rulebook, rows and benchmark tables; prove byte-identical results.

    Exit code 1 if a replayed run differs, or if no run could be replayed at all.
    """
    from .ledger.cli import print_replay

    if (run is None) == (not every):
        raise click.UsageError("give RUN or --all")
    led = _open_ledger(ctx)
    if not print_replay(led, [r["id"] for r in led.runs()] if every else [run], data):  # type: ignore[list-item]
        sys.exit(EXIT_ERROR)


@ledger.command("verify")
@click.argument("run", type=int)
@click.option("--public-key", required=True, help="The signer's Ed25519 public key: PEM file or raw hex.")
@click.option("--replay/--no-replay", default=True, show_default=True, help="Also recompute the run.")
@click.pass_context
def ledger_verify(ctx: click.Context, run: int, public_key: str, replay: bool) -> None:
    """Check RUN's signature, its digests and (by default) its recomputation."""
    from .ledger.cli import print_verify

    print_verify(_open_ledger(ctx), run, public_key, replay)


@ledger.command("explain")
@click.argument("run", type=int)
@click.option("--firm", required=True, help="firm_id of the firm to explain.")
@click.option("--year", type=int, help="Reporting year (default: the firm's latest).")
@click.option("--data", type=click.Path(dir_okay=False), help="The input, for a run recorded with --no-store-rows.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True)
@click.pass_context
def ledger_explain(ctx: click.Context, run: int, firm: str, year: int | None, data: str | None, fmt: str) -> None:
    """The audit trail of a firm's rating as recorded in RUN (rebuilt from the stored materials)."""
    from .ledger.cli import print_explain

    print_explain(_open_ledger(ctx), run, firm, year, fmt, data)


@ledger.command("report")
@click.argument("run", type=int)
@click.option("--firm", required=True, help="firm_id of the firm to report on.")
@click.option("--year", type=int, help="Reporting year (default: the firm's latest in the run).")
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True, help="Report language.")
@click.option(
    "--appendix/--no-appendix", default=True, show_default=True, help="Include the full audit trail as an appendix."
)
@click.option("--data", type=click.Path(dir_okay=False), help="The input, for a run recorded with --no-store-rows.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="report.html or report.pdf.")
@click.pass_context
def ledger_report(
    ctx: click.Context, run: int, firm: str, year: int | None, lang: str, appendix: bool, data: str | None, output: str
) -> None:
    """A firm's rating report (HTML or PDF) as recorded in RUN, years later.

    Re-rated from the run's stored rulebook, rows and benchmark tables, so the report shows the
    recorded rating even after the rulebook or data on disk changed. Needs the extra:
    pip install 'ruleengine[report]'.
    """
    from .ledger.cli import write_report

    _report_file(output)
    write_report(_open_ledger(ctx), run, firm, year, lang, output, appendix, data)


@ledger.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write JSON Lines here (default: stdout).")
@click.option("--run", "run_id", type=int, help="Only this run.")
@click.option("--blobs", is_flag=True, help="Include the stored bytes (rulebooks, rows, tables) as base64.")
@click.pass_context
def ledger_export(ctx: click.Context, output: str | None, run_id: int | None, blobs: bool) -> None:
    """Export runs and ratings as JSON Lines."""
    from .ledger.cli import export

    led = _open_ledger(ctx)
    try:
        export(led, output, run_id, blobs)
    except OSError as exc:  # the -o file (the ledger's own errors are LedgerError)
        raise _cannot_write(output or "stdout", exc) from None


@ledger.command("keygen")
@click.option(
    "--private", "private_out", required=True, type=click.Path(dir_okay=False), help="New private key (PEM, mode 0600)."
)
@click.option("--public", "public_out", required=True, type=click.Path(dir_okay=False), help="Its public key (PEM).")
def ledger_keygen(private_out: str, public_out: str) -> None:
    """Make an Ed25519 key pair for signing runs (keep the private key out of the repository)."""
    from .ledger.signing import generate

    click.echo(f"public key {generate(private_out, public_out)} written to {public_out}")


# --- the HTTP service (issue #17): ruleengine/service/ ------------------------------------------------


@main.command("serve")
@click.option(
    "-l",
    "--ledger",
    "ledger_url",
    envvar="RULEENGINE_LEDGER",
    default="ruleengine.db",
    show_default=True,
    metavar="URL",
    help="The ledger every rating is recorded in: a SQLite file, sqlite:///FILE or postgresql://….",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port.")
@click.option(
    "--keys",
    type=click.Path(dir_okay=False),
    envvar="RULEENGINE_KEYS",
    help="API keys file (hashed keys with roles; make keys with `ruleengine service-key`). Without it "
    "every request but /v1/health is refused.",
)
@click.option(
    "--state-dir", type=click.Path(file_okay=False), help="Folder for rebuilt rulebooks (default: a temp dir)."
)
@click.option("--max-body-mb", type=click.IntRange(1, 4096), default=32, show_default=True, help="Largest body.")
@click.option("--max-rows", type=click.IntRange(1), default=200_000, show_default=True, help="Rows per request.")
@click.option("--timeout", type=click.FloatRange(0.1), default=60.0, show_default=True, help="Seconds per request.")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="Requests doing work at once, per process (others wait, then get 503).",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Server processes sharing the port and the ledger (one Python process uses one core for "
    "most of its work: 2 on a 2-core machine doubles what it can rate). Each has its own ledger "
    "writer; the hash chain stays one chain (every append takes the ledger's write lock).",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(0.1),
    default=30.0,
    show_default=True,
    help="Seconds a client may take to send its body (slower: 408).",
)
@click.option(
    "--keys-check",
    type=float,
    default=2.0,
    show_default=True,
    help="Seconds between looks at the keys file's mtime: a changed file is reloaded (a broken one is "
    "refused and the previous keys stay). 0: at every request; negative: only on SIGHUP "
    "(`kill -HUP PID` reloads at once in any case).",
)
@click.option(
    "--ledger-sync",
    type=click.Choice(["full", "normal", "journal"]),
    default="full",
    show_default=True,
    help="SQLite ledger only: how ratings are committed. full: WAL journal, synchronous=FULL: one "
    "fsync per commit (shared by the runs committed together); an answered rating survives the "
    "server being killed and a power cut. normal: WAL, no fsync per commit: survives kill -9, an OS "
    "crash or power cut may lose the last few (whole runs; the chain stays valid). journal: rollback "
    "journal, synchronous=FULL (what the CLI uses): ~10 ms of fsyncs per commit.",
)
@click.option(
    "--pin-cpus/--no-pin-cpus",
    default=True,
    show_default=True,
    help="With --processes N and at least N CPUs: each process (all its threads) on a CPU of its own, "
    "so that its threads' many hand-overs of the GIL do not move between cores (9-19% less CPU a "
    "one-firm rating at 200/s, measured). Off: the kernel places them. One process is never pinned.",
)
@click.option(
    "--warm-memory",
    "warm_memory",
    type=click.IntRange(0, 65536),
    default=0,
    show_default=True,
    metavar="MB",
    help="Each server process writes MB MiB of memory at start and keeps every page it uses, in one "
    "malloc heap for all its threads: an upload then reuses warm pages instead of page-faulting fresh "
    "ones (a fresh server's first 50,000-row upload: 0.45-0.5 s instead of 0.9-1.9 s, measured on a VM). "
    "Resident memory stays at least MB and at its high-water mark; small concurrent requests may "
    "cost a little more (one heap's lock; docs/service.md). glibc (Linux) only. 0: off.",
)
@click.option(
    "--access-log/--no-access-log",
    default=False,
    show_default=True,
    help="uvicorn's log line per request (off: it costs CPU on every request; the ledger records every "
    "bank access and every rating anyway).",
)
def serve(
    ledger_url: str,
    host: str,
    port: int,
    keys: str | None,
    state_dir: str | None,
    max_body_mb: int,
    max_rows: int,
    timeout: float,
    workers: int,
    body_timeout: float,
    keys_check: float,
    ledger_sync: str,
    pin_cpus: bool,
    access_log: bool,
    processes: int,
    warm_memory: int,
) -> None:
    """Run the HTTP API (OpenAPI at /openapi.json, interactive docs at /docs): rulebooks, rating,
    explain, reports, ledger, consent. Needs: pip install 'ruleengine[service]'. See docs/service.md."""
    try:
        from .service import ServiceConfig
        from .service import serve as run_service
    except ImportError as exc:
        raise DataError(
            f"the service needs the 'service' extra ({exc.name} is not installed): pip install 'ruleengine[service]'"
        ) from None
    cfg = ServiceConfig(
        ledger=ledger_url,
        keys=keys,
        state_dir=state_dir,
        max_body_bytes=max_body_mb * 2**20,
        max_rows=max_rows,
        request_timeout_s=timeout,
        max_concurrent=workers,
        body_timeout_s=body_timeout,
        keys_check_s=keys_check,
        ledger_sync=ledger_sync,
        warm_memory_mb=warm_memory,
    )
    run_service(cfg, host, port, access_log, processes, pin_cpus)


@main.command("service-key")
@click.argument("keys_file", type=click.Path(dir_okay=False))
@click.option("--name", required=True, help="A name for the key (logged with every request it makes).")
@click.option("--role", required=True, type=click.Choice(["firm", "bank", "regulator", "author", "admin"]))
@click.option("--firm", help="firm role: the firm_id it stands for.")
@click.option("--bank", help="bank role: the bank's id (firms grant consent to it).")
@click.option(
    "--rulebook",
    "rulebooks",
    multiple=True,
    metavar="NAME",
    help="regulator/author role: a rulebook of its jurisdiction (repeatable), by its registry name: a bundled "
    "rulebook (`ruleengine books`) or the name one is, or will be, published under (a lowercase letter, then up "
    "to 39 lowercase letters, digits or _). A path or another name shape is refused.",
)
def service_key(
    keys_file: str, name: str, role: str, firm: str | None, bank: str | None, rulebooks: tuple[str, ...]
) -> None:
    """Make an API key: its SHA-256 goes into KEYS_FILE (created 0600), the key is printed once.

    A --rulebook that is not bundled is accepted (a rulebook published to the service later takes
    that name) with a note on stderr, so that a misspelt name is seen.
    """
    from .rulebook.source import bundled_names
    from .service.keys import add_key

    click.echo(add_key(keys_file, name, role, firm=firm, bank=bank, rulebooks=rulebooks))
    for book in dict.fromkeys(rulebooks):
        if book not in bundled_names():
            click.echo(
                f"note: no bundled rulebook is named {book!r}: the key covers it once it is published "
                f"to the service under that name",
                err=True,
            )


if __name__ == "__main__":  # pragma: no cover
    main()
