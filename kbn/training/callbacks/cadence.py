"""Cadence: when a run writes its record (summary.json and the backup)."""

import time


class Cadence:
    """Every epoch, or the end of the first epoch `interval` seconds after the last record.

    The run log and the backup both ask it, in that order, at each epoch's
    end: the answer is decided once per epoch, so that the two are written
    at the same epochs and a resumed run never finds a backup ahead of the
    history in summary.json.

    Args:
        interval: seconds between records; 0 records every epoch.
    """

    def __init__(self, interval=0.0):
        self.interval = float(interval)
        self._last = time.perf_counter()
        self._decided = (None, False)  # (epoch, whether it records)

    def due(self, epoch):
        """Whether the run records itself after `epoch` epochs (1-based)."""
        if self._decided[0] != epoch:
            now = time.perf_counter()
            due = now - self._last >= self.interval
            if due:
                self._last = now
            self._decided = (epoch, due)
        return self._decided[1]
