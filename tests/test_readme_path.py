"""The README, end to end, as a test: its own ``make`` targets, in order, on a fresh copy.

A fresh clone once passed ``make test`` and ``make demo`` and then failed ``make serve``: the
import step met an empty BentoML model store. Nothing followed the README's commands in the
order a newcomer types them, on a tree with nothing left over from earlier runs. This test does:
it copies the files git knows (tracked, plus untracked ones that are not ignored: what the next
commit will hold) into a temporary folder, makes it a git repository, and runs the README's
``make`` targets there with tiny overrides, reusing this test run's virtual environment.

It also keeps the promise that every command the README shows is exercised by some test:
:data:`README_COMMANDS` maps each one to the tests that run it (or says why none can), and
:func:`test_every_readme_command_is_mapped_to_a_test` fails when the README gains a command
nobody mapped.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from deepfakenet.data.clips import encode_clip
from tests.conftest import ROOT, clean_env, free_port

README = ROOT / "README.md"
#: The virtual environment running these tests (``make VENV=...`` reuses it, never rebuilds it).
VENV = Path(sys.executable).parent.parent
#: Tiny overrides per target: seconds instead of the demo's minutes, same code paths.
DATA_ARGS = "synth.n_real=40 synth.n_fake=40 synth.min_size=32 synth.max_size=48"
SPLIT = "data.num_workers=0 data.val_fraction=0.25 data.test_fraction=0.25"
TRAIN_ARGS = f"trainer=fast data.crop_size=32 data.batch_size=16 {SPLIT}"
#: Make's own variables that a parent ``make test`` exports; a fresh shell has none of them.
MAKE_VARS = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "MAKE_TERMOUT", "MAKE_TERMERR")


# ----------------------------------------------------------------------------- the mapping

PATH_TEST = "tests/test_readme_path.py::test_readme_path_on_a_fresh_copy"
HELP_TEST = "tests/test_readme_path.py::test_make_help_lists_every_target"
RETRAIN = "tests/test_retrain.py::"

#: Every command the README shows (code blocks: exact text; prose: ``make <target>`` and inline
#: code) -> the tests that run it, or the reason no test does (a string starting "not run:").
#: A test named here runs the command itself or, where marked "(script)", the script the
#: target runs, with the same arguments but test paths.
FEDERATED_GATE = (
    "tests/test_federated.py::test_a_registered_version_goes_through_the_same_promotion_gate"
)
README_COMMANDS: dict[str, tuple[str, ...] | str] = {
    # make targets
    "make demo": "not run: 12 epochs on 3,000 images (6-15 min); its steps (data, train, evaluate) "
    "run one by one in " + PATH_TEST + ", its video step in tests/test_video.py",
    "make video-eval": ("tests/test_video.py::test_video_job_chooses_and_reports_the_rule",),
    "make setup": "not run by a test: every test runs in the venv it built (CI: .ci/run)",
    "make test": "not run by a test: it is the suite (CI: .ci/run)",
    "make test-fast": "not run by a test: the suite without the slow marker",
    "make lint": "not run by a test: ruff over the repo",
    "make help": (HELP_TEST,),
    "make mlflow-ui": (PATH_TEST,),
    "make serve": (PATH_TEST,),
    "make dashboards": (
        PATH_TEST,
        "tests/test_browser.py::test_both_pages_render_in_chromium",
        "tests/test_dashboards.py::test_admin_login_gate",
    ),
    "DEEPFAKENET_ADMIN_PASSWORD=change-me make dashboards": (PATH_TEST,),
    "make train": (PATH_TEST,),
    'make train ARGS="data.crop_size=224 data.batch_size=32 trainer.max_epochs=20"': (PATH_TEST,),
    "make evaluate REF=latest": (PATH_TEST,),
    "make evaluate": (PATH_TEST,),
    "make retrain": (
        RETRAIN + "test_below_min_new_labels_nothing_happens",  # (script)
        RETRAIN + "test_concurrent_runs_one_promotes_one_exits",  # (script)
    ),
    'make retrain ARGS="collect.min_new_labels=50 init_from_champion=false"': (
        RETRAIN + "test_a_losing_challenger_is_not_promoted",  # (script) the same two overrides
    ),
    "make rollback": (
        RETRAIN + "test_rollback_restores_the_previous_champion",  # (script)
        "tests/test_cli.py::test_rollback_without_previous_is_one_line",  # (script)
    ),
    "make generalisation": (
        "tests/test_protocol.py::test_generalisation_benchmark_quick_runs_end_to_end",  # (script)
    ),
    "make generalisation ARGS=--quick": (
        "tests/test_protocol.py::test_generalisation_benchmark_quick_runs_end_to_end",  # (script)
    ),
    "make bento-build": ("tests/test_bento_build.py::test_the_imported_bento_serves_a_prediction",),
    "bentoml containerize deepfakenet-service:latest": "not run: needs a container engine",
    # data
    "rm -rf data && cp -r /path/to/your/tree data": "not run: a placeholder path",
    ".venv/bin/dvc add data && git add data.dvc": (
        "tests/test_dvc.py::test_data_version_follows_dvc_add",
        PATH_TEST,  # make data runs `dvc add data`
    ),
    "dvc add data": ("tests/test_dvc.py::test_data_version_follows_dvc_add", PATH_TEST),
    "dvc push": (PATH_TEST, RETRAIN + "test_concurrent_runs_one_promotes_one_exits"),
    "dvc pull": "not run: a remote data version on another machine",
    "dvc remote add -d store s3://bucket/deepfakenet": "not run: needs a cloud bucket",
    # configuration and the Python entry points
    "python training/train.py trainer=gpu": (
        "tests/test_configs.py::test_every_trainer_preset_composes",  # composed, not run: no GPU
    ),
    "export MLFLOW_TRACKING_URI=http://mlflow.internal:5000": (
        "tests/test_configs.py::test_every_job_reads_the_registry_with_interpolations_resolved",
        "tests/test_postgres.py::test_training_registers_into_a_postgres_backed_registry",
    ),
    "python training/evaluate.py --config-name generalisation": (
        "tests/test_configs.py::test_generalisation_config_composes_for_every_experiment",
        "tests/test_protocol.py::test_generalisation_benchmark_quick_runs_end_to_end",
    ),
    "python training/evaluate.py robustness=true model_ref=champion": (
        "tests/test_train.py::test_train_registers_logs_and_evaluates",  # the job, robustness on
    ),
    # federated head updates
    "make federated-setup": "not run by a test: the federated tests run in the venv it builds "
    "(make test builds it; CI: .ci/run)",
    "make federated-demo": "not run: the demo data set's champion (make demo first); the same "
    "job runs on tiny data in tests/test_federated.py::test_a_secagg_round_on_three_supernodes",
    "python training/federated.py": (
        "tests/test_federated.py::test_a_secagg_round_on_three_supernodes",
    ),
    "make federated-promote VERSION=4": (FEDERATED_GATE,),
    "make federated-promote": (FEDERATED_GATE,),
    # scaling out
    "python training/train.py experiment=demo trainer=ddp trainer.devices=2": (
        "tests/test_ddp.py::test_ddp_on_two_cpu_processes_trains_like_one",  # the tiny recipe
    ),
    "torchrun --nnodes 2 --nproc-per-node 4 --node-rank 0 --master-addr trainer-0 "
    "training/train.py trainer=ddp trainer.devices=4 trainer.num_nodes=2": "not run: needs "
    "several machines (tests/test_ddp.py runs the same code on one, with two processes)",
    "mlflow server --backend-store-uri postgresql+psycopg://mlflow@db.internal/mlflow "
    "--artifacts-destination s3://bucket/mlartifacts --host 0.0.0.0 --port 5000 "
    "--allowed-hosts mlflow.internal:5000 --workers 2": (
        # the same server on a loopback port, PostgreSQL behind it, a local artifacts folder
        "tests/test_mlflow_server.py::"
        "test_a_service_follows_the_champion_through_a_tracking_server_and_rides_out_its_outage",
    ),
    # serving
    "bentoml serve serving.service:DeepfakeDetector": (PATH_TEST, "tests/conftest.py::service"),
    "bentoml serve": (PATH_TEST, "tests/conftest.py::service"),
    "curl -F image=@photo.jpg http://127.0.0.1:3000/predict": (PATH_TEST,),
    "curl -F video=@clip.mp4 http://127.0.0.1:3000/predict_video": (
        PATH_TEST,
        "tests/test_service_media.py::test_a_clip_gets_a_verdict_a_timeline_and_the_strongest_frame",
    ),
    "curl -F image=@photo.jpg -F target=fake http://127.0.0.1:3000/explain": (PATH_TEST,),
    'curl -H \'content-type: application/json\' -d \'{"prediction_id": "…", "label": '
    '"real", "comment": "my own photo"}\' http://127.0.0.1:3000/feedback': (PATH_TEST,),
    # scheduling: the job's exit codes, 75 for a held lock included
    "30 2 * * * cd /srv/deepfakenet && make retrain >> logs/retrain.log 2>&1": (
        RETRAIN + "test_concurrent_runs_one_promotes_one_exits",  # (script)
        "tests/test_cli.py::test_retrain_while_another_run_holds_the_lock",  # (script)
    ),
    "/srv/deepfakenet/.venv/bin/python training/retrain.py": (
        "tests/test_cli.py::test_retrain_while_another_run_holds_the_lock",
        "tests/test_cli.py::test_retrain_without_a_champion",
    ),
    "systemctl enable --now deepfakenet-retrain.timer": "not run: installs a systemd unit",
    # the feedback loop replayed (minutes of training; its parts run in the retrain tests)
    "DEEPFAKENET_MLFLOW_TRACKING_URI=sqlite:///$PWD/mlflow.db DEEPFAKENET_REGISTRY_POLL_SECONDS=5 "
    "make serve": (PATH_TEST, "tests/test_runtime.py::test_polling_thread_follows_the_alias"),
    "python benchmarks/feedback_loop.py --service-url http://127.0.0.1:3000 --n 120": "not run: "
    "a benchmark (scores 120 images, then a full retrain); the loop it drives is run by "
    + RETRAIN
    + "test_concurrent_runs_one_promotes_one_exits",
    'make data ARGS="synth.n_real=200 synth.n_fake=200"': (PATH_TEST,),
    'make data ARGS="synth=full"': (  # composed and checked, not run: 12,000 images
        "tests/test_configs.py::test_the_full_photo_pool_is_one_option_away",
    ),
    "make retrain ARGS=promotion.max_dorp=0.5": (  # (script) the same override
        "tests/test_cli.py::test_a_misspelt_key_on_the_command_line_is_refused_by_hydra",
    ),
    "make data": (PATH_TEST,),
}


# ----------------------------------------------------------------------------- README parsing


def readme_blocks(*languages: str) -> list[str]:
    """The README's fenced code blocks in those languages, in order."""
    pattern = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
    found = pattern.findall(README.read_text())
    return [textwrap.dedent(body) for _, lang, body in found if lang in languages]


