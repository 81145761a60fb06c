"""Where a model came from: the code commit and the DVC data version it was trained on."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

UNTRACKED = "untracked"


def git_commit(repo_dir: str | Path) -> str | None:
    """The HEAD commit of the git repository at ``repo_dir`` (None outside a repository)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo_dir,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def data_version(dvc_file: str | Path) -> str:
    """The md5 DVC recorded for the data tree (``outs[0].md5`` of ``data.dvc``).

    Returns ``"untracked"`` when the file is absent, so training on an ad-hoc folder still works
    but the run says plainly that its data is not versioned.
    """
    path = Path(dvc_file)
    if not path.is_file():
        log.warning("%s not found: the data used by this run is not versioned by DVC", path)
        return UNTRACKED
    outs = (yaml.safe_load(path.read_text()) or {}).get("outs") or [{}]
    return str(outs[0].get("md5", UNTRACKED))
