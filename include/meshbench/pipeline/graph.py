"""The task graph of one benchmark DAG run, without Airflow.

The DAG factory turns it into operators; ``meshbench local run`` walks it in this process
with the same trigger rules. Defining it once keeps the two from running different
orders, skipping different tasks or tearing down under different conditions.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshbench.names import iteration_task_id

ITERATION_STEPS = (
    "install_mesh",
    "wait_mesh_ready",
    "deploy_workloads",
    "wait_workloads_ready",
    "warmup",
    "measure",
    "uninstall_mesh",
)
TEARDOWN_STEPS = ("uninstall_mesh", "delete_clusters", "load_results")


@dataclass(frozen=True)
class TaskSpec:
    """One task: the step it runs, what it waits for, and whether it runs after failures.

    ``upstream`` holds the explicit dependencies; a teardown also depends on its ``setup``.
    A task that ``runs_after_failures`` (Airflow's ``all_done``) runs once its upstream has
    ended in any state; every other task runs only when its upstream succeeded.
    """

    task_id: str
    step: str
    iteration: int | None = None
    upstream: tuple[str, ...] = ()
    setup: str | None = None
    runs_after_failures: bool = False

    @property
    def teardown(self) -> bool:
        return self.setup is not None

    @property
    def waits_for(self) -> frozenset[str]:
        """Every task this one waits for, its setup included."""
        return frozenset(self.upstream) | ({self.setup} if self.setup else set())


def task_graph(iterations: int) -> list[TaskSpec]:
    """The run's tasks in an order that respects every dependency.

    Iterations follow each other whatever the previous one's outcome (each ``install_mesh``
    runs after failures); each removes its own install; the pair's deletion and the load
    are teardowns of ``create_clusters`` and run whatever happened before them.
    """
    tasks = [
        TaskSpec("create_clusters", "create_clusters"),
        TaskSpec("prepare_pair", "prepare_pair", upstream=("create_clusters",)),
    ]
    previous = "prepare_pair"
    for iteration in range(1, iterations + 1):
        ids = {step: iteration_task_id(iteration, step) for step in ITERATION_STEPS}
        for index, step in enumerate(ITERATION_STEPS):
            before = (previous,) if index == 0 else (ids[ITERATION_STEPS[index - 1]],)
            tasks.append(
                TaskSpec(
                    ids[step],
                    step,
                    iteration,
                    upstream=before,
                    setup=ids["install_mesh"] if step == "uninstall_mesh" else None,
                    runs_after_failures=step in ("install_mesh", "uninstall_mesh"),
                )
            )
        previous = ids["uninstall_mesh"]
    for step, before in (("delete_clusters", previous), ("load_results", "delete_clusters")):
        tasks.append(
            TaskSpec(
                step, step, upstream=(before,), setup="create_clusters", runs_after_failures=True
            )
        )
    return tasks
