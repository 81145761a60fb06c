"""The data tree versioned by a real ``dvc`` repo in a temp dir (no SCM), with a local remote."""

import shutil
import subprocess
import sys

import pytest

from deepfakenet.lineage import UNTRACKED, data_version

pytestmark = pytest.mark.integration


def dvc(*args: str, cwd) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_data_version_follows_dvc_add(tmp_path, tiny_data):
    repo = tmp_path / "repo"
    repo.mkdir()
    assert data_version(repo / "data.dvc") == UNTRACKED
    dvc("init", "--no-scm", cwd=repo)
    dvc("remote", "add", "-d", "local", str(tmp_path / "remote"), cwd=repo)
    shutil.copytree(tiny_data, repo / "data")
    dvc("add", "data", cwd=repo)
    v1 = data_version(repo / "data.dvc")
    assert v1.endswith(".dir") and len(v1) == len("0" * 32 + ".dir")

    dvc("push", cwd=repo)
    assert any((tmp_path / "remote").rglob("*")), "push wrote nothing to the remote"

    # Adding an image (as the feedback loop does) makes a new data version.
    src = next((repo / "data" / "real").rglob("*.png"))
    shutil.copy(src, repo / "data" / "real" / "feedback_copy.png")
    dvc("add", "data", cwd=repo)
    v2 = data_version(repo / "data.dvc")
    assert v2 != v1

    # The old version is still restorable from the cache.
    shutil.rmtree(repo / "data")
    dvc("checkout", cwd=repo)
    assert (repo / "data" / "real" / "feedback_copy.png").exists()
