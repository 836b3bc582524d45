"""Steps of a local run that are planned and run from the same description.

A ``LocalOp`` pairs a plan ``Step`` with the action that carries it out, as the Kubernetes
environments' ``Op`` does: ``meshbench plan --env local`` lists the steps of the ops the
backend would run, so the plan is what the tasks do. Building an op touches nothing; only
its action does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from meshbench.backend import Step

log = logging.getLogger(__name__)

Action = Callable[[], Mapping[str, Any] | None]


@dataclass(frozen=True)
class LocalOp:
    step: Step
    action: Action


def run_ops(ops: Iterable[LocalOp], executed: list[Step]) -> dict[str, Any]:
    """Run ``ops`` in order, appending each step to ``executed`` as it starts; returns what
    the actions returned, merged. A failure propagates unchanged: its message is the
    negative reason the results keep."""
    results: dict[str, Any] = {}
    for op in ops:
        where = f" [{op.step.cluster}]" if op.step.cluster else ""
        log.info("%s%s: %s", op.step.phase, where, op.step.description)
        executed.append(op.step)
        outcome = op.action()
        if outcome:
            results.update(outcome)
    return results
