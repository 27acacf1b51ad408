"""Stop cleanly on the signals a cluster sends before it kills a job.

SLURM sends SIGTERM (or, with ``--signal=USR1@<seconds>``, SIGUSR1) some time before it kills a
preempted or timed-out job. :class:`StopOnSignal` turns either into a clean stop: the handler only
records the signal; the iteration in flight finishes, a checkpoint of that iteration is saved (on
the main process; every process stops at the same iteration, the flag is gathered across them),
and the run exits with a message and exit code ``128 + signal``. ``--resume`` then continues
from that iteration exactly as from a periodic checkpoint.
"""
from __future__ import annotations

import logging
import signal
import threading

from detectron2.engine import HookBase
from detectron2.utils import comm

__all__ = ["STOP_SIGNALS", "StopOnSignal", "TrainingStopped", "save_and_wait"]

logger = logging.getLogger("detectron2")

#: The signals that stop a run cleanly.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class TrainingStopped(SystemExit):
    """Raised after the checkpoint of a signalled stop is written (a SystemExit: detectron2's train
    loop does not log it as a crash, and the process exits with ``code``)."""

    def __init__(self, message: str, code: int):
        super().__init__(code)
        self.message = message

    def __str__(self) -> str:
        return self.message


def save_and_wait(checkpointer, iteration: int) -> str:
    """Saves ``model_<iteration>.pth`` (main process) and waits until every process gets here; returns the
    checkpoint's name. For hooks that stop every process at the same iteration."""
    name = f"model_{iteration:07d}"
    if comm.is_main_process():
        checkpointer.save(name, iteration=iteration)
    comm.synchronize()
    return name


class StopOnSignal(HookBase):
    """After the step in which SIGTERM / SIGUSR1 arrived: save ``model_<iter>.pth`` and stop.

    Register it last, after the periodic checkpointer and the writers. The handlers are installed
    in ``before_train`` (main thread only: Python allows signal handlers nowhere else) and the
    previous ones are restored in ``after_train``.
    """

    def __init__(self, checkpointer):
        self.checkpointer = checkpointer
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        self.received = signum

    def before_train(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}

    def after_train(self):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def after_step(self):
        signals = [self.received]
        if comm.get_world_size() > 1:  # a signal on any process stops all of them at this iteration
            signals = comm.all_gather(self.received)
        received = next((s for s in signals if s is not None), None)
        if received is None:
            return
        it = self.trainer.iter
        name = save_and_wait(self.checkpointer, it)
        message = (f"Received {signal.Signals(received).name}: saved {name}.pth after iteration {it} of "
                   f"{self.trainer.max_iter}; continue with --resume.")
        logger.warning(message)
        raise TrainingStopped(message, 128 + int(received))
