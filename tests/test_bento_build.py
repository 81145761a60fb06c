"""`make bento-build` builds a deployable Bento: pyproject's requirements, the code, the model.

The build runs the Makefile's own `bentoml build` line (no container engine) against a temporary
BentoML store holding a random-init champion. The Bento is then exported, imported into a fresh
store that never saw the model, and served from a folder outside the checkout: what a deployment
runs, with only the Bento to go on.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest
import yaml
from packaging.requirements import Requirement
from PIL import Image

from tests.conftest import (
    ROOT,
    SHUTDOWN_TIMEOUT_S,
    TrainedRegistry,
    clean_env,
    free_port,
    import_to_bentoml,
    run_cli,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]

BENTOML = str(Path(sys.executable).parent / "bentoml")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def bento_env(bentoml_home: Path, **extra: str) -> dict[str, str]:
    """A subprocess environment that can only reach the code through the Bento."""
    env = clean_env(BENTOML_HOME=str(bentoml_home), **extra)
    env.pop("PYTHONPATH", None)
    return env


def makefile_build_command() -> list[str]:
    """The `bentoml build` line of `make bento-build` (printed by `make -n`, not run)."""
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", "bento-build"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = [line for line in out.splitlines() if re.search(r"\bbentoml build\b", line)]
    assert len(lines) == 1, out
    return shlex.split(lines[0])


@dataclass
class BuiltBento:
    """A Bento built from the checkout, its store and the model it was built with."""

    tag: str
    path: Path
    bentoml_home: Path
    model_tag: str
    workdir: Path


@pytest.fixture(scope="module")
def built_bento(tmp_path_factory: pytest.TempPathFactory) -> BuiltBento:
    """Register a random-init champion, import it as `make bento` does, build as the Makefile."""
    from deepfakenet import registry
    from deepfakenet.models import DeepfakeNet

    workdir = tmp_path_factory.mktemp("bento-build")
    uri = f"sqlite:///{workdir}/mlflow.db"
    client = registry.use(registry.RegistryConfig(uri, str(workdir / "mlartifacts")))
    experiment = registry.experiment_id(client, "deepfakenet", str(workdir / "mlartifacts"))
    with mlflow.start_run(experiment_id=experiment) as run:
        version = registry.log_and_register(DeepfakeNet(crop_size=32), "deepfakenet")
    registry.set_alias(client, "deepfakenet", registry.CHAMPION, version.version)
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)

    home = workdir / "bentoml"
    import_to_bentoml(TrainedRegistry(workdir, uri, run.info.run_id, 32), home)
    listed = run_cli([BENTOML, "models", "list", "deepfakenet", "-o", "json"], bento_env(home))
    (model,) = json.loads(listed)

    command = makefile_build_command()
    assert Path(command[0]).name == "bentoml", command
    started = time.monotonic()
    out = run_cli([BENTOML, *command[1:], "--output", "tag"], bento_env(home), timeout=600)
    print(f"bentoml build took {time.monotonic() - started:.1f} s")
    tag = re.search(r"__tag__:(\S+)", out)
    assert tag, out
    name, version_id = tag.group(1).split(":")
    path = home / "bentos" / name / version_id
    assert (path / "bento.yaml").is_file(), out
    return BuiltBento(tag.group(1), path, home, model["tag"], workdir)


def test_the_bento_requires_exactly_pyprojects_dependencies(built_bento):
    text = (built_bento.path / "env/python/requirements.txt").read_text()
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    shipped = {str(Requirement(line)) for line in lines if line}
    wanted = {str(Requirement(dep)) for dep in PYPROJECT["project"]["dependencies"]}
    assert "torch==2.14.1" in shipped
    assert wanted <= shipped, f"missing from the Bento: {sorted(wanted - shipped)}"
    # BentoML adds a pin of itself; nothing else may come from a second, hand-kept list.
    import bentoml

    assert shipped - wanted <= {f"bentoml=={bentoml.__version__}"}, sorted(shipped - wanted)
    # Unlocked: what pyproject bounds is what the image resolves, no index at build time.
    assert not (built_bento.path / "env/python/requirements.lock.txt").exists()


def test_the_bento_carries_the_service_the_library_and_the_model(built_bento):
    src = built_bento.path / "src"
    # Every module of serving/ (new ones included), the library at the Bento's root (src
    # layout: importable without PYTHONPATH), its package data, and no tests.
    for path in sorted((ROOT / "serving").glob("*.py")):
        assert (src / "serving" / path.name).read_bytes() == path.read_bytes(), path
    library = ROOT / "src" / "deepfakenet"
    expected = {
        p.relative_to(library)
        for p in library.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in {".pyc", ".pyo"}
    }
    shipped = {p.relative_to(src / "deepfakenet") for p in (src / "deepfakenet").rglob("*")}
    shipped = {p for p in shipped if (src / "deepfakenet" / p).is_file()}
    assert expected - shipped == set(), "library files missing from the Bento"
    assert Path("data/__init__.py") in shipped and Path("py.typed") in shipped
    assert not (src / "tests").exists() and not (src / "src").exists()

    info = yaml.safe_load((built_bento.path / "bento.yaml").read_text())
    assert info["service"] == "serving.service:DeepfakeDetector"
    models = [m["tag"] for service in info["services"] for m in service["models"]]
    assert built_bento.model_tag in models


@pytest.fixture(scope="module")
def deployed_home(built_bento: BuiltBento) -> Path:
    """The Bento exported to a file and imported into a store that never held the model."""
    archive = built_bento.workdir / "deepfakenet.bento"
    run_cli([BENTOML, "export", built_bento.tag, str(archive)], bento_env(built_bento.bentoml_home))
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    model_path = "models/" + built_bento.model_tag.replace(":", "/") + "/model.yaml"
    assert any(name.lstrip("./") == model_path for name in names), "the model is not in the Bento"

    home = built_bento.workdir / "deployed-bentoml"
    run_cli([BENTOML, "import", str(archive)], bento_env(home))
    assert (home / "models" / built_bento.model_tag.replace(":", "/")).is_dir()
    return home


def test_the_bento_imports_its_own_code(built_bento, deployed_home, tmp_path):
    # `bentoml serve <tag>` loads the service with this loader; the checkout's library (the
    # editable install) must not stand in for the Bento's copy.
    probe = (
        "import json, sys\n"
        "from bentoml._internal.service.loader import load\n"
        f"svc = load({built_bento.tag!r})\n"
        "mods = {n: getattr(m, '__file__', None) for n, m in list(sys.modules.items())\n"
        "        if n.split('.')[0] in ('serving', 'deepfakenet')}\n"
        "print('MODULES=' + json.dumps(mods))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=bento_env(deployed_home),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    modules = json.loads(out.stdout.split("MODULES=", 1)[1])
    assert "serving.service" in modules and "deepfakenet" in modules, modules
    bento_src = (deployed_home / "bentos" / built_bento.tag.replace(":", "/") / "src").resolve()
    outside = {n: f for n, f in modules.items() if f and not Path(f).is_relative_to(bento_src)}
    assert outside == {}, f"imported from outside the Bento {bento_src}"


def test_the_imported_bento_serves_a_prediction(built_bento, deployed_home, tmp_path):
    port = free_port()
    env = bento_env(deployed_home, DEEPFAKENET_HOME=str(tmp_path / "var"))
    log_file = tmp_path / "serve.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [
                BENTOML,
                "serve",
                built_bento.tag,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--timeout-graceful-shutdown",
                str(SHUTDOWN_TIMEOUT_S),
            ],
            cwd=tmp_path,  # nothing of the checkout on the path
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def log_tail() -> str:
        return log_file.read_text(errors="replace")[-4000:]

    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, f"serve exited {process.returncode}:\n{log_tail()}"
            # A worker that cannot import the service is restarted forever: fail at once.
            assert "ImportServiceError" not in log_file.read_text(errors="replace"), log_tail()
            assert time.monotonic() < deadline, f"not ready in 180 s:\n{log_tail()}"
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)

        pixels = np.random.default_rng(3).integers(0, 255, (40, 48, 3), dtype=np.uint8)
        png = io.BytesIO()
        Image.fromarray(pixels).save(png, format="PNG")
        response = httpx.post(
            f"{url}/predict",
            files={"image": ("photo.png", png.getvalue(), "image/png")},
            timeout=60,
        )
        assert response.status_code == 200, response.text + log_tail()
        body = response.json()
        assert body["label"] in {"real", "fake"} and 0 <= body["prob_fake"] <= 1, body
        assert body["model_version"] == "1", body
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"serve ignored SIGTERM for 30 s:\n{log_tail()}")
