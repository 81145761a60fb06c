"""The model a long-running process serves, and how it follows the registry's champion.

A server holds one :class:`LoadedModel` at a time in a :class:`ModelHolder`. Swapping is a single
reference assignment, so a request that already took the old model finishes with it while new
requests get the new one: no restart, no failed request. :class:`ChampionWatcher` polls the MLflow
alias (or is triggered on demand) and swaps in a new champion when the alias moves.
"""

from __future__ import annotations

import copy
import logging
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from deepfakenet import registry
from deepfakenet.backends import Backend, load_backend
from deepfakenet.errors import RegistryError
from deepfakenet.models.net import DeepfakeNet
from deepfakenet.security import redact
from deepfakenet.store import utcnow

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

#: An object's address in its repr (`` at 0x7f3a...``).
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


@dataclass(frozen=True)
class LoadedModel:
    """A detector ready to serve, with what clients should know about it.

    Attributes:
        net: The network: its calibration (temperature, offset, threshold) is applied to the
            logits of whichever backend scores, and the torch backend runs it.
        backend: What computes the logits and features of a batch (torch, ONNX fp32 or int8;
            :mod:`deepfakenet.backends`).
        backend_info: Which backend was asked for, which serves, its int8 parity and why it
            fell back, if it did (shown in ``GET /model``).
        explain_net: A private copy for Grad-CAM: Captum registers hooks on the module it
            explains, which must not fire inside a concurrent scoring batch.
        labels: ``model_name``, ``model_version``, ``run_id``, ``data_version``, ``alias``.
        source: Where it was loaded from (a BentoML tag or a ``models:/`` URI).
        loaded_at: When this process loaded it.
        explain_lock: Serialises Grad-CAM calls on ``explain_net``.
    """

    net: DeepfakeNet
    backend: Backend
    backend_info: dict[str, object]
    explain_net: DeepfakeNet
    labels: dict[str, str]
    source: str
    loaded_at: datetime = field(default_factory=utcnow)
    explain_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def wrap(
        cls,
        net: DeepfakeNet,
        labels: dict[str, str],
        source: str,
        model_dir: str | Path | None = None,
        backend: str = "auto",
        threads: int | None = None,
    ) -> LoadedModel:
        """Put a freshly loaded network into service (eval mode, frozen, explain copy made).

        Args:
            net: The registered network.
            labels: See :attr:`labels`.
            source: See :attr:`source`.
            model_dir: Its MLflow model folder, where the ONNX artifacts of the version are
                (None: torch only).
            backend: ``auto``, ``torch``, ``onnx`` or ``onnx-int8`` (see
                :func:`deepfakenet.backends.load_backend`).
            threads: Intra-op threads of the backend (None: the library's default).
        """
        net = net.eval().requires_grad_(False)
        scorer, info = load_backend(model_dir, net, backend, threads)
        return cls(
            net=net,
            backend=scorer,
            backend_info=info,
            explain_net=copy.deepcopy(net),
            labels=dict(labels),
            source=source,
        )

    @property
    def version(self) -> str:
        """The registered model version, e.g. ``"3"``."""
        return self.labels.get("model_version", "unknown")

    def info(self) -> dict[str, object]:
        """A JSON-able description (``GET /model``)."""
        return {
            **self.labels,
            "source": self.source,
            "loaded_at": self.loaded_at.isoformat(),
            "input_size": self.net.crop_size,
            "threshold": float(self.net.threshold),
            "temperature": float(self.net.temperature),
            "logit_bias": float(self.net.logit_bias),
            **self.backend_info,
        }


class ModelHolder:
    """The current model of a process; :meth:`swap` replaces it atomically."""

    def __init__(self, model: LoadedModel) -> None:
        self._model = model
        self._lock = threading.Lock()

    @property
    def current(self) -> LoadedModel:
        """The model new requests should use (take it once per request)."""
        return self._model

    def swap(self, model: LoadedModel) -> LoadedModel:
        """Serve ``model`` from now on; return the one it replaced."""
        with self._lock:
            old, self._model = self._model, model
        log.info(
            "now serving %s version %s (was %s)",
            model.labels.get("model_name"),
            model.version,
            old.version,
        )
        return old


