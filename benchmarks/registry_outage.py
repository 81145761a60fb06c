"""A served model, its HTTP tracking server, a promotion and a 30 s outage (issue 16).

``python benchmarks/registry_outage.py [--backend postgres|sqlite] [--pg-url URL] [--outage 30]
[--clients 4] [--poll 1] [--mlflow-defaults] [--json out.json]``

It starts a real ``mlflow server`` on a loopback port (PostgreSQL backend store: a fresh
database on ``--pg-url``'s server, dropped afterwards, or a sqlite file with ``--backend
sqlite``; artifacts proxied to a temporary folder), registers three versions of the detector
through it (untrained ResNet18s at ``--crop`` px: the registry's behaviour does not depend on
what the weights learned, and the download is the real size), imports v1 into a temporary BentoML
store and serves it with ``bentoml serve`` polling the champion alias every ``--poll`` s. Then,
with ``--clients`` threads posting ``/predict`` all along:

1. steady load (``--steady`` s);
2. promotes v2 and measures the time until ``GET /model`` reports it;
3. stops the tracking server (SIGTERM) for ``--outage`` s, checking that ``/model`` reports the
   registry as failing, then starts it again on the same port and database;
4. measures the time until ``/model`` reports the registry as answering again, then promotes v3
   and measures the time until the service serves it;
5. prints requests, errors (by status or exception) and latency percentiles per phase, the follow
   times, and what the service logged about the outage (lines, not tracebacks).

``--mlflow-defaults`` runs the service with MLflow's own REST retry policy (7 retries with
exponential backoff, 120 s timeout) instead of the service's fail-fast defaults, for comparison.
Goals (issue 16): no client error during the outage; the service follows a promotion within a
few poll intervals, before and after the outage.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/registry_outage.py` from the checkout
    sys.path.insert(0, str(ROOT))

from tests.conftest import PG_URL, MlflowServer, free_port  # noqa: E402

MODEL = "deepfakenet"


def create_database(pg_url: str) -> tuple[str, str]:
    """A fresh database on ``pg_url``'s server: ``(its URL, its name)``."""
    import sqlalchemy as sa

    name = f"deepfakenet_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return pg_url.rsplit("/", 1)[0] + f"/{name}", name


