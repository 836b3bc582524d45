"""Trigger parameters of the benchmark DAGs: checked in plain words before a run starts.

Airflow checks each parameter against its JSON schema, but it keeps keys it does not know
(they become parameters without a schema, and the run starts on the full profile) and its
messages quote the schema's regular expressions. ``trigger_problems`` checks a DAG run's
``conf`` against the DAG's parameters, refuses unknown keys and says what is wrong with
each value in words; the API server runs it on every trigger and backfill request (see
``meshbench.ui.trigger_check``) and ``create_clusters`` runs it again for runs started by
other paths (``airflow dags trigger``, a backfill from the CLI).
"""

from __future__ import annotations

from typing import Any

import jsonschema

from meshbench.config import BenchmarkConfig, ConfigError, parse_duration

# What a value must look like, in words, where the schema says it with a pattern.
FORM_HINTS = {
    "duration": "a positive length of time such as 30s, 1m30s or 2m",
    "mesh_version": "a release such as 1.19.3",
}
_TYPE_WORDS = {"integer": "a whole number", "string": "text", "number": "a number"}


class TriggerParamsInvalid(ConfigError):
    """A DAG run's parameters are not what the DAG accepts; the message says each problem."""


def _describe(name: str, value: Any, error: jsonschema.ValidationError) -> str:
    schema = error.schema if isinstance(error.schema, dict) else {}
    kind = error.validator
    if kind == "type":
        wanted = schema.get("type")
        words = (
            " or ".join(_TYPE_WORDS.get(t, t) for t in wanted if t != "null")
            if isinstance(wanted, list)
            else _TYPE_WORDS.get(wanted, str(wanted))
        )
        return f"{name} must be {words}, not {value!r}"
    if kind == "minimum":
        return f"{name} must be at least {schema['minimum']}, not {value!r}"
    if kind == "maximum":
        return f"{name} must be at most {schema['maximum']}, not {value!r}"
    if kind == "pattern":
        hint = FORM_HINTS.get(name, "in the form its description gives")
        return f"{name} must be {hint}, not {value!r}"
    if kind == "enum":
        return f"{name} must be one of {', '.join(map(str, schema['enum']))}, not {value!r}"
    return f"{name}: {error.message}"


def trigger_problems(params: dict[str, Any], conf: dict[str, Any] | None) -> list[str]:
    """Each problem of ``conf`` against ``params`` (name -> Airflow Param), in words."""
    problems: list[str] = []
    conf = conf or {}
    if not isinstance(conf, dict):
        return [f"the run configuration must be a JSON object, not {conf!r}"]
    unknown = sorted(set(conf) - set(params))
    if unknown:
        problems.append(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
            f"this DAG takes only {', '.join(params)}"
        )
    for name, param in params.items():
        if name not in conf or conf[name] is None:
            continue
        value = conf[name]
        schema = getattr(param, "schema", {}) or {}
        errors = sorted(
            jsonschema.Draft202012Validator(schema).iter_errors(value), key=lambda e: e.validator
        )
        if errors:
            problems.append(_describe(name, value, errors[0]))
        elif name == "duration":
            try:
                parse_duration(value)
            except ValueError:
                problems.append(f"duration must be {FORM_HINTS['duration']}, not {value!r}")
    return problems


def check_trigger(config: BenchmarkConfig, dag_id: str, conf: dict[str, Any] | None) -> None:
    """Raise TriggerParamsInvalid when ``conf`` does not fit the benchmark DAG ``dag_id``."""
    params = benchmark_params(config).get(dag_id)
    if params is None:
        return
    problems = trigger_problems(params, conf)
    if problems:
        raise TriggerParamsInvalid(f"{dag_id} cannot start: " + "; ".join(problems) + ".")


def benchmark_params(config: BenchmarkConfig) -> dict[str, dict[str, Any]]:
    """The trigger parameters of every benchmark DAG, by DAG id."""
    from meshbench.dagfactory import dag_id_for, trigger_params

    return {
        dag_id_for(environment, mesh): trigger_params(config, environment, mesh)
        for environment, mesh in config.matrix
    }
