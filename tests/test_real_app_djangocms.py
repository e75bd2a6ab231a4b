"""A real django CMS site on the real engine (apps/djangocms): a project made as django CMS's
guide says, on SQLite through dj-database-url, with uploaded media and a newsletter visitors
sign up to, deployed from django-cms 5.0.13 to 5.1.3 (cms migrations 0042-0045) under load;
rolled back with its database and files; deployed again."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.commands import ROOT, Result, build_releases, run, stack_dir
from tests.helpers.driver import paused_for_approval
from zdd.sqlite_files import files_folder

# Builds a real application's releases, then deploys it: minutes, so scheduled first.
pytestmark = pytest.mark.engine(minutes=3)

APP = ROOT / "apps" / "djangocms"
OLDER, NEWER = "5.0.13", "5.1.3"
SUBSCRIBER = "subscriber@example.com"  # the sign-up app.yaml's probe reads
PICTURE = "uploads/visitor-photo.png"
# What the new primary gets before the rollback with database takes it back.
MADE_ON_NEWER, UPLOADED_ON_NEWER = "made-on-newer", "uploads/after-the-migration.txt"
SIGNED_UP_ON_NEWER = "preview@example.com"
HOME_TEXT = "Written with django CMS 5.0.13 before the deployment"
# Run by `manage.py shell` in the older release against the primary's database and files:
# the pages app.yaml's probe reads, each with a text plugin, and an uploaded picture that the
# about page links to. Prints the picture's name in the files folder.
MAKE_CONTENT = f"""
import io
from PIL import Image
from cms.api import add_plugin, create_page
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

picture = io.BytesIO()
Image.new("RGB", (64, 48), "teal").save(picture, "PNG")
name = default_storage.save("{PICTURE}", ContentFile(picture.getvalue()))
with transaction.atomic():
    home = create_page("Welcome", "home.html", "en", in_navigation=True)
    home.set_as_homepage()
    about = create_page("About us", "home.html", "en", slug="about", in_navigation=True)
for page, body in (
    (home, "<p>{HOME_TEXT}</p>"),
    (about, f'<p>Our picture: <img src="/media/{{name}}" alt="photo"></p>'),
):
    placeholders = page.get_admin_content("en").rescan_placeholders()
    add_plugin(placeholders["content"], "TextPlugin", "en", body=body)
print(name)
"""
# Run by `manage.py shell` in the newer release against the new primary's database and files,
# before the rollback: a new page, the picture replaced and a new upload, all to be undone.
CHANGE_ON_NEWER = f"""
from cms.api import create_page
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

with transaction.atomic():
    create_page("Made on 5.1.3", "home.html", "en", slug="{MADE_ON_NEWER}")
default_storage.delete("{PICTURE}")
default_storage.save("{PICTURE}", ContentFile(b"replaced on 5.1.3"))
default_storage.save("{UPLOADED_ON_NEWER}", ContentFile(b"uploaded on 5.1.3"))
"""
# Run by `manage.py shell` in the older release on a copy of the migrated database.
CREATE_PAGE = """
from cms.api import create_page
from django.db import transaction

with transaction.atomic():
    create_page("Later", "home.html", "en")
"""


@pytest.fixture(scope="session")
def djangocms_releases() -> None:
    build_releases("djangocms", OLDER, NEWER)


def manage_shell(version: str, database: Path, files: Path, script: str) -> Result:
    """`manage.py shell -c script` in the release of `version` on `database` and `files`."""
    release = APP / "releases" / version
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "MEDIA_ROOT": str(files)}
    argv = [str(release / "bin" / "python"), "manage.py", "shell", "-c", script]
    return run(argv, env, timeout=300, cwd=release)


def get(url: str, path: str) -> httpx.Response:
    response = httpx.get(f"{url}{path}", timeout=30)
    assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text[:200]}"
    return response


def served_version(url: str) -> str:
    """The django CMS version that answers (the health check says it)."""
    version: str = get(url, "/healthz").json()["cms"]
    return version


def assert_site_as_written(url: str, picture: str, picture_bytes: bytes) -> None:
    """The pages, the sign-up and the uploaded picture written on OLDER, served at `url`."""
    assert HOME_TEXT in get(url, "/en/").text
    assert f'src="/media/{picture}"' in get(url, "/en/about/").text
    assert get(url, f"/en/newsletter/subscribers?email={SUBSCRIBER}").json()["email"] == SUBSCRIBER
    assert get(url, f"/media/{picture}").content == picture_bytes


def assert_probe_clean(report: dict[str, Any]) -> dict[str, Any]:
    """No request failed, no acknowledged write was lost or hidden from a later read."""
    probe: dict[str, Any] = report["probe"]
    assert probe["requests"] > 0 and probe["failed"] == 0, probe["failures"]
    assert probe["writes_acknowledged"] > 0
    assert probe["writes_lost"] == 0, probe["lost_titles"]
    assert probe["writes_hidden"] == 0, probe
    return probe


def summary(report: dict[str, Any]) -> str:
    """One line of figures of a command run under the probe."""
    probe = report["probe"]
    phases = ", ".join(f"{p['name']} {p['seconds']} s" for p in report["phases"])
    return (
        f"{probe['requests']} requests, {probe['failed']} failed, "
        f"{probe['writes_acknowledged']} writes acknowledged ({probe['writes_held']} held, "
        f"longest hold {probe['longest_hold_seconds']} s, longest write "
        f"{probe['longest_write_seconds']} s), {probe['writes_refused']} refused, "
        f"{probe['writes_lost']} lost, {probe['writes_hidden']} hidden; read-only window "
        f"{report.get('read_only_window_seconds')} s; phases: {phases}"
    )


def older_release_cannot_create_a_page(database: Path, scratch: Path) -> str:
    """What OLDER says when asked to create a page on a copy of NEWER's `database`."""
    copy = scratch / "copy.sqlite"
    with (
        closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as source,
        closing(sqlite3.connect(copy)) as target,
    ):
        source.backup(target)
    done = manage_shell(OLDER, copy, scratch / "files", CREATE_PAGE)
    assert done.code != 0, done.stdout
    return done.stderr


