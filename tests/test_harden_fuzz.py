"""A seeded fuzz suite (issue #11, "Must hold"): rulebook mutants — alias bombs, hostile YAML,
hostile formulas as strings in YAML, structural damage — through `ruleengine validate`, and
tampered plan-cache entries through `load` + `rate`.

Every case runs in a worker process under a memory limit (RLIMIT_AS) and a per-case timeout
enforced from outside (a worker that does not answer is killed and counted as a hang). Asserted:
zero `internal error`, zero hangs, zero crashed workers, zero planted code run, and every cache
case rates exactly as a fresh compile. Seeds are fixed, so a failure names a case that reproduces;
``HARDEN_FUZZ_SCALE=4`` runs four times as many.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOKS = ROOT / "rulebooks"
SMALL = ROOT / "golden" / "portfolios" / "small.csv"
SCALE = int(os.environ.get("HARDEN_FUZZ_SCALE", "1"))
MEMORY_MB = 1024
CASE_TIMEOUT = 20.0  # seconds; cases take ~0.05 s, a bomb or a hang would take forever

WORKER = r"""
import json, os, resource, sys, traceback
limit = int(sys.argv[1]) << 20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from click.testing import CliRunner
import ruleengine
from ruleengine.rulebook import loader as _api
from ruleengine.cli import main
fresh = None
for line in sys.stdin:
    case = json.loads(line)
    out = {"id": case["id"]}
    try:
        _api._CACHE.clear()
        if case["kind"] == "validate":
            r = CliRunner().invoke(main, ["validate", case["path"]])
            out.update(code=r.exit_code, output=r.output[-2000:])
            if r.exception is not None and not isinstance(r.exception, SystemExit):
                out["exception"] = "".join(traceback.format_exception(r.exception))[-2000:]
        else:
            os.environ.update(case["env"])
            plan = ruleengine.load("huzhou")
            res = ruleengine.rate(plan, case["data"])
            out.update(code=0, rating=res["rating"].tolist(), output="")
    except BaseException as exc:
        out.update(code=99, exception="".join(traceback.format_exception(exc))[-2000:], output="")
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
"""


class Pool:
    """One worker process at a time (the machine is shared); restarted after a hang or a crash."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", WORKER, str(MEMORY_MB)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=self.env,
        )

    def run(self, case: dict) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        start = time.monotonic()
        ready, _, _ = select.select([self.proc.stdout], [], [], CASE_TIMEOUT + 10)  # + worker start-up
        if not ready:
            self._kill()
            return {"id": case["id"], "hang": True}
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self._kill()
            return {"id": case["id"], "crash": code}
        result = json.loads(line)
        result["seconds"] = time.monotonic() - start
        return result

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(timeout=30)
            self.proc.stdout.close()  # type: ignore[union-attr]

    def _kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()  # type: ignore[union-attr]
            except OSError:
                pass
        self.proc = None


# -- rulebook mutants ----------------------------------------------------------------------------

HOSTILE_FORMULAS = [
    "__import__('os').system('touch /tmp/pwned')",
    "().__class__.__bases__[0].__subclasses__()",
    "k.__class__",
    "lambda: 1",
    "[x for x in range(10**9)]",
    "'a' * 10**9",
    "9**9**9**9",
    "10**10**10",
    "2**(2**64)",
    "round(k, 1000000000)",
    "99999999999999999999 + 1",
    "1e999",
    "-1e999 * 0",
    "nan",
    "inf",
    "k @ k",
    "k[0]",
    "{}",
    "{k: k}",
    "(k := 1)",
    "f'{k}'",
    "k if k else",
    "open('/etc/passwd').read()",
    "exec('1')",
    "eval('1')",
    "getattr(k, 'real')",
    "max()",
    "max(" + ",".join(["k"] * 3000) + ")",
    "min(k, k, key=k)",
    "-" * 5000 + "k",
    "~" * 1000 + "k",
    "not " * 800 + "k",
    "(" * 300 + "k" + ")" * 300,
    "+".join(["k"] * 1999),
    "**".join(["k"] * 1000),
    " if k else ".join(["k"] * 300),
    "k" * 5000,
    "k\n;\nk",
    "k; import os",
    "\u202ek",
    "ｋ",
    "k\x00",
    "'" + "x" * 3000 + "'",
    "1/0",
    "0/0",
    "1 % 0",
    "k < k < k < k",
    "True + True",
    "None",
    "...",
    "b'x'",
    "1j",
    "0x" + "f" * 100,
    "1_000_000_000_000_000_000_000_000",
]

