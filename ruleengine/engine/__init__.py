"""The engine: a compiled plan evaluated over columns (vectorised), benchmark tables, results."""
