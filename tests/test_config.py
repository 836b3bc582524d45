from __future__ import annotations

import textwrap

import pytest

from meshbench.config import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    load_config,
    parse_config,
    parse_duration,
)

MINIMAL = """
load_profiles:
  study: {}
version_profiles:
  study-2023: {istio: 1.19.3, kuma: 2.4.3, nsm: 1.11.1}
"""


def test_packaged_config_is_valid_and_matches_the_study() -> None:
    config = load_config(DEFAULT_CONFIG_PATH)
    study = config.load_profiles["study"]
    assert (study.qps, study.connections, study.duration) == (6000, 1, 60.0)
    assert (study.runs_per_iteration, study.iterations, study.warmup) == (3, 5, True)
    profile = config.version_profiles["study-2023"]
    assert (profile.istio, profile.kuma, profile.nsm) == ("1.19.3", "2.4.3", "1.11.1")
    assert ("local", "baseline") in config.matrix
    assert config.environment("local").pool.slots == 1


def test_minimal_config_gets_defaults() -> None:
    config = parse_config(MINIMAL)
    assert config.matrix == [("local", "baseline"), ("local", "envoy-mtls"), ("local", "wireguard")]
    assert config.mesh_version("local", "baseline") is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("60s", 60.0), ("1m30s", 90.0), ("500ms", 0.5), (5, 5.0), ("1m0s", 60.0), ("1h", 3600.0)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


MALFORMED = [
    ("not yaml", "load_profiles: [\n", "not valid YAML at line"),
    ("top level list", "- a\n- b\n", "top level must be a mapping"),
    ("empty file", "", "top level must be a mapping"),
    (
        "missing load profiles",
        "version_profiles: {a: {}}\n",
        "load_profiles: required field is missing",
    ),
    (
        "negative qps",
        MINIMAL.replace("study: {}", "study: {qps: -5}"),
        "load_profiles.study.qps: Input should be greater than or equal to 0 (got -5)",
    ),
    (
        "zero connections",
        MINIMAL.replace("study: {}", "study: {connections: 0}"),
        "load_profiles.study.connections",
    ),
    (
        "bad duration",
        MINIMAL.replace("study: {}", "study: {duration: 10x}"),
        "load_profiles.study.duration: must be a duration such as '60s', '1m30s' or '500ms' (got '10x')",
    ),
    (
        "negative duration",
        MINIMAL.replace("study: {}", "study: {duration: -3}"),
        "load_profiles.study.duration: must be a positive duration (got -3)",
    ),
    (
        "boolean duration",
        MINIMAL.replace("study: {}", "study: {duration: true}"),
        "load_profiles.study.duration",
    ),
    (
        "too many iterations",
        MINIMAL.replace("study: {}", "study: {iterations: 100}"),
        "load_profiles.study.iterations: Input should be less than or equal to 99 (got 100)",
    ),
    (
        "unreachable min_positive",
        MINIMAL.replace(
            "study: {}", "study: {iterations: 2, runs_per_iteration: 2, min_positive: 5}"
        ),
        "min_positive (5) exceeds the 4 measured runs planned",
    ),
    (
        "unknown load key",
        MINIMAL.replace("study: {}", "study: {qsp: 100}"),
        "load_profiles.study.qsp: Extra inputs are not permitted (got 100)",
    ),
    (
        "version not a string",
        MINIMAL.replace("istio: 1.19.3", "istio: 1.19"),
        "version_profiles.study-2023.istio: Input should be a valid string (got 1.19)",
    ),
    (
        "version malformed",
        MINIMAL.replace("istio: 1.19.3", "istio: latest"),
        "version_profiles.study-2023.istio: must be a release version such as '1.19.3' (got 'latest')",
    ),
    (
        "unknown mesh",
        MINIMAL + "environments:\n  local: {meshes: [baseline, linkerd], pool: {name: p}}\n",
        "environments.local.meshes: unknown mesh 'linkerd'",
    ),
    (
        "duplicate mesh",
        MINIMAL + "environments:\n  local: {meshes: [baseline, baseline], pool: {name: p}}\n",
        "environments.local.meshes: lists a mesh twice",
    ),
    (
        "kubernetes mesh locally",
        MINIMAL + "environments:\n  local: {meshes: [istio], pool: {name: p}}\n",
        "environments.local.meshes.0: 'istio' needs Kubernetes clusters",
    ),
    (
        "local mesh on a cluster",
        MINIMAL + "environments:\n  existing: {meshes: [wireguard], pool: {name: p}}\n",
        "environments.existing.meshes.0: 'wireguard' is a local data-plane emulation",
    ),
    (
        "private subnet",
        MINIMAL + "environments:\n  local: {subnet: 10.0.0.0/16, pool: {name: p}}\n",
        "environments.local.subnet: must lie inside the benchmarking range 198.18.0.0/15 (got '10.0.0.0/16')",
    ),
    (
        "subnet not a network",
        MINIMAL + "environments:\n  local: {subnet: banana, pool: {name: p}}\n",
        "environments.local.subnet: is not an IPv4 network",
    ),
    (
        "pool slots zero",
        MINIMAL + "environments:\n  local: {pool: {name: p, slots: 0}}\n",
        "environments.local.pool.slots: Input should be greater than or equal to 1 (got 0)",
    ),
    (
        "pool without name",
        MINIMAL + "environments:\n  local: {pool: {slots: 1}}\n",
        "environments.local.pool.name: required field is missing",
    ),
    (
        "bad network mode",
        MINIMAL + "environments:\n  local: {network_mode: bridge, pool: {name: p}}\n",
        "environments.local.network_mode: Input should be 'auto', 'netns' or 'loopback' (got 'bridge')",
    ),
    (
        "unknown environment",
        MINIMAL + "environments:\n  gke: {}\n",
        "environments.gke: Extra inputs are not permitted",
    ),
    (
        "dangling load profile",
        MINIMAL + "defaults: {load_profile: quick}\n",
        "defaults.load_profile: no load profile named 'quick'",
    ),
    (
        "dangling env version profile",
        MINIMAL + "environments:\n  existing: {version_profile: nope, pool: {name: p}}\n",
        "environments.existing.version_profile: no version profile named 'nope'",
    ),
    (
        "mesh without version",
        MINIMAL.replace("istio: 1.19.3, ", "")
        + "environments:\n  existing: {meshes: [istio], pool: {name: p}}\n",
        "environments.existing.meshes.0: 'istio' has no version in version profile 'study-2023'",
    ),
    (
        "bad kubernetes version",
        MINIMAL + "environments:\n  existing: {kubernetes_version: '2.0', pool: {name: p}}\n",
        "environments.existing.kubernetes_version: must be a Kubernetes version",
    ),
    (
        "bad profile name",
        MINIMAL.replace("study: {}", "Study Profile: {}"),
        "load_profiles: profile name 'Study Profile' must be lower-case",
    ),
    (
        "retries not a number",
        MINIMAL + "defaults: {retries: many}\n",
        "defaults.retries: Input should be a valid integer",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, e) for _, t, e in MALFORMED], ids=[name for name, _, _ in MALFORMED]
)
def test_malformed_config_names_field_and_value(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(textwrap.dedent(text), "bench.yaml")
    message = str(caught.value)
    assert message.startswith("bench.yaml: "), message
    assert expected in message, message


def test_unreadable_file_is_named(tmp_path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read the configuration"):
        load_config(missing)


def test_environment_variable_points_at_another_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text(MINIMAL.replace("study: {}", "study: {qps: 100}"))
    monkeypatch.setenv("MESHBENCH_CONFIG", str(path))
    assert load_config().load_profiles["study"].qps == 100
