"""The results page served inside the Airflow UI (wired by plugins/meshbench_results.py)."""
