"""How often regression detection cries wolf, and how often it finds a real step.

Runs the detector with the packaged settings (``regression`` in benchmarks.yaml) on
synthetic histories (meshbench.testing.histories): 40 days of 15 runs, a day-level offset
and a heavy tail, over many random seeds. For each noise level it reports

* false positives: the share of stable histories with any finding, and of tested days;
* detection: for a step of 5, 10 and 20 % in p99 after day 20, the share of histories
  flagged on day 21 exactly, within three days, and with a finding on any other day.

Usage: .venv/bin/python benchmarks/regression_power.py [--seeds 200] [--output FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from meshbench.analysis.regression import scan_series
from meshbench.config import RegressionSettings, load_config
from meshbench.testing.histories import NoiseModel, day_of, synthetic_days

DAYS = 40
STEP_AFTER_DAY = 20
STEPS = (0.05, 0.10, 0.20)
NOISE_LEVELS = {
    "study-like": NoiseModel(run_cv=0.01, day_cv=0.005),
    "default": NoiseModel(),
    "noisy": NoiseModel(run_cv=0.03, day_cv=0.015),
    "very noisy": NoiseModel(run_cv=0.05, day_cv=0.03),
}


@dataclass
class Tally:
    histories: int = 0
    tested_days: int = 0
    flagged_days: int = 0
    with_any_flag: int = 0
    on_the_day: int = 0
    within_three_days: int = 0
    flagged_elsewhere: int = 0

    def rate(self, count: int, total: int | None = None) -> str:
        total = self.histories if total is None else total
        return f"{100 * count / total:5.1f} %" if total else "   –   "


def run_scenario(
    settings: RegressionSettings, noise: NoiseModel, step: float, seeds: range
) -> Tally:
    tally = Tally()
    first_changed = day_of(STEP_AFTER_DAY + 1)
    for seed in seeds:
        days = synthetic_days(
            seed,
            days=DAYS,
            step_after_day=STEP_AFTER_DAY if step else None,
            step=step,
            noise=noise,
        )
        tests = scan_series(days, settings)
        flagged = [test.day for test in tests if test.flagged]
        tally.histories += 1
        tally.tested_days += len(tests)
        tally.flagged_days += len(flagged)
        tally.with_any_flag += bool(flagged)
        if step:
            tally.on_the_day += first_changed in flagged
            tally.within_three_days += any(0 <= (d - first_changed).days < 3 for d in flagged)
            # Findings that are neither the step nor its first three days (false alarms).
            tally.flagged_elsewhere += any(not 0 <= (d - first_changed).days < 3 for d in flagged)
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200, help="histories per scenario")
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    settings = load_config().regression
    started = time.monotonic()
    lines = [
        "meshbench regression detection: false-positive and detection rates",
        f"settings (benchmarks.yaml): window_days={settings.window_days} "
        f"min_window_days={settings.min_window_days} min_runs_per_day="
        f"{settings.min_runs_per_day} alpha={settings.alpha} min_change={settings.min_change} "
        f"day_noise_factor={settings.day_noise_factor}",
        f"histories: {DAYS} days x 15 runs, {args.seeds} seeds per scenario; noise = relative "
        "SD between runs / of the day level; 3 % of runs +30 % (hiccups)",
        "",
        f"{'noise (run/day SD)':<26} {'step':>5}  {'any flag':>9} {'flagged days':>13} "
        f"{'on day 21':>10} {'<= 3 days':>10} {'false alarm':>12}",
    ]
    print("\n".join(lines), flush=True)
    for name, noise in NOISE_LEVELS.items():
        label = f"{name} ({noise.run_cv:.1%}/{noise.day_cv:.1%})"
        for step in (0.0, *STEPS):
            seeds = range(args.seeds) if not step else range(100_000, 100_000 + args.seeds)
            tally = run_scenario(settings, noise, step, seeds)
            flagged_share = tally.rate(tally.flagged_days, tally.tested_days)
            if step:
                row = (
                    f"{label:<26} {step:>5.0%}  {tally.rate(tally.with_any_flag):>9} "
                    f"{flagged_share:>13} {tally.rate(tally.on_the_day):>10} "
                    f"{tally.rate(tally.within_three_days):>10} "
                    f"{tally.rate(tally.flagged_elsewhere):>12}"
                )
            else:
                row = (
                    f"{label:<26} {'none':>5}  {tally.rate(tally.with_any_flag):>9} "
                    f"{flagged_share:>13} {'':>10} {'':>10} {'':>12}"
                )
            lines.append(row)
            print(row, flush=True)
    lines += [
        "",
        "any flag: histories with at least one finding (for 'none': the false-positive rate "
        "per 40-day history); flagged days: findings per tested day; false alarm: a finding "
        "outside the step's first three days.",
        f"took {time.monotonic() - started:.0f} s",
    ]
    print("\n".join(lines[-3:]))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
