"""Progress displays for long lab calls (``up``, ``down``, copies).

Each event is a dict with an ``"event"`` key: ``step-started``, ``step-finished`` (with ``elapsed`` in
seconds and ``already_done``), ``waiting`` (``on``, ``elapsed``), ``progress`` (``done``, ``total``) or
``warning`` (``message``). Any callable taking one such dict is a progress callback; these are the
built-in ones. Inside Jupyter the default is :class:`NotebookProgress`; elsewhere it is nothing.
"""

import sys
from typing import Any, Callable, Dict, List, Optional

Event = Dict[str, Any]
"""One progress event."""


def describe(event: Event) -> Optional[str]:
    """One line for people about ``event``, or None for events not worth a line of their own."""
    kind = event.get("event")
    if kind == "step-finished":
        note = " (already done)" if event.get("already_done") else ""
        return f"✓ {event['step']} {event.get('elapsed', 0.0):.1f}s{note}"
    if kind == "warning":
        return f"! {event['message']}"
    return None


def activity(event: Event) -> Optional[str]:
    """What is happening now, for a status line that is overwritten as events arrive."""
    kind = event.get("event")
    if kind == "step-started":
        return f"… {event['step']}"
    if kind == "waiting":
        return f"… {event['step']}: waiting on {event['on']} ({event.get('elapsed', 0.0):.0f}s)"
    if kind == "progress":
        total = event.get("total")
        done = event.get("done", 0)
        return f"… {event['step']}: {done}/{total}" if total else f"… {event['step']}: {done}"
    return None


def print_progress(event: Event) -> None:
    """Print one line per finished step and per warning (``progress=gpulab.print_progress``)."""
    line = describe(event)
    if line is not None:
        print(line, flush=True)


class NotebookProgress:
    """A Jupyter display, updated in place: the finished steps, then what is happening now. Needs only
    IPython, which every Jupyter kernel has."""

    def __init__(self) -> None:
        self.lines: List[str] = []
        self.current: Optional[str] = None
        self._handle: Any = None

    def text(self) -> str:
        """What the display shows."""
        return "\n".join(self.lines + ([self.current] if self.current else []))

    def __call__(self, event: Event) -> None:
        line = describe(event)
        if line is not None:
            self.lines.append(line)
            self.current = None
        else:
            self.current = activity(event) or self.current
        self._show()

    def _show(self) -> None:
        from IPython.display import display  # type: ignore[import-not-found,unused-ignore]

        class _Text:
            def __init__(self, text: str) -> None:
                self._text = text

            def __repr__(self) -> str:
                return self._text

        if self._handle is None:
            self._handle = display(_Text(self.text()), display_id=True)
        else:
            self._handle.update(_Text(self.text()))


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython with a kernel attached), not in a plain IPython shell."""
    if "ipykernel" not in sys.modules:
        return False
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def default_progress() -> Optional[Callable[[Event], None]]:
    """The progress callback used when a call is given none: a notebook display in Jupyter, else None."""
    return NotebookProgress() if in_notebook() else None
