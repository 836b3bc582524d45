"""The results page: a FastAPI app that Airflow's API server mounts (see plugins/).

Every route, the OpenAPI document and its docs page included, needs a user that Airflow
has authenticated (its JWT, from the ``_token`` cookie of a browser session or a bearer
header) and that the auth manager lets read the custom view ``Meshbench Results``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from meshbench.analysis import charts
from meshbench.analysis.report import STUDY_COLUMNS, mesh_label
from meshbench.results.db import READER_ROLE
from meshbench.results.migrate import MEND_COMMAND
from meshbench.results.models import SUMMARY_METRICS
from meshbench.ui import data, ladder_section
from meshbench.ui.formatting import latency_digits, number

log = logging.getLogger(__name__)

URL_PREFIX = "/meshbench"
RESOURCE_NAME = "Meshbench Results"
TEMPLATES = Path(__file__).with_name("templates")
METRIC_LABELS = {
    "qps": "QPS",
    "avg_ms": "average latency (ms)",
    "p50_ms": "p50 latency (ms)",
    "p90_ms": "p90 latency (ms)",
    "p99_ms": "p99 latency (ms)",
    "p999_ms": "p99.9 latency (ms)",
}
CHART_KINDS = ("qps", "latency")

_templates = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"])
)


def require_results_access(user: GetUserDep) -> None:
    """Refuse anyone Airflow has not authenticated, or whose role may not read the view."""
    allowed = get_auth_manager().is_authorized_custom_view(
        method="GET", resource_name=RESOURCE_NAME, user=user
    )
    if not allowed:
        raise HTTPException(status_code=403, detail=f"no access to {RESOURCE_NAME}")


def _login_url(request: Request) -> str:
    try:
        return get_auth_manager().get_url_login(next_url=str(request.url))
    except Exception:  # an auth manager without a login page of its own
        return "/"


def get_engine() -> Engine:
    return data.reader_engine()


EngineDep = Annotated[Engine, Depends(get_engine)]


def _digits(frame: pd.DataFrame) -> int:
    """Two decimals like the study, more when the fastest latency needs them."""
    latencies = frame[["avg", "p90"]].to_numpy(dtype=float).ravel() if not frame.empty else []
    return latency_digits(latencies)


def comparison_tables(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows ready for the template, one table per load profile."""
    tables = []
    if frame.empty:
        return tables
    has_overhead = "avg added vs paired baseline" in frame.columns
    for profile, part in frame.groupby("load_profile_key", sort=False):
        digits = _digits(part)
        rows = []
        for record in part.to_dict(orient="records"):
            rows.append(
                {
                    "mesh": mesh_label(record["mesh"], record["mesh_version_key"] or None),
                    "cells": [
                        ("n", str(record["n"]), None),
                        ("negative", str(record["negative"]), None),
                        ("flagged", str(record["flagged"]), None),
                        ("excluded", str(record["excluded"]), None),
                        ("QPS", number(record["QPS"], 2), record["QPS"]),
                        *(
                            (title, number(record[title], digits), record[title])
                            for title in list(STUDY_COLUMNS.values())[1:]
                        ),
                        ("QPS sd", number(record["QPS sd"], 2), record["QPS sd"]),
                        (
                            "QPS 95% CI",
                            f"{number(record['QPS ci95 low'], 2)} – "
                            f"{number(record['QPS ci95 high'], 2)}",
                            None,
                        ),
                        ("avg median", number(record["avg median"], digits + 1), None),
                        ("avg sd", number(record["avg sd"], digits + 1), None),
                        (
                            "avg 95% CI",
                            f"{number(record['avg ci95 low'], digits + 1)} – "
                            f"{number(record['avg ci95 high'], digits + 1)}",
                            None,
                        ),
                        *(
                            (
                                (
                                    "avg added vs baseline",
                                    number(record["avg added vs paired baseline"], digits + 1),
                                    None,
                                ),
                                (
                                    "QPS ratio vs baseline",
                                    number(record["QPS ratio vs paired baseline"], 3),
                                    None,
                                ),
                            )
                            if has_overhead
                            else ()
                        ),
                    ],
                }
            )
        headers = [name for name, _, _ in rows[0]["cells"]] if rows else []
        tables.append({"profile": profile, "headers": headers, "rows": rows})
    return tables


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")


def _main_profile(frame: pd.DataFrame, wanted: str | None) -> str | None:
    if frame.empty:
        return None
    profiles = list(dict.fromkeys(frame["load_profile_key"]))
    return wanted if wanted in profiles else profiles[0]


