"""Replay issue 15's feedback loop against a running service (``benchmarks/feedback_loop.py``).

Run it in a project that has run ``make demo`` while ``make serve`` runs, with the same
``DEEPFAKENET_*`` environment as the service (so the job reads the service's store). The service
must learn of a new champion: start it polling the registry
(``DEEPFAKENET_MLFLOW_TRACKING_URI=sqlite:///$PWD/mlflow.db DEEPFAKENET_REGISTRY_POLL_SECONDS=5
make serve``), or with ``DEEPFAKENET_ADMIN_TOKEN`` set and pass the same ``--admin-token``::

    python benchmarks/feedback_loop.py --service-url http://127.0.0.1:3000 [--n 120]

It

1. generates ``--n`` fresh images with the embedded generator (half real, half fake, with a seed
   ``make demo`` did not use, at the demo's sizes) in a temporary folder;
2. POSTs each to ``/predict`` and sends its true label to ``/feedback``, counting the
   champion's mistakes;
3. runs ``training/retrain.py`` in the project (same store and registry as the service, as
   ``make retrain`` would; ``DEEPFAKENET_SERVICE_URL`` is set so a promotion is announced);
4. prints the job's report (decision, reasons, both models' metrics) and, when it promoted, how
   long after the promotion (the report's ``promoted_at``) the service first answered ``GET
   /model`` with the new version (``/model`` is polled in the background all along).

Exit code 0 when the loop ran (promoted or kept; ``--expect-promotion`` makes "kept" a 1),
1 when a step failed; the retrain job's own output is shown when it fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
#: ``make demo`` generates with seed 0 (conf/synth/default.yaml); anything else is fresh.
DEFAULT_SEED = 2015


def generate_images(n: int, seed: int, min_size: int, max_size: int) -> list[tuple[Path, str]]:
    """``n`` fresh PNGs of the embedded generator (half real, half fake): ``(path, label)``."""
    from deepfakenet.data.synth import generate_dataset

    folder = Path(tempfile.mkdtemp(prefix="feedback-loop-"))
    manifest = generate_dataset(
        folder,
        n_real=n // 2,
        n_fake=n - n // 2,
        min_size=min_size,
        max_size=max_size,
        seed=seed,
        progress=False,
    )
    return [(folder / row.path, str(row.label)) for row in manifest.itertuples()]


def _post(client: httpx.Client, url: str, tries: int = 5, **kwargs: object) -> httpx.Response:
    """POST with a few retries on 503/429 and connection errors (a busy or restarting server)."""
    for attempt in range(tries):
        try:
            response = client.post(url, **kwargs)  # type: ignore[arg-type]
        except httpx.TransportError:
            if attempt == tries - 1:
                raise
        else:
            if response.status_code not in (429, 503) or attempt == tries - 1:
                return response
        time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


def score_and_label(
    service_url: str, images: list[tuple[Path, str]], headers: dict[str, str]
) -> dict[str, object]:
    """Score every image and send its true label; count the served model's mistakes."""
    wrong, versions, started = 0, set(), time.monotonic()
    with httpx.Client(base_url=service_url, timeout=120) as client:
        for i, (path, label) in enumerate(images, 1):
            answer = _post(
                client, "/predict", files={"image": (path.name, path.read_bytes(), "image/png")}
            )
            if answer.status_code != 200:
                raise RuntimeError(f"/predict answered {answer.status_code}: {answer.text[:500]}")
            prediction = answer.json()
            versions.add(str(prediction.get("model_version")))
            wrong += prediction.get("label") != label
            feedback = _post(
                client,
                "/feedback",
                json={"prediction_id": prediction["prediction_id"], "label": label},
                headers=headers,
            )
            if feedback.status_code != 200:
                raise RuntimeError(f"/feedback answered {feedback.status_code}: {feedback.text}")
            if i % 20 == 0 or i == len(images):
                print(f"  scored and labelled {i}/{len(images)}", flush=True)
    return {
        "images": len(images),
        "champion_wrong": wrong,
        "served_versions": sorted(versions),
        "seconds": round(time.monotonic() - started, 1),
    }


def _script(project: Path) -> Path:
    """The project's own retraining job (a fresh clone), else this checkout's."""
    own = project / "training" / "retrain.py"
    return own if own.is_file() else ROOT / "training" / "retrain.py"


def run_retrain(
    project: Path, report_dir: Path, extra: list[str], env: dict[str, str]
) -> tuple[int, float, str]:
    """``training/retrain.py`` in ``project``; returns (exit code, seconds, output tail)."""
    command = [
        sys.executable,
        str(_script(project)),
        f"paths.root_dir={project}",
        f"report_dir={report_dir}",
        *extra,
    ]
    print("$", " ".join(command), flush=True)
    started = time.monotonic()
    out = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, check=False)
    return out.returncode, time.monotonic() - started, (out.stdout + out.stderr)[-6000:]


