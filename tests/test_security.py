"""URL passwords never reach a log or a page; the admin sign-in slows down a guesser."""

from __future__ import annotations

import logging

import pytest

from deepfakenet.errors import RegistryError
from deepfakenet.monitoring import read_registry, store_is_ready
from deepfakenet.security import REDACTED, LoginThrottle, redact, url_password
from tests.conftest import free_port

SECRET = "hunter2-s3cret"


# ----------------------------------------------------------------------------- redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"postgresql+psycopg://app:{SECRET}@db.internal:5432/store?sslmode=require",
            "postgresql+psycopg://app:***@db.internal:5432/store?sslmode=require",
        ),
        (f"http://admin:{SECRET}@mlflow:5000/", "http://admin:***@mlflow:5000/"),
        # An unencoded @ or : inside the password: the last @ before the host ends it.
        ("https://u:p@ss:w@host/x", "https://u:***@host/x"),
        (
            f"postgresql://app@db/store?password={SECRET}&x=1",
            "postgresql://app@db/store?password=***&x=1",
        ),
        (f"host=db user=app password={SECRET} dbname=x", "host=db user=app password=*** dbname=x"),
        ("https://bucket/k?X-Amz-Signature=abc123&v=1", "https://bucket/k?X-Amz-Signature=***&v=1"),
        (
            f"failed: API request to http://u:{SECRET}@h/api failed; retry http://u:{SECRET}@h/b",
            "failed: API request to http://u:***@h/api failed; retry http://u:***@h/b",
        ),
        # Nothing secret: unchanged.
        ("sqlite:////var/lib/deepfakenet/store.db", "sqlite:////var/lib/deepfakenet/store.db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("postgresql+psycopg://postgres@127.0.0.1:5432/test", None),
    ],
)
def test_redact_hides_every_password_form(text, expected):
    assert redact(text) == (text if expected is None else expected)
    assert SECRET not in redact(text)


def test_redact_scrubs_a_known_password_quoted_bare_or_decoded():
    url = "postgresql://app:p%40ss-w0rd@db/store"
    assert url_password(url) == "p@ss-w0rd"
    message = "auth failed for password 'p@ss-w0rd' (p%40ss-w0rd)"
    assert redact(message, url) == f"auth failed for password '{REDACTED}' ({REDACTED})"
    assert redact(ValueError("x"), None) == "x", "any object, no URL"


# ----------------------------------------------------------------------------- monitoring


@pytest.fixture
def fast_mlflow_failures(monkeypatch):
    """MLflow's HTTP client gives up at once instead of retrying for minutes."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def test_registry_errors_and_logs_never_hold_the_tracking_password(caplog, fast_mlflow_failures):
    uri = f"http://admin:{SECRET}@127.0.0.1:{free_port()}/"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RegistryError) as refused:
        read_registry(uri, "deepfakenet", "deepfakenet")
    shown = str(refused.value)
    assert "cannot read the MLflow registry at http://admin:***@127.0.0.1" in shown
    assert SECRET not in shown
    assert refused.value.__cause__ is None, "the raw MLflow error (with the URL) is not chained"
    assert caplog.records and SECRET not in caplog.text


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://app:{SECRET}@127.0.0.1:{free_port()}/store",
        f"postgresql+psycopg://app:{SECRET}@127.0.0.1:notaport/store",  # malformed
    ],
)
def test_store_probe_logs_never_hold_the_store_password(url, caplog):
    caplog.set_level(logging.DEBUG)
    assert store_is_ready(url) is False
    assert "app:***@127.0.0.1" in caplog.text
    assert SECRET not in caplog.text


# ----------------------------------------------------------------------------- login throttle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_waits_double_after_the_free_failures_up_to_the_cap(clock, caplog):
    throttle = LoginThrottle(delay_s=2, max_delay_s=10, free_failures=2, clock=clock)
    caplog.set_level(logging.WARNING, logger="deepfakenet.security")
    waits = []
    for _ in range(6):
        assert throttle.retry_after("a") == 0
        waits.append(throttle.failed("a"))
        clock.now += waits[-1]  # wait exactly as long as told, then try again
    assert waits == [0, 0, 2, 4, 8, 10]
    assert len(caplog.records) == 6 and "6 in a row in this session" in caplog.records[-1].message


def test_a_try_during_the_wait_is_refused_and_the_wait_runs_out(clock):
    throttle = LoginThrottle(delay_s=30, free_failures=0, clock=clock)
    assert throttle.failed("a") == 30
    clock.now += 29.5
    assert throttle.retry_after("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert throttle.retry_after("a") == 0


def test_sessions_are_throttled_apart_and_the_process_as_a_whole(clock):
    throttle = LoginThrottle(delay_s=5, free_failures=1, global_free_failures=3, clock=clock)
    assert throttle.failed("a") == 0
    assert throttle.failed("a") == 5
    assert throttle.retry_after("b") == 0, "another session is not held up by a's failures"
    assert throttle.failed("b") == 0
    # Fresh sessions do not escape: the fourth failure in the process makes everyone wait.
    assert throttle.failed("c") == 5
    assert throttle.retry_after("d") == 5
    clock.now += 5
    assert throttle.failed("e") == 10, "the process-wide wait doubles too"


def test_success_and_quiet_time_clear_the_counts(clock):
    throttle = LoginThrottle(delay_s=1, free_failures=0, reset_after_s=60, clock=clock)
    throttle.failed("a")
    clock.now += 1
    assert throttle.failed("a") == 2
    clock.now += 2
    throttle.succeeded("a")
    assert throttle.retry_after("a") == 0 and throttle.failed("a") == 1
    clock.now += 60
    assert throttle.retry_after("a") == 0 and throttle.failed("a") == 1, "forgotten after 60 s"


def test_remembered_sessions_are_bounded(clock):
    throttle = LoginThrottle(
        free_failures=5, global_free_failures=10**9, max_sessions=3, clock=clock
    )
    for n in range(10):
        throttle.failed(f"s{n}")
    assert list(throttle._sessions) == ["s7", "s8", "s9"]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://app:pa/ss@db/x",  # SQLAlchemy takes / ? # unencoded in a password
        "postgresql://app:p?w#x@db:5432/x",
        "mysql://app:s3cr3t@db/x",
    ],
)
def test_database_passwords_urllib_cannot_see_are_redacted(url):
    password = url.split("://", 1)[1].split(":", 1)[1].rsplit("@", 1)[0]
    assert password not in redact(url)


def test_parallel_sessions_cannot_share_one_expired_wait(clock):
    throttle = LoginThrottle(delay_s=5, free_failures=0, global_free_failures=0, clock=clock)
    assert throttle.attempt("a") == 0  # a's try is taken (counted as a failure until success)
    assert throttle.attempt("b") == 5, "b, racing a, must wait: the try was already taken"
    throttle.succeeded("a")
    assert throttle.attempt("b") == 0


def test_the_process_wide_wait_is_short_so_strangers_cannot_lock_the_admin_out(clock):
    throttle = LoginThrottle(delay_s=1, global_free_failures=0, global_max_delay_s=10, clock=clock)
    for i in range(40):  # a stranger fails over and over from ever new sessions
        throttle.failed(f"stranger-{i}")
    assert throttle.retry_after("admin") == 10
    clock.now += 10
    assert throttle.attempt("admin") == 0