def readme_shell_commands() -> list[str]:
    """The README's ``bash`` and ``cron`` lines (joined, comments cut) and ``ExecStart=``s."""
    commands = [
        line.removeprefix("ExecStart=")
        for block in readme_blocks("ini")
        for line in block.splitlines()
        if line.startswith("ExecStart=")
    ]
    for block in readme_blocks("bash", "cron"):
        for line in block.replace("\\\n", " ").splitlines():
            command = " ".join(re.sub(r"(^|\s)#.*$", "", line).split())
            if command:
                commands.append(command)
    return commands


def readme_make_targets() -> set[str]:
    """Every ``make <target>`` the README mentions, in code blocks and in prose."""
    return set(re.findall(r"\bmake ([a-z][a-z-]+)", README.read_text()))


def readme_inline_commands() -> set[str]:
    """Inline code in the README's prose that is a command (make, python, dvc, ...)."""
    text = re.sub(r"^( *)```.*?^\1```", "", README.read_text(), flags=re.MULTILINE | re.DOTALL)
    starts = ("make ", "python ", ".venv/bin/", "dvc ", "bentoml ", "export ", "systemctl ")
    return {code for code in re.findall(r"`([^`\n]+)`", text) if code.startswith(starts)}


# ----------------------------------------------------------------------------- the fresh copy


