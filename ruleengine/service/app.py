"""The FastAPI application: routes, access rules, problem+json errors (docs/service.md)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import DataError, RulebookError, RuleEngineError
from ..ledger.errors import LedgerError
from . import store
from .config import ServiceConfig
from .keys import Principal
from .limits import PROBLEM, BodyLimit, body_file
from .registry import NotInRegistry, valid_name, valid_version
from .state import Pending, Problem, RatedRun, State, mark, not_visible

log = logging.getLogger("ruleengine.service")

# --- OpenAPI pieces ---------------------------------------------------------------------------------


class ProblemModel(BaseModel):
    """An error (RFC 9457): ``detail`` is the message the CLI prints; ``errors`` the located ones."""

    model_config = ConfigDict(extra="allow")
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str
    errors: list[Any] | None = None


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bank: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,99}$", description="The bank's id (as in its key).")
    expires_at: dt.datetime = Field(
        description="When the consent ends (ISO 8601 with a time zone), at most 5 years on."
    )
    firm_id: str | None = Field(default=None, max_length=200, description="Admin keys only: the firm granting.")


def _problem(status: int, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/ProblemModel"}}},
    }


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _problem(400, "Malformed request"),
    401: _problem(401, "No valid API key"),
    403: _problem(403, "This key's role may not do this"),
    404: _problem(404, "Not found, or not visible to this key (the same answer for both)"),
    408: _problem(408, "The body arrived too slowly"),
    409: _problem(409, "Conflict (idempotency key reused with another body; version exists)"),
    413: _problem(413, "Body or rows over the limit"),
    415: _problem(415, "Unsupported content type"),
    422: _problem(422, "Invalid rulebook, data or parameters, with located messages"),
    503: _problem(503, "Busy or over the time limit"),
}
NAME_PARAM = PathParam(description="Rulebook name in the registry", max_length=40)
VERSION_QUERY = Query(description="Version (default: the newest)", max_length=60)
FORMAT_QUERY = Query(pattern="^(csv|json|jsonl|parquet|xlsx)$")  # an upload's format when its type does not say
RUN_PARAM = PathParam(ge=1, le=2**31 - 1)
FIRM_PARAM = PathParam(min_length=1, max_length=200)
UPLOAD_TYPES = {
    "text/csv": ".csv",
    "application/json": ".json",
    "application/x-ndjson": ".jsonl",
    "application/jsonl": ".jsonl",
    "application/vnd.apache.parquet": ".parquet",
    "application/x-parquet": ".parquet",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
}
UPLOAD_FORMATS = {"csv": ".csv", "json": ".json", "jsonl": ".jsonl", "parquet": ".parquet", "xlsx": ".xlsx"}
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "The portfolio: CSV, JSON (a list of firm-year objects), JSON Lines, Parquet or xlsx "
        "(by Content-Type, or any type with ?format=), or multipart/form-data with a `file` field.",
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}
OPTIONAL_UPLOAD_BODY = {"requestBody": {**UPLOAD_BODY["requestBody"], "required": False}}
YAML_BODY = {
    "requestBody": {
        "required": True,
        "description": "The rulebook YAML (UTF-8).",
        "content": {"application/yaml": {"schema": {"type": "string"}}, "text/plain": {"schema": {"type": "string"}}},
    }
}
FIRM_ROWS_BODY = {
    "requestBody": {
        "required": True,
        "description": "One firm's firm-year rows: a JSON object or a list of objects (same firm_id).",
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}, "maxItems": 50}]
                }
            }
        },
    }
}
IDEM_HEADER = Header(
    alias="Idempotency-Key",
    description="Same key and same request: the stored answer again; same key, another request: 409.",
    max_length=200,
)


# --- helpers ----------------------------------------------------------------------------------------


def _st(request: Request) -> State:
    return request.app.state.service


bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer re_…`")


async def principal(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    # async: FastAPI runs a plain `def` dependency in its thread pool (a thread hop per request); the
    # lookup is one dict access and, at most every --keys-check seconds, a stat of the keys file
    p = _st(request).keys.authenticate(creds.credentials if creds else None)
    if p is None:
        raise Problem(
            401,
            "Unauthorized",
            "a valid API key is needed: Authorization: Bearer KEY",
            "unauthenticated",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.who = p.name  # for the access log line (the key itself is never logged)
    return p


Who = Annotated[Principal, Depends(principal)]


def allow(p: Principal, *roles: str, what: str) -> None:
    if p.role not in roles:
        raise Problem(403, "Forbidden", f"a {p.role} key may not {what}", "forbidden")


@functools.lru_cache(maxsize=16)
def _scrub_rules(folder: Path) -> tuple[tuple[re.Pattern[str], str], ...]:
    """The patterns of :func:`_scrub` for a state folder: built once, not per message."""
    from ..rulebook.source import bundled_dir

    return tuple(
        (
            re.compile(re.escape(str(where)) + r"/(?:uploads/[^/\s]+/|drafts/[0-9a-f]+/|registry/|runs/\d+/book/)?"),
            shown + ("/" if shown else ""),
        )
        for where, shown in ((folder, ""), (bundled_dir().resolve(), "rulebooks"))
    )


def _scrub(st: State, text: str) -> str:
    """Messages name the client's own upload or rulebook, never the server's folders."""
    for pattern, shown in _scrub_rules(st.folder):
        text = pattern.sub(shown, text)
    return text


def _diag(st: State, d: Any) -> dict[str, Any]:
    loc = d.location
    return {
        "severity": d.severity,
        "message": d.message,
        "file": _scrub(st, loc.file) if loc else None,
        "line": loc.line if loc else None,
        "column": loc.column if loc else None,
        "path": loc.path if loc else None,
        "text": _scrub(st, d.format()),
    }


def _book_meta(plan: Any) -> dict[str, Any]:
    return {"id": plan.id, "version": plan.version, "hash": plan.hash, "title": plan.title}


def _provenance(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": run["id"],
        "rulebook": {"id": run["rulebook_id"], "version": run["rulebook_version"], "hash": run["rulebook_hash"]},
        "rulebook_hash": run["rulebook_hash"],
        "engine_version": run["engine_version"],
    }


def _prov_headers(run: dict[str, Any]) -> dict[str, str]:
    return {
        "X-Ruleengine-Run": str(run["id"]),
        "X-Ruleengine-Rulebook-Hash": run["rulebook_hash"],
        "X-Ruleengine-Engine-Version": run["engine_version"],
    }


def _summary(plan: Any) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for n in plan.order:
        k = plan.nodes[n].kind
        kinds[k] = kinds.get(k, 0) + 1
    r = plan.ratings[plan.primary]
    return {
        **_book_meta(plan),
        "effective": str(plan.effective),
        "inputs": sorted(plan.inputs),
        "parameters": len(plan.parameters),
        "variables": kinds.get("variable", 0),
        "benchmarks": sorted(plan.benchmarks),
        "ratings": sorted(plan.ratings),
        "primary": plan.primary,
        "levels": list(r.ids),
        "warnings": len(plan.warnings),
    }


def _visible(st: State, p: Principal, firm_id: str, action: str) -> None:
    """Firm keys see their own firm; bank keys a firm whose consent stands (each access logged);
    admin keys everything; others nothing. Denied: the same 404 as a firm that does not exist."""
    if p.role == "admin":
        return
    if p.role == "firm":
        if p.firm != firm_id:
            raise not_visible()
        return
    if p.role == "bank":
        assert p.bank is not None
        ok = firm_id in store.consented(st.ledger.engine, p.bank, [firm_id])
        st.write(store.log_access, st.writer.engine, p.name, p.role, p.bank, [firm_id], action, ok)
        if not ok:
            raise not_visible()
        return
    raise Problem(403, "Forbidden", f"a {p.role} key may not read a firm's ratings", "forbidden")


def _firm_roles(p: Principal) -> None:
    allow(p, "firm", "bank", "admin", what="read a firm's ratings")


def _firm_ids(raw: Any) -> list[str]:
    col = raw.columns.get("firm_id")
    if col is None:
        return []
    if hasattr(col, "to_pylist"):
        import pyarrow.compute as pc

        vals = pc.unique(col).to_pylist()
    else:
        vals = list(set(col.tolist() if hasattr(col, "tolist") else col))
    return sorted({str(v).strip() for v in vals if v is not None and str(v).strip()})


def _scope_rows(st: State, p: Principal, firms: list[str], action: str, defer: bool = False) -> list[dict[str, Any]]:
    """Refuse rows the key may not rate (403). A bank's access is logged: the refused firms' line
    at once; the granted firms' line at once too, or with ``defer`` returned instead (rows of
    ``store.access_rows``) for the caller to commit with its run (or on its own if it fails)."""
    if p.role == "admin":
        return []
    if p.role == "firm":
        others = [f for f in firms if f != p.firm]
        if others:
            raise Problem(
                403,
                "Forbidden",
                f"a firm key rates only its own firm's rows ({p.firm}); the data has {len(others)} other firm id(s)",
                "not-own-firm",
            )
        return []
    if p.role == "bank":
        assert p.bank is not None
        ok = store.consented(st.ledger.engine, p.bank, firms)
        granted = store.access_rows(p.name, p.role, p.bank, [f for f in firms if f in ok], action, True)
        missing = [f for f in firms if f not in ok]
        if missing:  # refused: the granted and the refused firms' lines, in one write
            denied = store.access_rows(p.name, p.role, p.bank, missing, action, False)
            st.write(store.log_access_rows, st.writer.engine, granted + denied)
            shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
            raise Problem(
                403,
                "Forbidden",
                f"{len(missing)} firm(s) in the data have not granted bank {p.bank} consent (or it expired or was "
                f"revoked): {shown}",
                "no-consent",
            )
        if defer:
            return granted
        if granted:
            st.write(store.log_access_rows, st.writer.engine, granted)
        return []
    raise Problem(403, "Forbidden", f"a {p.role} key may not rate firms", "forbidden")


def _save_upload(src: IO[bytes], content_type: str, fmt: str | None, folder: Path) -> Path:
    """Copy the upload (a spooled body or a multipart part, read from its start) to its own file in
    pieces: never the whole upload in memory."""
    ctype = content_type.split(";")[0].strip().lower()
    if fmt is not None:
        suffix = UPLOAD_FORMATS[fmt]
    elif ctype in UPLOAD_TYPES:
        suffix = UPLOAD_TYPES[ctype]
    else:
        raise Problem(
            415,
            "Unsupported Media Type",
            f"send the portfolio as {', '.join(sorted(UPLOAD_TYPES))}, multipart/form-data, or any type with "
            "?format=csv|json|jsonl|parquet|xlsx",
            "unsupported-type",
        )
    path = folder / f"upload{suffix}"
    src.seek(0)
    with path.open("wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
        size = out.tell()
    if not size:
        raise Problem(422, "Unprocessable Content", "the portfolio is empty", "empty-upload")
    return path


async def _upload(request: Request, st: State, fmt: str | None, folder: Path, required: bool = True) -> Path | None:
    ctype = request.headers.get("content-type", "")
    if ctype.lower().startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=1, max_fields=10)
        except Exception:  # noqa: BLE001 - python-multipart's errors: a malformed body
            raise Problem(400, "Bad Request", "malformed multipart/form-data body", "bad-multipart") from None
        try:
            f = form.get("file")
            if f is None or isinstance(f, str):
                raise Problem(
                    422, "Unprocessable Content", "multipart upload needs a 'file' field with the portfolio", "no-file"
                )
            name = (f.filename or "").lower()
            ext = name.rsplit(".", 1)[-1] if "." in name else ""
            if fmt is None and ext not in UPLOAD_FORMATS:
                raise Problem(
                    415,
                    "Unsupported Media Type",
                    "name the file .csv, .json, .jsonl, .parquet or .xlsx (or give ?format=)",
                    "unsupported-type",
                )
            return await asyncio.to_thread(_save_upload, f.file, "", fmt or ext, folder)
        finally:
            await form.close()
    spooled = body_file(request.scope)
    src: IO[bytes] = spooled if spooled is not None else io.BytesIO(await request.body())
    if not required:
        src.seek(0, io.SEEK_END)
        if src.tell() == 0:
            return None
    return await asyncio.to_thread(_save_upload, src, ctype, fmt, folder)


def _rows_limit(st: State, path: Path) -> None:
    """Cheap pre-checks before parsing: rows of Parquet (metadata) and CSV/JSON Lines (lines)."""
    limit = st.cfg.max_rows
    n = None
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq

            n = pq.ParquetFile(path).metadata.num_rows
        except Exception:  # noqa: BLE001 - not Parquet: the reader says so with its own message
            return
    elif path.suffix in (".csv", ".jsonl"):
        n = 0
        with path.open("rb") as f:  # in pieces: the upload is on disk, not in memory
            while piece := f.read(1 << 20):
                n += piece.count(b"\n")
        n -= 1 if path.suffix == ".csv" else 0
    if n is not None and n > limit:
        raise Problem(
            413, "Content Too Large", f"the data has about {n:,} rows; at most {limit:,} per request", "too-many-rows"
        )


def _ratings_json(results: Any, detail: str) -> list[dict[str, Any]]:
    if detail == "full":
        return json.loads(results.to_json())
    names = ["firm_id", "year", "status", "rating", *(["level"] if "level" in results.names else []), "reasons"]
    t = results.to_arrow().select([n for n in names if n in results.names])
    return t.to_pylist()


async def _request_hash(request: Request) -> str:
    h = hashlib.sha256()
    for part in (request.method, request.url.path, request.url.query, request.headers.get("content-type", "")):
        h.update(part.encode() + b"\0")
    spooled = body_file(request.scope)
    if spooled is None:
        h.update(await request.body())
    else:  # in pieces from the spooled body: an upload is never held whole in memory for its hash
        while piece := spooled.read(1 << 20):
            h.update(piece)
    return "sha256:" + h.hexdigest()


_IDEM_RE = re.compile(r"[\x21-\x7e]{1,200}")


async def _idempotent(request: Request, p: Principal, key: str | None, make: Any, recheck: Any = None) -> Response:
    """Answer ``make()`` once per (key name, Idempotency-Key); replays the stored answer.
    ``recheck``: awaited before a stored answer is replayed (a bank's consent, checked and its
    access logged again: a revoked consent is not bypassed by replaying an old answer)."""
    st = _st(request)
    if key is None:
        return await make()
    if not _IDEM_RE.fullmatch(key):
        raise Problem(400, "Bad Request", "Idempotency-Key: 1-200 printable ASCII characters", "bad-idempotency-key")
    rh = await _request_hash(request)
    lock = st.idem_locks.setdefault((p.name, key), asyncio.Lock())
    try:
        return await _idempotent_locked(st, lock, p, key, rh, make, recheck)
    finally:
        if not lock.locked():
            st.idem_locks.pop((p.name, key), None)


async def _idempotent_locked(
    st: State, lock: asyncio.Lock, p: Principal, key: str, rh: str, make: Any, recheck: Any
) -> Response:
    """Under this process's lock for the key: a stored answer is replayed; otherwise the key is
    claimed in the ledger (other processes on the same ledger answer 409 while the claim stands),
    ``make()`` answers, and a success is stored (the claim dropped with it); a failure drops the
    claim so that the client may retry with the same key."""
    async with lock:
        got = await st.work(store.idem_get, st.ledger.engine, p.name, key)
        if got is None:
            ttl = 2 * st.cfg.request_timeout_s + 30  # a live request's claim never expires under it
            claim = await asyncio.wrap_future(
                st.writer.call(store.idem_claim, st.writer.engine, p.name, key, st.owner, ttl)
            )
            if claim == "busy":
                raise Problem(
                    409,
                    "Conflict",
                    "a request with this Idempotency-Key is still being answered; retry shortly",
                    "idempotency-in-progress",
                    headers={"Retry-After": "1"},
                )
            if claim == "answered":  # answered by another process since the look above
                got = await st.work(store.idem_get, st.ledger.engine, p.name, key)
        if got is not None:
            if got["request_hash"] != rh:
                raise Problem(
                    409, "Conflict", "this Idempotency-Key was used for a different request", "idempotency-conflict"
                )
            if recheck is not None:
                await recheck()
            return Response(
                bytes(got["body"]),
                status_code=got["status"],
                media_type=got["media_type"],
                headers={"Idempotent-Replayed": "true"},
            )
        stored = False
        try:
            resp: Response = await make()
            if 200 <= resp.status_code < 300:
                await asyncio.wrap_future(
                    st.writer.call(
                        store.idem_put,
                        st.writer.engine,
                        p.name,
                        key,
                        rh,
                        resp.status_code,
                        resp.media_type or "application/json",
                        bytes(resp.body),
                        st.owner,
                    )
                )
                stored = True
        finally:
            if not stored:  # no answer stored: the key is free again (a retry may succeed)
                st.writer.call(store.idem_release, st.writer.engine, p.name, key, st.owner)
    return resp


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, ensure_ascii=False, default=str, allow_nan=False).encode("utf-8")
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _problem_response(st: State | None, exc: Problem) -> JSONResponse:
    detail = _scrub(st, exc.detail) if st else exc.detail
    content: dict[str, Any] = {
        "type": "about:blank",
        "title": exc.title,
        "status": exc.status,
        "detail": detail,
        "code": exc.code,
    }
    if exc.errors is not None:
        content["errors"] = exc.errors
    return JSONResponse(content, status_code=exc.status, media_type=PROBLEM, headers=exc.headers)


def _engine_problem(st: State, exc: RuleEngineError) -> Problem:
    if isinstance(exc, NotInRegistry):
        return Problem(404, "Not Found", f"{exc} in the registry", "no-rulebook")
    if isinstance(exc, RulebookError):
        diags = [_diag(st, d) for d in exc.diagnostics]
        n = len(exc.errors)
        return Problem(
            422,
            "Unprocessable Content",
            f"{n} error{'s' if n != 1 else ''} in the rulebook",
            "invalid-rulebook",
            errors=diags,
        )
    if isinstance(exc, LedgerError) and not isinstance(exc, DataError):  # (UnstorableInput: the data's fault)
        return Problem(503, "Service Unavailable", f"ledger: {exc}", "ledger")
    code = "invalid-data" if isinstance(exc, DataError) else "engine-error"
    return Problem(422, "Unprocessable Content", str(exc), code)


# --- the application ----------------------------------------------------------------------------------


def build(cfg: ServiceConfig) -> FastAPI:
    st = State(cfg)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        st.close()

    app = FastAPI(
        title="ruleengine",
        version=__version__,
        description="Carbon ratings for banks, firms, regulators and method authors. Every rating is recorded "
        "in the ledger; access is by API key with a role; banks see a firm only with its consent. "
        "See docs/service.md.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
        responses=ERRORS,
    )
    app.state.service = st
    app.add_middleware(
        BodyLimit,
        max_bytes=cfg.max_body_bytes,
        timeout_s=cfg.body_timeout_s,
        spool_bytes=cfg.spool_memory_bytes,
        spool_dir=st.folder / "spool",
    )

    import swagger_ui_bundle

    app.mount("/static/swagger", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="ruleengine API",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/swagger/favicon-32x32.png",
        )

    # --- errors ----------------------------------------------------------------------------------
    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return _problem_response(st, exc)

    @app.exception_handler(RuleEngineError)
    async def on_engine(request: Request, exc: RuleEngineError) -> JSONResponse:
        return _problem_response(st, _engine_problem(st, exc))

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"where": ".".join(str(x) for x in e.get("loc", ())), "message": e.get("msg", "")} for e in exc.errors()
        ]
        detail = "; ".join(f"{e['where']}: {e['message']}" for e in errors) or "invalid request"
        return _problem_response(st, Problem(422, "Unprocessable Content", detail, "invalid-request", errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not Found", 405: "Method Not Allowed"}.get(exc.status_code, "Error")
        return _problem_response(
            st,
            Problem(
                exc.status_code, title, str(exc.detail), "http", headers=dict(exc.headers) if exc.headers else None
            ),
        )

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        incident = uuid.uuid4().hex[:12]
        log.error(
            "internal error %s on %s %s: %s: %s", incident, request.method, request.url.path, type(exc).__name__, exc
        )
        return _problem_response(
            None,
            Problem(500, "Internal Server Error", f"an internal error (incident {incident}); it is logged", "internal"),
        )

    # --- health ------------------------------------------------------------------------------------
    @app.get("/v1/health", tags=["service"], summary="Liveness (no key needed)")
    def health() -> dict[str, str]:
        return {"status": "ok", "engine_version": __version__}

    # --- rulebooks ---------------------------------------------------------------------------------
    @app.get("/v1/rulebooks", tags=["rulebooks"], summary="The registry: every rulebook and its versions")
    async def rulebooks(p: Who) -> Response:
        def go() -> Any:
            out = []
            for name in st.registry.names():
                vs = st.registry.versions(name)
                out.append({"name": name, "current": vs[-1]["version"], "versions": [v["version"] for v in vs]})
            return out

        return _json(await st.work(go))

    def _book_detail(name: str, version: str | None) -> dict[str, Any]:
        from ..rulebook.loader import load

        path = st.registry.path(name, version)
        plan = load(path)  # the same file: the registry is looked up once
        return {"name": name, "summary": _summary(plan), "yaml": path.read_text(encoding="utf-8")}

    @app.get("/v1/rulebooks/{name}", tags=["rulebooks"], summary="The newest version: YAML and compiled summary")
    async def rulebook(p: Who, name: Annotated[str, NAME_PARAM]) -> Response:
        return _json(await st.work(_book_detail, name, None))

    @app.get("/v1/rulebooks/{name}/versions", tags=["rulebooks"], summary="Versions, oldest first")
    async def versions(p: Who, name: Annotated[str, NAME_PARAM]) -> Response:
        return _json(await st.work(st.registry.versions, name))

    @app.get("/v1/rulebooks/{name}/versions/{version}", tags=["rulebooks"], summary="One version")
    async def rulebook_version(
        p: Who, name: Annotated[str, NAME_PARAM], version: Annotated[str, PathParam(max_length=60)]
    ) -> Response:
        if not valid_version(version):
            raise NotInRegistry("no such rulebook version")
        return _json(await st.work(_book_detail, name, version))

    async def _yaml_text(request: Request) -> str:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/yaml", "text/yaml", "application/x-yaml", "text/plain", ""):
            raise Problem(
                415, "Unsupported Media Type", "send the rulebook as application/yaml or text/plain", "unsupported-type"
            )
        body = await request.body()
        if len(body) > 2 * 2**20:
            raise Problem(413, "Content Too Large", "a rulebook is at most 2 MiB", "rulebook-too-large")
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Problem(
                422, "Unprocessable Content", f"the rulebook is not UTF-8 text (byte {exc.start})", "not-utf8"
            ) from None

    def _check_draft(name: str, text: str) -> tuple[Any, list[dict[str, Any]]]:
        from ..rulebook.loader import load

        path = st.registry.draft_path(name, text)
        try:
            plan = load(path)
        except RulebookError as exc:
            return None, [_diag(st, d) for d in exc.diagnostics]
        return plan, [_diag(st, d) for d in plan.warnings]

    @app.post(
        "/v1/rulebooks/validate",
        tags=["rulebooks"],
        summary="Validate a posted draft (located errors)",
        openapi_extra=YAML_BODY,
    )
    async def validate(
        request: Request,
        p: Who,
        name: Annotated[str, Query(description="File name to show in messages", max_length=40)] = "draft",
    ) -> Response:
        allow(p, "author", "regulator", "admin", what="validate rulebooks")
        if not valid_name(name):
            raise Problem(422, "Unprocessable Content", "name: lowercase letters, digits and _ (1-40)", "bad-name")
        text = await _yaml_text(request)
        plan, diags = await st.work(_check_draft, name, text)
        return _json(
            {
                "valid": plan is not None,
                "errors": [d for d in diags if d["severity"] == "error"],
                "warnings": [d for d in diags if d["severity"] == "warning"],
                "summary": _summary(plan) if plan is not None else None,
            }
        )

    @app.post(
        "/v1/rulebooks/{name}/versions",
        tags=["rulebooks"],
        status_code=201,
        summary="Publish a new version: validated, its tests run, diffed against the current one",
        openapi_extra=YAML_BODY,
    )
    async def publish(request: Request, p: Who, name: Annotated[str, NAME_PARAM]) -> Response:
        allow(p, "author", "admin", what="publish rulebooks")
        if not valid_name(name):
            raise NotInRegistry("no such rulebook")
        if p.role == "author" and name not in p.rulebooks:
            raise Problem(403, "Forbidden", f"this author key may publish only {', '.join(p.rulebooks)}", "forbidden")
        text = await _yaml_text(request)

        def go() -> Response:
            from ..analysis.authortests import run_cases
            from ..analysis.diff import run as diff_run

            plan, diags = _check_draft(name, text)
            if plan is None:
                raise Problem(422, "Unprocessable Content", "the rulebook is invalid", "invalid-rulebook", errors=diags)
            if plan.is_library or not plan.ratings:
                raise Problem(422, "Unprocessable Content", "a library cannot be published as a rulebook", "library")
            if plan.id != name:
                raise Problem(
                    422, "Unprocessable Content", f"the rulebook's id is '{plan.id}', not '{name}'", "wrong-id"
                )
            if not valid_version(str(plan.version)):
                raise Problem(
                    422,
                    "Unprocessable Content",
                    f"version '{plan.version}' is not MAJOR.MINOR.PATCH[-pre]",
                    "bad-version",
                )
            try:
                existing = st.registry.versions(name)
            except NotInRegistry:
                existing = []
            from .registry import semver_key

            if any(v["version"] == plan.version for v in existing):
                raise Problem(
                    409, "Conflict", f"{name} {plan.version} exists already; publish a new version", "version-exists"
                )
            if existing and semver_key(plan.version) <= semver_key(existing[-1]["version"]):
                raise Problem(
                    422,
                    "Unprocessable Content",
                    f"version {plan.version} is not newer than the current {existing[-1]['version']}",
                    "not-newer",
                )
            outcomes = run_cases(plan)
            failed = [o for o in outcomes if not o.ok]
            if failed:
                raise Problem(
                    422,
                    "Unprocessable Content",
                    f"{len(failed)} of the rulebook's {len(outcomes)} tests fail",
                    "tests-fail",
                    errors=[{"test": o.name, "location": _scrub(st, o.location), "diff": o.diff} for o in failed],
                )
            draft = st.registry.draft_path(name, text)
            edits: list[dict[str, Any]] = []
            if existing:
                result = diff_run(st.registry.path(name), draft)
                edits = [e.to_dict() for e in result["edits"]]
            row = {
                "name": name,
                "version": plan.version,
                "published_at": store.now(),
                "who": p.name,
                "rulebook_hash": plan.hash,
                "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                "text": text,
            }
            if not store.publish(st.ledger.engine, row):
                raise Problem(409, "Conflict", f"{name} {plan.version} exists already", "version-exists")
            return _json(
                {
                    "name": name,
                    "version": plan.version,
                    "rulebook_hash": plan.hash,
                    "previous": existing[-1]["version"] if existing else None,
                    "tests": len(outcomes),
                    "edits": json.loads(_scrub(st, json.dumps(edits, default=str))),
                },
                status=201,
            )

        return await st.work(go)

    def _diff_allowed(p: Principal, name: str) -> None:
        allow(p, "regulator", "author", "admin", what="diff rulebooks")
        if p.role in ("regulator", "author") and name not in p.rulebooks:
            raise Problem(403, "Forbidden", f"{name} is outside this key's jurisdiction", "forbidden")

    def _diff(name: str, old: str, new: str, data: Path | None) -> dict[str, Any]:
        from ..analysis.diff import run as diff_run

        for v in (old, new):
            if not valid_version(v):
                raise NotInRegistry("no such rulebook version")
        result = diff_run(st.registry.path(name, old), st.registry.path(name, new), data)
        out = {k: v for k, v in result.items() if k != "edits"}
        out["edits"] = [e.to_dict() for e in result["edits"]]
        return json.loads(_scrub(st, json.dumps(out, default=str, ensure_ascii=False)))

    @app.get(
        "/v1/rulebooks/{name}/diff",
        tags=["rulebooks"],
        summary="Structural diff of two registry versions (with ?run=: impact on that run's stored portfolio)",
    )
    async def diff_get(
        p: Who,
        name: Annotated[str, NAME_PARAM],
        old: Annotated[str, Query(max_length=60)],
        new: Annotated[str, Query(max_length=60)],
        run: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="A recorded run's input rows")] = None,
    ) -> Response:
        _diff_allowed(p, name)

        def go() -> Any:
            data = None
            if run is not None:
                row = st.run_row(run)
                if row is None or (p.role in ("regulator", "author") and row["rulebook_id"] not in p.rulebooks):
                    raise Problem(404, "Not Found", "no such run, or outside this key's jurisdiction", "not-found")
                data = st.rated_run(run, with_results=False).data
            return _diff(name, old, new, data)

        return _json(await st.work(go))

    @app.post(
        "/v1/rulebooks/{name}/diff",
        tags=["rulebooks"],
        openapi_extra=UPLOAD_BODY,
        summary="Structural diff and its impact on a posted portfolio (migration, lending, attribution)",
    )
    async def diff_post(
        request: Request,
        p: Who,
        name: Annotated[str, NAME_PARAM],
        old: Annotated[str, Query(max_length=60)],
        new: Annotated[str, Query(max_length=60)],
        format: Annotated[str | None, FORMAT_QUERY] = None,
    ) -> Response:
        _diff_allowed(p, name)
        return _json(await _with_upload(request, st, format, lambda path: _diff(name, old, new, path)))

    # --- rating ------------------------------------------------------------------------------------
    @app.post(
        "/v1/rulebooks/{name}/rate",
        tags=["rating"],
        openapi_extra=UPLOAD_BODY,
        summary="Rate a posted portfolio (recorded in the ledger)",
    )
    async def rate(
        request: Request,
        p: Who,
        name: Annotated[str, NAME_PARAM],
        version: Annotated[str | None, VERSION_QUERY] = None,
        format: Annotated[str | None, FORMAT_QUERY] = None,
        what_it_takes: bool = False,
        detail: Annotated[str, Query(pattern="^(summary|ratings|full)$")] = "ratings",
        idempotency_key: Annotated[str | None, IDEM_HEADER] = None,
    ) -> Response:
        allow(p, "firm", "bank", "admin", what="rate firms")

        async def make() -> Response:
            return await _with_upload(
                request, st, format, lambda path: _rate_file(st, p, name, version, path, what_it_takes, detail)
            )

        async def recheck() -> None:  # a bank replaying: the upload's firms' consent, now
            await _with_upload(request, st, format, lambda path: _scope_upload(st, p, name, version, path))

        return await _idempotent(request, p, idempotency_key, make, recheck if p.role == "bank" else None)

    @app.post(
        "/v1/runs/{run_id}/rate",
        tags=["rating"],
        openapi_extra=FIRM_ROWS_BODY,
        summary="Rate one firm against the benchmark tables of a recorded run (recorded as a new run)",
    )
    async def rate_firm(
        request: Request,
        p: Who,
        run_id: Annotated[int, RUN_PARAM],
        idempotency_key: Annotated[str | None, IDEM_HEADER] = None,
    ) -> Response:
        allow(p, "firm", "bank", "admin", what="rate firms")
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise Problem(415, "Unsupported Media Type", "send the firm's rows as application/json", "unsupported-type")
        try:
            rows = json.loads(await request.body())
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise Problem(400, "Bad Request", f"the body is not JSON: {exc}", "bad-json") from None
        if isinstance(rows, dict):
            rows = [rows]
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows) or len(rows) > 50:
            raise Problem(
                422, "Unprocessable Content", "give one firm's rows: an object or a list of 1-50 objects", "bad-rows"
            )
        firms = {str(r.get("firm_id", "")).strip() for r in rows}
        if len(firms) != 1 or "" in firms:
            raise Problem(422, "Unprocessable Content", "every row needs the same, non-empty firm_id", "bad-rows")

        firm = firms.pop()

        async def make() -> Response:
            return await st.work(_rate_one, st, p, run_id, rows, firm)

        async def recheck() -> None:  # a bank replaying: the firm's consent, now
            await st.work(_scope_rows, st, p, [firm], f"rate against run {run_id} (answer replayed)")

        return await _idempotent(request, p, idempotency_key, make, recheck if p.role == "bank" else None)

    # --- a firm in a run ---------------------------------------------------------------------------
    def _firm_in_run(p: Principal, run_id: int, firm_id: str, action: str, results: bool = True) -> RatedRun:
        _firm_roles(p)
        _visible(st, p, firm_id, action)
        run = st.run_row(run_id)
        if run is None:
            raise not_visible()
        if not st.ledger.ratings(run_id, firm_id):
            raise not_visible()
        return st.rated_run(run_id, with_results=results)

    def _row(rr: RatedRun, firm_id: str, year: int | None) -> int:
        from ..analysis.trace import find_firm

        try:
            return find_firm(rr.results, firm_id, year)
        except RuleEngineError:
            raise not_visible() from None

    @app.get("/v1/runs/{run_id}/firms/{firm_id}", tags=["firms"], summary="A firm's ratings in a run")
    async def firm_in_run(p: Who, run_id: Annotated[int, RUN_PARAM], firm_id: Annotated[str, FIRM_PARAM]) -> Response:
        def go() -> Response:
            _firm_roles(p)
            _visible(st, p, firm_id, f"ratings run {run_id}")
            run = st.run_row(run_id)
            ratings = st.ledger.ratings(run_id, firm_id) if run else []
            if run is None or not ratings:
                raise not_visible()
            keep = ("seq", "firm_id", "year", "rating", "status")
            return _json(
                {**_provenance(run), "ratings": [{k: r[k] for k in keep} for r in ratings]}, headers=_prov_headers(run)
            )

        return await st.work(go)

    @app.get(
        "/v1/runs/{run_id}/firms/{firm_id}/explain",
        tags=["firms"],
        summary="The audit trail of a firm's rating in a run (JSON trace or Markdown)",
        responses={200: {"content": {"application/json": {}, "text/markdown": {"schema": {"type": "string"}}}}},
    )
    async def explain(
        p: Who,
        run_id: Annotated[int, RUN_PARAM],
        firm_id: Annotated[str, FIRM_PARAM],
        year: Annotated[int | None, Query(ge=1900, le=2200)] = None,
        format: Annotated[str, Query(pattern="^(json|markdown)$")] = "json",
    ) -> Response:
        def go() -> Response:
            from ..analysis.trace import trace_row

            rr = _firm_in_run(p, run_id, firm_id, f"explain run {run_id}")
            trace = trace_row(rr.plan, rr.results, _row(rr, firm_id, year))
            if format == "markdown":
                from ..render.text import trace_markdown

                return Response(
                    _scrub(st, trace_markdown(trace)), media_type="text/markdown", headers=_prov_headers(rr.run)
                )
            # serialised once (not the CLI's indented text parsed back): the same JSON, the same bytes
            rest = _scrub(st, _dumps({"trace": trace.to_dict()}).decode("utf-8")).encode("utf-8")
            return _with_provenance(rr.run, rest)

        return await st.work(go)

    @app.get(
        "/v1/runs/{run_id}/firms/{firm_id}/what-it-takes",
        tags=["firms"],
        summary="Next better / worse level, margins and the cut that reaches the better level",
    )
    async def what_it_takes(
        p: Who,
        run_id: Annotated[int, RUN_PARAM],
        firm_id: Annotated[str, FIRM_PARAM],
        year: Annotated[int | None, Query(ge=1900, le=2200)] = None,
    ) -> Response:
        def go() -> Response:
            from dataclasses import asdict

            from ..analysis.whatif import firm_steps

            rr = _firm_in_run(p, run_id, firm_id, f"what-it-takes run {run_id}")
            i = _row(rr, firm_id, year)
            status = str(rr.results["status"][i])
            if status != "rated":
                return _json(
                    {
                        **_provenance(rr.run),
                        "firm_id": firm_id,
                        "year": int(rr.results["year"][i]),
                        "status": status,
                        "better": None,
                        "worse": None,
                    },
                    headers=_prov_headers(rr.run),
                )
            better, worse = firm_steps(rr.plan, rr.results, i)
            return _json(
                {
                    **_provenance(rr.run),
                    "firm_id": firm_id,
                    "year": int(rr.results["year"][i]),
                    "rating": str(rr.results["rating"][i]),
                    "status": status,
                    "better": _clean(asdict(better)) if better else None,
                    "worse": _clean(asdict(worse)) if worse else None,
                },
                headers=_prov_headers(rr.run),
            )

        return await st.work(go)

    @app.get(
        "/v1/runs/{run_id}/firms/{firm_id}/report",
        tags=["firms"],
        summary="The firm's rating report (HTML or PDF; needs the report extra)",
        responses={
            200: {
                "content": {
                    "text/html": {"schema": {"type": "string"}},
                    "application/pdf": {"schema": {"type": "string", "format": "binary"}},
                }
            },
            501: _problem(501, "The report extra is not installed"),
        },
    )
    async def report(
        p: Who,
        run_id: Annotated[int, RUN_PARAM],
        firm_id: Annotated[str, FIRM_PARAM],
        year: Annotated[int | None, Query(ge=1900, le=2200)] = None,
        format: Annotated[str, Query(pattern="^(html|pdf)$")] = "html",
        lang: Annotated[str, Query(pattern="^(zh|en)$")] = "zh",
    ) -> Response:
        def go() -> Response:
            try:
                from .. import report as rep
            except ImportError as exc:
                raise Problem(
                    501, "Not Implemented", f"the report extra is not installed ({exc.name})", "no-report-extra"
                ) from None
            rr = _firm_in_run(p, run_id, firm_id, f"report run {run_id}")
            _row(rr, firm_id, year)
            if rr.rated is None:
                # the run's own results (its benchmark tables), not a second rating of its rows
                rr.rated = rep.rated_from(rr.plan, rr.results, rr.data, f"ledger run {run_id}")
            if format == "pdf":
                return Response(
                    rep.firm_pdf(rr.rated, firm_id, year, lang),
                    media_type="application/pdf",
                    headers=_prov_headers(rr.run),
                )
            return Response(
                rep.firm_html(rr.rated, firm_id, year, lang), media_type="text/html", headers=_prov_headers(rr.run)
            )

        return await st.work(go)

    @app.get(
        "/v1/firms/{firm_id}/history",
        tags=["firms"],
        summary="A firm's ratings over years and method versions, with why each changed",
    )
    async def history(p: Who, firm_id: Annotated[str, FIRM_PARAM]) -> Response:
        def go() -> Response:
            _firm_roles(p)
            _visible(st, p, firm_id, "history")
            try:
                rows = st.ledger.history(firm_id)
            except LedgerError as exc:
                if "has no rating in the ledger" in str(exc):
                    raise not_visible() from None
                raise
            keep = (
                "year",
                "run_id",
                "rating",
                "status",
                "created_at",
                "rulebook_id",
                "rulebook_version",
                "rulebook_hash",
                "engine_version",
                "supersedes",
                "superseded_by",
                "previous_run",
                "changed",
                "why",
            )
            return _json({"firm_id": firm_id, "history": [{k: r.get(k) for k in keep} for r in rows]})

        return await st.work(go)

    # --- consent ----------------------------------------------------------------------------------
    @app.post(
        "/v1/consents",
        tags=["consent"],
        status_code=201,
        summary="A firm grants a bank access to its ratings until a date (recorded in the ledger)",
    )
    async def grant(p: Who, body: ConsentIn) -> Response:
        allow(p, "firm", "admin", what="grant consent")
        firm = p.firm if p.role == "firm" else body.firm_id
        if p.role == "firm" and body.firm_id not in (None, p.firm):
            raise Problem(403, "Forbidden", "a firm key grants consent for its own firm only", "forbidden")
        if not firm:
            raise Problem(422, "Unprocessable Content", "firm_id: an admin key names the firm", "no-firm")
        exp = body.expires_at
        if exp.tzinfo is None:
            raise Problem(
                422, "Unprocessable Content", "expires_at needs a time zone (e.g. 2027-06-30T00:00:00Z)", "no-timezone"
            )
        now = dt.datetime.now(dt.UTC)
        if exp <= now or exp > now + dt.timedelta(days=5 * 366):
            raise Problem(
                422, "Unprocessable Content", "expires_at must lie in the future, within 5 years", "bad-expiry"
            )
        iso = exp.astimezone(dt.UTC).isoformat(timespec="microseconds")
        row = await asyncio.wrap_future(
            st.writer.call(store.consent_event, st.writer.engine, firm, body.bank, "grant", iso, p.name)
        )
        return _json({k: row[k] for k in ("firm_id", "bank", "action", "expires_at", "at")}, status=201)

    @app.delete("/v1/consents/{bank}", tags=["consent"], summary="Revoke a bank's consent (recorded in the ledger)")
    async def revoke(
        p: Who,
        bank: Annotated[str, PathParam(max_length=100)],
        firm_id: Annotated[str | None, Query(max_length=200, description="Admin keys only")] = None,
    ) -> Response:
        allow(p, "firm", "admin", what="revoke consent")
        firm = p.firm if p.role == "firm" else firm_id
        if not firm:
            raise Problem(422, "Unprocessable Content", "firm_id: an admin key names the firm", "no-firm")
        row = await asyncio.wrap_future(
            st.writer.call(store.consent_event, st.writer.engine, firm, bank, "revoke", None, p.name)
        )
        return _json({k: row[k] for k in ("firm_id", "bank", "action", "at")})

    @app.get("/v1/consents", tags=["consent"], summary="Consents: a firm's own, a bank's received, or all (admin)")
    async def consents(p: Who) -> Response:
        allow(p, "firm", "bank", "admin", what="read consents")
        if p.role == "firm":
            rows = await st.work(store.consent_states, st.ledger.engine, p.firm, None)
        elif p.role == "bank":
            rows = await st.work(store.consent_states, st.ledger.engine, None, p.bank)
        else:
            rows = await st.work(store.consent_states, st.ledger.engine, None, None)
        return _json(rows)

    @app.get("/v1/access-log", tags=["consent"], summary="Who read a firm's ratings (bank accesses)")
    async def access_log(
        p: Who,
        firm_id: Annotated[str | None, Query(max_length=200, description="Admin keys only")] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> Response:
        allow(p, "firm", "admin", what="read the access log")
        firm = p.firm if p.role == "firm" else firm_id
        rows = await st.work(store.access_log, st.ledger.engine, firm, limit)
        return _json(rows)

    # --- ledger -----------------------------------------------------------------------------------
    def _run_for(p: Principal, run_id: int) -> dict[str, Any]:
        allow(p, "regulator", "admin", what="read runs")
        run = st.run_row(run_id)
        if run is None or (p.role == "regulator" and run["rulebook_id"] not in p.rulebooks):
            raise Problem(404, "Not Found", "no such run, or outside this key's jurisdiction", "not-found")
        return run

    _RUN_FIELDS = (
        "id",
        "created_at",
        "who",
        "engine_version",
        "rulebook_id",
        "rulebook_version",
        "rulebook_hash",
        "input_name",
        "n_ratings",
        "supersedes",
        "reason",
        "hash_alg",
        "run_hash",
    )

    def _fields(p: Principal) -> tuple[str, ...]:
        # a regulator sees aggregates: not who asked for a rating nor what the input was called
        return tuple(k for k in _RUN_FIELDS if p.role == "admin" or k not in ("who", "input_name"))

    @app.get("/v1/ledger/runs", tags=["ledger"], summary="Recorded runs (a regulator: its jurisdiction's)")
    async def runs(p: Who) -> Response:
        allow(p, "regulator", "admin", what="list runs")
        rows = await st.work(st.ledger.runs)
        if p.role == "regulator":
            rows = [r for r in rows if r["rulebook_id"] in p.rulebooks]
        return _json([{k: r[k] for k in _fields(p)} for r in rows])

    @app.get("/v1/ledger/runs/{run_id}", tags=["ledger"], summary="A run's provenance")
    async def run_get(p: Who, run_id: Annotated[int, RUN_PARAM]) -> Response:
        run = await st.work(_run_for, p, run_id)
        return _json({k: run[k] for k in (*_fields(p), "prev_hash", "superseded_by")}, headers=_prov_headers(run))

    @app.get(
        "/v1/ledger/runs/{run_id}/aggregate",
        tags=["ledger"],
        summary="A run's rating distribution (no firm-level data)",
    )
    async def aggregate(p: Who, run_id: Annotated[int, RUN_PARAM]) -> Response:
        def go() -> Response:
            run = _run_for(p, run_id)
            counts: dict[str, int] = {}
            status: dict[str, int] = {}
            for r in st.ledger.ratings(run_id):
                counts[r["rating"] or "unrated"] = counts.get(r["rating"] or "unrated", 0) + 1
                status[r["status"]] = status.get(r["status"], 0) + 1
            return _json(
                {
                    **_provenance(run),
                    "n": run["n_ratings"],
                    "ratings": dict(sorted(counts.items())),
                    "status": dict(sorted(status.items())),
                },
                headers=_prov_headers(run),
            )

        return await st.work(go)

    @app.post(
        "/v1/ledger/runs/{run_id}/replay",
        tags=["ledger"],
        summary="Re-rate a run from its stored materials; prove byte-identical results",
    )
    async def replay(p: Who, run_id: Annotated[int, RUN_PARAM]) -> Response:
        allow(p, "admin", what="replay runs")

        def go() -> Response:
            run = _run_for(p, run_id)
            rep = st.ledger.replay(run_id)
            return _json(
                {
                    **_provenance(run),
                    "identical": rep.identical,
                    "differences": rep.differences,
                    "results_hash": rep.results_hash,
                    "replayed_hash": rep.replayed_hash,
                    "n": rep.n,
                },
                headers=_prov_headers(run),
            )

        return await st.work(go)

    @app.get("/v1/ledger/check", tags=["ledger"], summary="Walk the hash chain; the first broken link, if any")
    async def check(p: Who) -> Response:
        allow(p, "regulator", "admin", what="check the ledger")
        rep = await st.work(st.ledger.check)
        return _json(
            {
                "ok": rep.ok,
                "runs": rep.runs,
                "ratings": rep.ratings,
                "blobs": rep.blobs,
                "problems": [_scrub(st, x) for x in rep.problems],
            }
        )

    return app


async def _with_upload(request: Request, st: State, fmt: str | None, fn: Any) -> Any:
    """Save the upload in a folder of its own and run ``fn(path)`` as bounded work; the folder is
    removed when the work ends (also work abandoned by the time limit, which still finishes)."""
    base = st.folder / "uploads"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = Path(tempfile.mkdtemp(dir=base))
    started = False
    try:
        path = await _upload(request, st, fmt, folder)
        assert path is not None
        _rows_limit(st, path)

        def job() -> Any:
            nonlocal started
            started = True
            try:
                return fn(path)
            finally:
                shutil.rmtree(folder, ignore_errors=True)

        return await st.work(job)
    finally:
        if not started:  # refused before the work began (limits, busy): nothing else will remove it
            shutil.rmtree(folder, ignore_errors=True)


def _clean(x: Any) -> Any:
    import math

    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if hasattr(x, "item"):
        return _clean(x.item())
    return x


def _rate_file(st: State, p: Principal, name: str, version: str | None, path: Path, what: bool, detail: str) -> Pending:
    from .. import pipeline

    book, plan, raw = _read_upload(st, name, version, path)
    if raw.n > st.cfg.max_rows:
        raise Problem(
            413,
            "Content Too Large",
            f"the data has {raw.n:,} rows; at most {st.cfg.max_rows:,} per request",
            "too-many-rows",
        )
    _scope_rows(st, p, _firm_ids(raw), f"rate {name}")
    results = pipeline.rate(plan, None, raw=raw)
    if what and len(results):
        from ..analysis.whatif import columns

        results.columns.update(columns(plan, results))
    out: dict[str, Any] = {
        "n": len(results),
        "distribution": dict(results.distribution("rating")) if "rating" in results.names else {},
        "issues": [_scrub(st, i.format()) for i in results.issues[:100]],
        "n_issues": len(results.issues),
    }
    if detail != "summary":
        out["results"] = _ratings_json(results, detail)
    rest = _dumps(out)  # the body but its provenance: built here, in the worker thread
    mark("rate")
    fut = st.record(
        book,
        raw if pipeline.reads_inputs_alone(plan) else path,  # not read twice
        results,
        plan,
        who=f"service:{p.name}",
        input_name=f"upload:sha256:{_file_sha256(path)}",
        options={"what_it_takes": bool(what), "service": "rate"},
    )
    mark("record")
    return Pending(fut, lambda run: _with_provenance(run, rest))


def _read_upload(st: State, name: str, version: str | None, path: Path) -> tuple[Path, Any, Any]:
    """(rulebook file, plan, the upload as read) for rating ``path`` with the registry's ``name``."""
    from .. import pipeline
    from ..rulebook.loader import load

    book = st.registry.path(name, version)
    plan = load(book)  # the file recorded: no second lookup a newer publish could answer differently
    return book, plan, pipeline.read(path, [plan])  # the rulebook's inputs: all a rating uses


