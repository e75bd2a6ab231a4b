"""App specs for tests: the sample's spec with changes, written beside its releases."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from sampleapp.__main__ import make_releases
from tests.helpers.commands import ROOT

SAMPLE = yaml.safe_load((ROOT / "apps" / "sample" / "app.yaml").read_text())
# A release whose migration works (v2's) but whose site exits as soon as it starts.
CANNOT_START = f"""#!{sys.executable}
import sys

from sampleapp.__main__ import main

if sys.argv[1] == "serve":
    sys.exit("this release cannot start")
main([*sys.argv[1:], "--version", "v2"])
"""


def write_spec(folder: Path, **changes: Any) -> Path:
    """The sample's spec with `changes`, its releases (and one that cannot start) in `folder`."""
    make_releases(folder / "releases")
    launcher = folder / "releases" / "v9-cannot-start" / "bin" / "sampleapp"
    launcher.parent.mkdir(parents=True)
    launcher.write_text(CANNOT_START)
    launcher.chmod(0o755)
    spec = folder / "app.yaml"
    spec.write_text(yaml.safe_dump({**SAMPLE, **changes}))
    return spec
