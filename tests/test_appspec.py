"""The app spec: parsing, placeholders, refusals that name the field, and the health gate."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from tests.helpers.commands import ROOT
from zdd import appspec, health
from zdd.appspec import AppSpec, InvalidAppSpec, Placement
from zdd.errors import GateFailed
from zdd.phases import DatabaseMode

SPEC = """
releases: releases/{version}
start: [bin/site, --port, "{port}", --db, "{database_url}", --as, "{instance}"]
env: {SITE_MODE: "{database_mode}", LITERAL: "{{not a placeholder}}"}
migrate: [/usr/bin/site-migrate, "{database}"]
health: {path: /health, timeoutSeconds: 5}
"""


def placement(
    mode: DatabaseMode = DatabaseMode.READ_ONLY, database: str = "/s/c.sqlite"
) -> Placement:
    return Placement(
        "2.9.2", "/apps/site/releases/2.9.2", "clone", mode, database, "/s/c.files", 20002
    )


def test_a_spec_file_is_resolved_and_filled() -> None:
    spec = appspec.parse_file_text(SPEC, "/apps/site")
    assert spec.releases == "/apps/site/releases/{version}"
    assert spec.release("2.9.2") == "/apps/site/releases/2.9.2"
    # A relative program is taken inside the release; an absolute one is left alone.
    assert spec.start_command(placement()) == [
        "/apps/site/releases/2.9.2/bin/site",
        "--port",
        "20002",
        "--db",
        "sqlite:////s/c.sqlite",
        "--as",
        "clone",
    ]
    assert spec.migrate_command(placement()) == ["/usr/bin/site-migrate", "/s/c.sqlite"]
    assert spec.environment(placement()) == {
        "SITE_MODE": "ReadOnly",
        "LITERAL": "{not a placeholder}",
    }
    assert spec.health == appspec.HealthCheck("/health", 5.0)


def test_the_stored_spec_reads_back_the_same() -> None:
    spec = appspec.parse_file_text(SPEC, "/apps/site")
    config = {appspec.CONFIG_KEY: spec.to_config()}
    assert appspec.from_config(config) == spec
    assert appspec.health_check_of(config) == spec.health
    assert appspec.from_config({}) is None and appspec.health_check_of({}) is None


def test_the_bundled_sample_is_one_spec_among_others() -> None:
    path = ROOT / "apps" / "sample" / "app.yaml"
    spec = appspec.parse_file_text(path.read_text(), str(path.parent))
    assert spec.release("v2") == str(path.parent / "releases" / "v2")
    assert spec.health.path == "/healthz"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("releases: [1]\nstart: [x]", "`releases`"),
        ("releases: releases\nstart: [x]", "`releases`"),
        ("releases: r/{version}/{port}\nstart: [x]", "`releases`"),
        ("releases: r/{version}", "`start`"),
        ("releases: r/{version}\nstart: ./run --port {port}", "`start`"),
        ("releases: r/{version}\nstart: []", "`start`"),
        ("releases: r/{version}\nstart: [x, '{secret}']", "`start`"),
        ("releases: r/{version}\nstart: [x, '{port!r}']", "`start`"),
        ("releases: r/{version}\nstart: [x, '{port']", "`start`"),
        ("releases: r/{version}\nstart: [x]\nmigrate: alembic upgrade", "`migrate`"),
        ("releases: r/{version}\nstart: [x]\nenv: {PORT: 8000}", "`env`"),
        ("releases: r/{version}\nstart: [x]\nhealth: {path: healthz}", "`health.path`"),
        ("releases: r/{version}\nstart: [x]\nhealth: {timeoutSeconds: 0}", "`health.timeout"),
        ("releases: r/{version}\nstart: [x]\nhealth: {url: /x}", "`health.url`"),
        ("releases: r/{version}\nstart: [x]\nstrat: [y]", "`strat`"),
        ("releases: r/{version}\nstart: [x", "not valid YAML"),
        ("- a list", "mapping"),
    ],
)
def test_a_malformed_spec_is_refused_naming_its_field(text: str, field: str) -> None:
    with pytest.raises(InvalidAppSpec, match=field.replace("[", r"\[")):
        appspec.parse_file_text(text, "/apps/site")


def test_a_stored_spec_must_name_its_releases_absolutely() -> None:
    stored = json.dumps({"releases": "releases/{version}", "start": ["x"]})
    with pytest.raises(InvalidAppSpec, match="absolute"):
        appspec.from_config({appspec.CONFIG_KEY: stored})
    with pytest.raises(InvalidAppSpec, match="JSON"):
        appspec.from_config({appspec.CONFIG_KEY: "releases: x"})


def test_a_value_with_an_unknown_placeholder_is_never_filled() -> None:
    spec = AppSpec(releases="/r/{version}", start=("x",))
    assert spec.start_command(placement()) == ["x"]
    with pytest.raises(InvalidAppSpec, match="unknown placeholder"):
        appspec.fill("{HOME}", placement().values())


# -- the health gate, against a site that is not ours -------------------------------------


class _Site(BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, tuple[int, str]]] = {}

    def do_GET(self) -> None:
        status, body = self.answers.get(self.path, (404, "not found"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def site() -> Iterator[tuple[str, dict[str, tuple[int, str]]]]:
    answers: dict[str, tuple[int, str]] = {}
    handler = type("Site", (_Site,), {"answers": answers})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", answers
    server.shutdown()
    server.server_close()


EXPECTED = health.Identity("2.9.2", "clone", "ReadOnly")


def test_a_site_is_healthy_when_its_health_path_answers_2xx(
    site: tuple[str, dict[str, tuple[int, str]]],
) -> None:
    url, answers = site
    answers["/health"] = (204, "")
    health.wait_healthy(url, EXPECTED, what="the clone", timeout=5, health_path="/health")


def test_a_health_path_that_never_answers_fails_the_gate_naming_health(
    site: tuple[str, dict[str, tuple[int, str]]],
) -> None:
    url, answers = site
    answers["/healthz"] = (200, "OK")
    with pytest.raises(GateFailed, match=r"answered 404.*`health` path is /health\b"):
        health.wait_healthy(url, EXPECTED, what="the clone", timeout=0.5, health_path="/health")


def test_a_site_that_reports_its_identity_must_report_the_expected_one(
    site: tuple[str, dict[str, tuple[int, str]]],
) -> None:
    url, answers = site
    seen = {"version": "2.9.2", "instance": "primary", "database_mode": "ReadOnly"}
    answers["/healthz"] = (200, json.dumps(seen))
    with pytest.raises(GateFailed, match="instance 'primary' \\(expected 'clone'\\)"):
        health.wait_healthy(url, EXPECTED, what="the clone", timeout=0.5)
    answers["/healthz"] = (200, json.dumps({**seen, "instance": "clone"}))
    health.wait_healthy(url, EXPECTED, what="the clone", timeout=5)
