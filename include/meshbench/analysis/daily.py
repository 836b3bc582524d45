"""The daily aggregation: summaries into Postgres, charts and a report into the artifact store."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import Engine, text

from meshbench.analysis.aggregate import Summary, aggregate
from meshbench.analysis.regression import Finding, detect_regressions
from meshbench.analysis.report import comparison_frame, flagged_lines, means_label, mesh_label
from meshbench.config import BenchmarkConfig
from meshbench.pipeline.artifacts import ArtifactStore

log = logging.getLogger(__name__)

TREND_DAYS = 30
LADDER_CHART = "ladder.png"
CPU_CHART = "cpu.png"
REPORT_COLUMNS = [
    "mesh",
    "n",
    "negative",
    "flagged",
    "excluded",
    "QPS",
    "avg",
    "p90",
    "p99",
    "p99.9",
    "QPS ci95 low",
    "QPS ci95 high",
    "avg median",
    "avg sd",
    "avg ci95 low",
    "avg ci95 high",
]
OVERHEAD_COLUMNS = ["avg added vs paired baseline", "QPS ratio vs paired baseline"]


@dataclass
class DayReport:
    environment: str
    benchmark_date: date
    table: pd.DataFrame
    ratios: pd.DataFrame
    # Runs the deviation check flagged (with flag_reason); in the means unless excluded.
    flagged: pd.DataFrame
    negatives: pd.DataFrame
    files: dict[str, str] = field(default_factory=dict)
    # Changes first found by this run (meshbench.analysis.regression), to be announced.
    new_regressions: list[Finding] = field(default_factory=list)
    flagged_excluded: bool = False

    @property
    def means(self) -> str:
        return means_label(pd.DataFrame({"flagged_excluded": [self.flagged_excluded]}))

    @property
    def flagged_lines(self) -> list[str]:
        return flagged_lines(self.flagged, self.flagged_excluded)


def keys_from_events(events: list[dict[str, Any]]) -> list[tuple[str | None, date]]:
    """(environment, date) pairs named by results-asset events (asset runs have no date)."""
    keys = set()
    for extra in events:
        if extra.get("benchmark_date"):
            keys.add((extra.get("environment"), date.fromisoformat(extra["benchmark_date"])))
    return sorted(keys, key=lambda key: (key[1], key[0] or ""))


def keys_for_day(day: date) -> list[tuple[str | None, date]]:
    """A scheduled run revisits its day and the day before, for results that came late."""
    return [(None, day - timedelta(days=1)), (None, day)]


def ratios_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Each mesh against the no-mesh baseline and against the fastest mesh of the day."""
    if table.empty:
        return pd.DataFrame()
    rows = []
    baseline = table[table["mesh"] == "baseline"]
    fastest = table.loc[table["avg"].idxmin()]
    for record in table.to_dict(orient="records"):
        row = {"mesh": mesh_label(record["mesh"], record["mesh_version_key"] or None)}
        if not baseline.empty and record["mesh"] != "baseline":
            row["avg / baseline avg"] = record["avg"] / baseline["avg"].iloc[0]
            row["QPS / baseline QPS"] = record["QPS"] / baseline["QPS"].iloc[0]
        row["avg / fastest avg"] = record["avg"] / fastest["avg"]
        row["QPS / fastest QPS"] = record["QPS"] / fastest["QPS"]
        rows.append(row)
    return pd.DataFrame(rows)


def fetch_history(
    engine: Engine, environment: str, until: date, days: int = TREND_DAYS
) -> pd.DataFrame:
    with engine.connect() as connection:
        return pd.read_sql(
            text(
                "SELECT environment, mesh, mesh_version_key, benchmark_date, load_profile_key, "
                "metric, mean, ci_low, ci_high, n_positive FROM daily_summary "
                "WHERE environment = :environment AND benchmark_date BETWEEN :since AND :until "
                "ORDER BY benchmark_date"
            ),
            connection,
            params={
                "environment": environment,
                "since": until - timedelta(days=days),
                "until": until,
            },
        )


