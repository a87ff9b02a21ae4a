"""Shared helpers: a small-rulebook builder for evaluator tests."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest
import yaml

import ruleengine

# Compiled plans are cached on disk; tests (and the CLI processes they start) keep theirs in a
# throw-away folder, never in the user's ~/.cache.
if "RULEENGINE_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="ruleengine-test-cache-")
    os.environ["RULEENGINE_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, True)

_HEADER = {
    "id": "t",
    "title": "test rulebook",
    "version": "1.0.0",
    "effective": "2021-01-01",
    "sources": {"s": {"title": "test", "status": "assumed"}},
}
_INPUTS = {"firm_id": {"type": "string", "required": True}, "year": {"type": "integer", "required": True}}
_STANDARD = {
    name: {"expr": "0", "unit": unit}
    for name, unit in (
        ("scope1_tco2", "tCO2"),
        ("scope2_tco2", "tCO2"),
        ("emissions_tco2", "tCO2"),
        ("energy_tce", "tce"),
    )
}


def make_book(text: str) -> ruleengine.Plan:
    """Compile the YAML sections in ``text`` with the boilerplate every rulebook needs filled in:
    id/title/version/sources, the firm_id and year inputs and the four standard variables (0)."""
    body = yaml.safe_load(text)
    doc = dict(_HEADER)
    doc["inputs"] = {**_INPUTS, **body.pop("inputs", {})}
    doc["variables"] = {**_STANDARD, **body.pop("variables", {})}
    doc.update(body)
    return ruleengine.compile_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture(scope="session")
def book():
    return make_book


# One Spark session and one Dask LocalCluster for the whole test run (issue #18), shared by the
# scale tests (tests/test_scale_spark.py, test_scale_dask.py, test_scale_analyses.py).
@pytest.fixture(scope="session")
def spark():
    """A real Spark `local[2,4]`: 2 cores; a task may fail up to 4 times (the retry tests)."""
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java (.ci/system-packages.sh installs it)")
    from ruleengine.scale import spark as rspark

    s = rspark.session("local[2,4]")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def dask_client():
    """A real Dask LocalCluster: 2 worker processes of 1 thread, on the loopback interface."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
    )
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


# The ratings-ledger tests (issue #16): a throwaway PostgreSQL server (session) and `ledger_url`,
# parametrised over SQLite and PostgreSQL; defined in tests/ledger_pg.py.
from ledger_pg import ledger_url, postgresql_server  # noqa: E402,F401
