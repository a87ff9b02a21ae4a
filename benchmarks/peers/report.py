"""The results-table writer: machine info, the issue #6 targets and the Markdown report
(``benchmarks/RESULTS.md``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import bench_rate as _br

from . import config
from .profiles import findings

# -- report ----------------------------------------------------------------------------------------


def machine_info(peers: set[str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    info = _br.machine_info()

    def v(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    info["openfisca"] = v("openfisca-core")
    info["zen"] = v("zen-engine")
    info["simpleeval"] = v("simpleeval")
    return info


def _rate(rows: int, seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return _br._per_second(rows, seconds)


def _s(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "–"
    r = a / b
    return f"{r:,.0f}×" if r >= 100 else f"{r:.2f}×"


def targets(results: Sequence[dict[str, Any]], cold: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue #6 targets: what was measured and whether it is met."""
    by = {r["rows"]: r for r in results}
    largest = results[-1]
    out: list[dict[str, Any]] = []
    ratio = largest["re_evaluate_s"] / largest["np_evaluate_s"]
    out.append(
        {
            "id": "eval-vs-numpy",
            "target": "batch evaluation within 1.5× of hand numpy",
            "measured": f"{ratio:.2f}× at {largest['rows']:,} rows (evaluate "
            f"{largest['re_evaluate_s']:.3f} s vs {largest['np_evaluate_s']:.3f} s, medians of "
            f"{largest['eval_runs']} runs taking turns; best runs {largest['re_evaluate_best_s']:.3f} s "
            f"vs {largest['np_evaluate_best_s']:.3f} s = "
            f"{largest['re_evaluate_best_s'] / largest['np_evaluate_best_s']:.2f}×)",
            "met": ratio <= 1.5,
        }
    )
    if "of_calculate_s" in largest:
        of = largest["of_calculate_s"]
        out.append(
            {
                "id": "vs-openfisca",
                "target": "faster than OpenFisca",
                "measured": f"OpenFisca calculate {of:.3f} s vs ruleengine evaluate "
                f"{largest['re_evaluate_s']:.3f} s at {largest['rows']:,} rows "
                f"({of / largest['re_evaluate_s']:.2f}×)",
                "met": of > largest["re_evaluate_s"],
            }
        )
    else:
        out.append(
            {
                "id": "vs-openfisca",
                "target": "faster than OpenFisca",
                "measured": "not measured (openfisca-core not installed)",
                "met": None,
            }
        )
    z = by.get(50_000) or next((r for r in reversed(results) if "zen_per_record_s" in r), None)
    if z is not None and "zen_per_record_s" in z:
        zr = z["zen_per_record_s"] / z["re_evaluate_s"]
        out.append(
            {
                "id": "vs-zen",
                "target": "≥500× faster than zen-engine at 50k",
                "measured": f"{zr:,.0f}× at {z['rows']:,} rows (zen per record "
                f"{z['zen_per_record_s']:.2f} s vs evaluate {z['re_evaluate_s']:.4f} s; "
                f"vs zen evaluate_batch {z['zen_batch_s'] / z['re_evaluate_s']:,.0f}×; from "
                f"columns with preparation, ruleengine rate {z['re_rate_s']:.3f} s vs zen records + "
                f"per record {z['zen_records_s'] + z['zen_per_record_s']:.2f} s = "
                f"{(z['zen_records_s'] + z['zen_per_record_s']) / z['re_rate_s']:,.0f}×)",
                "met": zr >= 500 if z["rows"] == 50_000 else None,
            }
        )
    else:
        out.append(
            {
                "id": "vs-zen",
                "target": "≥500× faster than zen-engine at 50k",
                "measured": "not measured (zen-engine not installed)",
                "met": None,
            }
        )
    m = by.get(1_000_000)
    if m is not None:
        wall = m["re_parquet_process_process_seconds"]
        out.append(
            {
                "id": "pq-1m",
                "target": "1M Parquet→rate→Parquet ≤ 1.5 s wall",
                "measured": f"{wall:.2f} s wall for the whole process, median of "
                f"{len(m['re_parquet_process_runs'])} (runs "
                f"{', '.join(f'{x:.2f}' for x in m['re_parquet_process_runs'])}; interpreter start-up, "
                "imports, plan from the plan cache, read, rate, write and exit), of which "
                f"{m['re_parquet_process_seconds']:.2f} s after start-up; "
                f"{m['re_parquet_nocache_process_process_seconds']:.2f} s with no plan cache (compiling); "
                f"{m['re_pq_to_pq_s']:.2f} s in a warm process, plan compiled",
                "met": wall <= 1.5,
            }
        )
    else:
        out.append(
            {
                "id": "pq-1m",
                "target": "1M Parquet→rate→Parquet ≤ 1.5 s wall",
                "measured": "not measured (1M not in --sizes)",
                "met": None,
            }
        )
    mem = largest
    peak_ratio = (mem["input_mb"] + mem["re_rate_peak_mb"]) / mem["input_mb"]
    rss_ratio = (mem["re_parquet_process_max_rss_mb"] - mem["re_parquet_process_base_rss_mb"]) / mem["input_mb"]
    out.append(
        {
            "id": "memory",
            "target": "peak memory ≤ 3× input columns",
            "measured": f"in memory: (input {mem['input_mb']:.1f} MB + rate peak alloc "
            f"{mem['re_rate_peak_mb']:.0f} MB) = {peak_ratio:.1f}× input; "
            f"Parquet→Parquet process: VmHWM {mem['re_parquet_process_max_rss_mb']:.0f} MB "
            f"− {mem['re_parquet_process_base_rss_mb']:.0f} MB after imports = "
            f"{rss_ratio:.1f}× input ({mem['rows']:,} rows)",
            "met": peak_ratio <= 3 and rss_ratio <= 3,
        }
    )
    ex = next((r for r in results if "explain_ms" in r), None)
    if ex is not None:
        e = ex["explain_ms"]
        out.append(
            {
                "id": "explain",
                "target": "explain one firm in a 50k portfolio ≤ 50 ms (issue #4)",
                "measured": f"median {e['median']:.1f} ms, p95 {e['p95']:.1f} ms, max {e['max']:.1f} ms "
                f"over {e['firms']} firms in {ex['rows']:,} rows",
                "met": e["median"] <= 50 if ex["rows"] == 50_000 else None,
            }
        )
    out.append(
        {
            "id": "validate-cold",
            "target": "`ruleengine validate huzhou` cold start ≤ 0.5 s",
            "measured": f"{cold['seconds']:.3f} s with no plan cache, {cold['cached_seconds']:.3f} s with "
            f"the plan cached (a bare `python -c pass` takes {cold['python_seconds']:.3f} s)",
            "met": cold["seconds"] <= 0.5,
        }
    )
    return out


