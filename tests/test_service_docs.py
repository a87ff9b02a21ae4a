"""docs/service.md names every endpoint the service has, and no endpoint it lacks (issue #17): its
endpoint table and its consent block against the app's OpenAPI paths."""

from __future__ import annotations

import re
from pathlib import Path

from service_env import config, make_env

DOC = Path(__file__).resolve().parents[1] / "docs" / "service.md"
NOT_API = {"/openapi.json", "/docs"}  # the schema and Swagger UI: described in prose


def _documented() -> set[tuple[str, str]]:
    """(METHOD, path) for each endpoint docs/service.md names, path parameters as the app spells
    them: the table's `METHOD /path[/{opt}][?query]` cells and the consent block's lines."""
    text = DOC.read_text(encoding="utf-8")
    found: set[tuple[str, str]] = set()
    cells = re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/v1/[^`\s]*)`", text)
    lines = re.findall(r"^(GET|POST|PUT|PATCH|DELETE)\s+(/v1/\S*)", text, re.M)
    for method, path in cells + lines:
        path = path.split("?")[0]
        path = re.sub(r"\[\?[^\]]*\]$", "", path)
        optional = re.search(r"\[(/[^\]]+)\]", path)
        variants = [path]
        if optional:
            variants = [path.replace(optional.group(0), ""), path.replace(optional.group(0), optional.group(1))]
        for v in variants:
            v = v.replace("{run}", "{run_id}").replace("{firm}", "{firm_id}").replace("/bank-a", "/{bank}")
            found.add((method, v.split("[")[0]))
    return found


def test_docs_service_md_names_every_endpoint_and_no_other(tmp_path):
    from ruleengine.service.app import build

    app = build(config(make_env(tmp_path, firms=4)))
    try:
        spec = app.openapi()
    finally:
        app.state.service.close()
    routes = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops if p not in NOT_API}
    documented = _documented()
    assert len(routes) >= 25  # the parse of the schema found the service, not a stub
    assert sorted(routes - documented) == [], "endpoints docs/service.md does not name"
    assert sorted(documented - routes) == [], "docs/service.md names endpoints the service does not have"
