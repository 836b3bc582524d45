"""``meshbench estimate [--env E]``: cost and duration of the daily matrix, from config."""

from __future__ import annotations

import argparse
import json

from meshbench.config import ENVIRONMENT_NAMES, MESH_NAMES, load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    estimate = subparsers.add_parser(
        "estimate",
        help="estimate the duration and cost of each environment's matrix (config prices)",
        description="Pure arithmetic on the configuration (load profile, step timings, "
        "prices): nothing is asked of any cloud. `meshbench plan` ends with the same "
        "estimate for its environment.",
    )
    estimate.add_argument(
        "--env",
        "--environment",
        dest="environments",
        action="append",
        choices=ENVIRONMENT_NAMES,
        help="only this environment (repeatable; default: all)",
    )
    estimate.add_argument(
        "--mesh",
        dest="meshes",
        action="append",
        choices=MESH_NAMES,
        help="estimate these meshes instead of the configured ones (repeatable)",
    )
    estimate.add_argument("--config", help="benchmark configuration file")
    estimate.add_argument("--json", action="store_true", help="print JSON")
    estimate.set_defaults(handler=_estimate)


def _estimate(args: argparse.Namespace) -> int:
    from meshbench.environments.estimate import estimate_environment, render_estimate

    config = load_config(args.config)
    names = args.environments or list(ENVIRONMENT_NAMES)
    estimates = [estimate_environment(config, name, args.meshes) for name in names]
    if args.json:
        print(json.dumps([item.as_dict() for item in estimates], indent=2))
        return 0
    print("ESTIMATES from config prices and timings (not measured; see docs/real-clusters.md)")
    for item in estimates:
        print()
        print(render_estimate(item))
    return 0
