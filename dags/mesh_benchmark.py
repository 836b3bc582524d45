"""Airflow benchmark DAGs: one per enabled environment × mesh in include/meshbench/benchmarks.yaml.

Wiring only; the DAGs are built by meshbench.dagfactory (see its docstring for the shape).
"""

from __future__ import annotations

from meshbench.dagfactory import build_benchmark_dags

globals().update(build_benchmark_dags())
