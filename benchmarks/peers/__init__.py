"""The parts of ``benchmarks/bench_peers.py``: ruleengine against its peers on the Huzhou method
(issue #6). Run the benchmark through ``python benchmarks/bench_peers.py``; see its docstring."""
