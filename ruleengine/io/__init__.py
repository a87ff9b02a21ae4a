"""Data in and out: the firm-year data contract, file formats, synthetic portfolios."""