class ChampionWatcher:
    """Follows a registry alias and swaps the holder's model when the alias moves.

    Args:
        holder: The process's model holder.
        tracking_uri: MLflow tracking/registry URI.
        model_name: Registered model name.
        alias: The alias to follow.
        interval_s: Poll interval; ``0`` means only :meth:`check` on demand.
        backend: The backend setting new versions are served with.
        threads: Intra-op threads of that backend.
    """

    def __init__(
        self,
        holder: ModelHolder,
        tracking_uri: str,
        model_name: str,
        alias: str = registry.CHAMPION,
        interval_s: float = 0.0,
        backend: str = "auto",
        threads: int | None = None,
    ) -> None:
        self.holder = holder
        self.backend = backend
        self.threads = threads
        self.model_name = model_name
        self.alias = alias
        self.interval_s = interval_s
        self.tracking_uri = tracking_uri
        self.client = registry.use(registry.RegistryConfig(tracking_uri=tracking_uri))
        self._check_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: The folder of the version this watcher downloaded last (deleted when replaced).
        self._downloaded: Path | None = None
        #: The error of the current streak of failed polls (None while checks succeed).
        self.last_error: str | None = None
        #: Since when the registry has not answered (None while it answers, or when it has not
        #: been asked yet). Set and cleared by every :meth:`check`, polled or ``/admin/reload``,
        #: as soon as the registry's answer is in: a missing alias is an answer, a model that
        #: fails to load is not the registry's failure.
        self.failing_since: datetime | None = None

    def check(self) -> bool:
        """Load and swap in the alias's version if it is not the one served; True if swapped.

        Once :meth:`stop` has been called it does nothing (False).

        The current model keeps serving whatever goes wrong: the swap is the last step.

        Raises:
            RegistryError: The alias (or the model) does not exist.
            MlflowException: The registry could not be read (a tracking server's 5xx, a
                timeout): an outage is not "no champion", and is reported as what it is.
        """
        with self._check_lock:
            if self._stop.is_set():
                return False
            version = self._resolve()
            if str(version.version) == self.holder.current.version:
                return False
            uri = registry.model_uri(self.model_name, version.version)
            log.info(
                "%s@%s moved to version %s: loading %s",
                self.model_name,
                self.alias,
                version.version,
                uri,
            )
            folder = Path(tempfile.mkdtemp(prefix="deepfakenet-model-"))
            try:
                model_dir, _ = registry.download_model(self.model_name, version.version, folder)
                net = registry.load_net_from_dir(model_dir)
                labels = registry.version_labels(version, alias=self.alias)
                model = LoadedModel.wrap(net, labels, uri, model_dir, self.backend, self.threads)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            self.holder.swap(model)
            # Everything of the old version is in memory (weights, ONNX Runtime sessions): its
            # download can go, so a server promoted a hundred times keeps one copy on disk.
            if self._downloaded is not None:
                shutil.rmtree(self._downloaded, ignore_errors=True)
            self._downloaded = folder
            return True

    def start(self) -> None:
        """Poll in a daemon thread (no-op when the interval is 0)."""
        if self.interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="champion-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and delete the downloaded model folder (at shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._check_lock:  # after a check still in flight, which then swaps no more
            if self._downloaded is not None:  # the served model is in memory
                shutil.rmtree(self._downloaded, ignore_errors=True)
                self._downloaded = None

    def _resolve(self) -> ModelVersion:
        """The alias's version, recording whether the registry answered (:attr:`failing_since`)."""
        try:
            version = registry.resolve_version(self.client, self.model_name, self.alias)
        except RegistryError:  # "no such alias" is an answer
            self._registry_answered()
            raise
        except Exception:
            if self.failing_since is None:
                self.failing_since = utcnow()
            raise
        self._registry_answered()
        return version

    def _registry_answered(self) -> None:
        if self.failing_since is not None:  # as loud as the failure: its reader sees the end
            log.warning(
                "the registry answers again for %s@%s (failing since %s)",
                self.model_name,
                self.alias,
                self.failing_since.isoformat(),
            )
            self.failing_since = None

    def poll(self) -> bool:
        """One :meth:`check` that never raises; True if it swapped.

        A registry that is down for an hour must not write a traceback every poll interval:
        the first failure of a streak is logged (with its traceback, unless it is an expected
        refusal such as a missing alias), later ones only when the error changes.
        :attr:`last_error` holds the current streak's error (None while checks succeed),
        passwords redacted; :attr:`failing_since` says whether the registry itself answers.
        The current model keeps serving.
        """
        try:
            swapped = self.check()
        except Exception as err:  # a registry outage must not kill the server; retry next tick
            # Object addresses ("<HTTPConnection object at 0x7f...>" in a refused connection's
            # message) differ at every poll: without them, one outage is one message.
            message = _ADDRESS.sub("", redact(f"{type(err).__name__}: {err}", self.tracking_uri))
            if self.last_error is None:
                log.error(
                    "checking %s@%s failed; still serving version %s: %s",
                    self.model_name,
                    self.alias,
                    self.holder.current.version,
                    message,
                    exc_info=not isinstance(err, RegistryError),
                )
            elif message != self.last_error:
                log.warning("checking %s@%s still fails: %s", self.model_name, self.alias, message)
            self.last_error = message
            return False
        self.last_error = None
        return swapped

    def _run(self) -> None:
        """Poll (:meth:`poll`) every ``interval_s`` until stopped."""
        while not self._stop.wait(self.interval_s):
            self.poll()
