"""What a server the tests start shares: ``with`` starts it, and stops it however the block ends."""

from __future__ import annotations

from typing import Any, TypeVar

_Self = TypeVar("_Self", bound="Started")


class Started:
    """A server with ``start()`` (returning itself) and ``stop()``, used as a context manager."""

    def start(self: _Self) -> _Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Self) -> _Self:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
