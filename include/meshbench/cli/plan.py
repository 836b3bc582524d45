"""``meshbench plan --env E --mesh M``: print every step a DAG run would take, running none."""

from __future__ import annotations

import argparse
import os
import sys

from meshbench.backend import RunContext
from meshbench.cli import CommandError
from meshbench.config import ENVIRONMENT_NAMES, MESH_NAMES, BenchmarkConfig, load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    plan = subparsers.add_parser(
        "plan", help="print the ordered steps of an environment × mesh without running them"
    )
    plan.add_argument(
        "--env", "--environment", dest="environment", required=True, choices=ENVIRONMENT_NAMES
    )
    plan.add_argument("--mesh", required=True, choices=MESH_NAMES)
    plan.add_argument(
        "--config",
        help="benchmark configuration file (default: $MESHBENCH_CONFIG "
        "or the packaged benchmarks.yaml)",
    )
    plan.add_argument(
        "--profile",
        help="load profile to plan (default: the environment's, as its DAG runs it); "
        "a ladder shows every step",
    )
    plan.add_argument("--markdown", action="store_true", help="print Markdown (as the DAG doc)")
    plan.set_defaults(handler=_plan)


def placeholder_context(
    config: BenchmarkConfig, environment: str, mesh: str, profile: str | None = None
) -> RunContext:
    """The context a plan is rendered with: the DAG's id and the run id ``plan``."""
    if profile is not None and profile not in config.load_profiles:
        raise CommandError(
            f"--profile {profile!r}: no such load profile; defined: "
            f"{', '.join(config.load_profiles)}"
        )
    return RunContext(
        config=config,
        environment=environment,
        mesh=mesh,
        dag_id=f"meshbench_{environment}_{mesh}",
        run_id="plan",
        load=config.load_profiles[profile] if profile else config.load_profile_for(environment),
        mesh_version=config.mesh_version(environment, mesh),
    )


def _plan(args: argparse.Namespace) -> int:
    from meshbench.registry import get_backend

    config = load_config(args.config)
    try:
        backend = get_backend(config, args.environment, args.mesh)
    except ModuleNotFoundError as exc:
        raise CommandError(
            f"environment {args.environment!r} has no backend yet ({exc.name} is missing)"
        ) from None
    plan = backend.plan(placeholder_context(config, args.environment, args.mesh, args.profile))
    try:
        print(plan.render_markdown() if args.markdown else plan.render(), flush=True)
    except BrokenPipeError:
        # `meshbench plan ... | head`: the reader left early; that is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
