"""The sample site as the tests reach it from outside: the titles it serves, a writer that keeps
what was acknowledged, and a phase applied by hand as an operator would."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import httpx

from tests.helpers.commands import Result


def titles(url: str, patience: float = 15.0) -> list[str]:
    """The article titles the site serves (a front door whose origin just restarted may take a
    health check or two before it sends requests there again)."""
    deadline = time.monotonic() + patience
    while True:
        response = httpx.get(f"{url}/api/articles/titles", timeout=10)
        if response.status_code == 200 or time.monotonic() > deadline:
            response.raise_for_status()
            found: list[str] = response.json()
            return found
        time.sleep(0.2)


def up_to(pulumi: Callable[..., Result], name: str, **config: str) -> None:
    """Set `zdd:*` keys and run `pulumi up` by hand, as an operator would."""
    for key, value in config.items():
        assert pulumi("config", "set", "-s", name, f"zdd:{key}", value).code == 0
    done = pulumi("up", "--yes", "--skip-preview", "-s", name)
    assert done.code == 0, done.stdout + done.stderr


class Writer:
    """Writes one article after another to `url` and keeps the titles acknowledged (201)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.acknowledged: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                title = f"w-{uuid.uuid4().hex[:10]}"
                try:
                    response = client.post(
                        f"{self.url}/api/articles", json={"title": title, "text": "x"}
                    )
                except httpx.HTTPError:
                    continue
                if response.status_code == 201:
                    self.acknowledged.append(title)
                time.sleep(0.01)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