_PROFILE_HEADER = ("| # | function | where | calls | own (s) | cumulative (s) |", "|---:|---|---|---:|---:|---:|")


def _profile_table(entries: Sequence[dict[str, Any]]) -> list[str]:
    lines = list(_PROFILE_HEADER)
    for i, e in enumerate(entries, 1):
        fn = str(e["function"]).replace("|", "\\|")
        lines.append(f"| {i} | `{fn}` | {e['where']} | {e['calls']:,} | {e['own']:.3f} | {e['cumulative']:.3f} |")
    return lines


def render(
    results: Sequence[dict[str, Any]],
    cold: dict[str, Any],
    tgts: list[dict[str, Any]],
    profiles: dict[str, Any],
    info: dict[str, str],
    command: str,
    repeat: int,
    seed: int,
    peers: set[str],
    plan: Any,
) -> str:
    commit = f", commit {info['commit']}" if info["commit"] else ""
    plan_hash = str(plan.hash).split(":")[-1][:12]
    L: list[str] = [
        "# ruleengine against its peers (issue #6)",
        "",
        f"Generated by `{command}` on {info['date']}.",
        "",
        f"- Machine: {info['cpus']} CPUs ({info['cpu']}), {info['os']}",
        f"- Software: Python {info['python']}, numpy {info['numpy']}, pyarrow {info['pyarrow']}, "
        f"ruleengine {info['ruleengine']}{commit}, openfisca-core {info['openfisca']}, "
        f"zen-engine {info['zen']}, simpleeval {info['simpleeval']}",
        f"- Method: `{plan.id}` {plan.version} (hash `{plan_hash}`), the same Huzhou method in every implementation",
        f"- Data: `ruleengine.io.sample.generate(firms=rows/2, years={list(_br.YEARS)}, seed={seed})`, "
        "clean (every row rated); the same portfolio for every implementation; medians of "
        f"{repeat} run{'s' if repeat > 1 else ''}",
        "",
    ]
    skipped = [p for p in ("openfisca", "zen") if p not in peers]
    if skipped:
        L += [f"- Not measured (package not installed): {', '.join(skipped)}", ""]

    L += [
        "## Same levels first",
        "",
        "Before a time counts, each implementation's levels (1–5, 0 = unrated) must equal "
        "ruleengine's on the same rows (`np.array_equal`) and its K agree to 1e-9 relative "
        "(NaN exactly where ruleengine's K is NaN).",
        "",
        "| rows | implementation | levels equal | rows differing | max relative K difference | check |",
        "|---:|---|---|---:|---:|---|",
    ]
    for r in results:
        for c in r["checks"]:
            L.append(
                f"| {r['rows']:,} | {c['name']} | {'yes' if c['levels_equal'] else 'NO'} "
                f"| {c['mismatches']:,} | {c['max_rel_k']:.1e} "
                f"| {'passed' if c['ok'] else 'FAILED'} |"
            )
    L.append("")

    L += [
        "## Evaluation side by side",
        "",
        "Seconds (median) and rows per second; ratios are time ÷ ruleengine evaluate.",
        "",
        "| rows | ruleengine evaluate | hand numpy | ruleengine ÷ numpy | OpenFisca calculate "
        "| OpenFisca ÷ ruleengine | zen per record | zen ÷ ruleengine | zen evaluate_batch "
        "| simpleeval per row |",
        "|---:|---|---|---:|---|---:|---|---:|---|---|",
    ]
    for r in results:
        n = r["rows"]

        def cell(key: str, digits: int = 4, r: dict[str, Any] = r, n: int = n) -> str:
            v = r.get(key)
            return "–" if v is None else f"{v:.{digits}f} s ({_rate(n, v)}/s)"

        zen_cell = cell("zen_per_record_s", 2)
        if "zen_per_record_s" not in r and "zen" in peers:
            z = next((x for x in results if "zen_per_record_s" in x), None)
            if z is not None:
                est = n / (z["rows"] / z["zen_per_record_s"])
                zen_cell = f"not run; ≈{est:,.0f} s extrapolated"
        L.append(
            f"| {n:,} | {cell('re_evaluate_s')} | {cell('np_evaluate_s')} "
            f"| {_ratio(r['re_evaluate_s'], r['np_evaluate_s'])} | {cell('of_calculate_s')} "
            f"| {_ratio(r.get('of_calculate_s'), r['re_evaluate_s'])} | {zen_cell} "
            f"| {_ratio(r.get('zen_per_record_s'), r['re_evaluate_s'])} "
            f"| {cell('zen_batch_s', 2)} | {cell('se_per_row_s', 2)} |"
        )
    L.append("")
    L += [
        "From in-memory columns to levels, preparation included (seconds):",
        "",
        "| rows | ruleengine rate (prepare + evaluate + build) | ruleengine prepare "
        "| numpy prepare + evaluate | OpenFisca inputs + build + calculate (system build) "
        "| zen records built | simpleeval rows built |",
        "|---:|---|---|---|---|---|---|",
    ]
    for r in results:
        n = r["rows"]
        of_total = r["of_prepare_s"] + r["of_build_s"] + r["of_calculate_s"] if "of_calculate_s" in r else None
        of_cell = f"{of_total:.3f} ({_rate(n, of_total)}/s; {r['of_system_s']:.3f})" if of_total is not None else "–"
        np_total = r["np_prepare_s"] + r["np_evaluate_s"]
        L.append(
            f"| {n:,} | {r['re_rate_s']:.3f} ({_rate(n, r['re_rate_s'])}/s) "
            f"| {r['re_prepare_s']:.3f} | {np_total:.3f} ({_rate(n, np_total)}/s) | {of_cell} "
            f"| {_s(r.get('zen_records_s'), 2)} | {_s(r.get('se_rows_s'), 3)} |"
        )
    L.append("")

    L += [
        "## ruleengine end to end",
        "",
        "| rows | input columns (MB) | compile, no cache (ms) | load from plan cache (ms) "
        "| rate from CSV (s) | rate from Parquet (s) "
        "| Parquet→rate→Parquet warm (s) | Parquet→Parquet process wall (s) | same, best (s) "
        "| same, no plan cache (s) | VmHWM (MB) "
        "| CSV→CSV process wall (s) | VmHWM (MB) | rate peak alloc (MB) | evaluate peak alloc (MB) "
        "| numpy evaluate peak (MB) | OpenFisca peak (MB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        L.append(
            f"| {r['rows']:,} | {r['input_mb']:.1f} | {r['re_compile_s'] * 1e3:.0f} "
            f"| {r['re_load_cached_s'] * 1e3:.0f} "
            f"| {r['re_rate_csv_s']:.3f} | {r['re_rate_parquet_s']:.3f} "
            f"| {r['re_pq_to_pq_s']:.3f} | {r['re_parquet_process_process_seconds']:.2f} "
            f"| {r['re_parquet_process_best_seconds']:.2f} | {r['re_parquet_nocache_process_process_seconds']:.2f} "
            f"| {r['re_parquet_process_max_rss_mb']:.0f} | {r['re_csv_process_process_seconds']:.2f} "
            f"| {r['re_csv_process_max_rss_mb']:.0f} | {r['re_rate_peak_mb']:.0f} "
            f"| {r['re_evaluate_peak_mb']:.0f} | {r['np_evaluate_peak_mb']:.0f} "
            f"| {_s(r.get('of_peak_mb'), 0)} |"
        )
    L += [
        "",
        *[
            f"Explain one firm-year in the rated {r['rows']:,}-row portfolio (the full trace with what it "
            f"would take, benchmarks held fixed; {r['explain_ms']['firms']} firms spread over the "
            f"portfolio): median {r['explain_ms']['median']:.1f} ms, p95 {r['explain_ms']['p95']:.1f} ms, "
            f"max {r['explain_ms']['max']:.1f} ms."
            for r in results
            if "explain_ms" in r
        ],
        "",
        f"`ruleengine validate huzhou` as a fresh process: {cold['seconds']:.3f} s wall with no plan "
        f"cache, {cold['cached_seconds']:.3f} s with the plan cached "
        f"(medians of ≥5; `python -c pass` alone: {cold['python_seconds']:.3f} s).",
        "",
        "- compile, no cache: `ruleengine.load('huzhou')` with `RULEENGINE_CACHE=off` and "
        "`ruleengine.api._CACHE` emptied, imports done; load from plan cache: the same with "
        "the on-disk plan cache primed.",
        "- rate from CSV / Parquet: `ruleengine.rate(plan, path)` in this process with the "
        "plan compiled; the warm Parquet→rate→Parquet adds `Results.write`.",
        "- process runs: `python benchmarks/_rate_child.py huzhou IN OUT`, a fresh Python process "
        "that imports ruleengine, loads the plan (from the primed plan cache; 'no plan cache': an "
        "empty cache folder, so it compiles), reads, rates and writes; wall = the whole process "
        "timed from outside (interpreter start-up and exit included); `VmHWM` is its peak "
        f"resident set. Medians of {config.E2E_REPEAT} runs; on this VM the first touch of fresh memory "
        "is slow and varies from run to run, so the best run is shown too.",
        "- peak alloc: the most memory allocated at once during the call (tracemalloc; numpy "
        "buffers included, the input columns not).",
        "- input columns: the Arrow buffers of the whole portfolio file in memory (all "
        f"{len(_br.columns.__doc__ or '') and 44} columns).",
        "",
    ]

    big = results[-1]
    if "re_parquet_process_stages" in big:
        L += [
            f"### Where a fresh Parquet → Parquet process spends its time ({big['rows']:,} rows)",
            "",
            "Medians per stage over the process runs (the stages of `ruleengine.rate` timed one by one):",
            "",
            "| stage | plan cache primed (s) | no plan cache (s) | CSV → CSV, plan cache primed (s) |",
            "|---|---:|---:|---:|",
        ]
        for stage, sec in big["re_parquet_process_stages"].items():
            L.append(
                f"| {stage} | {sec:.3f} | {big['re_parquet_nocache_process_stages'][stage]:.3f} "
                f"| {big['re_csv_process_stages'][stage]:.3f} |"
            )
        L += [
            f"| after start-up | {big['re_parquet_process_seconds']:.3f} "
            f"| {big['re_parquet_nocache_process_seconds']:.3f} | {big['re_csv_process_seconds']:.3f} |",
            f"| **wall, whole process** | **{big['re_parquet_process_process_seconds']:.3f}** "
            f"| **{big['re_parquet_nocache_process_process_seconds']:.3f}** "
            f"| **{big['re_csv_process_process_seconds']:.3f}** |",
            "",
        ]

    L += ["## Targets (issue #6)", "", "| target | measured | met |", "|---|---|---|"]
    for t in tgts:
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
        L.append(f"| {t['target']} | {t['measured']} | {met} |")
    L.append("")

    if profiles:
        notes = findings(profiles, results)
        L += ["## Where targets are missed: profiles", ""]
        for title, prof in profiles.items():
            L += [f"### {title}", ""]
            if "note" in prof:
                L += [prof["note"], ""]
            L += [*notes.get(title, []), ""] if notes.get(title) else []
            if "own" in prof:
                L += [
                    f"cProfile, {prof['wall']:.3f} s under the profiler; top functions by own time:",
                    "",
                    *_profile_table(prof["own"]),
                    "",
                ]
            if prof.get("imports"):
                L += [
                    "Slowest imports (`-X importtime`, top level, cumulative):",
                    "",
                    "| module | cumulative (ms) | self (ms) |",
                    "|---|---:|---:|",
                ]
                for cum_us, self_us, name, _ in prof["imports"]:
                    L.append(f"| `{name}` | {cum_us / 1e3:.0f} | {self_us / 1e3:.1f} |")
                L.append("")
            if prof.get("sites"):
                L += [
                    "Memory still held after `evaluate` (tracemalloc, top lines):",
                    "",
                    "| where | MB |",
                    "|---|---:|",
                ]
                for where, mb in prof["sites"]:
                    L.append(f"| {where} | {mb:.0f} |")
                L.append("")

    L += [
        "## How each implementation was written",
        "",
        "- **ruleengine**: `rulebooks/huzhou.yaml` (with `lib/accounting.yaml`) compiled; "
        "evaluate = `ruleengine.engine.evaluator.evaluate(plan, batch)` on a batch prepared once "
        "by `ruleengine.api.prepare` (typing, defaults, range checks, category codes); the "
        "Evaluation keeps every variable, the per-row reasons and fallbacks.",
        "- **hand numpy** (`numpy_evaluate`): the same factors and formulas written directly: "
        "measured-first `np.where(isnan)` coalesce for the 9 stationary fuels, the grid factor "
        "from a (year × region) table (national fallback; 2021 national only), ratio of sums "
        "by `np.bincount` over (year, class) then (year, division) keys with ≥5 peers (value "
        "added > 0, row valid), else the published table; levels by `np.searchsorted` on "
        "(0.6, 0.8, 1.2, 2.0] closed right. Industry and region are factorised to int codes "
        "in `numpy_prepare` (pyarrow `dictionary_encode`), which is not in the evaluate time. "
        "It records no reasons or fallbacks and keeps no intermediate columns.",
        "- **OpenFisca**: one person entity `firm`, period = year, one firm-year per (firm, "
        "period); 40 input variables, 20 vectorised formulas (one per fuel, scope 1/2, grid "
        "factor by `parameters(period).grid_ef[grid_region]` with an Enum, avoided, net, "
        "validity, L, the industry benchmark, K, level). The industry benchmark is a formula "
        "over the whole population of the period (`np.bincount` on int class codes inside the "
        "formula), so it is inside the timed `calculate`. Factors, grid factors, published "
        "table, min peers and band edges are OpenFisca parameters. OpenFisca stores `float` "
        "variables as float32; to meet the 1e-9 K check every float variable keeps float64 "
        "storage (a `Variable` subclass that sets `dtype = float64`; with the default float32, "
        "K differed from the ruleengine K by up to 3.9e-7 relative on the 50k portfolio). "
        '"calculate" is '
        "`simulation.calculate('level')` and `('k')` for each year on a fresh simulation; "
        '"build" is `SimulationBuilder.build_default_simulation` + `set_input` of every '
        "input for every year; scattering the firm-year rows into per-year firm arrays is "
        'in "inputs".',
        "- **zen-engine**: a JDM graph of three expression nodes (fuels and grid factor; "
        "scope 1, scope 2, avoided, validity; net, L, K) and a decision table (`first` hit "
        "policy, `<= 0.6`, `(0.6..0.8]`, …, `> 2`) for the level. Each firm-year is a "
        "context dict with the reported values only (missing measured factors are absent and "
        "`??` supplies the default) and the industry benchmark precomputed by the numpy "
        "implementation as an input field (not timed: ruleengine and numpy compute theirs "
        "inside the timed call). Timed: `ZenDecision.evaluate(ctx)` per record (decision "
        "created once) and `ZenEngine.evaluate_batch` (the engine's batch API, loader-backed); "
        "building the context dicts is timed separately. 1k and 50k rows only; at 1M the "
        "per-record time is extrapolated from the 50k rate.",
        "- **simpleeval per row**: 18 formulas, each parsed once (`SimpleEval.parse`), "
        "evaluated row by row with `previously_parsed`; the industry benchmark precomputed "
        "as for zen; 1k rows only.",
        "",
    ]
    return "\n".join(L)
