"""Data acquisition (issue #14): meter readings and tax e-invoices -> the firm-year data contract.

Typical use::

    from ruleengine.acquire import acquire_meters, acquire_invoices, crossvalidate
    acq = acquire_meters(["readings.csv"], "register.yaml", year=2024)
    acq.table            # pyarrow Table: firm_id, year, electricity_mwh, electricity_mwh_coverage, ...
    print(acq.report.render("text"))
    acq.write("firm_years.parquet")   # `ruleengine rate huzhou firm_years.parquet` reads it

Every column X the stage fills comes with its provenance: ``X_source`` (meters / invoices),
``X_coverage`` (share of the year observed), ``X_readings`` or ``X_invoices`` (how many records),
``X_policy`` (gap policy or invoice rule applied), ``X_filled`` (amount added by the gap policy)
and ``X_issues`` (errors and warnings found for that firm and column).
"""

from __future__ import annotations

from typing import Any

from .quality import AcquireError, Issue, Report

_LAZY = {
    "acquire_meters": ".meters",
    "Acquisition": ".meters",
    "load_register": ".register",
    "acquire_invoices": ".invoices",
    "load_mapping": ".invoices",
    "crossvalidate": ".crossval",
    "generate_sample": ".samplegen",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ruleengine.acquire' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = ["AcquireError", "Issue", "Report", *_LAZY]
