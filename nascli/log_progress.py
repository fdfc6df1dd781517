"""Progress a log can show. Under nohup, a scheduler or a pipe, stderr is not a terminal and rich's
live bar prints nothing until the end (a 20-trial search in a log was silent for minutes), so
there each finished unit of work - an epoch, a search trial - or, for fast steps (images, cache
batches), every tenth of the work or half a minute, becomes one line with the elapsed time and an
ETA for the piece it belongs to (one training run, one promoted arm, the search).
"""

from __future__ import annotations

import time

#: A line at least this often (seconds) while steps keep coming.
EVERY_S = 30.0


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class LogProgress:
    """The `on_progress(event)` callback for logs. `unit`: "epoch" (a line as each epoch ends),
    "trial" (every event is a finished trial: a line each) or None (throttled). Events carry step /
    steps, and epoch / epochs for training; `arch` or `point` names the piece of work (a promoted
    arm, a grid point), and a new name restarts the piece's clock; other fields are shown as they are."""

    def __init__(self, description: str, write, unit: str | None = None, clock=time.monotonic,
                 every_s: float = EVERY_S):
        self.description, self.write, self.unit, self.clock, self.every_s = description, write, unit, clock, every_s
        self.piece, self.started = None, clock()
        self.last_line, self.last_tenth = self.started, 0

    def __call__(self, event: dict) -> None:
        now = self.clock()
        piece = event.get("arch") or event.get("point")
        if piece != self.piece:  # a new arm or grid point: its own clock, from the end of the last one
            self.piece, self.started, self.last_tenth = piece, self.last_line if self.piece else self.started, 0
        steps, epochs = event.get("steps", 1), event.get("epochs", 1)
        total, done = steps * epochs, (event.get("epoch", 1) - 1) * steps + event["step"]
        tenth = int(10 * done / max(total, 1))
        if self.unit == "epoch":
            due = event["step"] == steps
        elif self.unit == "trial":
            due = True
        else:
            due = done >= total or tenth > self.last_tenth or now - self.last_line >= self.every_s
        if not due:
            return
        self.last_line, self.last_tenth = now, tenth
        elapsed = now - self.started
        eta = elapsed / done * (total - done) if done else float("nan")
        where = (f"epoch {event['epoch']}/{epochs}" if "epochs" in event else f"{done}/{total}")
        info = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in event.items()
                        if k not in ("step", "steps", "epoch", "epochs", "arch", "point"))
        self.write(" ".join(part for part in (
            time.strftime("%H:%M:%S"), self.description, piece or "", where, info,
            f"| {duration(elapsed)} elapsed, ETA {duration(eta) if done else '?'}") if part))
