"""Run settings of the peer benchmark.

``--quick`` lowers EVAL_REPEAT, E2E_REPEAT, EXPLAIN_ROWS and EXPLAIN_FIRMS at start-up, so the
other modules read them as ``config.NAME`` when they run, never import them by value.
"""

from __future__ import annotations

BOOK = "huzhou"
ZEN_MAX_ROWS = 50_000
EVAL_REPEAT = 9  # ruleengine and numpy evaluate, taking turns
EXPLAIN_ROWS = 50_000  # explain latency: one firm's trace in a rated portfolio of this size
EXPLAIN_FIRMS = 50
E2E_REPEAT = 5  # fresh-process runs per kind
SIMPLEEVAL_MAX_ROWS = 1_000
