"""Waiting for a job's state in end-to-end tests: poll a predicate until it holds or time runs out."""

from __future__ import annotations

import subprocess
import time


def wait_for(predicate, timeout: float = 180, every: float = 0.5, proc: subprocess.Popen | None = None):
    """The predicate's first truthy value; AssertionError after `timeout` seconds without one.

    Given the `ftplan run` process being watched, a run that has already exited fails the wait at
    once with its exit code and output, rather than after the timeout with nothing to go on.
    """
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the watched process exited ({proc.returncode}) first:\n{out}\n{err}")
        time.sleep(every)
    raise AssertionError("timed out waiting")
