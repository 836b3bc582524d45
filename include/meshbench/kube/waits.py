"""Waiting for the cluster to reach a state, with a time limit and a useful failure.

Each ``*_state`` function looks once and returns a ``Readiness``: ready or not, and, when
not, one line per thing still missing ("pod nginx-7d9 (server): container nginx waiting:
ImagePullBackOff"). :func:`wait_for` polls such a check with tenacity until it is ready or
the time is up, then raises ``WaitTimeout`` listing what was still not ready, which the
pipeline stores as the negative reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from meshbench.backend import StepFailed
from meshbench.kube.api import KubeApi

log = logging.getLogger(__name__)


class WaitTimeout(StepFailed):
    """A wait that ran out of time; the message lists what was still not ready."""


@dataclass(frozen=True)
class Readiness:
    ready: bool
    pending: tuple[str, ...] = ()
    value: Any = None


def wait_for(
    check: Callable[[], Readiness],
    *,
    what: str,
    timeout: float,
    interval: float = 2.0,
) -> Any:
    """Poll ``check`` every ``interval`` seconds until ready; return its ``value``.

    An exception inside ``check`` (an API hiccup) counts as "not ready yet" with the error
    as the reason, so a transient failure does not end a wait that would have succeeded.
    """
    last: list[Readiness] = [Readiness(False, ("not checked yet",))]

    def attempt() -> Readiness:
        try:
            state = check()
        except StepFailed as exc:
            state = Readiness(False, (str(exc),))
        except Exception as exc:  # API errors, connection resets
            state = Readiness(False, (f"{type(exc).__name__}: {exc}",))
        last[0] = state
        if not state.ready:
            log.debug("waiting for %s: %s", what, "; ".join(state.pending))
        return state

    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(min(interval, max(timeout, 0.0))),
        retry=retry_if_result(lambda state: not state.ready),
    )
    try:
        state = retrying(attempt)
    except RetryError:
        pending = "; ".join(last[0].pending) or "no detail"
        raise WaitTimeout(f"{what}: still not ready after {timeout:g}s: {pending}") from None
    log.info("ready: %s", what)
    return state.value


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(c.get("type")): c for c in (obj.get("status") or {}).get("conditions") or [] if c}


def pod_problems(pod: Mapping[str, Any]) -> list[str]:
    """Why a pod is not ready, in words: phase, failing conditions, waiting containers."""
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    name = metadata.get("name", "?")
    problems: list[str] = []
    statuses = [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]
    for container in statuses:
        state = container.get("state") or {}
        if "waiting" in state:
            waiting = state["waiting"] or {}
            detail = waiting.get("reason") or "waiting"
            if waiting.get("message"):
                detail += f" ({waiting['message']})"
            problems.append(f"pod {name}: container {container.get('name')} {detail}")
        elif "terminated" in state and not container.get("ready"):
            terminated = state["terminated"] or {}
            problems.append(
                f"pod {name}: container {container.get('name')} terminated: "
                f"{terminated.get('reason') or 'exit ' + str(terminated.get('exitCode'))}"
            )
        elif not container.get("ready") and container.get("restartCount"):
            problems.append(
                f"pod {name}: container {container.get('name')} not ready after "
                f"{container['restartCount']} restarts"
            )
    if not problems:
        for kind, condition in _conditions(pod).items():
            if condition.get("status") != "True":
                reason = condition.get("reason") or condition.get("message") or "False"
                problems.append(f"pod {name}: {kind} {reason}")
    if not problems:
        problems.append(f"pod {name}: phase {status.get('phase', 'unknown')}")
    return problems


def pod_is_ready(pod: Mapping[str, Any]) -> bool:
    condition = _conditions(pod).get("Ready")
    return bool(condition and condition.get("status") == "True")


def pods_state(api: KubeApi, namespace: str, label_selector: str, minimum: int = 1) -> Readiness:
    pods = api.list("v1", "Pod", namespace=namespace, label_selector=label_selector)
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    pending = [problem for pod in live if not pod_is_ready(pod) for problem in pod_problems(pod)]
    if len(live) < minimum:
        pending.insert(0, f"{len(live)} of {minimum} pods matching {label_selector!r} exist")
    return Readiness(not pending, tuple(pending), [p["metadata"]["name"] for p in live])


def deployment_state(api: KubeApi, namespace: str, name: str) -> Readiness:
    """Rolled out: the controller saw the latest spec and every replica is updated and
    available (what ``kubectl rollout status`` checks)."""
    deployment = api.get("apps/v1", "Deployment", name, namespace)
    if deployment is None:
        return Readiness(False, (f"deployment {namespace}/{name} does not exist",))
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    generation = (deployment.get("metadata") or {}).get("generation", 0)
    pending: list[str] = []
    if status.get("observedGeneration", 0) < generation:
        pending.append(f"deployment {namespace}/{name}: controller has not seen the new spec")
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    total = int(status.get("replicas") or 0)
    if updated < wanted or available < wanted or total > updated:
        pending.append(
            f"deployment {namespace}/{name}: {updated}/{wanted} updated, "
            f"{available}/{wanted} available"
        )
        progressing = _conditions(deployment).get("Progressing") or {}
        if progressing.get("reason") == "ProgressDeadlineExceeded":
            pending.append(f"deployment {namespace}/{name}: {progressing.get('message')}")
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        if selector:
            labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
            pods = api.list("v1", "Pod", namespace=namespace, label_selector=labels)
            pending += [p for pod in pods if not pod_is_ready(pod) for p in pod_problems(pod)]
    return Readiness(not pending, tuple(pending), {"replicas": wanted, "available": available})


def load_balancer_state(api: KubeApi, namespace: str, name: str) -> Readiness:
    """The Service's external address: an IP (MetalLB, most clouds) or a hostname (AWS)."""
    service = api.get("v1", "Service", name, namespace)
    if service is None:
        return Readiness(False, (f"service {namespace}/{name} does not exist",))
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    for entry in ingress:
        address = entry.get("ip") or entry.get("hostname")
        if address:
            return Readiness(True, (), address)
    return Readiness(False, (f"service {namespace}/{name}: no LoadBalancer address assigned yet",))


def condition_state(
    api: KubeApi,
    api_version: str,
    kind: str,
    name: str,
    condition: str,
    namespace: str | None = None,
) -> Readiness:
    """A status condition is True (APIService Available, CRD Established, ...)."""
    obj = api.get(api_version, kind, name, namespace)
    where = f"{kind} {namespace + '/' if namespace else ''}{name}"
    if obj is None:
        return Readiness(False, (f"{where} does not exist",))
    found = _conditions(obj).get(condition)
    if found and found.get("status") == "True":
        return Readiness(True)
    detail = (found or {}).get("message") or (found or {}).get("reason") or "not reported"
    return Readiness(False, (f"{where}: condition {condition} is not True: {detail}",))


def gone_state(
    api: KubeApi, api_version: str, kind: str, name: str, namespace: str | None = None
) -> Readiness:
    obj = api.get(api_version, kind, name, namespace)
    if obj is None:
        return Readiness(True)
    where = f"{kind} {namespace + '/' if namespace else ''}{name}"
    phase = (obj.get("status") or {}).get("phase")
    finalizers = (obj.get("metadata") or {}).get("finalizers") or (obj.get("spec") or {}).get(
        "finalizers"
    )
    detail = f" (phase {phase})" if phase else ""
    if finalizers:
        detail += f" (finalizers: {', '.join(finalizers)})"
    return Readiness(False, (f"{where} still exists{detail}",))