def drop_database(pg_url: str, name: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def register_versions(uri: str, n: int, crop: int) -> list[str]:
    """Register ``n`` differently seeded detectors through the server; v1 becomes champion."""
    import mlflow
    import torch

    from deepfakenet import registry
    from deepfakenet.models import DeepfakeNet

    client = registry.use(registry.RegistryConfig(uri))
    experiment = registry.experiment_id(client, "registry-outage")
    versions = []
    for seed in range(1, n + 1):
        torch.manual_seed(seed)
        with mlflow.start_run(experiment_id=experiment):
            version = registry.log_and_register(
                DeepfakeNet(crop_size=crop), MODEL, tags={"data_version": f"seed {seed}"}
            )
        versions.append(str(version.version))
    registry.set_alias(client, MODEL, registry.CHAMPION, versions[0])
    return versions


def png_pool(n: int, side: int) -> list[bytes]:
    """``n`` random RGB PNGs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without DEEPFAKENET_* or MLflow URIs, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DEEPFAKENET_")
        and k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID")
    }
    env.update(BENTOML_DO_NOT_TRACK="True", DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true")
    env.update(extra)
    return env


def start_service(workdir: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str, Path]:
    """``bentoml serve`` on a free loopback port; waits for ``/readyz``."""
    port = free_port()
    log_file = workdir / "service.log"
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "bentoml"),
                "serve",
                "serving.service:DeepfakeDetector",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--timeout-graceful-shutdown",
                "3",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited: {log_file.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url, log_file
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    raise RuntimeError(f"the service did not start; see {log_file}")


class Load:
    """``clients`` threads posting ``/predict`` until stopped; every request is recorded."""

    def __init__(self, url: str, images: list[bytes], clients: int) -> None:
        self.url, self.images, self.clients = url, images, clients
        #: ``(monotonic start, seconds, status code or exception name, model_version)``.
        self.records: list[tuple[float, float, str, str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            i = index
            while not self._stop.is_set():
                data = self.images[i % len(self.images)]
                i += self.clients
                started = time.monotonic()
                version = ""
                try:
                    answer = client.post("/predict", files={"image": ("x.png", data, "image/png")})
                    outcome = str(answer.status_code)
                    if answer.status_code == 200:
                        version = str(answer.json().get("model_version", ""))
                except httpx.HTTPError as err:
                    outcome = type(err).__name__
                with self._lock:
                    self.records.append((started, time.monotonic() - started, outcome, version))

    def summary(self, start: float, end: float) -> dict[str, object]:
        """Requests started in ``[start, end)``: count, outcomes, latency percentiles (ms)."""
        with self._lock:
            rows = [r for r in self.records if start <= r[0] < end]
        outcomes: dict[str, int] = {}
        for _, _, outcome, _ in rows:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        ok = [seconds for _, seconds, outcome, _ in rows if outcome == "200"]
        q = {p: round(float(np.percentile(ok, p)) * 1000, 1) if ok else None for p in (50, 99)}
        return {
            "seconds": round(end - start, 1),
            "requests": len(rows),
            "errors": len(rows) - len(ok),
            "outcomes": outcomes,
            "req_per_s": round(len(rows) / (end - start), 2) if end > start else None,
            "p50_ms": q[50],
            "p99_ms": q[99],
            "max_ms": round(max(ok) * 1000, 1) if ok else None,
            "versions": sorted({r[3] for r in rows if r[3]}),
        }


def model_info(url: str) -> dict:
    return httpx.get(f"{url}/model", timeout=10).json()


def wait_until(predicate, timeout_s: float, step_s: float = 0.05) -> float | None:
    """Seconds until ``predicate()`` holds (None if it never did within ``timeout_s``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if predicate():
                return round(time.monotonic() - started, 2)
        except httpx.HTTPError:
            pass
        time.sleep(step_s)
    return None


def main() -> None:
    """Run the scenario and print the figures (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--pg-url", default=PG_URL, help="a database on the PostgreSQL server")
    parser.add_argument("--outage", type=float, default=30, help="seconds the server is down")
    parser.add_argument("--clients", type=int, default=4, help="threads posting /predict")
    parser.add_argument("--poll", type=float, default=1.0, help="DEEPFAKENET_REGISTRY_POLL_SECONDS")
    parser.add_argument("--steady", type=float, default=10, help="seconds of load per calm phase")
    parser.add_argument("--crop", type=int, default=64, help="input size of the models")
    parser.add_argument("--upload", type=int, default=128, help="side of the uploaded PNGs")
    parser.add_argument("--follow-timeout", type=float, default=180)
    parser.add_argument(
        "--mlflow-defaults",
        action="store_true",
        help="serve with MLflow's REST retry policy (7 retries, 120 s) instead of fail-fast",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="registry-outage-"))
    os.environ.update(MLFLOW_DISABLE_TELEMETRY="true", BENTOML_HOME=str(workdir / "bentoml"))
    db_name = None
    if args.backend == "postgres":
        store_uri, db_name = create_database(args.pg_url)
    else:
        store_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    server = MlflowServer(store_uri, workdir / "server-artifacts", workdir / "mlflow.log")
    proc = None
    load = None
    report: dict[str, object] = {
        "cpu_count": os.cpu_count(),
        "backend_store": args.backend,
        "clients": args.clients,
        "poll_s": args.poll,
        "outage_s": args.outage,
        "retry_policy": "mlflow defaults" if args.mlflow_defaults else "service defaults",
    }
    try:
        report["server_start_s"] = round(server.start(), 2)
        uri = server.url
        started = time.monotonic()
        versions = register_versions(uri, 3, args.crop)
        report["register_3_versions_s"] = round(time.monotonic() - started, 2)

        env = clean_env(BENTOML_HOME=str(workdir / "bentoml"))
        subprocess.run(
            [
                sys.executable,
                "serving/import_model.py",
                f"registry.tracking_uri={uri}",
                "model_ref=champion",
                f"hydra.run.dir={workdir / 'hydra'}",
            ],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        service_env = {
            **env,
            "DEEPFAKENET_HOME": str(workdir / "var"),
            "DEEPFAKENET_MLFLOW_TRACKING_URI": uri,
            "DEEPFAKENET_REGISTRY_POLL_SECONDS": str(args.poll),
        }
        if args.mlflow_defaults:  # set explicitly: the service only sets unset ones
            service_env.update(
                MLFLOW_HTTP_REQUEST_MAX_RETRIES="7", MLFLOW_HTTP_REQUEST_TIMEOUT="120"
            )
        proc, url, log_file = start_service(workdir, service_env)
        assert model_info(url)["model_version"] == versions[0]

        from deepfakenet import registry

        client = registry.use(registry.RegistryConfig(uri))
        load = Load(url, png_pool(32, args.upload), args.clients)
        marks: dict[str, float] = {"start": time.monotonic()}
        load.start()
        time.sleep(args.steady)

        # (a) A promotion through the server.
        marks["promote"] = time.monotonic()
        registry.promote(client, MODEL, versions[1])
        report["follow_promotion_s"] = wait_until(
            lambda: model_info(url)["model_version"] == versions[1], args.follow_timeout
        )
        time.sleep(args.steady)

        # (b) The server is down for args.outage seconds.
        marks["outage"] = time.monotonic()
        report["server_stop_s"] = round(server.stop(), 2)
        report["service_reports_failing_after_s"] = wait_until(
            lambda: model_info(url).get("registry") == "failing", args.outage
        )
        time.sleep(max(0.0, args.outage - (time.monotonic() - marks["outage"])))
        marks["restart"] = time.monotonic()
        report["server_restart_s"] = round(server.start(), 2)
        marks["server_back"] = time.monotonic()
        report["service_reports_ok_after_server_back_s"] = wait_until(
            lambda: model_info(url).get("registry") == "ok", args.follow_timeout
        )
        marks["promote_after"] = time.monotonic()
        registry.promote(client, MODEL, versions[2])
        report["follow_promotion_after_outage_s"] = wait_until(
            lambda: model_info(url)["model_version"] == versions[2], args.follow_timeout
        )
        time.sleep(args.steady)
        marks["end"] = time.monotonic()
        load.stop()

        report["phases"] = {
            "steady": load.summary(marks["start"], marks["promote"]),
            "promotion": load.summary(marks["promote"], marks["outage"]),
            "server down": load.summary(marks["outage"], marks["restart"]),
            "server restarting": load.summary(marks["restart"], marks["server_back"]),
            "after the outage": load.summary(marks["server_back"], marks["end"]),
        }
        log = log_file.read_text(errors="replace")
        report["service_log"] = {
            "outage_first_failure_lines": log.count("checking deepfakenet@champion failed"),
            "outage_still_fails_lines": log.count("checking deepfakenet@champion still fails"),
            "recovery_lines": log.count("the registry answers again"),
            "urllib3_retry_warnings": log.count("Retrying (Retry("),
        }
    finally:
        if load is not None:
            load.stop()
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        server.stop()
        if db_name is not None:
            drop_database(args.pg_url, db_name)
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")

    print(json.dumps(report, indent=2))
    print(f"\n{'phase':<22} {'req':>5} {'err':>4} {'req/s':>6} {'p50 ms':>8} {'p99 ms':>8}")
    for name, row in report["phases"].items():  # type: ignore[union-attr]
        print(
            f"{name:<22} {row['requests']:>5} {row['errors']:>4} {row['req_per_s']:>6} "
            f"{row['p50_ms']!s:>8} {row['p99_ms']!s:>8}"
        )
    print(
        f"follow a promotion: {report['follow_promotion_s']} s; after the outage: "
        f"{report['follow_promotion_after_outage_s']} s (registry ok again "
        f"{report['service_reports_ok_after_server_back_s']} s after the server was back)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