def test_djangocms_deploys_smoothly_and_rolls_back_with_its_database_and_media(
    djangocms_releases: None,
    local_stack: Callable[..., dict[str, Any]],
    zdd: Callable[..., Result],
    tmp_path: Path,
) -> None:
    stack = local_stack(OLDER, APP / "app.yaml")
    name, public = stack["stack"], stack["public_url"]
    assert served_version(public) == OLDER

    # The site's content, made in the release against the primary's database and files folder
    # (no page has been rendered yet, so no worker caches a page that did not exist), and a
    # visitor's sign-up through the front door.
    primary = stack_dir(name) / "primary-g1.sqlite"
    made = manage_shell(OLDER, primary, files_folder(primary), MAKE_CONTENT)
    assert made.code == 0, made.stderr
    picture = made.stdout.strip().splitlines()[-1]
    assert picture == PICTURE, made.stdout
    picture_bytes = (files_folder(primary) / picture).read_bytes()
    assert picture_bytes.startswith(b"\x89PNG")
    signed_up = httpx.post(f"{public}/en/newsletter/subscribe", json={"email": SUBSCRIBER})
    assert signed_up.status_code == 201, signed_up.text
    assert_site_as_written(public, picture, picture_bytes)

    # A deployment paused for approval: the new primary runs NEWER on the migrated database,
    # on which OLDER can no longer create a page, while the read-only clone serves the public.
    deploy = [name, "--version", NEWER, "--probe", "--yes", "--json"]
    paused = paused_for_approval(zdd, name, NEWER, "--probe")
    assert_probe_clean(paused.json())
    status = zdd("status", "-s", name, "--json").json()
    assert status["traffic"] == "clone" and served_version(public) == OLDER
    preview = status["preview_url"]
    assert served_version(preview) == NEWER
    assert_site_as_written(public, picture, picture_bytes)
    assert_site_as_written(preview, picture, picture_bytes)
    refusal = older_release_cannot_create_a_page(primary, tmp_path)
    assert "NOT NULL constraint failed: cms_pageurl.site_id" in refusal
    # The new primary's data and files change; the clone's copies do not.
    changed = manage_shell(NEWER, primary, files_folder(primary), CHANGE_ON_NEWER)
    assert changed.code == 0, changed.stderr
    signed_up = httpx.post(f"{preview}/en/newsletter/subscribe", json={"email": SIGNED_UP_ON_NEWER})
    assert signed_up.status_code == 201, signed_up.text
    assert get(preview, f"/media/{picture}").content == b"replaced on 5.1.3"
    get(preview, f"/en/{MADE_ON_NEWER}/")
    get(preview, f"/media/{UPLOADED_ON_NEWER}")
    assert_site_as_written(public, picture, picture_bytes)

    # Back to OLDER with the database and files of the restore point.
    back = zdd("rollback", "-s", name, "--with-database", "--probe", "--json")
    assert back.code == 0, back.stderr
    assert back.json()["outcome"] == "succeeded" and "read_only_violation" not in back.json()
    assert_probe_clean(back.json())
    assert served_version(public) == OLDER
    assert_site_as_written(public, picture, picture_bytes)
    for path in (
        f"/en/{MADE_ON_NEWER}/",
        f"/media/{UPLOADED_ON_NEWER}",
        f"/en/newsletter/subscribers?email={SIGNED_UP_ON_NEWER}",
    ):
        gone = httpx.get(f"{public}{path}", follow_redirects=True, timeout=30)
        assert gone.status_code == 404, f"{path} is still there after the rollback"

    # The same deployment to its end.
    done = zdd("deploy", "-s", *deploy)
    assert done.code == 0, done.stderr
    report = done.json()
    assert report["outcome"] == "succeeded" and "read_only_violation" not in report
    assert_probe_clean(report)
    status = zdd("status", "-s", name, "--json").json()
    assert status["phase"] == "idle" and status["current_version"] == NEWER
    assert served_version(public) == NEWER
    assert_site_as_written(public, picture, picture_bytes)
    for what, result in (("paused", paused), ("rollback", back), ("deploy", done)):
        print(f"\n{what}: {summary(result.json())}", end="")
    print()