def fresh_copy(dest: Path) -> Path:
    """Copy what a clone of the next commit holds into ``dest`` and make it a git repository."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if listed.returncode != 0:
        pytest.fail(f"the README test needs the repository's git metadata: {listed.stderr!r}")
    for name in listed.stdout.decode().split("\0"):
        source = ROOT / name
        if name and source.is_file():  # listed but deleted in the work tree: not in the commit
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    git = ["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=CI"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "fresh clone"]):
        subprocess.run([*git, *args], cwd=dest, check=True, capture_output=True, env=clean_env())
    return dest


def fresh_env(**extra: str) -> dict[str, str]:
    """A new shell's environment: no parent make, the Makefile's own BENTOML_HOME default.

    ``PYTHONPATH`` puts the copy's ``src/`` first, so the jobs import the copied library, not
    the editable install of the checkout the venv was built from.
    """
    env = clean_env(**extra)
    for var in (*MAKE_VARS, "BENTOML_HOME", "VENV", "PORT", "ARGS", "REF"):
        env.pop(var, None)
    return env


def make(
    workdir: Path, target: str, *variables: str, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    """``make <target>`` in ``workdir`` with this venv; fail the test with its output if it fails.

    ``-o <venv>/.installed`` keeps make from rebuilding the venv however old its stamp is
    against the copied ``pyproject.toml`` (a make of the real checkout would reinstall it).
    """
    args = ["make", "-o", f"{VENV}/.installed", target, f"VENV={VENV}", *variables]
    out = subprocess.run(
        args,
        cwd=workdir,
        env=fresh_env(PYTHONPATH=str(workdir / "src"), **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if out.returncode != 0:
        pytest.fail(
            f"{shlex.join(args)} exited {out.returncode}:\n{out.stdout[-4000:]}\n"
            f"{out.stderr[-4000:]}"
        )
    return out


def start_make(workdir: Path, target: str, *variables: str, **env: str) -> subprocess.Popen:
    """``make <target>`` as a long-running server in its own process group (see :func:`make`)."""
    log = (workdir / f"make-{target}.log").open("wb")
    return subprocess.Popen(
        ["make", "-o", f"{VENV}/.installed", target, f"VENV={VENV}", *variables],
        cwd=workdir,
        env=fresh_env(PYTHONPATH=str(workdir / "src"), **env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_until_up(process: subprocess.Popen, url: str, log: Path, seconds: float = 180) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it exits or times out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer in {seconds} s:\n{log.read_text()[-4000:]}")


def terminate(process: subprocess.Popen, seconds: float = 60) -> int:
    """SIGTERM the whole process group (make and the server below it); its exit status."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        return process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"the process group of pid {process.pid} ignored SIGTERM for {seconds} s")
    except ProcessLookupError:
        return process.wait()


