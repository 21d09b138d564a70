"""A background loop that runs a step now and then, and sooner when woken."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Worker:
    """Calls ``step`` until stopped. ``step`` returns True when it did work (run it
    again at once) and False when idle (sleep ``idle_s`` or until :meth:`wake`)."""

    def __init__(self, name: str, step: Callable[[], bool], *, idle_s: float = 1.0) -> None:
        self._name = name
        self._step = step
        self._idle_s = idle_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            busy = False
            try:
                busy = self._step()
            except Exception:
                log.exception("%s step failed", self._name)
            if not busy:
                self._wake.wait(self._idle_s)
                self._wake.clear()