def fetch_negatives(engine: Engine, environment: str, day: date) -> pd.DataFrame:
    with engine.connect() as connection:
        return pd.read_sql(
            text(
                "SELECT mesh, attempt, iteration, phase, run_index, failed_task, reason "
                "FROM v_negative_measurement WHERE environment = :environment "
                "AND benchmark_date = :day ORDER BY mesh, attempt, iteration, phase, run_index"
            ),
            connection,
            params={"environment": environment, "day": day},
        )


def _markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    if frame.empty:
        return "_none_"
    shown = frame.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            shown[column] = shown[column].map(lambda v: "–" if pd.isna(v) else f"{v:.{digits}f}")
    header = "| " + " | ".join(map(str, shown.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in shown.columns) + " |"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _display_table(table: pd.DataFrame) -> pd.DataFrame:
    shown = table.copy()
    shown["mesh"] = [
        mesh_label(m, v or None)
        for m, v in zip(shown["mesh"], shown["mesh_version_key"], strict=True)
    ]
    columns = REPORT_COLUMNS + [c for c in OVERHEAD_COLUMNS if c in shown.columns]
    return shown[columns]


def render_markdown(report: DayReport, charts: dict[str, str]) -> str:
    parts = [
        f"# meshbench · {report.environment} · {report.benchmark_date}",
        "",
        "Latency in milliseconds, QPS in requests per second: "
        f"{report.means} (measured runs of the latest attempt), with n, median, standard "
        "deviation and 95 % confidence interval across runs.",
        "",
    ]
    for profile, part in report.table.groupby("load_profile_key", sort=False):
        parts += [f"## Load profile {profile}", "", _markdown_table(_display_table(part)), ""]
    parts += ["## Ratios", "", _markdown_table(report.ratios), ""]
    parts += ["## Charts", ""] + [f"![{name}]({file})" for name, file in charts.items()] + [""]
    parts += ["## Runs flagged by the deviation check", ""]
    parts += [f"- {line}" for line in report.flagged_lines] or ["_none_"]
    parts += ["", "## Negative runs", "", _markdown_table(report.negatives), ""]
    return "\n".join(parts)


def render_html(report: DayReport, charts: dict[str, str]) -> str:
    def table_html(frame: pd.DataFrame) -> str:
        if frame.empty:
            return "<p><em>none</em></p>"
        return frame.to_html(
            index=False, float_format=lambda v: f"{v:.3f}", na_rep="–", classes="results", border=0
        )

    title = f"meshbench · {report.environment} · {report.benchmark_date}"
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Latency in ms; {html.escape(report.means)} (latest attempt).</p>",
    ]
    for profile, part in report.table.groupby("load_profile_key", sort=False):
        body += [
            f"<h2>Load profile {html.escape(str(profile))}</h2>",
            table_html(_display_table(part)),
        ]
    body += ["<h2>Ratios</h2>", table_html(report.ratios), "<h2>Charts</h2>"]
    body += [
        f'<img src="{html.escape(file)}" alt="{html.escape(name)}">'
        for name, file in charts.items()
    ]
    body += ["<h2>Runs flagged by the deviation check</h2>"]
    body += [
        "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in report.flagged_lines) + "</ul>"
        if report.flagged_lines
        else "<p><em>none</em></p>"
    ]
    body += ["<h2>Negative runs</h2>", table_html(report.negatives)]
    style = (
        "body{font-family:sans-serif;margin:2em}table.results{border-collapse:collapse}"
        "table.results td,table.results th{padding:4px 8px;border-bottom:1px solid #ddd;"
        "text-align:right}img{max-width:100%;display:block;margin:1em 0}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>"
    )