HOSTILE_SCALARS = [
    "2021-02-30",
    "2021-13-01",
    "0000-00-00",
    "!foo x",
    "!!python/object/apply:os.system ['touch /tmp/pwned']",
    "!!python/name:os.system",
    "!!binary aGVsbG8=",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!!timestamp nope",
    "!!int x",
    "!!float x",
    "!!bool maybe",
    "9" * 5000,
    "9" * 30,
    "-" + "9" * 25,
    "1.0e+999",
    "-1.0e+999",
    ".nan",
    ".inf",
    "0b" + "1" * 200,
    "0x" + "f" * 50,
    "1:2:3:4:5:6:7:8:9",
    "190:20:30",
    "~",
    "=",
    "<<",
    "[]",
    "{}",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "*undefined",
    "&x [*x]",
    "&y {a: *y}",
    '"' + "x" * 60_000 + '"',
    '"\\x00"',
    '"\\uD800"',
    "'unterminated",
    "{a: 1, a: 2}",
    "? [complex] : key",
    "|\n  block",
    "- - - -",
    "@reserved",
    "`reserved",
    "%TAG",
]


def alias_bomb(rng: random.Random, indent: str = "") -> str:
    width = rng.randint(5, 12)
    depth = rng.randint(5, 12)
    names = [f"l{i}" for i in range(depth)]
    lines = [f"{indent}{names[0]}: &{names[0]} [{','.join(['lol'] * width)}]"]
    for prev, name in zip(names, names[1:], strict=False):
        style = rng.choice(["flow", "map"])
        if style == "flow":
            lines.append(f"{indent}{name}: &{name} [{','.join([f'*{prev}'] * width)}]")
        else:
            items = ", ".join(f"k{j}: *{prev}" for j in range(width))
            lines.append(f"{indent}{name}: &{name} {{{items}}}")
    return "\n".join(lines) + "\n"


def mutate(text: str, rng: random.Random) -> tuple[str, str]:
    """One mutant of a rulebook's text, and a short name of what was done."""
    lines = text.split("\n")
    if not any(": " in line for line in lines[1:]):  # too damaged to aim at a value: cut it
        return text[: rng.randrange(len(text) + 1)], "truncate"
    op = rng.choice(
        [
            "bomb",
            "bomb-in-book",
            "formula",
            "scalar",
            "delete",
            "duplicate",
            "swap",
            "indent",
            "truncate",
            "bytes",
            "key-alias",
            "deep",
            "value-swap",
        ]
    )
    if op == "bomb":
        return alias_bomb(rng), op
    if op == "bomb-in-book":
        return text + "\nx-bomb:\n" + alias_bomb(rng, "  "), op
    if op == "formula":
        idx = [i for i, line in enumerate(lines) if line.strip().startswith(("expr:", "value:", "where:"))]
        i = rng.choice(idx or [i for i, line in enumerate(lines) if ":" in line])
        head = lines[i][: lines[i].index(":") + 1]
        formula = rng.choice(HOSTILE_FORMULAS)
        lines[i] = f"{head} {json.dumps(formula, ensure_ascii=rng.random() < 0.5)}"
        return "\n".join(lines), f"formula {formula[:40]!r}"
    if op == "scalar":
        idx = [i for i, line in enumerate(lines) if ": " in line and not line.lstrip().startswith("#")]
        i = rng.choice(idx)
        scalar = rng.choice(HOSTILE_SCALARS)
        lines[i] = lines[i][: lines[i].index(": ") + 2] + scalar
        return "\n".join(lines), f"scalar {scalar[:40]!r}"
    if op == "delete":
        del lines[rng.randrange(len(lines))]
    elif op == "duplicate":
        i = rng.randrange(len(lines))
        lines.insert(i, lines[i])
    elif op == "swap":
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif op == "indent":
        i = rng.randrange(len(lines))
        lines[i] = rng.choice(["", " ", "   ", "\t"]) + lines[i]
    elif op == "truncate":
        return text[: rng.randrange(len(text))], op
    elif op == "bytes":
        pos = rng.randrange(len(text))
        junk = "".join(chr(rng.choice([0, 7, 0x1B, 0xFEFF, 0xFFFE, 0x85, 0x2028, 0xD7FF, ord("\t")])) for _ in range(3))
        return text[:pos] + junk + text[pos:], op
    elif op == "key-alias":
        idx = [i for i, line in enumerate(lines) if line.startswith("  ") and line.rstrip().endswith(":")]
        if not idx:
            return text + "\nextra: *nothing\n", op
        i = rng.choice(idx)
        name = lines[i].strip()[:-1]
        lines[i] = lines[i].replace(f"{name}:", f"&{name.replace('_', '')} {name}:", 1)
        lines.append(f"extra: *{name.replace('_', '')}")
    elif op == "deep":
        i = rng.choice([i for i, line in enumerate(lines) if ": " in line])
        n = rng.randint(20, 400)
        lines[i] = lines[i][: lines[i].index(": ") + 2] + "[" * n + "1" + "]" * n
    elif op == "value-swap":
        idx = [i for i, line in enumerate(lines) if ": " in line and not line.lstrip().startswith("#")]
        i, j = rng.choice(idx), rng.choice(idx)
        vi, vj = lines[i].split(": ", 1)[1], lines[j].split(": ", 1)[1]
        lines[i] = lines[i].split(": ", 1)[0] + ": " + vj
        lines[j] = lines[j].split(": ", 1)[0] + ": " + vi
    return "\n".join(lines), op