def _scope_upload(st: State, p: Principal, name: str, version: str | None, path: Path) -> None:
    """:func:`_rate_file`'s check of the upload's firms (and a bank's access line), without rating:
    before a stored answer to the same upload is replayed."""
    _scope_rows(st, p, _firm_ids(_read_upload(st, name, version, path)[2]), f"rate {name} (answer replayed)")


def _rate_one(st: State, p: Principal, run_id: int, rows: list[dict[str, Any]], firm_id: str) -> Pending:
    """One firm against a run's benchmark tables: rated here, recorded by the writer thread."""
    # a bank: the firm's consent read here; the access line is committed with the run (one
    # transaction, one fsync), or on its own before the answer if no run is handed to the writer
    line = _scope_rows(st, p, [firm_id], f"rate against run {run_id}", defer=True)  # admin: no check
    alone = functools.partial(store.log_access_rows, st.writer.engine, line) if line else None
    mark("access")
    try:
        rr = st.rated_run(run_id, with_results=False)
        mark("tables")  # the run's rulebook and benchmark tables: loaded once per process, then kept
        with st.turns:  # one at a time per process (State.turns); the wait for the commit is outside
            mark("turn")
            pending = _rate_one_in_turn(st, p, run_id, rr, rows, line)
        pending.failed = alone  # the line alone, if the run's commit fails after all
        return pending
    except BaseException:
        if alone is not None:  # no run handed over (a refused cell, the time limit, a missing run)
            st.write(alone)
        raise