def build_day_report(
    engine: Engine, summary: Summary, environment: str, day: date
) -> DayReport | None:
    frame = comparison_frame(summary)
    if frame.empty:
        return None
    table = frame[(frame["environment"] == environment) & (frame["benchmark_date"] == day)]
    if table.empty:
        return None
    flagged = summary.flagged
    if not flagged.empty:
        flagged = flagged[
            (flagged["environment"] == environment) & (flagged["benchmark_date"] == day)
        ]
    return DayReport(
        environment=environment,
        benchmark_date=day,
        table=table,
        ratios=ratios_frame(table),
        flagged=flagged,
        negatives=fetch_negatives(engine, environment, day),
        flagged_excluded=summary.flagged_excluded,
    )


def write_report(engine: Engine, store: ArtifactStore, report: DayReport) -> dict[str, str]:
    from meshbench.analysis import charts

    folder = store.report_dir(report.environment, report.benchmark_date.isoformat())
    title = f"{report.environment} · {report.benchmark_date}"
    main = report.table[
        report.table["load_profile_key"] == report.table["load_profile_key"].iloc[0]
    ]
    images = {
        "qps.png": charts.qps_chart(main, f"QPS · {title}"),
        "latency.png": charts.latency_chart(main, f"Latency · {title}"),
        "trend.png": charts.trend_chart(
            fetch_history(engine, report.environment, report.benchmark_date),
            f"Average latency over {TREND_DAYS} days · {report.environment}",
        ),
    }
    images.update(ladder_images(engine, report.environment, report.benchmark_date, title))
    files = {}
    for name, data in images.items():
        files[name] = store.write_bytes(folder / name, data)
    chart_links = {name.removesuffix(".png"): name for name in images}
    files["report.md"] = _write_text(folder / "report.md", render_markdown(report, chart_links))
    files["report.html"] = _write_text(folder / "report.html", render_html(report, chart_links))
    report.files = files
    return files


def ladder_images(engine: Engine, environment: str, day: date, title: str) -> dict[str, bytes]:
    """The latency-vs-throughput and CPU-per-1000-requests charts, where the day has runs
    with a resource account or more than one step."""
    from meshbench.analysis import charts, ladder

    frame = ladder.fetch_ladder(engine, environment, day)
    if frame.empty:
        return {}
    step, _ = ladder.comparison_step(frame)
    images = {
        LADDER_CHART: charts.latency_throughput_chart(
            ladder.ladder_points(frame), f"Latency against throughput · {title}"
        )
    }
    by_role = ladder.cpu_by_role(frame, step)
    if not by_role.empty:
        images[CPU_CHART] = charts.cpu_per_request_chart(
            by_role, f"CPU per 1000 requests at {step} · {title}"
        )
    return images


def _write_text(path, content: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        handle.write(content)
    return str(path)


def run_daily_aggregation(
    engine: Engine, config: BenchmarkConfig, keys: list[tuple[str | None, date]]
) -> list[DayReport]:
    """Aggregate each (environment or all, date); store summaries; check for regressions
    against the history (after the summaries, so both see the same runs); write reports."""
    store = ArtifactStore(config)
    reports: list[DayReport] = []
    for environment, day in keys:
        summary = aggregate(
            engine,
            environment,
            day,
            store=True,
            exclude_flagged=config.aggregation.exclude_flagged_runs,
        )
        if summary.empty:
            log.info("no measured runs for environment=%s date=%s", environment or "any", day)
            continue
        new_regressions: list[Finding] = []
        if config.regression.for_environment(environment).enabled:
            new_regressions = detect_regressions(engine, config.regression, environment, day).new
        environments = sorted(set(summary.rows["environment"]))
        for env in environments:
            report = build_day_report(engine, summary, env, day)
            if report is None:
                continue
            report.new_regressions = [f for f in new_regressions if f.environment == env]
            write_report(engine, store, report)
            reports.append(report)
            log.info("report for %s %s: %s", env, day, report.files.get("report.html"))
    return reports
