"""Runtime settings of the service and the dashboards, read from ``DEEPFAKENET_*`` variables.

Jobs (train, evaluate, retrain) are configured by Hydra; a long-running server is configured by
its environment (twelve-factor style), so that one Bento runs unchanged on a laptop and in a
cluster. The defaults keep everything embedded under ``var/`` in the working directory, so a
fresh checkout needs no database server. The Hydra configs read the same variables with the same
defaults (``conf/store/default.yaml``), so the retraining job finds the service's store.
"""

from __future__ import annotations

import hmac
import math
import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The clip quantile of a version for which ``make video-eval`` chose no rule.
DEFAULT_VIDEO_QUANTILE = 0.9
#: Environment variable prefix of every setting, e.g. ``DEEPFAKENET_STORE_URL``.
ENV_PREFIX = "DEEPFAKENET_"
#: What ``DEEPFAKENET_BACKEND`` may say (see :func:`deepfakenet.backends.load_backend`).
BackendChoice = Literal["auto", "torch", "onnx", "onnx-int8"]


class ServiceSettings(BaseSettings):
    """Where the service keeps its records and how it treats untrusted input.

    Attributes:
        home: Folder for the embedded defaults (SQLite file, feature Parquet, image archive).
        store_url: SQLAlchemy URL of the prediction + feedback store (any URL, e.g. PostgreSQL).
        feature_dir: Root of the day-partitioned Parquet feature store.
        image_dir: Content-addressed archive of scored images (kept for the feedback loop).
        image_retention_days: Images without feedback are purged after this many days.
        model_name: Name of the model in the BentoML model store (and the MLflow registry).
        max_upload_bytes: Largest accepted upload.
        max_pixels: Largest accepted ``width * height`` (decompression bombs are refused).
        max_comment_chars: Longest accepted feedback comment.
        explain_layer: Module of the ResNet whose activations Grad-CAM explains.
        feature_flush_rows: Buffered feature rows that trigger a Parquet write.
        feature_flush_seconds: Longest time a feature row waits in the buffer.
        mlflow_tracking_uri: Registry the service polls for a new champion (None: no polling):
            a database URL or a tracking server (``http://mlflow.internal:5000``). The service
            makes MLflow's REST calls fail fast unless ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` /
            ``MLFLOW_HTTP_REQUEST_TIMEOUT`` are set (0 retries, 10 s; MLflow's own defaults,
            7 retries with backoff, hold one call for about 4 minutes while the server is down):
            a poll during an outage fails at once, the model served stays, ``GET /model`` says
            ``registry: failing``, and the next poll after the server returns follows the alias.
        registry_poll_seconds: Poll interval for the champion alias (with a tracking URI); 0
            turns polling off (then only ``/admin/reload`` and restarts pick a new champion).
        admin_token: Bearer token for the admin endpoints (reload); None disables them.
        max_batch_size: Largest adaptive batch of the inference API.
        max_latency_ms: Latency budget of the adaptive batcher (requests over it answer 503).
        request_read_timeout_s: Longest time to receive the body of an upload or feedback
            request; a slower (or stalled) client gets 408, so it cannot hold a worker or a
            graceful shutdown for longer than this.
        client_key_salt: Secret of the pseudonymous client keys stored with each prediction
            (HMAC-SHA256 of the client's address). None: a random salt is created once in
            ``<home>/client_key.salt`` (mode 0600). Changing it makes every client new.
        feedback_token: Bearer token ``/feedback`` requires (``Authorization: Bearer <token>``);
            None leaves the route open.
        backend: What computes the forward pass: ``auto`` (the fastest artifact of the version
            that passed its int8 parity check: ONNX int8, else ONNX fp32, else torch), ``torch``,
            ``onnx`` or ``onnx-int8`` (:mod:`deepfakenet.backends`). Grad-CAM always runs on
            the torch network.
        workers: Service worker processes, each with the model, its own batcher and its own
            champion watcher. On CPUs the request work (HTTP, multipart, decode, crop) is Python
            and holds a worker's GIL, so once int8 makes the forward pass cheap, processes beat
            threads: on 2 cores int8 served 69 images/s with 2 workers x 1 thread against 48
            with 1 x 2 (torch: 28 against 33). The default stays 1 because ``/admin/reload``
            reaches only the worker that answers it (the others follow the alias at their next
            registry poll); with polling on, set it to the number of cores.
        threads: Intra-op threads of each worker's backend; None divides the cores among the
            workers.
        trust_anchors: PEM bundle of the C2PA certificate authorities whose signatures count as
            trusted (:mod:`deepfakenet.provenance`). None: a valid signature is reported as
            ``Valid`` (signer not trusted), never as ``Trusted``.
        max_video_bytes: Largest accepted ``/predict_video`` upload.
        max_video_seconds: Longest accepted clip, by its header and by the frames decoded.
        max_video_frames: Most frames decoded from one clip (all of them, not only the sampled).
        max_video_pixels: Largest accepted ``width * height`` of a video frame.
        video_deadline_s: Wall-clock limit on decoding one clip; a slower one is refused (400).
        video_read_timeout_s: Longest time to receive a ``/predict_video`` body (408 past it).
        max_concurrent_videos: Clips one worker takes at once (received, queued or decoding);
            more get 503 with ``Retry-After`` before their body is read.
        video_sample_fps: Frames scored per second of video (``make video-eval`` measures the
            rule at this rate).
        video_max_samples: Most frames scored per clip; a longer clip is sampled more sparsely.
        video_quantile: The clip's score is this quantile of its frames' calibrated P(fake)
            (1.0 = the strongest frame). Set with ``video_threshold`` or not at all (a threshold
            is chosen for one quantile). None: the pair ``make video-eval`` chose for the served
            version on validation clips (version tags), else :data:`DEFAULT_VIDEO_QUANTILE` with
            the model's image threshold (never measured on clips: the service logs a warning).
        video_threshold: A clip is ``fake`` when its score reaches this (see ``video_quantile``).
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    home: Path = Path("var")
    store_url: str | None = None
    feature_dir: Path | None = None
    image_dir: Path | None = None
    image_retention_days: float = Field(default=30.0, ge=0)
    model_name: str = "deepfakenet"
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    max_pixels: int = Field(default=40_000_000, gt=0)
    max_comment_chars: int = Field(default=2000, gt=0)
    explain_layer: str = "layer4"
    feature_flush_rows: int = Field(default=256, gt=0)
    feature_flush_seconds: float = Field(default=5.0, gt=0)
    mlflow_tracking_uri: str | None = None
    registry_poll_seconds: float = Field(default=30.0, ge=0)
    admin_token: SecretStr | None = None
    max_batch_size: int = Field(default=32, ge=2)  # BentoML's batchable APIs need 2 or more
    max_latency_ms: int = Field(default=10_000, gt=0)
    request_read_timeout_s: float = Field(default=30.0, gt=0)
    client_key_salt: SecretStr | None = None
    feedback_token: SecretStr | None = None
    backend: BackendChoice = "auto"
    workers: int = Field(default=1, ge=1)
    threads: int | None = Field(default=None, ge=1)
    trust_anchors: Path | None = None
    max_video_bytes: int = Field(default=100 * 1024 * 1024, gt=0)
    max_video_seconds: float = Field(default=600.0, gt=0)
    max_video_frames: int = Field(default=20_000, gt=0)
    max_video_pixels: int = Field(default=3840 * 2160, gt=0)
    video_deadline_s: float = Field(default=30.0, gt=0)
    video_read_timeout_s: float = Field(default=90.0, gt=0)
    max_concurrent_videos: int = Field(default=2, ge=1)
    video_sample_fps: float = Field(default=2.0, gt=0)
    video_max_samples: int = Field(default=64, gt=0)
    video_quantile: float | None = Field(default=None, ge=0, le=1)
    video_threshold: float | None = Field(default=None, ge=0, le=1)

    @property
    def worker_count(self) -> int:
        """Worker processes (:attr:`workers`)."""
        return self.workers

    @property
    def backend_threads(self) -> int:
        """Intra-op threads per worker: :attr:`threads`, else the cores shared by the workers."""
        return self.threads or max(1, usable_cores() // self.worker_count)

    @model_validator(mode="after")
    def _video_rule_is_a_pair(self) -> ServiceSettings:
        """A clip threshold belongs to the quantile it was chosen for: both or neither."""
        if (self.video_quantile is None) != (self.video_threshold is None):
            raise ValueError(
                "set DEEPFAKENET_VIDEO_QUANTILE and DEEPFAKENET_VIDEO_THRESHOLD together (a "
                "threshold is chosen for one quantile), or neither (the version's own rule)"
            )
        return self

    @model_validator(mode="after")
    def _derive_paths(self) -> ServiceSettings:
        """Fill the store URL and folders from ``home`` unless set explicitly."""
        home = self.home.expanduser().resolve()
        object.__setattr__(self, "home", home)
        if self.store_url is None:
            object.__setattr__(self, "store_url", f"sqlite:///{home / 'store.db'}")
        if self.feature_dir is None:
            object.__setattr__(self, "feature_dir", home / "features")
        if self.image_dir is None:
            object.__setattr__(self, "image_dir", home / "images")
        return self


def usable_cores(cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota.

    A container limited to 2 CPUs on a 64-core node sees 64 cores in its affinity; sizing
    workers or threads by that would oversubscribe the quota 32 times.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores or 1, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 limit (or not Linux)
        pass
    return max(1, cores or 1)


#: Where ``make serve`` listens; the detector page's default service URL.
DEFAULT_SERVICE_URL = "http://127.0.0.1:3000"


class DashboardSettings(BaseSettings):
    """How the Streamlit pages reach the service, the registry, and who may see the admin page.

    The stores themselves are *not* configured here: the admin page reads them through
    :class:`ServiceSettings`, i.e. the same ``DEEPFAKENET_HOME`` / ``DEEPFAKENET_STORE_URL`` /
    ``DEEPFAKENET_FEATURE_DIR`` / ``DEEPFAKENET_IMAGE_DIR`` variables as the service, so the two
    can never disagree about where the records are.

    Attributes:
        service_url: Base URL of the BentoML service the detector page calls.
        service_timeout_s: Longest wait for one service call (Grad-CAM on a CPU takes seconds).
        admin_password: Password of the admin page. None (or empty) keeps the page closed: an
            unconfigured dashboard must not publish the feedback of every user.
        mlflow_tracking_uri: MLflow tracking + registry URI the admin page reads. Read from
            ``DEEPFAKENET_MLFLOW_TRACKING_URI``, else ``MLFLOW_TRACKING_URI``, else the local
            ``sqlite:///mlflow.db`` that ``make train`` writes (``conf/registry``).
        experiment_name: MLflow experiment of the training and retraining runs.
        model_name: Registered model name.
        admin_login_free_failures: Wrong admin passwords in a row one browser session may
            enter before it must wait (:class:`deepfakenet.security.LoginThrottle`).
        admin_login_global_free_failures: The same for all sessions of the process together.
        admin_login_delay_s: The first wait; it doubles with every further failure.
        admin_login_max_delay_s: The longest wait of one session.
        admin_login_global_max_delay_s: The longest process-wide wait: short, because anyone who
            can reach the page can fail on purpose and would otherwise lock the admin out.
        feedback_token: Bearer token sent with ``/feedback`` (the service's
            ``DEEPFAKENET_FEEDBACK_TOKEN``: one variable configures both sides).
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    service_url: str = DEFAULT_SERVICE_URL
    service_timeout_s: float = Field(default=120.0, gt=0)
    admin_password: SecretStr | None = None
    mlflow_tracking_uri: str = Field(
        default="sqlite:///mlflow.db",
        validation_alias=AliasChoices(f"{ENV_PREFIX}MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
    )
    experiment_name: str = "deepfakenet"
    model_name: str = "deepfakenet"
    admin_login_free_failures: int = Field(default=3, ge=0)
    admin_login_global_free_failures: int = Field(default=20, ge=0)
    admin_login_delay_s: float = Field(default=1.0, gt=0)
    admin_login_max_delay_s: float = Field(default=300.0, gt=0)
    admin_login_global_max_delay_s: float = Field(default=10.0, gt=0)
    feedback_token: SecretStr | None = None

    @property
    def admin_enabled(self) -> bool:
        """Whether an admin password is configured at all."""
        return bool(self.admin_password and self.admin_password.get_secret_value())

    def admin_password_matches(self, given: str) -> bool:
        """Check a password in constant time; always False when none is configured.

        ``hmac.compare_digest`` takes as long for a wrong first character as for a wrong last
        one, so response times do not leak the password. Bytes are compared so that a
        non-ASCII password works (``compare_digest`` refuses non-ASCII ``str``).
        """
        if not self.admin_enabled or self.admin_password is None:
            return False
        expected = self.admin_password.get_secret_value().encode("utf-8")
        return hmac.compare_digest(given.encode("utf-8"), expected)
