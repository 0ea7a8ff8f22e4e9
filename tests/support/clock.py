"""The test session's clock: every fixture date derives from it, so the suite passes on any calendar date.

``TODAY`` is the UTC date when the session started; ``END``, the newest partition of the fixture warehouse, is
the day before, so its ``as_of`` (``END`` 23:59:59 UTC) is always in the past and younger than every staleness
limit. CI runs the suite once more with the clock moved a year ahead (``faketime``) to keep it that way.
"""

from __future__ import annotations

import datetime as dt

TODAY = dt.datetime.now(dt.UTC).date()
END = TODAY - dt.timedelta(days=1)


def day(offset: int) -> dt.date:
    """``END`` shifted by ``offset`` days (``day(-1)`` is the partition before ``END``)."""
    return END + dt.timedelta(days=offset)


def iso(offset: int = 0) -> str:
    """``day(offset)`` as ``YYYY-MM-DD``."""
    return day(offset).isoformat()
