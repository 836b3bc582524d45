from __future__ import annotations

import pytest
from sqlalchemy import text

from meshbench.cli import main

pytestmark = pytest.mark.postgres


def test_load_and_report_print_the_study_table(
    clean_results, seed_results_dir, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("MESHBENCH_DATABASE_URL", str(clean_results.url.render_as_string(False)))
    assert main(["load", str(seed_results_dir)]) == 0
    assert "5 new measurement(s)" in capsys.readouterr().out
    assert main(["load", str(seed_results_dir)]) == 0
    assert "0 new measurement(s), 5 already loaded" in capsys.readouterr().out

    assert main(["report", "--environment", "equinix-metal", "--date", "2023-11-16"]) == 0
    out = capsys.readouterr().out
    for row in (
        ("Istio 1.19.3", "1864.44", "0.53", "0.57", "0.68", "0.95"),
        ("Kuma 2.4.3", "4538.77", "0.22", "0.25", "0.29", "2.55"),
        ("NSM vl3 1.11.1", "5148.70", "0.19", "0.24", "0.29", "1.04"),
    ):
        line = next(line for line in out.splitlines() if row[0] in line)
        cells = [cell.strip() for cell in line.split("│")]
        assert cells[5:10] == list(row[1:]), line


def test_report_without_data_says_so(clean_results, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MESHBENCH_DATABASE_URL", str(clean_results.url.render_as_string(False)))
    assert main(["report", "--environment", "nowhere"]) == 2
    assert "no measured runs match environment=nowhere" in capsys.readouterr().err


def test_load_of_a_bad_file_names_it(clean_results, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MESHBENCH_DATABASE_URL", str(clean_results.url.render_as_string(False)))
    bad = tmp_path / "lab-2026-01-01" / "istio" / "test-01-01-8080.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"ActualQPS": ')
    assert main(["load", str(tmp_path)]) == 2
    assert f"{bad}: not valid JSON" in capsys.readouterr().err


def _study_row(out: str, label: str) -> list[str]:
    line = next(line for line in out.splitlines() if label in line)
    return [cell.strip() for cell in line.split("│")]


def test_report_lists_flagged_runs_and_excludes_them_only_when_asked(
    clean_results, seed_results_dir, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("MESHBENCH_DATABASE_URL", str(clean_results.url.render_as_string(False)))
    assert main(["load", str(seed_results_dir)]) == 0
    # Make one of Istio's five runs an install-to-install outlier (0.60 ms against about
    # 0.53 ms): in this test database only, so the study's files stay as published.
    with clean_results.begin() as connection:
        connection.execute(
            text(
                "UPDATE measurement SET avg_ms = 0.60 WHERE iteration = 4 AND run_id = "
                "(SELECT id FROM run WHERE mesh = 'istio')"
            )
        )
    capsys.readouterr()

    assert main(["report", "--env", "equinix-metal"]) == 0
    out = capsys.readouterr().out
    assert "mean of every positive run" in out
    istio = _study_row(out, "Istio 1.19.3")
    assert istio[2:5] == ["5", "0", "1"]  # n, negative, flagged: five runs counted
    assert istio[6] == "0.55"  # (4 × about 0.53 + 0.60) / 5
    assert "Flagged by the deviation check: 1" in out
    assert "iteration 4 run 1 (kept in the means): avg_ms 0.600 ms deviates" in out

    assert main(["report", "--env", "equinix-metal", "--exclude-flagged"]) == 0
    out = capsys.readouterr().out
    assert "EXCLUDING runs flagged by the deviation check" in out
    istio = _study_row(out, "Istio 1.19.3")
    assert istio[2:5] == ["4", "0", "1 (excl.)"]
    assert istio[6] == "0.53"
    assert "(excluded from the means above)" in out
    assert "(left out of the means)" in out