def _date_or_none(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise HTTPException(status_code=422, detail=f"{name}: not a date (YYYY-MM-DD)") from None


def resolve_selection(
    engine: Engine,
    environment: str | None,
    day: str | None,
    since: str | None,
    until: str | None,
    metric: str,
    profile: str | None,
) -> tuple[data.Selection | None, list[str], list[date]]:
    """Resolve the query parameters against what the database holds."""
    if metric not in SUMMARY_METRICS:
        raise HTTPException(status_code=422, detail=f"metric: one of {', '.join(SUMMARY_METRICS)}")
    known = data.environments(engine)
    if not known:
        return None, [], []
    if environment is None:
        environment = known[0]
    elif environment not in known:
        raise HTTPException(status_code=404, detail=f"no results for environment {environment!r}")
    dates = data.benchmark_dates(engine, environment)
    chosen = _date_or_none(day, "date") or dates[0]
    if chosen not in dates:
        raise HTTPException(status_code=404, detail=f"no results for {environment} on {chosen}")
    default_since, default_until = data.default_range(dates[0])
    start = _date_or_none(since, "since") or default_since
    end = _date_or_none(until, "until") or default_until
    if start > end:
        raise HTTPException(status_code=422, detail="since is after until")
    selection = data.Selection(environment, chosen, start, end, metric, profile or None)
    return selection, known, dates


def explain_database_error(exc: Exception) -> tuple[str, str | None]:
    """What went wrong reading the results, in words, and the command that mends it if any."""
    underlying = exc.__cause__ if isinstance(exc, pd.errors.DatabaseError) else exc
    said = str(getattr(underlying, "orig", None) or underlying or exc).strip()
    cause = (said.splitlines() or [type(exc).__name__])[0][:300]
    # A missing reader role or missing tables and views: the schema was never migrated
    # (migration 0002 creates the role).
    unmigrated = "does not exist" in cause or (READER_ROLE in cause and "role" in cause)
    detail = f"the results database cannot be read as {READER_ROLE}: {cause}"
    if unmigrated:
        return f"the results database is not migrated ({cause})", MEND_COMMAND
    return detail, None


def load_ladder_section(
    engine: Engine, environment: str, day: date
) -> ladder_section.LadderSection:
    """The load-ladder section, or why it cannot be shown: the rest of the page stays."""
    try:
        return ladder_section.build(engine, environment, day)
    except (SQLAlchemyError, pd.errors.DatabaseError) as exc:
        log.error("results page cannot read the load steps: %s", exc)
        detail, command = explain_database_error(exc)
        return ladder_section.LadderSection(
            problem=f"The load steps cannot be read: {detail}.", mend_command=command
        )
    except (ValueError, KeyError, TypeError) as exc:
        # Stored values the analysis cannot use (a missing step, a non-numeric rate).
        log.exception("results page cannot summarise the load steps of %s on %s", environment, day)
        return ladder_section.LadderSection(
            problem="The load steps of this date cannot be summarised: "
            f"{type(exc).__name__}: {exc}."
        )


def _png(content: bytes) -> Response:
    return Response(content=content, media_type="image/png", headers={"Cache-Control": "no-store"})


def ladder_chart(kind: str, engine: Engine, environment: str, day: date) -> bytes:
    """A ladder chart's PNG; what is missing or unusable answers in words, not a traceback."""
    try:
        return ladder_section.chart(kind, engine, environment, day)
    except ladder_section.NoChart as missing:
        raise HTTPException(status_code=404, detail=str(missing)) from None
    except (ValueError, KeyError, TypeError) as exc:
        log.exception("results page cannot draw the %s chart of %s on %s", kind, environment, day)
        raise HTTPException(
            status_code=422,
            detail=f"the load steps of {environment} on {day} cannot be charted: "
            f"{type(exc).__name__}: {exc}",
        ) from None


def create_app(engine_dependency: Callable[[], Engine] = get_engine) -> FastAPI:
    """The page's app; ``engine_dependency`` is replaced in tests only."""
    app = FastAPI(
        title="meshbench results",
        description="Benchmark results of meshbench, read through the role "
        f"{READER_ROLE}. Every route needs an Airflow login.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(require_results_access)],
    )
    if engine_dependency is not get_engine:
        app.dependency_overrides[get_engine] = engine_dependency

    @app.exception_handler(StarletteHTTPException)
    async def refuse(request: Request, exc: StarletteHTTPException) -> Response:
        if "text/html" in request.headers.get("accept", "") and exc.status_code in (401, 403):
            page = _templates.get_template("refused.html.j2").render(
                status=exc.status_code, detail=exc.detail, login_url=_login_url(request)
            )
            return HTMLResponse(page, status_code=exc.status_code)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    # pandas wraps what the database said in its own DatabaseError.
    @app.exception_handler(SQLAlchemyError)
    @app.exception_handler(pd.errors.DatabaseError)
    async def database_unavailable(request: Request, exc: Exception) -> Response:
        log.error("results page cannot read the results database: %s", exc)
        detail, command = explain_database_error(exc)
        if "application/json" not in request.headers.get("accept", ""):
            page = _templates.get_template("unavailable.html.j2").render(
                detail=detail, command=command
            )
            return HTMLResponse(page, status_code=503)
        mend = f" Run `{command}`." if command else ""
        return JSONResponse(
            {"detail": f"{detail}.{mend} See docs/analysts.md, 'The read-only role'."},
            status_code=503,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=f"{root}/openapi.json", title="meshbench results")

    @app.get("/", response_class=HTMLResponse, summary="The results page")
    def page(
        request: Request,
        engine: EngineDep,
        environment: str | None = None,
        day: Annotated[str | None, Query(alias="date")] = None,
        since: str | None = None,
        until: str | None = None,
        metric: str = "avg_ms",
        profile: str | None = None,
    ) -> HTMLResponse:
        selection, known, dates = resolve_selection(
            engine, environment, day, since, until, metric, profile
        )
        root = request.scope.get("root_path", "")
        context: dict[str, Any] = {
            "root": root,
            "environments": known,
            "selection": selection,
            "metrics": METRIC_LABELS,
            "reader_role": READER_ROLE,
        }
        if selection is not None:
            frame = data.comparison(engine, selection.environment, selection.day)
            main = _main_profile(frame, selection.profile)
            flagged = data.flagged_runs(engine, selection.environment, selection.day)
            context.update(
                flagged=_records(flagged),
                flagged_excluded=bool(not flagged.empty and flagged["flagged_excluded"].any()),
                dates=dates,
                tables=comparison_tables(frame),
                profile=main,
                profiles=list(dict.fromkeys(frame["load_profile_key"])) if main else [],
                regressions=_records(data.open_regressions(engine, selection.environment)),
                changes=_records(
                    data.changes(engine, selection.environment, selection.since, selection.until)
                ),
                negatives=_records(
                    data.negative_runs(
                        engine, selection.environment, selection.since, selection.until
                    )
                ),
                max_rows=data.MAX_LISTED_ROWS,
                ladder=load_ladder_section(engine, selection.environment, selection.day),
            )
        html = _templates.get_template("results.html.j2").render(**context)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @app.get(
        "/chart/{kind}.png",
        summary="QPS or latency chart of one date, or its latency-vs-throughput (ladder) "
        "or CPU-per-1000-requests (cpu) chart",
    )
    def day_chart(
        kind: str,
        engine: EngineDep,
        environment: str,
        day: Annotated[str, Query(alias="date")],
        profile: str | None = None,
    ) -> Response:
        if kind not in CHART_KINDS and kind not in ladder_section.CHART_KINDS:
            raise HTTPException(status_code=404, detail=f"no chart {kind!r}")
        chosen = _date_or_none(day, "date")
        if kind in ladder_section.CHART_KINDS:
            return _png(ladder_chart(kind, engine, environment, chosen))
        frame = data.comparison(engine, environment, chosen)
        main = _main_profile(frame, profile)
        if main is None:
            raise HTTPException(status_code=404, detail=f"no results for {environment} on {day}")
        part = frame[frame["load_profile_key"] == main]
        title = f"{environment} · {chosen} · {main}"
        if kind == "qps":
            return _png(charts.qps_chart(part, f"QPS · {title}"))
        return _png(charts.latency_chart(part, f"Latency · {title}"))

    @app.get("/trend.png", summary="One line per mesh over a date range")
    def trend_chart(
        engine: EngineDep,
        environment: str,
        since: str,
        until: str,
        metric: str = "avg_ms",
        profile: str | None = None,
    ) -> Response:
        if metric not in SUMMARY_METRICS:
            raise HTTPException(status_code=422, detail=f"metric: one of {SUMMARY_METRICS}")
        start, end = _date_or_none(since, "since"), _date_or_none(until, "until")
        frame = data.history(engine, environment, start, end, profile)
        title = f"{METRIC_LABELS[metric]} · {environment} · {start} – {end}"
        if profile:
            title += f" · {profile}"
        return _png(charts.trend_chart(frame, title, metric=metric, span=(start, end)))

    return app
