"""Bounded reading of outside files: size limits, zip limits, entity-free XML.

* XML: parsed by defusedxml with DTDs forbidden, so no entity (internal or external) is ever
  expanded and nothing is fetched; the file size is capped before parsing.
* Zip containers (OFD, xlsx): member count, total uncompressed size, per-member size and
  compression ratio are checked from the central directory *and* enforced while reading, so a
  forged header cannot lie its way past the limits.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .quality import AcquireError


class SourceError(AcquireError):
    """One source file that cannot be read; the acquisition records it and goes on with the rest."""


@dataclass(frozen=True)
class Limits:
    max_xml_bytes: int = 5_000_000  # one invoice XML; real ones are a few kB
    max_zip_members: int = 2_000
    max_zip_total_bytes: int = 50_000_000
    max_member_bytes: int = 20_000_000
    max_ratio: float = 200.0  # uncompressed / compressed, per member


LIMITS = Limits()


def parse_xml(data: bytes, name: str, limits: Limits = LIMITS) -> Any:
    """An ElementTree root from bytes, refusing DTDs/entities and oversized input."""
    try:
        from defusedxml import DefusedXmlException
        from defusedxml.ElementTree import ParseError, fromstring
    except ImportError:  # pragma: no cover - the extra is missing
        raise AcquireError("reading invoice XML needs defusedxml: pip install 'ruleengine[acquire]'") from None
    if len(data) > limits.max_xml_bytes:
        raise SourceError(
            f"{name}: XML of {len(data):,} bytes exceeds the {limits.max_xml_bytes:,}-byte limit; not read"
        )
    try:
        return fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise SourceError(
            f"{name}: XML declares a DTD or entities ({type(exc).__name__}); refused, nothing expanded"
        ) from None
    except ParseError as exc:
        line, col = getattr(exc, "position", (0, 0))
        raise SourceError(f"{name}:{line}:{col + 1}: malformed XML: {str(exc).split(':')[0]}") from None


def read_zip_members(path: Path, wanted: Any, limits: Limits = LIMITS) -> dict[str, bytes]:
    """The members of a zip for which ``wanted(name)`` is true, within the limits."""
    name = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"{name}: not a readable zip container ({exc})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_zip_members:
            raise SourceError(f"{name}: {len(infos)} members exceed the limit of {limits.max_zip_members}; not read")
        total = sum(i.file_size for i in infos)
        if total > limits.max_zip_total_bytes:
            raise SourceError(
                f"{name}: declares {total:,} bytes uncompressed, "
                f"over the {limits.max_zip_total_bytes:,}-byte limit; not read"
            )
        out: dict[str, bytes] = {}
        for info in infos:
            if info.is_dir() or not wanted(info.filename):
                continue
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > limits.max_member_bytes or ratio > limits.max_ratio:
                raise SourceError(
                    f"{name}: member {info.filename} would expand to {info.file_size:,} bytes "
                    f"(ratio {ratio:.0f}:1); refused as a possible zip bomb"
                )
            try:
                with zf.open(info) as fh:
                    data = fh.read(limits.max_member_bytes + 1)  # never more than the limit, whatever the header says
            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
                raise SourceError(f"{name}: member {info.filename} cannot be read ({exc})") from None
            if len(data) > limits.max_member_bytes:
                raise SourceError(
                    f"{name}: member {info.filename} expands beyond {limits.max_member_bytes:,} bytes; refused"
                )
            out[info.filename] = data
        return out


def check_zip(path: Path, limits: Limits = LIMITS) -> None:
    """Check a zip container (e.g. an .xlsx) against the limits without extracting it."""
    name = str(path)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"{name}: not a readable zip container ({exc})") from None
    if len(infos) > limits.max_zip_members:
        raise SourceError(f"{name}: {len(infos)} members exceed the limit of {limits.max_zip_members}")
    total = sum(i.file_size for i in infos)
    if total > limits.max_zip_total_bytes * 10:  # spreadsheets may be large, but not bombs
        raise SourceError(f"{name}: declares {total:,} bytes uncompressed; refused")
    for i in infos:
        if i.file_size / max(i.compress_size, 1) > limits.max_ratio * 5:
            raise SourceError(
                f"{name}: member {i.filename} has a compression ratio of "
                f"{i.file_size / max(i.compress_size, 1):.0f}:1; refused"
            )
