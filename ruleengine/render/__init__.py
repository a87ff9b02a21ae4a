"""Renderers: pure functions from analysis results to text, Markdown and graphs."""
