"""Stopping on request: SIGTERM (a scheduler's preemption) or SIGINT (Ctrl-C) during training.

The first signal asks the loop to finish its current step, write a mid-epoch checkpoint and
return; `--resume` then continues from that step and ends with the weights of a run that was
never stopped. A second signal exits at once (KeyboardInterrupt): every file is written to a
temporary name and renamed (files.py), so nothing already written is corrupted.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager

log = logging.getLogger("alexnet")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Set by the first SIGTERM or SIGINT; `signal_number` says which."""

    def __init__(self) -> None:
        self.signal_number: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    def _handle(self, number: int, frame) -> None:  # noqa: ANN001 - signal handler signature
        if self.requested:
            for stop_signal in STOP_SIGNALS:
                signal.signal(stop_signal, signal.SIG_DFL)
            raise KeyboardInterrupt
        self.signal_number = number
        log.warning(
            "%s: finishing this step and writing a checkpoint (again to exit at once)",
            signal.Signals(number).name,
        )


@contextmanager
def stop_on_signals():
    """A StopRequest set by SIGTERM or SIGINT while the block runs; the old handlers after.

    Outside the main thread (where Python cannot install handlers) nothing is caught.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {number: signal.signal(number, request._handle) for number in STOP_SIGNALS}
    try:
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
