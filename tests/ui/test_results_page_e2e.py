"""End to end: Airflow's API server with the plugin, the page in headless Chromium.

One API server per module (about 1 GB, 10-20 s to start), in a temporary AIRFLOW_HOME with
a SQLite metadata database, on a free loopback port; its process group is always stopped.
The page reads the results database through a login role made here the way
docs/analysts.md tells a DBA to (a member of meshbench_reader), dropped afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from meshbench.testing.browser import HeadlessChromium, find_chromium

from .conftest import LADDER_DAY, LADDER_ENVIRONMENT, SYNTHETIC

pytestmark = [pytest.mark.postgres, pytest.mark.airflow, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
SCREENSHOT_ENV_VAR = "MESHBENCH_UPDATE_SCREENSHOTS"  # set to 1 to refresh docs/*.png
STARTUP_TIMEOUT = 120


@dataclass(frozen=True)
class AirflowServer:
    url: str
    passwords: dict[str, str]
    log: Path

    def token(self, username: str) -> str:
        reply = httpx.post(
            f"{self.url}/auth/token",
            json={"username": username, "password": self.passwords[username]},
            timeout=30,
        )
        reply.raise_for_status()
        return reply.json()["access_token"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def reader_login(page_database, postgres_admin_url) -> Iterator[str]:
    """A login role that is a member of meshbench_reader: the DBA's recipe."""
    name = f"meshbench_page_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(16)
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(
            text(f"CREATE ROLE {name} LOGIN PASSWORD '{password}' IN ROLE meshbench_reader")
        )
    url = make_url(page_database.url).set(username=name, password=password)
    try:
        yield url.set(drivername="postgresql").render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :n"),
                {"n": name},
            )
            connection.execute(text(f"DROP ROLE IF EXISTS {name}"))
        admin.dispose()


