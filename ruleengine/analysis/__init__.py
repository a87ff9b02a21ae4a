"""Analyses over rated portfolios: explain (trace), what it takes, diff, compare, author tests."""
