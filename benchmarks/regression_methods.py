"""Regression detection methods side by side: false alarms and detection per noise level.

The same synthetic histories as benchmarks/regression_power.py (meshbench.testing.histories:
40 days of 15 runs, a day-level offset per fresh cluster pair, 3 % of runs 30 % slower,
identical seeds), plus a noise level measured on this machine's own saved local results
(benchmarks/results/local_fidelity-*.json, see ``local_noise``). Every method runs as the
daily pipeline would: on each day it sees the history up to that day, and an alert is a
change first reported on that day.

* ``mann-whitney``: the current method (meshbench.analysis.regression.scan_series) with
  the packaged settings: the day's runs against a trailing window of runs.
* ``otava``: Apache Otava's E-divisive means with a Student t-test (Hunter), on the daily
  medians (one point per day: runs of a day share a cluster pair, so the day is the unit
  of the test), ``otava.analysis.compute_change_points``.
* ``mongodb``: MongoDB's signal-processing-algorithms E-divisive with a permutation test,
  ``energy_statistics.e_divisive``, on the same daily medians.

A method that is not installed is reported as such (neither library installs with the
project's lock, see docs/analysts.md; run this in a venv that has them).

Per scenario: ``any alert`` is the share of histories with at least one alert (for a
stable history, the false-alarm rate per 40-day history); ``found`` the share whose alerts
place a change within the step's first three days (days 21-23); ``elsewhere`` the share
with an alert anywhere else (a false alarm next to a real step); ``delay`` the median
number of days from day 21 to the first alert of the step.

Usage: python benchmarks/regression_methods.py [--seeds 100] [--mongodb-seeds 40]
       [--output FILE]
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from meshbench.analysis.regression import DayRuns, scan_series
from meshbench.config import load_config
from meshbench.testing.histories import NoiseModel, day_of, synthetic_days

DAYS = 40
STEP_AFTER_DAY = 20
STEPS = (0.0, 0.05, 0.10, 0.20)
FIRST_CHANGED = STEP_AFTER_DAY + 1
FOUND_WITHIN_DAYS = 3
# Each method is first asked once the history could have a full window (as scan_series).
FIRST_SCANNED_DAY = 8
NOISE_LEVELS = {
    "study-like": NoiseModel(run_cv=0.01, day_cv=0.005),
    "default": NoiseModel(),
    "noisy": NoiseModel(run_cv=0.03, day_cv=0.015),
    "very noisy": NoiseModel(run_cv=0.05, day_cv=0.03),
}
RESULTS = Path(__file__).parent / "results"

# Day numbers (1-based) of the changes an online method announces over a history.
Detector = Callable[[list[DayRuns]], list[int]]


def local_noise(files: Sequence[str]) -> tuple[NoiseModel, str]:
    """The noise of this machine's saved local runs (the fidelity benchmark's baseline runs).

    Each file is one session (a day's worth of runs on the local environment). Run noise:
    the robust SD (1.4826 MAD) of the runs around their session's median, relative, pooled
    over sessions; day noise: the SD of the session medians, relative; hiccups: the share
    of runs more than 3 robust SDs from their session's median, and their median size.
    """
    sessions = []
    used = []
    for name in files:
        data = json.loads(Path(name).read_text())
        if data["arguments"].get("duration") != "3":
            continue  # the sessions of one design only (3 s runs, 30 pairs)
        values = np.array(
            [p[key] for p in data["pairs"] for key in ("meshbench_qps", "direct_qps")]
        )
        sessions.append(values)
        used.append(Path(name).name)
    if len(sessions) < 2:
        raise SystemExit(f"need two saved local sessions of 3 s runs in {files}")
    deviations = np.concatenate([v / np.median(v) - 1 for v in sessions])
    run_cv = float(1.4826 * np.median(np.abs(deviations)))
    medians = np.array([np.median(v) for v in sessions])
    day_cv = float(medians.std(ddof=1) / medians.mean())
    tail = np.abs(deviations) > 3 * run_cv
    noise = NoiseModel(
        run_cv=round(run_cv, 4),
        day_cv=round(day_cv, 4),
        outlier_rate=round(float(tail.mean()), 4),
        outlier_size=round(float(np.median(np.abs(deviations[tail]))), 3) if tail.any() else 0,
    )
    source = (
        f"{len(sessions)} saved local sessions ({sum(v.size for v in sessions)} runs of 3 s, "
        f"{', '.join(used)}): run {noise.run_cv:.1%}, day "
        f"{noise.day_cv:.1%}, {noise.outlier_rate:.1%} of runs off by {noise.outlier_size:.0%}"
    )
    return noise, source


def _day_number(day: date) -> int:
    return (day - day_of(1)).days + 1


def mann_whitney_detector() -> Detector:
    settings = load_config().regression

    def detect(days: list[DayRuns]) -> list[int]:
        return [_day_number(test.day) for test in scan_series(days, settings) if test.flagged]

    return detect


def _online(change_points: Callable[[list[float]], list[int]], confirm_days: int = 1) -> Detector:
    """Run a whole-history change-point method every day on the days so far; a change point
    (index i: day i + 1 starts the new level) is an alert the first day it is reported with
    at least ``confirm_days`` days at the new level."""

    def detect(days: list[DayRuns]) -> list[int]:
        medians = [float(np.median(day.values)) for day in days]
        announced: set[int] = set()
        for today in range(FIRST_SCANNED_DAY, len(medians) + 1):
            for index in change_points(medians[:today]):
                if today - int(index) >= confirm_days:
                    announced.add(int(index) + 1)
        return sorted(announced)

    return detect


def otava_detector(
    window_len: int, max_pvalue: float, min_magnitude: float, confirm_days: int
) -> Detector:
    from otava.analysis import compute_change_points

    def change_points(series: list[float]) -> list[int]:
        points, _ = compute_change_points(
            series, window_len=window_len, max_pvalue=max_pvalue, min_magnitude=min_magnitude
        )
        return [point.index for point in points]

    return _online(change_points, confirm_days)


def mongodb_detector(pvalue: float, permutations: int) -> Detector:
    from signal_processing_algorithms.energy_statistics.energy_statistics import e_divisive

    def change_points(series: list[float]) -> list[int]:
        return e_divisive(series, pvalue=pvalue, permutations=permutations)

    return _online(change_points)


@dataclass
class Tally:
    histories: int = 0
    with_alert: int = 0
    found: int = 0
    elsewhere: int = 0
    delays: list[int] = field(default_factory=list)

    def share(self, count: int) -> str:
        return f"{100 * count / self.histories:5.1f} %" if self.histories else "   –   "


def run_scenario(detect: Detector, noise: NoiseModel, step: float, seeds: range) -> Tally:
    tally = Tally()
    for seed in seeds:
        days = synthetic_days(
            seed,
            days=DAYS,
            step_after_day=STEP_AFTER_DAY if step else None,
            step=step,
            noise=noise,
        )
        alerts = detect(days)
        tally.histories += 1
        tally.with_alert += bool(alerts)
        if step:
            at_step = [d for d in alerts if 0 <= d - FIRST_CHANGED < FOUND_WITHIN_DAYS]
            tally.found += bool(at_step)
            tally.elsewhere += any(not 0 <= d - FIRST_CHANGED < FOUND_WITHIN_DAYS for d in alerts)
    return tally


def _delays(detect: Detector, noise: NoiseModel, step: float, seeds: range) -> list[int]:
    """Days from the step to the day an online method first reports it (per history)."""
    delays = []
    for seed in seeds:
        days = synthetic_days(
            seed, days=DAYS, step_after_day=STEP_AFTER_DAY, step=step, noise=noise
        )
        for today in range(FIRST_CHANGED, DAYS + 1):
            if any(0 <= d - FIRST_CHANGED < FOUND_WITHIN_DAYS for d in detect(days[:today])):
                delays.append(today - FIRST_CHANGED)
                break
    return delays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=60, help="histories per scenario")
    parser.add_argument(
        "--mongodb-seeds", type=int, default=20, help="histories per scenario for mongodb"
    )
    parser.add_argument("--delay-seeds", type=int, default=10, help="histories timed for delay")
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    parser.add_argument("--otava-window", type=int, default=30)
    parser.add_argument("--otava-pvalue", type=float, default=0.0001)
    parser.add_argument("--otava-min-magnitude", type=float, default=0.05)
    parser.add_argument("--otava-confirm-days", type=int, default=1)
    parser.add_argument("--mongodb-pvalue", type=float, default=0.01)
    parser.add_argument("--mongodb-permutations", type=int, default=100)
    parser.add_argument(
        "--methods", default="mann-whitney,otava,mongodb", help="comma-separated methods"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    noise_levels = dict(NOISE_LEVELS)
    local, local_source = local_noise(sorted(glob.glob(str(RESULTS / "local_fidelity-*.json"))))
    noise_levels["local (measured)"] = local
    settings = load_config().regression
    factories: dict[str, tuple[Callable[[], Detector], int, str]] = {
        "mann-whitney": (
            mann_whitney_detector,
            args.seeds,
            f"window_days={settings.window_days} min_window_days={settings.min_window_days} "
            f"alpha={settings.alpha} min_change={settings.min_change} "
            f"day_noise_factor={settings.day_noise_factor}",
        ),
        "otava": (
            lambda: otava_detector(
                args.otava_window,
                args.otava_pvalue,
                args.otava_min_magnitude,
                args.otava_confirm_days,
            ),
            args.seeds,
            f"apache-otava compute_change_points on daily medians: window_len="
            f"{args.otava_window} max_pvalue={args.otava_pvalue} "
            f"min_magnitude={args.otava_min_magnitude} confirm_days={args.otava_confirm_days}",
        ),
        "mongodb": (
            lambda: mongodb_detector(args.mongodb_pvalue, args.mongodb_permutations),
            args.mongodb_seeds,
            f"signal-processing-algorithms e_divisive on daily medians: pvalue="
            f"{args.mongodb_pvalue} permutations={args.mongodb_permutations}",
        ),
    }
    lines = [
        "meshbench regression detection: methods side by side (online, day by day)",
        f"histories: {DAYS} days x 15 runs; step after day {STEP_AFTER_DAY}; seeds as in "
        "regression_power.py; noise = relative SD between runs / of the day level, 3 % of "
        "runs +30 % unless measured",
        f"local (measured): {local_source}",
    ]
    detectors: dict[str, tuple[Detector, int]] = {}
    for name in args.methods.split(","):
        factory, seeds, described = factories[name]
        try:
            detectors[name] = (factory(), seeds)
            lines.append(f"{name}: {described}; {seeds} histories per scenario")
        except ImportError as exc:
            lines.append(f"{name}: not installed here ({exc}); not measured")
    header = f"{'noise (run/day SD)':<28} {'step':>5}  " + "  ".join(
        f"{name + ' alert/found/else':>34}" for name in detectors
    )
    lines += ["", header]
    print("\n".join(lines), flush=True)
    timings = dict.fromkeys(detectors, 0.0)
    for label, noise in noise_levels.items():
        title = f"{label} ({noise.run_cv:.1%}/{noise.day_cv:.1%})"
        for step in STEPS:
            cells = []
            for name, (detect, count) in detectors.items():
                seeds = range(count) if not step else range(100_000, 100_000 + count)
                began = time.monotonic()
                tally = run_scenario(detect, noise, step, seeds)
                timings[name] += time.monotonic() - began
                found = tally.share(tally.found) if step else "       "
                elsewhere = tally.share(tally.elsewhere) if step else "       "
                cells.append(f"{tally.share(tally.with_alert)} {found} {elsewhere}".rjust(34))
            row = f"{title:<28} {f'{step:.0%}' if step else 'none':>5}  " + "  ".join(cells)
            lines.append(row)
            print(row, flush=True)
    lines += ["", "median days from the step to its first alert (10 % step):"]
    for label, noise in noise_levels.items():
        cells = []
        for name, (detect, _count) in detectors.items():
            delays = _delays(detect, noise, 0.10, range(100_000, 100_000 + args.delay_seeds))
            median = f"{statistics.median(delays):.0f}" if delays else "–"
            cells.append(f"{name} {median} ({len(delays)}/{args.delay_seeds} found)")
        lines.append(f"  {label:<18} " + "; ".join(cells))
    lines += [
        "",
        "alert: histories with any alert (step 'none': false alarms per 40-day history); "
        "found: an alert within the step's first 3 days; else: an alert anywhere else.",
        "run time: "
        + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items())
        + f"; total {time.monotonic() - started:.0f} s",
    ]
    print("\n".join(lines[-(len(noise_levels) + 5) :]))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
