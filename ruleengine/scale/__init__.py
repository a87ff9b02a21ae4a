"""Rating at scale: the pipeline's phases over partitions of a portfolio.

    partition.py   firm-complete partitions: a stable firm hash, the check, the phases over
                   in-memory partitions (the reference every runner is compared with)
    chunked.py     a single-process runner for Parquet datasets larger than memory
    sink.py        results written in canonical row groups (the same bytes whoever computed them)
    dask.py        the phases on a Dask cluster (``ruleengine[dask]``)
    spark.py       the phases on Spark through Arrow (``ruleengine[spark]``)
    engines.py     ``ruleengine rate … --engine spark|dask``

See docs/scale.md.

Every runner goes through the same phases (ruleengine.engine): stage 1 per partition → partials
→ one exact merge → benchmark tables → stage 2 per partition, one pass per benchmark stage plus
the final pass. Partitions must be firm-complete: ``prev``/``baseline`` and the duplicate
(firm_id, year) check look at the other rows of the same firm.
"""
