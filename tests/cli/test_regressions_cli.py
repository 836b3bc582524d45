from __future__ import annotations

import pytest

from meshbench.cli import main
from meshbench.testing.histories import insert_history, synthetic_days

pytestmark = pytest.mark.postgres


def test_check_a_loaded_history_then_list_the_open_regression(
    clean_results, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("MESHBENCH_DATABASE_URL", str(clean_results.url.render_as_string(False)))
    days = synthetic_days(31, days=25, step_after_day=20, step=0.10, versions={1: "1.19.3"})
    insert_history(clean_results, days, environment="synthetic", mesh="istio")

    assert main(["regressions", "list"]) == 0
    assert "no open regressions" in capsys.readouterr().out

    # The check reads the runs of the days before each date itself: a short range will do.
    args = ["regressions", "check", "--env", "synthetic", "--since", "2026-01-19"]
    assert main([*args, "--until", "2026-01-22"]) == 0
    out = capsys.readouterr().out
    assert "new  regression in p99_ms of istio 1.19.3 on synthetic" in out
    assert "4 date(s) checked: 5 change(s), 5 new" in out  # p99 and the metrics moving with it
    assert main([*args, "--until", "2026-01-22"]) == 0  # again: nothing new
    assert "4 date(s) checked: 5 change(s), 0 new" in capsys.readouterr().out

    assert main(["regressions", "list", "--env", "synthetic"]) == 0
    out = capsys.readouterr().out
    assert "2026-01-21" in out and "p99_ms" in out and "+" in out


def test_check_refuses_an_inverted_range(clean_results, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MESHBENCH_DATABASE_URL", str(clean_results.url.render_as_string(False)))
    args = ["regressions", "check", "--since", "2026-01-05", "--until", "2026-01-01"]
    assert main(args) == 2
    assert "--until is before --since" in capsys.readouterr().err
