"""Fixtures of the pipeline tests: a short profile, a private artifact store and lease."""

from __future__ import annotations

import pytest

from meshbench.config import ArtifactSettings, LoadProfile, load_config


@pytest.fixture(autouse=True)
def private_lease(tmp_path, monkeypatch):
    monkeypatch.setenv("MESHBENCH_LOCAL_LEASE", str(tmp_path / "lease.json"))


@pytest.fixture
def config(tmp_path):
    base = load_config()
    load = LoadProfile(
        duration="60s", iterations=2, runs_per_iteration=2, min_positive=3, warmup=True
    )
    return base.model_copy(
        update={
            "artifacts": ArtifactSettings(base_uri=(tmp_path / "artifacts").as_uri()),
            "load_profiles": {**base.load_profiles, "study": load},
        }
    )


@pytest.fixture(autouse=True)
def migrated_results(request, monkeypatch):
    """Steps check the results schema before they run: give them a migrated database."""
    engine = request.getfixturevalue("results_engine")
    monkeypatch.setattr("meshbench.results.db.get_engine", lambda: engine)
    return engine
