"""A fake of `zdd.stack.Stack` for the driver: no engine, every update applies its config at
once and is recorded."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from zdd.phases import settings_digest
from zdd.stack import Outcome, StateEvidence


class FakeStack:
    """A stack whose every update applies its config at once; `events` records each update.
    `outputs` are what its resources export (the apps' and front door's addresses)."""

    def __init__(
        self,
        config: dict[str, str],
        events: list[tuple[str, ...]],
        outputs: Mapping[str, Any] | None = None,
    ) -> None:
        self._config = dict(config)
        self._exported = dict(outputs or {})
        self._outputs: dict[str, Any] = {}
        self.events = events
        # No switch of the program's own: the fake's updates apply their config at once.
        self.switched_to_clone_at: float | None = None
        self._apply()

    def _apply(self) -> None:
        self._outputs = {
            **self._exported,
            "phase": self._config["phase"],
            "settings_digest": settings_digest(self._config),
        }

    def config(self) -> dict[str, str]:
        return dict(self._config)

    def outputs(self) -> dict[str, Any]:
        return dict(self._outputs)

    def set_config(self, change: Mapping[str, str | None]) -> None:
        for key, value in change.items():
            if value is None:
                self._config.pop(key, None)
            else:
                self._config[key] = str(value)

    def up(self, **_options: Any) -> Outcome:
        self.events.append(("up", self._config["phase"]))
        self._apply()
        return Outcome(changes={}, seconds=0.0, changed=[])

    def evidence(self) -> StateEvidence:
        return StateEvidence(())  # every update finished: nothing to read but the outputs

    def wait_for_running_update(self, _say: Callable[[str], None]) -> None:
        pass

    def drop_pending_operations(self, _say: Callable[[str], None]) -> None:
        pass
