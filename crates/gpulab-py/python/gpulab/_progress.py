"""Progress displays for long lab calls (``up``, ``down``, ``copy_to``, ``copy_from``).

Each event is a dict with an ``"event"`` key: ``step-started``, ``step-finished`` (with ``elapsed`` in
seconds and ``already_done``), ``step-failed`` (``elapsed`` and ``error``), ``waiting`` (``on``, ``elapsed``), ``progress`` (``done``, ``total`` or
None, and ``unit``: ``"bytes"`` for copies, ``"items"`` otherwise) or ``warning`` (``message``).

``progress=`` takes:

- ``None`` (the default): a :class:`NotebookProgress` display inside Jupyter, nothing elsewhere;
- ``True``: a :class:`NotebookProgress` inside Jupyter, :func:`print_progress` lines elsewhere;
- ``False``: nothing;
- any callable taking one event dict. When the call ends, gpulab also calls its ``finish(ok)`` method,
  if it has one, with ``ok`` False when the call failed or was interrupted.
"""

import html
import sys
import time
from typing import Any, Callable, Dict, List, Optional

Event = Dict[str, Any]
"""One progress event."""

Callback = Callable[[Event], object]
"""A progress callback."""

# How often a display redraws for byte counts alone (steps, warnings and the end always redraw).
_REDRAW_SECONDS = 0.2
_BAR_WIDTH = 24


def format_bytes(n: float) -> str:
    """``n`` bytes for people: ``"512 B"``, ``"3.1 MiB"``."""
    if n < 1024:
        return f"{int(n)} B"
    value = n / 1024.0
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024.0:
            return f"{value:.1f} {unit}"
        value /= 1024.0
    return f"{value:.1f} TiB"


