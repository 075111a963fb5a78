"""Waiting for a job's state in end-to-end tests: poll a predicate until it holds or time runs out."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 180, every: float = 0.5):
    """The predicate's first truthy value; AssertionError after `timeout` seconds without one."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")
