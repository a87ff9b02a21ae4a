"""Errors of the ledger: every one a :class:`ruleengine.RuleEngineError` (the CLI prints ``error: …``)."""

from __future__ import annotations

from ..errors import DataError, RuleEngineError


class LedgerError(RuleEngineError):
    """A ledger that cannot be opened, read or written, or a run that is not there."""


class TamperError(LedgerError):
    """The ledger's hash chain or a signature does not hold."""


class UnstorableInput(LedgerError, DataError):
    """Input cells the ledger cannot store faithfully (a JSON object or list where a number or text
    belongs): the run is not recorded. A data problem (the service answers 422), not a ledger fault."""