def _rate_one_in_turn(
    st: State,
    p: Principal,
    run_id: int,
    rr: RatedRun,
    rows: list[dict[str, Any]],
    line: list[dict[str, Any]],
) -> Pending:
    from .. import pipeline

    raw = pipeline.read(rows, [rr.plan])  # read once: rated here, and recorded (canonical input) below
    results = pipeline.rate(rr.plan, None, raw=raw, benchmarks=rr.tables)
    head = {"benchmarks_of_run": run_id, "issues": [_scrub(st, i.format()) for i in results.issues[:100]]}
    text = results.to_json()  # the engine's JSON of the rows, put into the body as it is (no parse + dump)
    if "NaN" in text or "Infinity" in text:  # (never expected: such values are null) the strict JSON path
        rest = _dumps({**head, "results": _ratings_json(results, "full")})
    else:
        rest = _dumps(head)[:-1] + b', "results": ' + text.strip().encode("utf-8") + b"}"
    mark("rate")
    fut = st.record(
        rr.book,
        raw,  # the rows as read (pipeline.read leaves them as given): no second read for the ledger
        results,
        rr.plan,
        who=f"service:{p.name}",
        input_name="firm-rating",
        options={"benchmarks_of_run": run_id, "service": "rate-firm"},
        fixed_tables=True,  # the run's tables, loaded once and never changed: digested once
        also=[functools.partial(store.insert_access, rows=line)] if line else None,
    )
    mark("record")
    return Pending(fut, lambda run: _with_provenance(run, rest))