class VersionWatch:
    """Polls ``GET /model`` in a thread and records when each version was first served."""

    def __init__(self, service_url: str, interval: float = 0.25) -> None:
        self.url, self.interval = service_url, interval
        self.first_seen: dict[str, float] = {}  # version -> wall-clock time (time.time())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> VersionWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    version = str(client.get(f"{self.url}/model").json().get("model_version"))
                    self.first_seen.setdefault(version, time.time())
                except (httpx.HTTPError, ValueError):
                    pass
                self._stop.wait(self.interval)

    def wait_for(self, version: str, timeout: float) -> float | None:
        """Wall-clock time ``version`` was first served (None if not within ``timeout``)."""
        deadline = time.monotonic() + timeout
        while version not in self.first_seen and time.monotonic() < deadline:
            time.sleep(self.interval)
        return self.first_seen.get(version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service-url", default=os.environ.get("DEEPFAKENET_SERVICE_URL"))
    parser.add_argument("--project-dir", type=Path, default=ROOT, help="where `make demo` ran")
    parser.add_argument("--n", type=int, default=120, help="fresh images to score and label")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="generator seed (not 0)")
    parser.add_argument("--min-size", type=int, default=192)
    parser.add_argument("--max-size", type=int, default=288)
    parser.add_argument("--admin-token", default=os.environ.get("DEEPFAKENET_ADMIN_TOKEN"))
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="extra header for /feedback (e.g. a feedback token), repeatable",
    )
    parser.add_argument(
        "--retrain-arg",
        action="append",
        default=[],
        metavar="OVERRIDE",
        help="extra Hydra override for training/retrain.py, repeatable",
    )
    parser.add_argument("--switch-timeout", type=float, default=600, help="seconds to wait")
    parser.add_argument("--expect-promotion", action="store_true")
    args = parser.parse_args(argv)
    if not args.service_url:
        parser.error("--service-url (or DEEPFAKENET_SERVICE_URL) is required")
    if args.seed == 0:
        parser.error("seed 0 is the demo's own data: pick another")
    url = args.service_url.rstrip("/")
    project = args.project_dir.resolve()
    headers = dict(h.split(":", 1) for h in args.header)
    try:
        before = httpx.get(f"{url}/model", timeout=30).json()
    except (httpx.HTTPError, ValueError) as err:
        print(f"the service at {url} does not answer GET /model: {err}", file=sys.stderr)
        return 1
    print(f"service {url} serves version {before.get('model_version')} ({before.get('alias')})")

    print(f"generating {args.n} fresh images (seed {args.seed})", flush=True)
    images = generate_images(args.n, args.seed, args.min_size, args.max_size)
    scored = score_and_label(url, images, headers)
    print(f"scored: {json.dumps(scored)}")

    env = {**os.environ, "DEEPFAKENET_SERVICE_URL": url}
    if args.admin_token:
        env["DEEPFAKENET_ADMIN_TOKEN"] = args.admin_token
    report_dir = project / "reports" / "retrain" / f"feedback-loop-{time.strftime('%Y%m%d-%H%M%S')}"
    report_file = report_dir / "report.json"
    with VersionWatch(url) as watch:  # sees the switch even while the job still runs
        code, seconds, tail = run_retrain(project, report_dir, args.retrain_arg, env)
        report = json.loads(report_file.read_text()) if report_file.is_file() else None
        served_at = (
            watch.wait_for(str(report["challenger_version"]), args.switch_timeout)
            if code == 0 and report and report["status"] == "promoted"
            else None
        )
    print(f"retrain exited {code} after {seconds:.0f} s")
    if code != 0 or report is None:
        print(tail, file=sys.stderr)
        return 1
    print(f"decision: {report['status']}")
    for reason in report["reasons"]:
        print(f"  - {reason}")
    keys = ("auroc", "fixed_auroc", "feedback_error", "feedback_items", "fixed_n_real")
    for role in ("champion", "challenger"):
        metrics = report.get(f"{role}_metrics") or {}
        version = report.get(f"{role}_version")
        print(f"  {role} v{version}: " + ", ".join(f"{k}={metrics.get(k)}" for k in keys))
    print(f"  feedback comparison: {json.dumps(report.get('feedback'))}")

    switch = None
    if report["status"] == "promoted":
        if served_at is None:
            print(
                f"the service did not serve v{report['challenger_version']} within "
                f"{args.switch_timeout:.0f} s of the job's end (is it polling the registry, or "
                "was --admin-token given?)",
                file=sys.stderr,
            )
            return 1
        promoted_at = datetime.fromisoformat(report["promoted_at"]).timestamp()
        switch = max(0.0, served_at - promoted_at)
        print(
            f"the service answered with v{report['challenger_version']} {switch:.1f} s after the "
            f"promotion (polled every {watch.interval} s)"
        )
    summary = {
        **scored,
        "retrain_exit": code,
        "retrain_seconds": round(seconds, 1),
        "decision": report["status"],
        "champion_version": report.get("champion_version"),
        "challenger_version": report.get("challenger_version"),
        "seconds_to_serve_new_version": None if switch is None else round(switch, 1),
        "report": str(report_file),
    }
    print("summary:", json.dumps(summary))
    if args.expect_promotion and report["status"] != "promoted":
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