# ----------------------------------------------------------------------------- the curl lines


def run_curl(command: str, cwd: Path) -> httpx.Response:
    """A README ``curl`` line, sent with httpx: the same form fields, headers and body.

    Understands the options the README uses (``-F name=@file``, ``-F name=value``, ``-H``,
    ``-d``); anything else fails the test, so a new option gets translated here on purpose.
    """
    argv = shlex.split(command)
    assert argv[0] == "curl", command
    files, data, headers, body, url = {}, {}, {}, None, None
    args = iter(argv[1:])
    for arg in args:
        if arg == "-F":
            name, _, value = next(args).partition("=")
            if value.startswith("@"):
                path = cwd / value[1:]
                files[name] = (path.name, path.read_bytes())
            else:
                data[name] = value
        elif arg == "-H":
            key, _, value = next(args).partition(":")
            headers[key.strip()] = value.strip()
        elif arg == "-d":
            body = next(args).encode()
        elif arg.startswith("http"):
            url = arg
        else:
            pytest.fail(f"the README's curl line uses {arg!r}, which run_curl does not translate")
    assert url, command
    if body is not None:
        return httpx.post(url, content=body, headers=headers, timeout=120)
    return httpx.post(url, files=files, data=data, headers=headers, timeout=120)


# ----------------------------------------------------------------------------- the README path


