"""The Airflow aggregation DAG: daily summaries, comparisons, charts and reports of positive runs.

Wiring only; the work is meshbench.analysis.daily.
"""

from __future__ import annotations

from meshbench.aggregation_dag import build_aggregation_dag

dag = build_aggregation_dag()
