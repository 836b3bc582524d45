"""Announcing new regressions: always in the task log, and through Airflow notifiers.

Slack (apache-airflow-providers-slack) and email (apache-airflow-providers-smtp) are used
only when the provider is installed and its connection exists; otherwise the log says
which channel is not configured and why, so a missing alert is never silent.
"""

from __future__ import annotations

import html
import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from meshbench.analysis.regression import Finding
from meshbench.config import RegressionNotifications

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Channel:
    name: str
    notifier: Callable[[dict[str, Any]], None] | None
    reason: str  # why the channel is or is not used


def _connection_exists(conn_id: str) -> bool:
    from airflow.sdk import BaseHook

    try:
        BaseHook.get_connection(conn_id)
    except Exception:
        return False
    return True


def headline(findings: Sequence[Finding]) -> str:
    environments = sorted({finding.environment for finding in findings})
    return f"meshbench: {len(findings)} new regression(s) in {', '.join(environments)}"


def plain_text(findings: Sequence[Finding]) -> str:
    return "\n".join([headline(findings), *(f"- {finding.describe()}" for finding in findings)])


def html_text(findings: Sequence[Finding]) -> str:
    items = "".join(f"<li>{html.escape(finding.describe())}</li>" for finding in findings)
    return f"<p>{html.escape(headline(findings))}</p><ul>{items}</ul>"


def _raw(text: str) -> str:
    # Notifiers render their fields as Jinja templates: keep braces in a finding literal.
    return "{% raw %}" + text + "{% endraw %}"


def _provider_channel(
    name: str, provider: str, notifier: str, conn_id: str, **fields: Any
) -> Channel:
    """The channel through ``notifier`` ("module:class") of the Airflow provider package
    ``provider``, made with ``fields``, when the package is installed and the connection
    ``conn_id`` exists; otherwise the channel unused, with the reason."""
    module_name, _, class_name = notifier.partition(":")
    try:
        notifier_class = getattr(importlib.import_module(module_name), class_name)
    except ImportError:
        return Channel(name, None, f"{provider} is not installed")
    if not _connection_exists(conn_id):
        return Channel(name, None, f"Airflow connection {conn_id!r} is not configured")
    return Channel(name, notifier_class(**fields), f"connection {conn_id!r}")


def slack_channel(settings: RegressionNotifications, findings: Sequence[Finding]) -> Channel:
    conn_id = settings.slack_webhook_conn_id
    if not conn_id:
        return Channel("slack", None, "no slack_webhook_conn_id in the regression settings")
    return _provider_channel(
        "slack",
        "apache-airflow-providers-slack",
        "airflow.providers.slack.notifications.slack_webhook:SlackWebhookNotifier",
        conn_id,
        slack_webhook_conn_id=conn_id,
        text=_raw(plain_text(findings)),
    )


def email_channel(settings: RegressionNotifications, findings: Sequence[Finding]) -> Channel:
    conn_id = settings.smtp_conn_id
    if not conn_id:
        return Channel("email", None, "no smtp_conn_id in the regression settings")
    if not settings.email_to:
        return Channel("email", None, "no recipients (regression.notifications.email_to)")
    return _provider_channel(
        "email",
        "apache-airflow-providers-smtp",
        "airflow.providers.smtp.notifications.smtp:SmtpNotifier",
        conn_id,
        to=list(settings.email_to),
        smtp_conn_id=conn_id,
        subject=_raw(headline(findings)),
        html_content=_raw(html_text(findings)),
    )


def notify_regressions(
    findings: Sequence[Finding],
    settings: RegressionNotifications,
    context: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Log every new finding and send them through each configured channel.

    Returns what happened per channel ("sent", "not configured: ...", "failed: ...");
    a failing channel is logged and does not fail the aggregation.
    """
    if not findings:
        log.info("no new regressions")
        return {}
    for finding in findings:
        log.warning("REGRESSION %s", finding.describe())
    outcome = {}
    for channel in (slack_channel(settings, findings), email_channel(settings, findings)):
        if channel.notifier is None:
            log.warning("%s: not sent, %s", channel.name, channel.reason)
            outcome[channel.name] = f"not configured: {channel.reason}"
            continue
        try:
            channel.notifier(dict(context or {}))
        except Exception as exc:
            log.error("%s: sending through %s failed: %s", channel.name, channel.reason, exc)
            outcome[channel.name] = f"failed: {exc}"
        else:
            log.info("%s: sent through %s", channel.name, channel.reason)
            outcome[channel.name] = "sent"
    return outcome