def _dumps(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False, default=str, allow_nan=False).encode("utf-8")


def _with_provenance(run: dict[str, Any], rest: bytes) -> Response:
    """``{**provenance, **rest}`` as JSON, the rest serialised already (same bytes as one dumps)."""
    head = _dumps(_provenance(run))
    body = head[:-1] + (b", " + rest[1:] if rest != b"{}" else b"}")
    return Response(body, media_type="application/json", headers=_prov_headers(run))


def _file_sha256(path: Path) -> str:
    with path.open("rb") as f:  # in pieces: the upload is on disk, not in memory
        return hashlib.file_digest(f, "sha256").hexdigest()


def log_to_stderr() -> None:
    """The service's own lines (keys reloaded, the writer's figures) on stderr, like uvicorn's."""
    own = logging.getLogger("ruleengine")
    if not own.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        own.addHandler(handler)
        own.setLevel(logging.INFO)


UVICORN = {  # uvicorn's settings for every server process
    "log_level": "info",
    "timeout_keep_alive": 5,
    "limit_concurrency": 256,
    "h11_max_incomplete_event_size": 64 * 1024,
}


# How long a thread may hold the GIL while another waits for it, in a server process (Python's
# default: 5 ms). The ledger writer releases the GIL at each statement of its transaction (SQLite
# runs without it) and must get it back from the rating running meanwhile; at 5 ms a wait each,
# the slowest 1% of one-firm ratings spent 31-77 ms in their commit, holding the ledger's write
# lock that the other server process waits for. At 0.5 ms: 17-30 ms. Smaller in eight of nine
# alternated pairs, p99 lower in six; noisy, as every tail figure on this host is
# (benchmarks/SERVICE.md, session 11).
GIL_SWITCH_S = 0.0005


