from __future__ import annotations

import pytest

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
        assert cells[4:9] == list(row[1:]), line


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
