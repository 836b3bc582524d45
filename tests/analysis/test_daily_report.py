from __future__ import annotations

import pandas as pd

from meshbench.analysis.aggregate import summarize
from meshbench.analysis.daily import DayReport, ratios_frame, render_html, render_markdown
from meshbench.analysis.report import comparison_frame

from .test_aggregate import _five_runs_one_apart


def _report(exclude_flagged: bool) -> DayReport:
    summary = summarize(_five_runs_one_apart(), exclude_flagged=exclude_flagged)
    table = comparison_frame(summary)
    return DayReport(
        environment="local",
        benchmark_date=table["benchmark_date"].iloc[0],
        table=table,
        ratios=ratios_frame(table),
        flagged=summary.flagged,
        negatives=pd.DataFrame(),
        flagged_excluded=summary.flagged_excluded,
    )


def test_the_daily_report_lists_flagged_runs_and_says_what_the_means_cover() -> None:
    kept = render_markdown(_report(False), {})
    assert "mean of every positive run" in kept
    assert "## Runs flagged by the deviation check" in kept
    assert "iteration 1 run 5 (kept in the means): avg_ms 1.600 ms deviates" in kept
    assert "| Istio | 5 | 0 | 1 | 0 |" in kept  # n, negative, flagged, excluded

    excluded = _report(True)
    for text in (render_markdown(excluded, {}), render_html(excluded, {})):
        assert "EXCLUDING runs flagged by the deviation check" in text
        assert "(left out of the means)" in text
