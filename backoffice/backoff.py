"""The one back-off rule of the job runner and the webhook retries: the schedule's wait for
a try, spread by +-20% so the retries of a burst do not all come back at once."""

import random
from collections.abc import Sequence

JITTER = 0.2


def backoff_delay_seconds(schedule: Sequence[float], attempt_number: int, *, repeat_last: bool) -> float | None:
    """The wait after failed try `attempt_number` (1 is the first), with jitter. Past the
    schedule's end: the last wait again when `repeat_last` (no wait if the schedule is
    empty), otherwise None: there is no next try."""
    if attempt_number > len(schedule):
        if not repeat_last:
            return None
        if not schedule:
            return 0.0
        attempt_number = len(schedule)
    return schedule[attempt_number - 1] * random.uniform(1 - JITTER, 1 + JITTER)
