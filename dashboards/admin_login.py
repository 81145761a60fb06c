"""The admin page's gate: a password prompt, throttled, that nothing is shown before.

:func:`signed_in` is all a page needs: it draws the prompt until the right password
(``DEEPFAKENET_ADMIN_PASSWORD``) is entered and returns True from then on. Without a configured
password the page is closed. Wrong passwords are throttled by one
:class:`deepfakenet.security.LoginThrottle` per dashboard process, keyed by a random id per
browser session. Importing this module draws nothing.
"""

from __future__ import annotations

import hashlib
import logging
import math
import uuid

import streamlit as st

from deepfakenet.security import LoginThrottle
from deepfakenet.settings import DashboardSettings

log = logging.getLogger("deepfakenet.dashboards.admin")

#: Session-state key of the signed-in mark (the fingerprint of the password it was given for).
SESSION_KEY = "admin.signed_in"
#: This browser session's id for the login throttle (random; never shown or logged in full).
THROTTLE_KEY = "admin.throttle_id"


def fingerprint(settings: DashboardSettings) -> str:
    """Changes when the configured password changes, which signs every session out."""
    secret = settings.admin_password.get_secret_value() if settings.admin_password else ""
    return hashlib.sha256(b"deepfakenet-admin:" + secret.encode("utf-8")).hexdigest()


@st.cache_resource
def login_throttle(
    free_failures: int,
    global_free_failures: int,
    delay_s: float,
    max_delay_s: float,
    global_max_delay_s: float,
) -> LoginThrottle:
    """The one throttle of this dashboard process (shared by every browser session)."""
    return LoginThrottle(
        delay_s=delay_s,
        max_delay_s=max_delay_s,
        global_max_delay_s=global_max_delay_s,
        free_failures=free_failures,
        global_free_failures=global_free_failures,
    )


def throttle_for(settings: DashboardSettings) -> tuple[LoginThrottle, str]:
    """The process's throttle and this session's key in it."""
    session = st.session_state.setdefault(THROTTLE_KEY, uuid.uuid4().hex)
    throttle = login_throttle(
        settings.admin_login_free_failures,
        settings.admin_login_global_free_failures,
        settings.admin_login_delay_s,
        settings.admin_login_max_delay_s,
        settings.admin_login_global_max_delay_s,
    )
    return throttle, session


def signed_in(settings: DashboardSettings) -> bool:
    """Show the login prompt until the right password is entered; True once it was.

    After a few wrong passwords the next try must wait (longer after each further failure, per
    session and for all sessions together); a try during the wait is refused unchecked.
    """
    if not settings.admin_enabled:
        st.error(
            "The admin dashboard is closed because no admin password is configured. Set "
            "`DEEPFAKENET_ADMIN_PASSWORD` in the dashboard's environment, e.g. "
            "`DEEPFAKENET_ADMIN_PASSWORD=… make dashboards`, and reload this page.",
            icon="🔒",
        )
        return False
    if st.session_state.get(SESSION_KEY) == fingerprint(settings):
        return True
    st.title("Admin")
    with st.form("admin.login"):
        password = st.text_input("Admin password", type="password", key="admin.password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        throttle, session = throttle_for(settings)
        wait = throttle.attempt(session)  # takes the try atomically (parallel sessions)
        if wait > 0:
            log.warning("admin sign-in refused unchecked: throttled for %.0f s more", wait)
            st.error(f"Too many wrong passwords: try again in {math.ceil(wait)} s.")
            return False
        if settings.admin_password_matches(password or ""):
            throttle.succeeded(session)
            st.session_state[SESSION_KEY] = fingerprint(settings)
            log.info("admin signed in")
            st.rerun()
        wait = throttle.wrong_password(session)
        st.error(
            "Wrong password." if wait <= 0 else f"Wrong password. Try again in {math.ceil(wait)} s."
        )
    return False


def sign_out() -> None:
    """Forget this session's sign-in and draw the page again (the prompt)."""
    st.session_state.pop(SESSION_KEY, None)
    log.info("admin signed out")
    st.rerun()