@pytest.fixture(scope="module")
def airflow_server(tmp_path_factory, request) -> Iterator[AirflowServer]:
    home = tmp_path_factory.mktemp("airflow-home")
    (home / "dags").mkdir()
    passwords = {"admin": secrets.token_urlsafe(12), "viewer": secrets.token_urlsafe(12)}
    password_file = home / "passwords.json"
    password_file.write_text(json.dumps(passwords))
    port = _free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AIRFLOW") and key != "MESHBENCH_DATABASE_URL"
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "PYTHONWARNINGS": "ignore",
        }
    )
    airflow = str(Path(sys.executable).with_name("airflow"))
    log = home / "api-server.log"
    # Airflow's metadata database migrates while the results database is seeded.
    migration = subprocess.Popen(
        [airflow, "db", "migrate"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        env["AIRFLOW_CONN_MESHBENCH_RESULTS_READER"] = request.getfixturevalue("reader_login")
        output, _ = migration.communicate(timeout=STARTUP_TIMEOUT)
    finally:
        if migration.poll() is None:
            os.killpg(migration.pid, signal.SIGKILL)
            migration.wait()
    assert migration.returncode == 0, output.decode()[-3000:]
    with log.open("wb") as output:
        server = subprocess.Popen(
            [airflow, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole below
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if server.poll() is not None:
                pytest.fail(f"the API server exited {server.returncode}: {log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/api/v2/version", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the API server did not answer in time: {log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield AirflowServer(url=url, passwords=passwords, log=log)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)


@pytest.mark.parametrize("path", ["/meshbench/", "/meshbench/docs", "/meshbench/openapi.json"])
def test_anonymous_and_forged_requests_are_refused(airflow_server, path: str) -> None:
    anonymous = httpx.get(f"{airflow_server.url}{path}", timeout=30)
    assert anonymous.status_code == 401, anonymous.text
    forged = httpx.get(
        f"{airflow_server.url}{path}",
        headers={"Authorization": "Bearer not-a-token"},
        timeout=30,
    )
    assert forged.status_code in (401, 403), forged.text
    assert "1864.44" not in anonymous.text + forged.text


def test_signed_in_users_get_the_page_and_its_api_docs(airflow_server) -> None:
    for user in ("admin", "viewer"):
        headers = {"Authorization": f"Bearer {airflow_server.token(user)}"}
        page = httpx.get(f"{airflow_server.url}/meshbench/", headers=headers, timeout=60)
        assert page.status_code == 200, (user, page.text[:500])
        schema = httpx.get(
            f"{airflow_server.url}/meshbench/openapi.json", headers=headers, timeout=30
        )
        assert schema.status_code == 200 and "/trend.png" in schema.json()["paths"]


def test_the_plugin_adds_a_navigation_entry(airflow_server) -> None:
    headers = {"Authorization": f"Bearer {airflow_server.token('admin')}"}
    reply = httpx.get(f"{airflow_server.url}/api/v2/plugins", headers=headers, timeout=30)
    assert reply.status_code == 200
    (plugin,) = [p for p in reply.json()["plugins"] if p["name"] == "meshbench_results"]
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/meshbench"
    (view,) = plugin["external_views"]
    assert (view["destination"], view["href"]) == ("nav", "/meshbench/")


# Text of every table cell per mesh, for the checks below.
READ_TABLE = """
Object.fromEntries([...document.querySelectorAll('table.comparison tbody tr')].map(row => [
  row.querySelector('td.mesh').textContent.trim(),
  Object.fromEntries([...row.querySelectorAll('td[data-column]')].map(
    cell => [cell.dataset.column, cell.textContent.trim()]))
]))
"""
CHARTS_LOADED = (
    "[...document.querySelectorAll('img.chart')].every(img => img.complete)"
    " && document.querySelectorAll('img.chart').length > 0"
)
EMBEDDED_PAGE_LOADED = """(() => {
  const page = document.querySelector('iframe')?.contentDocument;
  const charts = page ? [...page.querySelectorAll('img.chart')] : [];
  return page?.querySelector('table.comparison') != null && charts.length > 0
    && charts.every(img => img.complete && img.naturalWidth > 0);
})()"""
CHART_SIZES = "[...document.querySelectorAll('img.chart')].map(i => [i.naturalWidth, i.alt])"
# Each load-step row: its mesh, whether it is marked saturated, and its cells.
READ_LADDER_STEPS = """
[...document.querySelectorAll('table.ladder-steps tbody tr')].map(row => ({
  mesh: row.querySelector('td.mesh').textContent.trim(),
  saturated: row.classList.contains('saturated'),
  cells: Object.fromEntries([...row.querySelectorAll('td[data-column]')].map(
    cell => [cell.dataset.column, cell.textContent.trim()]))
}))
"""
READ_LADDER_MESHES = """
Object.fromEntries([...document.querySelectorAll('table.ladder-meshes tbody tr')].map(row => [
  row.querySelector('td.mesh').textContent.trim(),
  row.querySelector('td[data-column="ceiling"]').textContent.trim()
]))
"""
LADDER_CHART_SIZES = (
    "[...document.querySelectorAll('img.chart.ladder, img.chart.cpu')]"
    ".map(i => [i.naturalWidth, i.alt])"
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[HeadlessChromium]:
    if find_chromium() is None:
        pytest.skip("Debian's chromium is not installed (scripts/install-system-packages.sh)")
    with HeadlessChromium(tmp_path_factory.mktemp("chromium-profile")) as chromium:
        yield chromium


def _screenshot(browser: HeadlessChromium, tmp_path: Path, name: str) -> Path:
    target = ROOT / "docs" / name if os.environ.get(SCREENSHOT_ENV_VAR) == "1" else tmp_path / name
    browser.screenshot(target)
    assert target.stat().st_size > 20_000
    return target


def test_the_page_in_chromium_shows_the_study_table_and_charts(
    airflow_server, browser, tmp_path
) -> None:
    base = airflow_server.url
    browser.call("Network.clearBrowserCookies")
    browser.open(f"{base}/meshbench/?environment=equinix-metal")
    assert "Sign in first" in browser.evaluate("document.body.innerText")

    browser.set_cookie("_token", airflow_server.token("admin"), base)
    browser.open(f"{base}/meshbench/?environment=equinix-metal", ready=CHARTS_LOADED)
    table = browser.evaluate(READ_TABLE)
    istio = table["Istio 1.19.3"]
    assert (istio["QPS"], istio["avg"], istio["p90"], istio["p99"], istio["p99.9"]) == (
        "1864.44",
        "0.53",
        "0.57",
        "0.68",
        "0.95",
    )
    assert table["Kuma 2.4.3"]["QPS"] == "4538.77" and table["NSM vl3 1.11.1"]["avg"] == "0.19"
    assert istio["n"] == "5" and istio["negative"] == "0"
    sizes = browser.evaluate(CHART_SIZES)
    assert len(sizes) == 3 and all(width > 300 for width, _ in sizes), sizes
    assert "No load ladder on this date" in browser.evaluate("document.body.innerText")
    _screenshot(browser, tmp_path, "results-page.png")


def test_the_page_in_chromium_shows_the_load_ladder(airflow_server, browser, tmp_path) -> None:
    base = airflow_server.url
    browser.set_cookie("_token", airflow_server.token("viewer"), base)
    browser.open(
        f"{base}/meshbench/?environment={LADDER_ENVIRONMENT}&date={LADDER_DAY}",
        ready=CHARTS_LOADED,
    )
    steps = browser.evaluate(READ_LADDER_STEPS)
    assert len(steps) == 5, steps
    (saturated,) = [step for step in steps if step["saturated"]]
    assert saturated["mesh"] == "envoy-mtls (emulated)"
    assert (saturated["cells"]["step"], saturated["cells"]["achieved QPS"]) == (
        "c4-q2000",
        "1500.00",
    )
    assert saturated["cells"]["saturation"] == "SATURATED"
    meshes = browser.evaluate(READ_LADDER_MESHES)
    assert meshes["envoy-mtls (emulated)"] == "6100 [4829, 7371] (n=2) at c16-max"
    assert set(meshes) == {"baseline (no mesh)", "envoy-mtls (emulated)"}
    sizes = browser.evaluate(LADDER_CHART_SIZES)
    assert len(sizes) == 2 and all(width > 300 for width, _ in sizes), sizes
    _screenshot(browser, tmp_path, "results-page-ladder.png")


def test_the_history_view_shows_trend_regressions_and_negative_runs(
    airflow_server, browser, tmp_path
) -> None:
    base = airflow_server.url
    browser.set_cookie("_token", airflow_server.token("viewer"), base)
    browser.open(
        f"{base}/meshbench/?environment={SYNTHETIC}&metric=p99_ms&since=2026-01-01"
        "&until=2026-01-30",
        ready=CHARTS_LOADED,
    )
    text_shown = browser.evaluate("document.body.innerText")
    assert "mesh version changed from 1.19.3 to 1.20.0 on this date" in text_shown
    assert "fortio: connection refused after 12 s" in text_shown
    trend_width = browser.evaluate("document.querySelector('img.trend').naturalWidth")
    assert trend_width > 300
    _screenshot(browser, tmp_path, "results-page-history.png")


def test_the_page_is_embedded_in_the_airflow_ui(airflow_server, browser, tmp_path) -> None:
    base = airflow_server.url
    browser.set_cookie("_token", airflow_server.token("admin"), base)
    browser.open(
        f"{base}/plugin/meshbench-results",
        ready=EMBEDDED_PAGE_LOADED,
        timeout=60,
    )
    source = browser.evaluate("document.querySelector('iframe').getAttribute('src')")
    assert source.endswith("/meshbench/")
    heading = browser.evaluate(
        "document.querySelector('iframe').contentDocument.querySelector('h1').textContent"
    )
    assert heading == "meshbench results"
    _screenshot(browser, tmp_path, "results-page-in-airflow.png")
