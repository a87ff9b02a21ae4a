"""The README's `curl` session for each role (issue #17), run as it is written: bash, the
`ruleengine` command, a real server on 127.0.0.1 and curl. Only the port changes (8000 may be
taken); every call's HTTP status and the facts the README's comments promise are checked, so a
session that no longer matches the service (a firm id the sample no longer has, a rulebook
version that moved on) fails here instead of in a reader's terminal."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the service extra is not installed: pip install '.[service]'")

README = Path(__file__).resolve().parents[1] / "README.md"
MARK = "@@status "


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def readme_session() -> str:
    """The bash block that follows 'A session for each role:' in the README."""
    text = README.read_text(encoding="utf-8")
    start = text.index("A session for each role:")
    m = re.compile(r"```bash\n(.*?)```", re.S).search(text, start)
    assert m is not None, "README: no bash block after 'A session for each role:'"
    return m.group(1)


def _runnable(session: str, port: int) -> str:
    """The session on ``port``, each curl printing its status after its body, and the server it
    starts stopped when the script ends."""
    assert session.count("127.0.0.1:8000") == 1 and session.count("ruleengine serve ") == 1
    script = session.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    script = re.sub(r"^(ruleengine serve [^&\n]*?) &$", rf"\1 --port {port} &", script, flags=re.M)
    script = re.sub(r"^curl -s ", f"curl -s -w '\\\\n{MARK}%{{http_code}}\\\\n' ", script, flags=re.M)
    # the readiness wait: bounded here (the README's loop waits as long as it takes)
    script = script.replace("until curl ", "for _ in $(seq 120); do curl ").replace(
        "; do sleep 0.5; done", " && break; sleep 0.5; done"
    )
    return "set -u\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + script


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (apt-get install -y curl)")
def test_the_readme_curl_session_runs_as_written(tmp_path):
    session = readme_session()
    port = _free_port()
    bindir = str(Path(sys.executable).parent)  # the ruleengine and python this test runs with
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    env.pop("RULEENGINE_LEDGER_WHO", None)
    done = subprocess.run(
        ["bash", "-c", _runnable(session, port)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    # each call's body and status, in the README's order
    calls = re.findall(rf"(.*?)\n{MARK}(\d+)\n", out, re.S)
    urls = re.findall(r"^curl -s .*?\$S(/v1/[^\s\"]*)", session, re.M | re.S)
    assert len(calls) == len(urls) == 13, (len(calls), urls, out[-2000:])
    got = [(u.split("?")[0], int(code)) for u, (_, code) in zip(urls, calls, strict=True)]
    firm, other = "91330500032441094N", "91330500469004752F"  # the sample's first two Huzhou firms
    assert got == [
        ("/v1/rulebooks/huzhou/rate", 200),  # admin
        ("/v1/ledger/runs/1/replay", 200),
        (f"/v1/runs/1/firms/{firm}/explain", 200),  # firm
        (f"/v1/runs/1/firms/{firm}/what-it-takes", 200),
        ("/v1/consents", 201),
        (f"/v1/firms/{firm}/history", 200),  # bank, with consent
        (f"/v1/firms/{other}/history", 404),  # bank, without: "# 404"
        ("/v1/access-log", 200),
        ("/v1/ledger/runs/1/aggregate", 200),  # regulator
        ("/v1/ledger/check", 200),
        ("/v1/rulebooks/validate", 200),  # author
        ("/v1/rulebooks/huzhou/versions", 201),
        ("/v1/rulebooks/huzhou/diff", 200),  # regulator
    ], out[-3000:]
    body = [b.strip().splitlines()[-1] if b.strip() else "" for b, _ in calls]
    import json

    rated = json.loads(body[0])
    assert rated["run_id"] == 1 and rated["n"] == 600  # 300 firms x 2 years
    assert json.loads(body[1])["identical"] is True  # the README's comment
    assert firm in calls[2][0]  # the firm's own trace, as Markdown
    assert json.loads(body[4])["bank"] == "bank-a"
    history = json.loads(body[5])  # the consented firm's history: its two years, rated in run 1, first ratings
    assert history["firm_id"] == firm
    assert sorted((h["year"], h["run_id"]) for h in history["history"]) == [(2022, 1), (2023, 1)]
    assert all(h["why"] == ["first rating of this firm-year"] for h in history["history"])
    assert json.loads(body[6])["status"] == 404
    log = json.loads(body[7])  # the firm sees who looked: bank-a, its history, allowed
    assert [(e["bank"], e["action"], e["allowed"]) for e in log] == [("bank-a", "history", True)]
    assert json.loads(body[9])["ok"] is True
    assert json.loads(body[10])["valid"] is True
    published = json.loads(body[11])
    assert "3.1.0" in json.dumps(published)
    assert "3.0.0" in calls[12][0] and "3.1.0" in calls[12][0]
