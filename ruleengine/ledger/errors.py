"""Errors of the ledger: every one a :class:`ruleengine.RuleEngineError` (the CLI prints ``error: …``)."""

from __future__ import annotations

from ..errors import RuleEngineError


class LedgerError(RuleEngineError):
    """A ledger that cannot be opened, read or written, or a run that is not there."""


class TamperError(LedgerError):
    """The ledger's hash chain or a signature does not hold."""