def rulebook_cases(folder: Path, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    shutil.copytree(BOOKS / "lib", folder / "lib")
    sources = {p.name: p.read_text(encoding="utf-8") for p in sorted(BOOKS.glob("*.yaml"))}
    sources["accounting.yaml"] = (BOOKS / "lib" / "accounting.yaml").read_text(encoding="utf-8")
    cases = []
    for i in range(n):
        name = rng.choice(sorted(sources))
        text, what = mutate(sources[name], rng)
        if rng.random() < 0.15:  # a second mutation on top
            text, more = mutate(text, rng)
            what += " + " + more
        path = folder / f"case-{i:04d}-{name}"
        data = text.encode("utf-8", "surrogatepass")
        if rng.random() < 0.03:
            data = data[: rng.randrange(len(data) + 1)] + bytes([0xFF, 0xFE, 0xC3])  # not UTF-8
        path.write_bytes(data)
        cases.append({"id": f"seed {seed} case {i} ({name}: {what})", "kind": "validate", "path": str(path)})
    return cases


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    env = {**os.environ, "RULEENGINE_CACHE": "off"}
    p = Pool(env)
    yield p
    p.close()


def test_rulebook_mutants_never_end_in_an_internal_error(pool, tmp_path):
    n = 240 * SCALE
    cases = rulebook_cases(tmp_path, n, seed=20261202)
    results = [pool.run(c) for c in cases]
    hangs = [r["id"] for r in results if r.get("hang")]
    crashes = [(r["id"], r["crash"]) for r in results if "crash" in r]
    internal = [
        (r["id"], r.get("exception") or r["output"])
        for r in results
        if "internal error" in r.get("output", "") or r.get("code") not in (0, 1)
    ]
    assert not hangs, hangs
    assert not crashes, crashes
    assert not internal, internal[:3]
    refused = sum(r["code"] == 1 for r in results)
    # every refusal is a located error: FILE:LINE:COL: error, or the rulebook-level "error:" of a
    # file that is not UTF-8 text at all (also located, at 1:1)
    unlocated = [r["id"] for r in results if r["code"] == 1 and ": error: " not in r["output"]]
    assert not unlocated, unlocated[:5]
    slowest = max(r["seconds"] for r in results)
    print(
        f"\nrulebook mutants: {n} cases, {refused} refused with located errors, {n - refused} valid, "
        f"slowest {slowest:.2f} s"
    )
    assert refused > n // 2  # the mutants are mostly hostile: most must be refused


# -- tampered cache entries ----------------------------------------------------------------------


class _Planted:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def tamper(rng: random.Random, cache: Path, config: Path, marker: Path, scratch: Path) -> str:
    """Damage the one valid entry (or the folder, or the key) of ``cache`` one seeded way."""
    (entry,) = cache.glob("plan-*.pickle")
    data = entry.read_bytes()
    bomb = pickle.dumps(_Planted(str(marker)))
    key = config / "ruleengine" / "cache.key"
    op = rng.choice(
        [
            "flip",
            "flip-many",
            "truncate",
            "append",
            "bomb",
            "bomb-with-header",
            "payload-swap",
            "empty",
            "symlink",
            "symlink-dev-zero",
            "fifo",
            "directory",
            "world-writable",
            "group-writable",
            "key-readable",
            "key-damaged",
            "key-symlink",
            "huge",
            "zero-tag",
            "old-format",
        ]
    )
    if op == "flip":
        i = rng.randrange(len(data))
        entry.write_bytes(data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :])
    elif op == "flip-many":
        b = bytearray(data)
        for _ in range(rng.randint(2, 50)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        entry.write_bytes(bytes(b))
    elif op == "truncate":
        entry.write_bytes(data[: rng.randrange(len(data))])
    elif op == "append":
        entry.write_bytes(data + bomb)
    elif op == "bomb":
        entry.write_bytes(bomb)
    elif op == "bomb-with-header":
        entry.write_bytes(data[: len(b"ruleengine-plan-v3\n") + 32] + bomb)
    elif op == "payload-swap":
        head = len(b"ruleengine-plan-v3\n") + 32
        stored = pickle.loads(data[head:])
        for band in stored["plan"].ratings["level"].bands:
            if isinstance(band.upper, float):
                band.upper *= rng.choice([0.1, 3.0, -1.0])
        entry.write_bytes(data[:head] + pickle.dumps(stored))
    elif op == "empty":
        entry.write_bytes(b"")
    elif op == "symlink":
        target = scratch / "elsewhere"
        target.write_bytes(data)
        entry.unlink()
        entry.symlink_to(target)
    elif op == "symlink-dev-zero":
        entry.unlink()
        entry.symlink_to("/dev/zero")
    elif op == "fifo":
        entry.unlink()
        os.mkfifo(entry)
    elif op == "directory":
        entry.unlink()
        entry.mkdir()
    elif op == "world-writable":
        os.chmod(cache, 0o777)
        entry.write_bytes(bomb)
    elif op == "group-writable":
        os.chmod(cache, 0o770)
        entry.write_bytes(bomb)
    elif op == "key-readable":
        os.chmod(key, 0o644)
        entry.write_bytes(bomb)
    elif op == "key-damaged":
        key.write_text("not hex")
    elif op == "key-symlink":
        other = scratch / "other.key"
        other.write_text(key.read_text())
        os.chmod(other, 0o600)
        key.unlink()
        key.symlink_to(other)
        entry.write_bytes(bomb)
    elif op == "huge":
        with entry.open("r+b") as fh:
            fh.truncate(65 * 1024 * 1024)  # sparse: larger than MAX_ENTRY_BYTES
    elif op == "zero-tag":
        head = len(b"ruleengine-plan-v3\n")
        entry.write_bytes(data[:head] + b"\0" * 32 + data[head + 32 :])
    elif op == "old-format":
        head = len(b"ruleengine-plan-v3\n") + 32
        entry.write_bytes(data[head:])  # a bare pickle of a genuine plan, as the old cache wrote
    return op


def test_tampered_cache_entries_are_never_trusted(pool, tmp_path):
    base = tmp_path / "base"
    config = tmp_path / "config"
    env = {"RULEENGINE_CACHE": "on", "RULEENGINE_CACHE_DIR": str(base / "cache"), "XDG_CONFIG_HOME": str(config)}
    fresh = pool.run({"id": "fresh", "kind": "cache", "env": {**env, "RULEENGINE_CACHE": "off"}, "data": str(SMALL)})
    first = pool.run({"id": "first", "kind": "cache", "env": env, "data": str(SMALL)})
    assert fresh.get("rating") and first.get("rating") == fresh["rating"], (fresh, first)
    assert len(list((base / "cache").glob("plan-*.pickle"))) == 1
    rng = random.Random(11_1)
    n = 40 * SCALE
    ops: dict[str, int] = {}
    for i in range(n):
        case_dir = tmp_path / f"c{i}"
        shutil.copytree(base, case_dir, symlinks=True)
        shutil.copytree(config, case_dir / "config")
        os.chmod(case_dir / "cache", 0o700)
        os.chmod(case_dir / "config" / "ruleengine", 0o700)
        os.chmod(case_dir / "config" / "ruleengine" / "cache.key", 0o600)
        marker = case_dir / "marker"
        scratch = case_dir / "scratch"
        scratch.mkdir()
        op = tamper(rng, case_dir / "cache", case_dir / "config", marker, scratch)
        ops[op] = ops.get(op, 0) + 1
        case_env = {**env, "RULEENGINE_CACHE_DIR": str(case_dir / "cache"), "XDG_CONFIG_HOME": str(case_dir / "config")}
        result = pool.run({"id": f"seed 111 case {i} ({op})", "kind": "cache", "env": case_env, "data": str(SMALL)})
        assert not result.get("hang") and "crash" not in result, result
        assert result["code"] == 0, result
        assert not marker.exists(), f"planted code ran: {result['id']}"
        assert result["rating"] == fresh["rating"], result["id"]
        shutil.rmtree(case_dir, ignore_errors=True)
    print(f"\ncache tampering: {n} cases over {len(ops)} kinds: {dict(sorted(ops.items()))}")
    assert len(ops) >= 15  # the seed covers most of the 20 kinds
