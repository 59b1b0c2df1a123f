"""What a running pipeline is doing (stage and progress), and a clean stop on SIGINT and SIGTERM.

Stages report progress with `progress`; a stop signal raises `Interrupted` in the main thread, so the write in
flight is abandoned by its `atomic_path` (nothing half-written stays) and the CLI prints where the run stopped.
A signal that lands inside a finalizer (`__del__`), where Python swallows exceptions, is kept and raised at the
next checkpoint (`progress`, or between stages): a stop signal is never lost."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
_state: dict[str, str | None] = {"stage": None, "progress": None}
_swallowed: list[int] = []  # stop signals whose Interrupted was raised inside a finalizer and swallowed there


class Interrupted(KeyboardInterrupt):
    """A stop signal (SIGINT or SIGTERM) received while running."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def enter(stage: str) -> None:
    """Record that `stage` is running (its progress is unknown until it reports some)."""
    _state.update(stage=stage, progress=None)


def progress(done: int, total: int, unit: str) -> None:
    """Record that `done` of `total` units (e.g. "chunks of encode documents") of the running stage are stored."""
    _state["progress"] = f"{done} of {total} {unit}"
    check_stop()


def check_stop() -> None:
    """Raise the Interrupted a finalizer swallowed, if any."""
    if _swallowed:
        raise Interrupted(_swallowed.pop())


def _unraisable(hook: Any) -> None:
    """Keep an Interrupted raised where Python cannot raise it (a finalizer) for `check_stop`; report the rest."""
    if isinstance(hook.exc_value, Interrupted):
        _swallowed.append(hook.exc_value.signum)
        return
    sys.__unraisablehook__(hook)


def stage() -> str | None:
    """The running stage, or None outside a pipeline run."""
    return _state["stage"]


def where() -> str:
    """' in STAGE after N of M UNIT', ' in STAGE', or '' when no stage has started."""
    if _state["stage"] is None:
        return ""
    done = f" after {_state['progress']}" if _state["progress"] else ""
    return f" in {_state['stage']}{done}"


def _stop(signum: int, _frame: FrameType | None) -> None:
    """First stop signal: raise Interrupted where the main thread is; a second one ends the process at once."""
    for number in EXIT_CODES:
        signal.signal(number, signal.SIG_DFL)
    raise Interrupted(signum)


def handle_stop_signals() -> dict[int, Any]:
    """Turn SIGINT and SIGTERM into `Interrupted` (main thread only; elsewhere Python cannot install handlers);
    the handlers they replace."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    _swallowed.clear()
    sys.unraisablehook = _unraisable
    return {number: signal.signal(number, _stop) for number in EXIT_CODES}


def restore_stop_signals(previous: dict[int, Any], *, process_ends: bool) -> None:
    """Put back the handlers `handle_stop_signals` replaced; when the process is about to end, ignore stop
    signals instead: the work is done or abandoned, and Python's shutdown would otherwise die of them silently."""
    for number, handler in previous.items():
        signal.signal(number, signal.SIG_IGN if process_ends else handler)
    if previous:
        sys.unraisablehook = sys.__unraisablehook__


def interrupted(error: KeyboardInterrupt) -> tuple[str, int]:
    """(the one-line message, the conventional exit code: 130 for SIGINT, 143 for SIGTERM)."""
    signum = error.signum if isinstance(error, Interrupted) else signal.SIGINT
    message = f"eztag: interrupted{where()} by {signal.Signals(signum).name}; rerun the same command to resume"
    return message, EXIT_CODES[signal.Signals(signum)]
