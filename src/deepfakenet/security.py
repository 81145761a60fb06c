"""Secrets kept out of sight: redacted URLs in logs and pages, throttled admin sign-in.

:func:`redact` is the one helper for every place that logs or shows a store URL, a tracking URI,
a service URL or an error message that may quote one: the password of ``user:password@`` and
password-like query or connection-string parameters become ``***``. It works on any text, so it
also cleans a driver's or MLflow's error message before a page shows it.

:class:`LoginThrottle` makes guessing the admin password slow: after a few failures a session
must wait before its next try, twice as long after every further failure (up to a cap), and the
same holds for all sessions of the process together, so opening new sessions does not help.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa

log = logging.getLogger(__name__)

#: What a redacted secret is replaced with.
REDACTED = "***"

#: ``scheme://user:password@`` anywhere in a text; the password may hold ``@`` or ``:``
#: (the last ``@`` before the host ends it, as URL parsers read it).
_USERINFO = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@]*:)(?P<secret>[^\s/?#]*)(?P<tail>@)"
)
#: ``password=...`` as a URL query parameter or in a libpq-style connection string.
_PARAMETER = re.compile(
    r"(?P<head>(?:^|[?&;\s,(])(?:password|passwd|pwd|sslpassword|secret|token|access_token|"
    r"api_key|apikey|x-amz-signature|sig|signature)=)(?P<secret>[^&\s#,;)'\"]*)",
    re.IGNORECASE,
)
#: Known passwords shorter than this are not scrubbed as bare text (too many false hits).
MIN_LITERAL_SECRET = 4


def url_password(url: str) -> str | None:
    """The password in a URL's ``user:password@`` part, decoded; None when it has none.

    SQLAlchemy's parser is asked too: it accepts ``/``, ``?``, ``#`` and spaces unencoded in a
    database URL's password, where ``urllib`` finds none.
    """
    try:
        password = sa.make_url(url).password
    except (sa.exc.ArgumentError, ValueError):
        password = None
    if password:
        return str(password)
    try:
        password = urlsplit(url).password
    except ValueError:  # not a URL urllib can read (an invalid port, a bare path)
        return None
    return unquote(password) if password else None


def redact(text: object, *urls: str | None) -> str:
    """``text`` with every password in it replaced by ``***``.

    Args:
        text: A URL, or any message that may quote one (an exception, a log line). Non-strings
            are converted with ``str`` first.
        urls: Configured URLs whose passwords are also scrubbed where they appear bare, raw
            or percent-decoded (a driver's error message may quote the password alone).

    Returns:
        The text with ``scheme://user:***@host``, ``?password=***`` and ``password=***``.
    """
    out = str(text)
    if out and not any(c.isspace() for c in out.strip()):
        urls = (*urls, out.strip())  # the text is a URL itself (e.g. a store URL being shown)
    for url in urls:
        secret = url_password(url) if url else None
        if secret:
            try:
                raw = urlsplit(url).password or secret
            except ValueError:
                raw = secret
            for form in {secret, raw}:
                # Inside the URL's own user part any length is replaced; a short password is
                # not scrubbed as bare text elsewhere (too many false hits).
                out = out.replace(f":{form}@", f":{REDACTED}@")
                if len(form) >= MIN_LITERAL_SECRET:
                    out = out.replace(form, REDACTED)
    out = _USERINFO.sub(lambda m: f"{m['head']}{REDACTED}{m['tail']}", out)
    return _PARAMETER.sub(lambda m: f"{m['head']}{REDACTED}", out)


# ----------------------------------------------------------------------------- login throttle


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0


@dataclass
class LoginThrottle:
    """Exponential waiting time after failed sign-ins, per session and for the whole process.

    The ``n``-th failure in a row of one session (``n > free_failures``) makes that session
    wait ``min(max_delay_s, delay_s * 2 ** (n - free_failures - 1))`` before its next try; the
    same rule, with ``global_free_failures``, applies to the failures of all sessions together.
    A success clears both counts; so does ``reset_after_s`` without a failure. Attempts during
    a wait are refused without checking the password, so they teach an attacker nothing.

    Use :meth:`attempt` before checking a password: it takes the try atomically (counted as a
    failure until :meth:`succeeded`), so parallel sessions cannot all slip through one expired
    wait. The process-wide wait has its own, short cap (``global_max_delay_s``): anyone who can
    reach the page can fail on purpose, and a long global wait would lock the admin out too.

    Attributes:
        delay_s: The first wait once the free failures are used up.
        max_delay_s: The cap of a session's wait.
        global_max_delay_s: The cap of the process-wide wait (keep it short: see above).
        free_failures: Failures in a row one session may make without waiting (typos).
        global_free_failures: Failures in a row all sessions together may make without waiting.
        reset_after_s: Counts are forgotten after this long without a failure.
        max_sessions: Sessions remembered at most (the oldest are forgotten first), so that
            failed attempts from ever new sessions cannot grow the process without bound.
        clock: Monotonic seconds (injected by tests).
    """

    delay_s: float = 1.0
    max_delay_s: float = 300.0
    global_max_delay_s: float = 300.0
    free_failures: int = 3
    global_free_failures: int = 20
    reset_after_s: float = 3600.0
    max_sessions: int = 10_000
    clock: Callable[[], float] = time.monotonic
    _sessions: dict[str, _Failures] = field(default_factory=dict, init=False, repr=False)
    _global: _Failures = field(default_factory=_Failures, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def _wait(self, failures: _Failures, free: int, cap: float) -> float:
        """Seconds this count still has to wait (0: may try now)."""
        over = failures.count - free
        if over <= 0:
            return 0.0
        delay = min(cap, self.delay_s * 2.0 ** min(over - 1, 64))
        return max(0.0, failures.last + delay - self.clock())

    def _current_wait(self, session: str) -> float:
        own = self._sessions.get(session, _Failures())
        return max(
            self._wait(own, self.free_failures, self.max_delay_s),
            self._wait(self._global, self.global_free_failures, self.global_max_delay_s),
        )

    def _record_failure(self, session: str, now: float) -> _Failures:
        own = self._sessions.pop(session, _Failures())
        own.count, own.last = own.count + 1, now
        self._sessions[session] = own  # re-inserted: the most recent session last
        while len(self._sessions) > self.max_sessions:
            del self._sessions[next(iter(self._sessions))]  # insertion order: the oldest
        self._global.count, self._global.last = self._global.count + 1, now
        return own

    def attempt(self, session: str) -> float:
        """Take a try for ``session``: the wait it faces (> 0: refuse unchecked), or 0.

        At 0 the try is already counted as a failure (atomically with the check), so that
        parallel sessions cannot all slip through one expired wait; :meth:`succeeded` clears it.
        """
        with self._lock:
            now = self.clock()
            self._forget_stale(now)
            wait = self._current_wait(session)
            if wait <= 0:
                self._record_failure(session, now)
            return wait

    def _forget_stale(self, now: float) -> None:
        if self._global.count and now - self._global.last >= self.reset_after_s:
            self._global = _Failures()
        stale = [k for k, f in self._sessions.items() if now - f.last >= self.reset_after_s]
        for key in stale:
            del self._sessions[key]

    def retry_after(self, session: str) -> float:
        """Seconds before ``session`` may try a password again; 0 when it may now."""
        with self._lock:
            self._forget_stale(self.clock())
            return self._current_wait(session)

    def failed(self, session: str) -> float:
        """Record a wrong password from ``session``; return the wait it now faces (logged)."""
        with self._lock:
            now = self.clock()
            self._forget_stale(now)
            own = self._record_failure(session, now)
            wait = self._current_wait(session)
        return self._log_failure(own.count, wait)

    def wrong_password(self, session: str) -> float:
        """After :meth:`attempt` and a wrong password: the wait the session now faces (logged)."""
        with self._lock:
            own = self._sessions.get(session, _Failures())
            wait = self._current_wait(session)
        return self._log_failure(own.count, wait)

    def _log_failure(self, count: int, wait: float) -> float:
        log.warning(
            "admin sign-in failed: %d in a row in this session, %d in the process; "
            "next try allowed in %.0f s",
            count,
            self._global.count,
            wait,
        )
        return wait

    def succeeded(self, session: str) -> None:
        """Clear the counts after a correct password."""
        with self._lock:
            self._sessions.pop(session, None)
            self._global = _Failures()
