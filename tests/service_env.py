"""Shared set-up of the HTTP service tests (issue #17): a keys file with one key per role, a
sample portfolio, and an app over a fresh SQLite ledger."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

for _name in ("fastapi", "uvicorn", "multipart", "sqlalchemy", "alembic", "httpx"):
    pytest.importorskip(_name, reason=f"the service extra is not installed ({_name}): pip install '.[service]'")

from ledger_pg import make_sample  # noqa: E402

FIRM = "91330500032441094N"  # the first Huzhou firm of `ruleengine sample --firms N --seed 0`
OTHER = "91330500469004752F"  # the second Huzhou firm (huzhou rates its own jurisdiction only)
BANK = "bank-a"
ROLES = ("admin", "firm", "bank", "regulator", "author", "other_bank", "other_regulator")


@dataclass
class Env:
    folder: Path
    keys_file: Path
    keys: dict[str, str]
    data: Path
    ledger: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def h(self, role: str, **more: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}", **more}


def firm_rows(env: Env, firm: str = FIRM) -> list[dict[str, Any]]:
    """``firm``'s rows of the environment's data, as a client posts them to ``/v1/runs/{run}/rate``."""
    import pyarrow.csv as pacsv

    opts = pacsv.ConvertOptions(column_types={"firm_id": "string", "industry": "string"})
    return [r for r in pacsv.read_csv(env.data, convert_options=opts).to_pylist() if r["firm_id"] == firm]


def first_run(c: Any, env: Env) -> dict[str, Any]:
    """Run 1: the environment's whole sample rated and recorded by the admin key (the benchmark
    tables one-firm ratings are rated against); ``c`` a TestClient or an httpx client."""
    r = c.post(
        "/v1/rulebooks/huzhou/rate?detail=summary",
        headers=env.h("admin", **{"Content-Type": "text/csv"}),
        content=env.data.read_bytes(),
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def make_env(folder: Path, firms: int = 12) -> Env:
    from ruleengine.service.keys import add_key

    kf = folder / "keys.json"
    keys = {
        "admin": add_key(kf, "ops", "admin"),
        "firm": add_key(kf, "firm-1", "firm", firm=FIRM),
        "bank": add_key(kf, "bank-a-loans", "bank", bank=BANK),
        "other_bank": add_key(kf, "bank-b-loans", "bank", bank="bank-b"),
        "regulator": add_key(kf, "huzhou-regulator", "regulator", rulebooks=("huzhou",)),
        "other_regulator": add_key(kf, "shenzhen-regulator", "regulator", rulebooks=("shenzhen",)),
        "author": add_key(kf, "method-team", "author", rulebooks=("huzhou",)),
    }
    data = make_sample(folder / "firms.csv", firms=firms)
    return Env(folder, kf, keys, data, folder / "ledger.db")


def config(env: Env, **limits: Any) -> Any:
    from ruleengine.service import ServiceConfig

    return ServiceConfig(ledger=env.ledger, keys=env.keys_file, state_dir=env.folder / "state", **limits)


def client(env: Env, **limits: Any) -> Any:
    from fastapi.testclient import TestClient

    from ruleengine.service import create_app

    return TestClient(create_app(config(env, **limits)), raise_server_exceptions=False)


def assert_problem(r: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert "Traceback" not in r.text and 'File "' not in r.text
    if code is not None:
        assert body["code"] == code, body
    return body
