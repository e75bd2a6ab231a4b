"""What an operator meets with a site the platform did not write, on the real engine: a typo in
its app spec that `init` found is fixed with `zdd app set`; a health path that answers 204
passes the real HAProxy and the gates; a clone that cannot start its site fails its gate with
the command that shows the clone's log, and `zdd history` tells that deployment as aborted at
that gate, reading every page of the stack's history."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers.commands import ROOT, Result, config_file, stack_dir
from zdd import stack as stack_module
from zdd.api import open_stack
from zdd.history import FAILED_GATE_KEY
from zdd.processes import find_owned_under

pytestmark = pytest.mark.engine(minutes=2)

# A site of its own: 204 on its health path; its clone cannot open its database (as Django on
# a read-only database URL could not) and says so in its log.
SITE = f"""#!{sys.executable}
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, instance = int(sys.argv[1]), sys.argv[2]


class Site(BaseHTTPRequestHandler):
    def do_GET(self):
        if instance == "clone":
            print("clone: cannot open the database read-only", file=sys.stderr, flush=True)
            status = 500
        else:
            status = 204 if self.path == "/health" else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


ThreadingHTTPServer(("127.0.0.1", port), Site).serve_forever()
"""
SPEC: dict[str, Any] = {
    "releases": "releases/{version}",
    "start": ["bin/site", "{port}", "{instance}"],
    "migrate": [],
    "health": {"path": "/health", "timeoutSeconds": 3},
}


def write_spec(folder: Path, name: str, **changes: Any) -> Path:
    for version in ("v1", "v2"):
        site = folder / "releases" / version / "bin" / "site"
        site.parent.mkdir(parents=True, exist_ok=True)
        site.write_text(SITE)
        site.chmod(0o755)
    spec = folder / name
    spec.write_text(yaml.safe_dump({**SPEC, **changes}))
    return spec


def test_app_set_fixes_a_spec_and_a_failed_clone_gate_is_told_truthfully(
    tmp_path: Path,
    zdd: Callable[..., Result],
    pulumi: Callable[..., Result],
    engine_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    config = config_file(name)
    # The typo: `start` without the instance, so the site exits as soon as it starts.
    typo = write_spec(tmp_path, "typo.yaml", start=["bin/site", "{port}"])
    fixed = write_spec(tmp_path, "app.yaml")
    try:
        made = zdd("init", "--stack", name, "--version", "v1", "--app", str(typo), "--json")
        assert made.code == 5, made.stderr
        again = zdd("init", "--stack", name, "--version", "v1", "--app", str(fixed))
        assert again.code == 2 and "already exists" in again.stderr

        stored = config.read_text()
        bad = tmp_path / "bad.yaml"
        bad.write_text("releases: [\n")
        elsewhere = write_spec(tmp_path, "elsewhere.yaml", releases="builds/{version}")
        for spec, message in ((bad, "not valid YAML"), (elsewhere, "has no release folder")):
            refused = zdd("app", "set", "--stack", name, str(spec), "--json")
            assert refused.code == 2 and message in refused.json()["error"], refused.stderr
            assert config.read_text() == stored

        shown = zdd("app", "set", "--stack", name, str(fixed), "--preview", "--json")
        assert shown.code == 0, shown.stderr
        # The primary, which the typo kept from starting, is what the new spec changes.
        assert any("primary" in change["resource"] for change in shown.json()["would_change"])
        assert config.read_text() == stored

        changed = zdd("app", "set", "--stack", name, str(fixed), "--json")
        assert changed.code == 0, changed.stderr
        assert (changed.json()["action"], changed.json()["outcome"]) == ("app-set", "succeeded")
        status = zdd("status", "--stack", name, "--json").json()
        assert status["state"] == "idle" and status["current_version"] == "v1"
        # HAProxy took the primary into service on its 204 health answer.
        assert httpx.get(f"{status['public_url']}/", timeout=10).status_code == 200

        assert_follows_the_primarys_log(name, status["public_url"], engine_env)

        # While the config says a deployment is under way, the spec is not replaced.
        assert pulumi("config", "set", "-s", name, "zdd:targetVersion", "v2").code == 0
        assert pulumi("config", "set", "-s", name, "zdd:phase", "clone").code == 0
        during = zdd("app", "set", "--stack", name, str(fixed))
        assert during.code == 3 and "a deployment is in progress" in during.stderr
        assert pulumi("config", "rm", "-s", name, "zdd:targetVersion").code == 0
        assert pulumi("config", "set", "-s", name, "zdd:phase", "idle").code == 0

        deployed = zdd("deploy", "--stack", name, "--version", "v2", "--yes", "--json")
        assert deployed.code == 4, deployed.stderr
        gate_line = deployed.json()["error"].splitlines()[0]
        assert gate_line.startswith("the clone is not healthy after 3s")
        assert gate_line.endswith(f"its log: `zdd logs --stack {name} clone`")
        log = zdd("logs", "--stack", name, "clone")
        assert log.code == 0 and "clone: cannot open the database read-only" in log.stdout
        last = zdd("logs", "--stack", name, "frontdoor", "--lines", "1", "--json")
        assert last.code == 0 and last.json()["text"].count("\n") <= 1
        assert zdd("logs", "--stack", "no-such-stack", "primary").code == 2

        entries = zdd("history", "--stack", name, "--json").json()["deployments"]
        deployment, change, init = entries
        assert deployment["outcome"] == "aborted" and deployment["actions"] == ["deploy", "abort"]
        assert deployment["failed_at"] == {"gate": "clone -> return"}
        assert (deployment["from_version"], deployment["to_version"]) == ("v1", "v2")
        assert (change["actions"], change["outcome"]) == (["app-set"], "succeeded")
        assert (init["outcome"], init["failed_at"]) == ("failed", {"phase": "idle"})
        assert FAILED_GATE_KEY not in config.read_text()  # the history holds it now

        # Every page: read two updates at a time, the history is the same.
        for key, value in engine_env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(stack_module, "HISTORY_PAGE_SIZE", 2)
        assert open_stack(name, project=ROOT).history() == entries
    finally:
        destroyed = zdd("destroy", "--stack", name, "--yes")
        assert destroyed.code == 0, destroyed.stderr
        assert find_owned_under(stack_dir(name)) == []


def assert_follows_the_primarys_log(name: str, public_url: str, env: dict[str, str]) -> None:
    """`zdd logs --follow` prints what the site logs after it started, until interrupted."""
    follower = subprocess.Popen(
        [sys.executable, "-m", "zdd.cli", "logs", "--stack", name, "primary", "--follow"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # A follower that never sees the line would block the test: it is stopped after 60 s.
    watchdog = threading.Timer(60, follower.kill)
    watchdog.start()
    try:
        assert follower.stderr is not None and follower.stdout is not None
        while "following" not in (said := follower.stderr.readline()):
            assert said, "the follower stopped before following"
        marker = f"/followed-{uuid.uuid4().hex[:8]}"
        assert httpx.get(f"{public_url}{marker}", timeout=10).status_code == 200
        while marker not in (line := follower.stdout.readline()):
            assert line, "the follower stopped before the site's new line"
        follower.send_signal(signal.SIGINT)
        assert follower.wait(10) == 0
    finally:
        watchdog.cancel()
        if follower.poll() is None:
            follower.kill()
            follower.wait()