@pytest.mark.slow
@pytest.mark.integration
def test_readme_path_on_a_fresh_copy(tmp_path, monkeypatch):
    repo = fresh_copy(tmp_path / "clone")
    assert not (repo / "data").exists() and not (repo / "bentoml-home").exists()

    # make data: generate (tiny), dvc add, dvc push to the local remote.
    make(repo, "data", f"ARGS={DATA_ARGS}")
    pngs = list((repo / "data").rglob("*.png"))
    assert len(pngs) == 80
    assert (repo / "dvc-storage").is_dir(), "dvc push wrote the local default remote"

    # make train ARGS=...: trains, registers v1 (the first version becomes champion).
    make(repo, "train", f"ARGS={TRAIN_ARGS}")
    trained = json.loads((repo / "reports" / "train" / "metrics.json").read_text())
    assert str(trained["model_version"]) == "1"

    # make evaluate REF=latest (the README's own line), same split as training.
    make(repo, "evaluate", "REF=latest", f"ARGS={SPLIT}")
    evaluated = json.loads((repo / "reports/evaluate/latest/metrics.json").read_text())
    assert str(evaluated["model_version"]) == "1" and "auroc" in evaluated["metrics"]

    # make serve: imports the champion into an EMPTY BentoML store (the Makefile's default
    # ./bentoml-home, which does not exist yet), then serves.
    port, mlflow_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_make(repo, "serve", f"PORT={port}")
    log = repo / "make-serve.log"
    # make mlflow-ui meanwhile: the run and the registered champion are browsable.
    mlflow_ui = start_make(repo, "mlflow-ui", f"MLFLOW_PORT={mlflow_port}")
    try:
        mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        wait_until_up(mlflow_ui, f"{mlflow_url}/health", repo / "make-mlflow-ui.log")
        model = httpx.get(
            f"{mlflow_url}/api/2.0/mlflow/registered-models/get",
            params={"name": "deepfakenet"},
            timeout=30,
        )
        assert model.status_code == 200, model.text
        champion = {"alias": "champion", "version": "1"}
        assert model.json()["registered_model"]["aliases"] == [champion]
    finally:
        terminate(mlflow_ui)
    try:
        wait_until_up(server, f"{url}/readyz", log)
        assert (repo / "bentoml-home" / "models" / "deepfakenet").is_dir()

        # The README's curl lines, with a real photo.jpg and this port.
        Image.open(pngs[0]).convert("RGB").save(repo / "photo.jpg", quality=95)
        frames = [np.asarray(Image.open(p).convert("RGB"))[:16, :16] for p in pngs[:4]]
        (repo / "clip.mp4").write_bytes(encode_clip(frames, "libx264", fps=4))
        curls = [c for c in readme_shell_commands() if c.startswith("curl ")]
        assert [re.search(r"/(\w+)$", c).group(1) for c in curls] == [
            "predict",
            "explain",
            "feedback",
            "predict_video",
        ]
        answers = {}
        for command in curls:
            command = command.replace("127.0.0.1:3000", f"127.0.0.1:{port}")
            if "/feedback" in command:
                command = command.replace("…", answers["predict"]["prediction_id"])
            response = run_curl(command, repo)
            assert response.status_code == 200, (command, response.text, log.read_text()[-3000:])
            answers[command.rsplit("/", 1)[1]] = response.json()
        assert answers["predict"]["label"] in {"real", "fake"}
        assert answers["predict"]["model_version"] == "1"
        assert answers["explain"]["target"] == "fake" and answers["explain"]["heatmap_png"]
        assert answers["feedback"]["feedback_id"]
        video = answers["predict_video"]
        assert len(video["frames"]) == 2 and video["model_version"] == "1"  # 1 s at 2 fps

        # The README's Python client snippet, as written but for the port.
        (snippet,) = [b for b in readme_blocks("python") if "SyncHTTPClient" in b]
        scope: dict = {}
        with monkeypatch.context() as here:
            here.chdir(repo)  # the snippet opens photo.jpg relative to where it runs
            exec(snippet.replace("127.0.0.1:3000", f"127.0.0.1:{port}"), scope)
        assert scope["verdict"]["label"] in {"real", "fake"}

        # The README's dashboards line; the Makefile points the pages at its own HOST:PORT.
        ui_port = free_port()
        dashboards = start_make(
            repo,
            "dashboards",
            f"PORT={port}",
            f"DASHBOARD_PORT={ui_port}",
            DEEPFAKENET_ADMIN_PASSWORD="change-me",
        )
        try:
            health = f"http://127.0.0.1:{ui_port}/_stcore/health"
            wait_until_up(dashboards, health, repo / "make-dashboards.log", seconds=90)
        finally:
            terminate(dashboards)
    finally:
        status = terminate(server)
    assert not log.read_text().count("Traceback"), log.read_text()[-4000:]
    assert status in {0, 2, -signal.SIGTERM}, f"make serve ended with {status}"

    # The README's feature-store snippet reads what the service flushed at shutdown.
    (features,) = [b for b in readme_blocks("python") if "read_features" in b]
    code = features.replace('model_versions=["3"]', 'model_versions=["1"]')
    probe = subprocess.run(
        [sys.executable, "-c", code + "\nprint(X.shape[0], X.shape[1])"],
        cwd=repo,
        env=fresh_env(PYTHONPATH=str(repo / "src")),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    rows, dims = map(int, probe.stdout.split()[-2:])
    assert rows == 4 and dims == 512, (
        "predict, explain, the clip and the client's predict were stored"
    )


# ----------------------------------------------------------------------------- make serve, no model


def import_step(root: Path) -> subprocess.CompletedProcess[str]:
    """What ``make serve`` runs first, against a registry under ``root``."""
    return subprocess.run(
        [
            sys.executable,
            "serving/import_model.py",
            "model_ref=champion",
            "if_missing=true",
            f"paths.root_dir={root}",
            f"hydra.run.dir={root}/logs",
        ],
        cwd=ROOT,
        env=clean_env(BENTOML_HOME=str(root / "bentoml-home")),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_serve_before_any_training_refuses_in_one_line(tmp_path):
    result = import_step(tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.splitlines() == [
        f"import_model: no MLflow registry at sqlite:///{tmp_path}/mlflow.db: train and register "
        "a model first (`make demo` or `make train`)"
    ]
    assert not (tmp_path / "mlflow.db").exists(), "a refused import creates no empty registry"

    # A registry without a champion (nothing registered yet): refused the same way.
    from mlflow import MlflowClient

    MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_registered_models()
    result = import_step(tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]  # the registry's own "not found" words, then ours
    assert last.startswith("import_model: ") and "deepfakenet@champion" in last
    assert last.endswith("train and register a model first (`make demo` or `make train`)")


# ----------------------------------------------------------------------------- the mapping


def _test_exists(node: str) -> bool:
    path, _, name = node.partition("::")
    source = (ROOT / path).read_text()
    return re.search(rf"^def {re.escape(name)}\(", source, re.MULTILINE) is not None


def test_every_readme_command_is_mapped_to_a_test():
    commands = {
        *readme_shell_commands(),
        *readme_inline_commands(),
        *(f"make {target}" for target in readme_make_targets()),
    }
    unmapped = sorted(commands - README_COMMANDS.keys())
    assert not unmapped, f"README commands no test runs (map them in README_COMMANDS): {unmapped}"
    for command, tests in README_COMMANDS.items():
        if isinstance(tests, str):
            assert tests.startswith("not run"), (command, tests)
            continue
        missing = [node for node in tests if not _test_exists(node)]
        assert not missing, f"{command!r} is mapped to tests that do not exist: {missing}"
    stale = sorted(README_COMMANDS.keys() - commands)
    assert not stale, f"mapped commands the README no longer shows: {stale}"


def test_make_help_lists_every_target():
    out = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=ROOT,
        env=fresh_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rows = [re.fullmatch(r"  (\S+) {2,}(\S.*)", line) for line in out.splitlines()]
    assert all(rows), f"every line is '  target  description', aligned:\n{out}"
    listed = {row[1] for row in rows if row}
    makefile = (ROOT / "Makefile").read_text()
    phony = set(re.search(r"^\.PHONY: (.*)$", makefile, re.M)[1].split())
    assert listed == phony, f"help and .PHONY disagree: {sorted(listed ^ phony)}"
    assert readme_make_targets() <= listed
    assert "$(" not in out, "a description shows a make variable unexpanded"
