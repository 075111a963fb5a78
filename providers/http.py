"""HTTP plumbing shared by the managed-API clients: timeouts, retries with backoff, readable errors.

Retries follow the providers' own SDKs: 408, 409, 429 and 5xx, and dropped connections, with
exponential backoff that honours `retry-after-ms` / `retry-after` (capped). Only requests that
are safe to repeat are retried blindly; creating a paid job never is (the caller looks the job up
first). API keys live in the Authorization header only and are scrubbed from every message.
"""

from __future__ import annotations

import email.utils
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from ftplan.sizing.errors import FtplanError

RETRY_STATUS = {408, 409, 429} | set(range(500, 600))


class APIError(FtplanError):
    """An error the provider returned, as it wrote it, plus what to do."""

    def __init__(self, provider: str, status: int | None, message: str, code: str | None = None,
                 type_: str | None = None, hint: str = ""):
        self.provider, self.status, self.code, self.type = provider, status, code, type_
        self.api_message = message
        where = f"HTTP {status}" if status else "no response"
        self.retryable = status is None or status in RETRY_STATUS
        super().__init__(f"{provider} API error ({where}{', ' + code if code else ''}): {message}" +
                         (f" {hint}" if hint else ""))


def api_key(env_var: str, provider: str, signup: str) -> str:
    """The key from the environment, else the system keyring; a clear error when neither has it."""
    key = os.environ.get(env_var)
    if not key:
        try:
            import keyring  # optional

            key = keyring.get_password("ftplan", env_var)
        except Exception:  # no keyring installed or no backend: the environment is the way
            key = None
    if not key:
        raise FtplanError(f"{provider} needs an API key: export {env_var}=... (from {signup}), or store it with "
                          f"`keyring set ftplan {env_var}` (pip install 'ftplan[keyring]'). "
                          "ftplan never prints or stores it.")
    return key


def _retry_after(resp: httpx.Response | None) -> float | None:
    if resp is None:
        return None
    ms = resp.headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    ra = resp.headers.get("retry-after")
    if not ra:
        return None
    try:
        return float(ra)
    except ValueError:
        when = email.utils.parsedate_to_datetime(ra)
        return max(0.0, when.timestamp() - time.time()) if when else None


class HTTPClient:
    """A small httpx wrapper: one place for auth, retries, error bodies and key scrubbing."""

    provider = "API"
    hints: dict[int, str] = {}
    env_key = ""  # e.g. TOGETHER_API_KEY
    env_base = ""  # e.g. TOGETHER_BASE_URL (the SDKs' convention)
    default_base = ""
    key_help = ""  # where to get a key

    @classmethod
    def from_env(cls, **kw):
        base = os.environ.get(cls.env_base) or cls.default_base
        return cls(base, api_key(cls.env_key, cls.provider, cls.key_help), **kw)

    def __init__(self, base_url: str, key: str, *, timeout: float = 60.0, max_retries: int = 5,
                 backoff: float = 0.5, max_backoff: float = 8.0, sleep: Callable[[float], None] = time.sleep):
        self.base_url = base_url.rstrip("/")
        self._key = key
        self.max_retries, self.backoff, self.max_backoff, self._sleep = max_retries, backoff, max_backoff, sleep
        self.http = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=10.0),
                                 headers={"Authorization": f"Bearer {key}", "User-Agent": "ftplan"})
        self.attempts: list[tuple[str, str, int | None]] = []  # (method, path, status) of every try

    def close(self) -> None:
        self.http.close()

    def scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _error(self, resp: httpx.Response) -> APIError:
        message, code, type_ = resp.text[:500] or resp.reason_phrase, None, None
        try:
            body = resp.json()
            err = body.get("error", body) if isinstance(body, dict) else {}
            if isinstance(err, dict):
                message = err.get("message") or message
                code, type_ = err.get("code"), err.get("type")
            elif isinstance(err, str):
                message = err
        except ValueError:
            pass
        hint = self.hints.get(resp.status_code, "")
        return APIError(self.provider, resp.status_code, self.scrub(str(message)), code, type_, hint)

    def request(self, method: str, path: str, *, retry: bool = True, **kw) -> httpx.Response:
        """Send, retrying what is safe to retry; raise APIError for an error the provider returned."""
        tries = 1 + (self.max_retries if retry else 0)
        for attempt in range(tries):
            resp = None
            try:
                resp = self.http.request(method, path, **kw)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                self.attempts.append((method, path, None))
                if attempt + 1 >= tries:
                    raise APIError(self.provider, None, self.scrub(f"{type(exc).__name__}: {exc}"),
                                   hint=f"Check the connection to {self.base_url} and try again.") from None
            else:
                self.attempts.append((method, path, resp.status_code))
                should = resp.headers.get("x-should-retry")
                retryable = resp.status_code in RETRY_STATUS if should is None else should == "true"
                if resp.status_code < 400:
                    return resp
                if not retryable or attempt + 1 >= tries:
                    raise self._error(resp)
            self._wait(attempt, resp)
        raise AssertionError("unreachable")

    def _wait(self, attempt: int, resp: httpx.Response | None) -> None:
        wait = _retry_after(resp)
        if wait is None:
            wait = min(self.max_backoff, self.backoff * 2 ** attempt) * (0.75 + 0.5 * random.random())
        self._sleep(min(wait, 120.0))

    def download(self, path: str, dest: Path, *, params: dict | None = None) -> Path:
        """Stream a file to `dest`, retrying dropped connections, short bodies and retryable statuses.

        The bytes go to `dest.part` and replace `dest` only when the body is as long as the server said
        (the SDK's DownloadManager compares the size too), so a cut-off download never passes as whole.
        """
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        tries = 1 + self.max_retries
        for attempt in range(tries):
            resp = None
            try:
                with self.http.stream("GET", path, params=params) as resp:
                    self.attempts.append(("GET", path, resp.status_code))
                    if resp.status_code >= 400:
                        resp.read()
                        err = self._error(resp)
                        if not err.retryable or attempt + 1 >= tries:
                            raise err
                    else:
                        expected = int(resp.headers.get("content-length") or 0)
                        written = 0
                        with part.open("wb") as fh:
                            for chunk in resp.iter_bytes():
                                fh.write(chunk)
                                written += len(chunk)
                        if not expected or written == expected:
                            part.replace(dest)
                            return dest
                        if attempt + 1 >= tries:
                            raise APIError(self.provider, resp.status_code, f"the download stopped after {written} of "
                                           f"{expected} bytes", hint="Try again later.")
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                self.attempts.append(("GET", path, None))
                if attempt + 1 >= tries:
                    raise APIError(self.provider, None, self.scrub(f"{type(exc).__name__}: {exc}"),
                                   hint=f"Check the connection to {self.base_url} and try again.") from None
            self._wait(attempt, resp)
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, **kw):
        return self.request(method, path, **kw).json()

    def pause(self, attempt: int) -> None:
        self._sleep(min(self.max_backoff, self.backoff * 2 ** attempt))

    def once(self, find: Callable[[], dict | None], send: Callable[[], dict]) -> dict:
        """`send()` at most once per success: `find()` first, and again after any answer that got lost.

        For requests that must not be repeated blindly (creating a paid job, uploading a file): a
        retry only happens when `find()` shows the earlier attempt left nothing behind.
        """
        found = find()
        if found:
            return found
        for attempt in range(1 + self.max_retries):
            try:
                return send()
            except APIError as exc:
                if not exc.retryable or attempt == self.max_retries:
                    raise
            self.pause(attempt)
            found = find()
            if found:
                return found
        raise AssertionError("unreachable")
