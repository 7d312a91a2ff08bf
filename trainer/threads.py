"""One way to run a call on a thread: ``BackgroundTask`` re-raises on ``join``, ``within`` abandons a call after N seconds.

Used by the checkpoint writer (the files of epoch N are written while epoch N+1 trains), by the
run (matplotlib loads while training), and by the MLflow and storage probes (libraries that
retry for minutes and are configured only through environment variables). Standard library only.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

from trainer.errors import BadInputError


class BackgroundTask:
    """``function(*args)`` on a daemon thread; ``join()`` waits and raises what it raised (``value`` is what it returned)."""

    def __init__(self, function: Callable[..., Any], *args: Any, name: str = "trainer-background"):
        self.value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(function, args), name=name, daemon=True)
        self._thread.start()

    def _run(self, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            self.value = function(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that joins
            self._error = exc

    def join(self, timeout: float | None = None) -> bool:
        """Wait (at most ``timeout`` seconds); False when the call is still running, else True or what it raised."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return True


def within(seconds: float, call: Callable[[], Any], timeout_message: str, error: type[BadInputError] = BadInputError) -> Any:
    """``call()`` given at most ``seconds``: its value, its exception, or ``error(timeout_message)`` when it does not return.

    The call runs in a daemon thread that is abandoned when it does not answer in time. Ctrl-C in
    the waiting thread interrupts the wait.
    """
    task = BackgroundTask(call, name="trainer-store-call")
    if not task.join(seconds):
        raise error(timeout_message)
    return task.value