def format_seconds(seconds: float) -> str:
    """A duration for people: ``"0.4s"``, ``"12s"``, ``"3m05s"``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, rest = divmod(int(seconds + 0.5), 60)
    return f"{minutes}m{rest:02d}s"


def describe(event: Event) -> Optional[str]:
    """One line for people about ``event``, or None for events not worth a line of their own."""
    kind = event.get("event")
    if kind == "step-finished":
        note = " (already done)" if event.get("already_done") else ""
        return f"✓ {event['step']} {event.get('elapsed', 0.0):.1f}s{note}"
    if kind == "step-failed":
        return f"✗ {event['step']} {event.get('elapsed', 0.0):.1f}s: {event.get('error', '')}"
    if kind == "warning":
        return f"! {event['message']}"
    if kind == "progress" and event.get("unit") == "bytes" and event.get("done") == event.get("total"):
        return f"✓ {event['step']} {format_bytes(event['done'])}"
    return None


def print_progress(event: Event) -> None:
    """Print one line per finished step, finished copy and warning (``progress=gpulab.print_progress``)."""
    line = describe(event)
    if line is not None:
        print(line, flush=True)


class _Item:
    """One line of a display: a step, a transfer or a warning."""

    def __init__(self, kind: str, name: str, started: float) -> None:
        self.kind = kind  # "step", "transfer" or "warning"
        self.name = name
        self.status = "running"  # "running", "done" or "failed"
        self.started = started
        self.elapsed: Optional[float] = None
        self.already_done = False
        self.waiting_on: Optional[str] = None
        self.done = 0
        self.total: Optional[int] = None
        self.unit = "bytes"

    def seconds(self, now: float) -> float:
        """How long it ran, or has been running."""
        return self.elapsed if self.elapsed is not None else now - self.started

    def rate(self, now: float) -> Optional[float]:
        """Bytes (or items) per second so far, once there is something to measure."""
        seconds = self.seconds(now)
        return self.done / seconds if self.done and seconds > 0 else None

    def eta(self, now: float) -> Optional[float]:
        """Seconds left at the rate so far, when the total is known."""
        rate = self.rate(now)
        if self.total is None or not rate:
            return None
        return max(self.total - self.done, 0) / rate

    def fraction(self) -> Optional[float]:
        """Done out of the total, 0 to 1, when the total is known."""
        if not self.total:
            return None
        return min(self.done / self.total, 1.0)

    def amount(self) -> str:
        """What moved: ``"12.0 MiB of 25.0 MiB"`` or ``"3 of 5"``."""
        show = format_bytes if self.unit == "bytes" else (lambda n: str(int(n)))
        if self.total is None:
            return show(self.done)
        return f"{show(self.done)} of {show(self.total)}"

    def details(self, now: float) -> List[str]:
        """The facts after the name: time, amount, rate, ETA, what it waits on."""
        facts: List[str] = []
        if self.kind == "transfer":
            facts.append(self.amount() if self.status == "running" else (
                format_bytes(self.done) if self.unit == "bytes" else str(self.done)))
            rate = self.rate(now)
            if rate and self.unit == "bytes":
                facts.append(f"{format_bytes(rate)}/s")
            eta = self.eta(now)
            if self.status == "running" and eta is not None:
                facts.append(f"ETA {format_seconds(eta)}")
            if self.status != "running":
                facts.append(format_seconds(self.seconds(now)))
        elif self.kind == "step":
            if self.waiting_on and self.status == "running":
                facts.append(f"waiting on {self.waiting_on}")
            facts.append(format_seconds(self.seconds(now)))
            if self.already_done:
                facts.append("already done")
        return facts


_MARKS = {"done": "✓", "failed": "✗", "running": "…"}
_COLOURS = {"done": "#2e7d32", "failed": "#c62828", "running": "#1565c0", "warning": "#ef6c00"}


class NotebookProgress:
    """A display for Jupyter, updated in place: each step with a tick and its time, the step in flight
    and what it waits on, and a progress bar with bytes, rate and ETA for copies. Renders as HTML in
    Jupyter and as plain text elsewhere; needs only IPython, which every Jupyter kernel has."""

    def __init__(self) -> None:
        self.items: List[_Item] = []
        self.finished = False
        self._handle: Any = None
        self._last_event = time.monotonic()
        self._last_draw = 0.0

    def _item(self, kind: str, name: str, now: float) -> _Item:
        for item in reversed(self.items):
            if item.name == name and item.kind != "warning" and item.status == "running":
                return item
        item = _Item(kind, name, self._last_event if kind == "transfer" else now)
        self.items.append(item)
        return item

    def __call__(self, event: Event) -> None:
        now = time.monotonic()
        kind = event.get("event")
        urgent = True
        if kind == "step-started":
            item = _Item("step", event["step"], now)
            self.items.append(item)
        elif kind == "step-finished":
            item = self._item("step", event["step"], now)
            item.status = "done"
            item.elapsed = float(event.get("elapsed", now - item.started))
            item.already_done = bool(event.get("already_done"))
        elif kind == "step-failed":
            item = self._item("step", event["step"], now)
            item.status = "failed"
            item.elapsed = float(event.get("elapsed", now - item.started))
        elif kind == "waiting":
            item = self._item("step", event["step"], now)
            item.waiting_on = str(event.get("on"))
        elif kind == "progress":
            item = self._item("transfer", event["step"], now)
            item.kind = "transfer"
            item.unit = str(event.get("unit", "items"))
            item.done = int(event.get("done", 0))
            item.total = event.get("total")
            if item.total is not None and item.done >= item.total:
                item.status = "done"
                item.elapsed = now - item.started
            else:
                urgent = False
        elif kind == "warning":
            warning = _Item("warning", str(event.get("message")), now)
            warning.status = "done"
            self.items.append(warning)
        self._last_event = now
        self._draw(urgent)

    def finish(self, ok: bool = True) -> None:
        """The call is over: what is still running finished (``ok``) or failed. Draws the last state."""
        now = time.monotonic()
        for item in self.items:
            if item.status == "running":
                item.status = "done" if ok else "failed"
                item.elapsed = now - item.started
        self.finished = True
        self._draw(True)

    def text(self) -> str:
        """What the display shows, as plain text."""
        now = time.monotonic()
        lines = []
        for item in self.items:
            if item.kind == "warning":
                lines.append(f"! {item.name}")
                continue
            line = f"{_MARKS[item.status]} {item.name}"
            fraction = item.fraction()
            if item.kind == "transfer" and item.status == "running" and fraction is not None:
                filled = int(fraction * _BAR_WIDTH)
                line += f" [{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {fraction:.0%}"
            details = item.details(now)
            if details:
                line += " — " + ", ".join(details)
            lines.append(line)
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        now = time.monotonic()
        rows = []
        for item in self.items:
            if item.kind == "warning":
                colour = _COLOURS["warning"]
                rows.append(f'<div><span style="color:{colour}">⚠</span> {html.escape(item.name)}</div>')
                continue
            colour = _COLOURS[item.status]
            row = f'<span style="color:{colour}">{_MARKS[item.status]}</span> {html.escape(item.name)}'
            fraction = item.fraction()
            if item.kind == "transfer" and item.status == "running":
                if fraction is not None:
                    row += (f' <progress value="{item.done}" max="{item.total}" '
                            f'style="width:16em;vertical-align:middle"></progress> {fraction:.0%}')
                else:
                    row += ' <progress style="width:16em;vertical-align:middle"></progress>'
            details = item.details(now)
            if details:
                row += f' <span style="color:#757575">{html.escape(" · ".join(details))}</span>'
            rows.append(f"<div>{row}</div>")
        body = "".join(rows) or '<div style="color:#757575">starting…</div>'
        return ('<div class="gpulab-progress" style="font-family:var(--jp-code-font-family,monospace);'
                f'font-size:var(--jp-code-font-size,13px);line-height:1.6">{body}</div>')

    def __repr__(self) -> str:
        return self.text()

    def _draw(self, urgent: bool) -> None:
        now = time.monotonic()
        if not urgent and now - self._last_draw < _REDRAW_SECONDS:
            return
        self._last_draw = now
        from IPython.display import display  # type: ignore[import-not-found,unused-ignore]

        if self._handle is None:
            self._handle = display(self, display_id=True)  # type: ignore[no-untyped-call,unused-ignore]
        else:
            self._handle.update(self)


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


def default_progress() -> Optional[Callback]:
    """The progress callback used when a call is given none: a notebook display in Jupyter, else None."""
    return NotebookProgress() if in_notebook() else None


def callback_for(progress: object) -> Optional[Callback]:
    """The callback for a ``progress=`` argument: see the module's documentation."""
    if progress is None:
        return default_progress()
    if progress is True:
        return NotebookProgress() if in_notebook() else print_progress
    if progress is False:
        return None
    if callable(progress):
        return progress  # type: ignore[no-any-return,unused-ignore]
    raise TypeError(f"progress must be None, True, False or a callable taking one dict, not {progress!r}")