def server_process(warm_memory_mb: int = 0) -> None:
    """What a process sets for itself before it serves: the heap settled (:func:`heap.enable`:
    no 50-100 ms full collections under load), the GIL's switch interval (GIL_SWITCH_S) and, with
    ``warm_memory_mb``, its memory kept warm (:func:`heap.keep_warm`)."""
    import sys

    from . import heap

    heap.enable()
    sys.setswitchinterval(GIL_SWITCH_S)
    why_not = heap.keep_warm(warm_memory_mb)
    if why_not:
        log.warning("--warm-memory %d ignored: %s", warm_memory_mb, why_not)


def serve_app(
    cfg: ServiceConfig,
    host: str,
    port: int,
    access_log: bool,
    sock: Any = None,
    cpu: int | None = None,
    ready: Callable[[], Any] | None = None,
    announce: bool = False,
) -> None:
    """Build the app and serve it in this process until SIGINT/SIGTERM (``sock``: the listening
    socket, bound by the caller — :func:`processes.listener`; without it uvicorn binds
    ``host:port`` and a failure to bind exits with uvicorn's code 3; ``cpu``: the
    CPU this process's threads are pinned to, see service/processes.py; ``ready``: called once the
    app is built, as it starts serving — the supervisor restarts a process that dies after that
    and stops the server if one dies before); ``announce``: log ``serving on URL`` once the app is
    built (one process; uvicorn does not say it for a socket it is given)."""
    import signal

    import uvicorn

    app = build(cfg)
    st: State = app.state.service
    log_to_stderr()
    server_process(cfg.warm_memory_mb)
    if cpu is not None:
        from .processes import pin_process

        try:
            pin_process(cpu)
        except OSError as exc:  # (a container that forbids it): served unpinned, and said so
            log.warning("process %d not pinned to CPU %d: %s", os.getpid(), cpu, exc.strerror or exc)
    if hasattr(signal, "SIGHUP"):  # `kill -HUP PID`: read the keys file again now
        signal.signal(signal.SIGHUP, lambda _sig, _frame: st.reload_keys())
    # access_log: a line per request costs CPU; the ledger logs every bank access anyway
    config = uvicorn.Config(app, host=host, port=port, access_log=access_log, **UVICORN)  # type: ignore[arg-type]
    if ready is not None:
        ready()
    if announce:
        log.info("serving on http://%s:%d (Ctrl+C to stop)", f"[{host}]" if ":" in host else host, port)
    uvicorn.Server(config).run(sockets=[sock] if sock is not None else None)


def run(
    cfg: ServiceConfig, host: str, port: int, access_log: bool = False, processes: int = 1, pin_cpus: bool = True
) -> None:
    if processes > 1 or cfg.warm_memory_mb > 0:  # warm memory: a fresh process set up for it (supervise)
        from .processes import supervise

        supervise(cfg, host, port, access_log, processes, pin_cpus)
    else:
        from .processes import listener

        sock = listener(host, port)  # bound here: an address in use is an `error:` line, exit code 1
        serve_app(cfg, host, sock.getsockname()[1], access_log, sock=sock, announce=True)
