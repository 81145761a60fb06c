"""DeepFakeNet dashboards: one Streamlit app, two pages.

``make dashboards`` runs ``streamlit run dashboards/app.py``. The detector page (the default,
``/``) calls the service over HTTP; the admin page (``/admin``) reads the stores and the registry
behind a password. Settings come from ``DEEPFAKENET_*`` variables
(:class:`deepfakenet.settings.DashboardSettings` and, for the stores, ``ServiceSettings``).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

HERE = Path(__file__).parent

st.set_page_config(page_title="DeepFakeNet", layout="wide")
page = st.navigation(
    [
        st.Page(HERE / "detector.py", title="Detector", url_path="detector", default=True),
        st.Page(HERE / "admin.py", title="Admin", url_path="admin"),
    ]
)
page.run()
