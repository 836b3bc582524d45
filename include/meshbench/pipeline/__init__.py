"""What the benchmark DAG's tasks do: run backend steps, keep artifacts, load results."""
