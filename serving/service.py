"""The DeepFakeNet HTTP service: predict, Grad-CAM explain, feature export and feedback.

``bentoml serve serving.service:DeepfakeDetector`` (or ``make serve``). Settings come from
``DEEPFAKENET_*`` environment variables (:class:`deepfakenet.settings.ServiceSettings`).

Request flow: the upload guard (:mod:`serving.guard`) reads and checks every public request
first (size, read timeout, multipart shape, bearer token) and gives every error one body,
``{"error": "<reason>"}``. The upload (multipart field ``image``) is read as raw bytes, decoded
by the one safe decoder (:mod:`deepfakenet.imaging`) and cropped by the first half of the one
preprocessing function; the uint8 crop goes to :meth:`DeepfakeDetector.infer`, a batchable API
that only the service's own in-process client may call (404 from the network): BentoML's
adaptive batcher merges concurrent requests into one forward pass, which normalises the batch
and runs it on the configured backend (:mod:`serving.scoring`, :mod:`deepfakenet.backends`:
torch, ONNX fp32 or ONNX int8, calibration applied to the logits by one code path). The handler
then waits for its prediction record to be group-committed with those of concurrent requests;
feature rows and the archived image are written by background threads
(:mod:`deepfakenet.recording`, which documents the crash windows). Grad-CAM runs unbatched on a
private torch copy of the network.

Workers and threads come from ``DEEPFAKENET_WORKERS`` / ``DEEPFAKENET_THREADS``: a bigger
machine runs more workers without a code change (each loads the model and batches on its own).

Serve with ``--timeout-graceful-shutdown`` (``make serve`` passes it): uvicorn otherwise waits
without limit on SIGTERM for requests still open.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import aiohttp
import bentoml
import numpy as np
from bentoml.exceptions import ServiceUnavailable
from bentoml.mlflow import MLFLOW_MODEL_FOLDER
from fastapi import FastAPI, Header, HTTPException
from mlflow.exceptions import MlflowException
from pydantic import Field

from deepfakenet.errors import (
    InvalidFeedbackError,
    InvalidImageError,
    NotFoundError,
    RegistryError,
)
from deepfakenet.imaging import DecodeLimits, decode_image
from deepfakenet.provenance import Provenance, ProvenanceReader
from deepfakenet.settings import DEFAULT_VIDEO_QUANTILE, ServiceSettings
from deepfakenet.video import (
    SampledVideo,
    VideoLimits,
    check_upload,
    clip_score,
    sample_frames,
    served_rule,
)
from serving.clients import AccessLogPseudonymiser, ClientKeyer, load_or_create_salt
from serving.errors import client_error, client_host
from serving.guard import UploadGuard
from serving.openapi import document_service
from serving.schemas import (
    ExplanationOut,
    FeaturesOut,
    FeedbackOut,
    FramePoint,
    ModelOut,
    PredictionOut,
    ProvenanceOut,
    ScoreItem,
    ScoreResult,
    StrongestFrame,
    VideoPredictionOut,
)

with bentoml.importing():
    import torch

    from deepfakenet import registry
    from deepfakenet.explain import grad_cam, overlay, png_bytes, resolve_layer
    from deepfakenet.features import FeatureWriter
    from deepfakenet.inference import scores_from_outputs
    from deepfakenet.labels import LABELS
    from deepfakenet.preprocessing import PilCenterCrop, crop, denormalize, normalize
    from deepfakenet.recording import Recorder
    from deepfakenet.runtime import ChampionWatcher, LoadedModel, ModelHolder
    from deepfakenet.store import (
        VIDEO_ENDPOINT,
        ImageArchive,
        PredictionRecord,
        Store,
        new_id,
        utcnow,
    )
    from serving.scoring import score_items

log = logging.getLogger("deepfakenet.service")

SETTINGS = ServiceSettings()
# Uvicorn rewrites the client address from X-Forwarded-For for peers listed in its
# FORWARDED_ALLOW_IPS, which defaults to loopback: any local client could then pick the address
# the client keys are made of. Trust no proxy unless the operator lists them (read by
# uvicorn.Config, which BentoML's worker builds after importing this module).
os.environ.setdefault("FORWARDED_ALLOW_IPS", "")
#: Tries of the internal batched call before a request fails (see ``_infer_one``).
INFER_ATTEMPTS = 3
#: Longest wait of /explain's thread for its record's commit (the traffic timeout is 120 s).
RECORD_TIMEOUT_S = 60.0

# -------------------------------------------------------------------------------- service

# FastAPI's own /openapi.json, /docs and /redoc would be a second, untrue document (BentoML's
# /docs.json, corrected by the guard, is the one): off.
admin_app = FastAPI(
    title="DeepFakeNet model and admin routes", openapi_url=None, docs_url=None, redoc_url=None
)


@bentoml.service(
    name="deepfakenet",
    # No max_concurrency: each public request makes a second, internal call to `infer`, which
    # would compete for the same slots (429s under load). Overload answers 503 from the batcher
    # when requests wait longer than max_latency_ms.
    traffic={"timeout": 120},
    resources={"cpu": str(SETTINGS.worker_count * SETTINGS.backend_threads)},
    workers=SETTINGS.worker_count,
)
@bentoml.asgi_app(admin_app, path="/")
class DeepfakeDetector:
    """ResNet18 deepfake detector with Grad-CAM, feature export and a feedback store."""

    bento_model = bentoml.models.BentoModel(f"{SETTINGS.model_name}:latest")

    def __init__(self) -> None:
        self.settings = SETTINGS
        labels = dict(self.bento_model.info.labels)
        model_dir = self.bento_model.path_of(MLFLOW_MODEL_FOLDER)
        net = registry.load_net_from_dir(model_dir)
        resolve_layer(net, SETTINGS.explain_layer)  # a misconfigured layer fails here, not per call
        threads = SETTINGS.backend_threads
        torch.set_num_threads(threads)  # the torch backend and Grad-CAM
        self.models = ModelHolder(
            LoadedModel.wrap(
                net, labels, str(self.bento_model.tag), model_dir, SETTINGS.backend, threads
            )
        )
        # Grad-CAM is serialised (one private network); its own thread keeps queued /explain calls
        # from taking the worker threads /predict needs.
        self.explain_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="explain")
        self.limits = DecodeLimits(SETTINGS.max_upload_bytes, SETTINGS.max_pixels)
        # Read once here: a missing or broken PEM bundle stops the start, not every request.
        self.provenance = ProvenanceReader(SETTINGS.trust_anchors)
        self.video_limits = VideoLimits.from_settings(SETTINGS)
        # One clip decodes at a time (FFmpeg's own threads use the cores); the upload guard
        # admits at most DEEPFAKENET_MAX_CONCURRENT_VIDEOS per worker and answers 503 to more,
        # so the line here is short: each waits at most a few decode deadlines.
        self.video_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="video")
        self.store = Store(SETTINGS.store_url)
        self.archive = ImageArchive(SETTINGS.image_dir)
        self.feature_writer = FeatureWriter(
            SETTINGS.feature_dir, SETTINGS.feature_flush_rows, SETTINGS.feature_flush_seconds
        )
        self.recorder = Recorder(
            self.store,
            self.feature_writer,
            self.archive,
            max_pending_pixels=SETTINGS.max_pixels,  # one largest upload, or many small ones
        )
        salt = (
            SETTINGS.client_key_salt.get_secret_value().encode("utf-8")
            if SETTINGS.client_key_salt
            else load_or_create_salt(SETTINGS.home / "client_key.salt")
        )
        self.client_keys = ClientKeyer(salt)
        logging.getLogger("bentoml.access").addFilter(AccessLogPseudonymiser(self.client_keys))
        self.watcher: ChampionWatcher | None = None
        if SETTINGS.mlflow_tracking_uri:
            # With MLflow's own retries the start-up check, a poll and /admin/reload would hang
            # for minutes while a tracking server is down; the watcher polls again anyway.
            registry.fail_fast_http_calls()
            self.watcher = ChampionWatcher(
                self.models,
                SETTINGS.mlflow_tracking_uri,
                labels.get("model_name", SETTINGS.model_name),
                interval_s=SETTINGS.registry_poll_seconds,
                backend=SETTINGS.backend,
                threads=threads,
            )
            # The BentoML store may hold an older model than the registry's champion; a registry
            # that does not answer is logged and reported at /model, and the imported model serves.
            self.watcher.poll()
            self.watcher.start()
        log.info(
            "serving %s on %s; store %s",
            self.models.current.labels,
            self.models.current.backend_info,
            self.store.safe_url,
        )

    @bentoml.on_startup
    def purge_expired_images(self) -> None:
        """Drop archived images that got no feedback within the retention period."""
        self.archive.purge(
            timedelta(days=SETTINGS.image_retention_days), keep=self.store.shas_with_feedback()
        )

    @bentoml.on_shutdown
    def close(self) -> None:
        """Write queued records, images and feature rows, and release connections."""
        if self.watcher is not None:
            self.watcher.stop()
        self.explain_pool.shutdown(wait=True)
        self.video_pool.shutdown(wait=True)
        self.recorder.close()
        self.feature_writer.close()
        self.store.close()

    # ------------------------------------------------------------------ batched inference

    @bentoml.api(
        batchable=True,
        max_batch_size=SETTINGS.max_batch_size,
        max_latency_ms=SETTINGS.max_latency_ms,
    )
    def infer(self, items: list[ScoreItem]) -> list[ScoreResult]:
        """Score uint8 crops in one forward pass (the adaptive batcher merges calls).

        Internal: the public routes call it through BentoML's in-process client; the upload
        guard answers 404 to anyone else. Items are validated one by one (base64 included)
        before batching (see :func:`serving.scoring.score_items`).
        """
        return score_items(self.models.current, items)

    # ------------------------------------------------------------------ public routes

    @bentoml.api(route="/predict")
    async def predict(self, image: Path, ctx: bentoml.Context) -> PredictionOut:
        """Score one image: is it real or fake, and how likely fake (calibrated)."""
        pred_id, result, _, provenance = await self._score(image, "predict", self._client_key(ctx))
        return PredictionOut(
            prediction_id=pred_id,
            label=result.label,  # type: ignore[arg-type]
            prob_fake=result.prob_fake,
            model_version=result.model_version,
            provenance=_provenance_out(provenance, result.label),
        )

    @bentoml.api(route="/features")
    async def features(self, image: Path, ctx: bentoml.Context) -> FeaturesOut:
        """The 512-d penultimate-layer vector of one image (also stored, anonymised)."""
        pred_id, result, vector, _ = await self._score(image, "features", self._client_key(ctx))
        return FeaturesOut(
            prediction_id=pred_id, features=vector.tolist(), model_version=result.model_version
        )

    @bentoml.api(route="/explain")
    async def explain(
        self,
        image: Path,
        ctx: bentoml.Context,
        target: Annotated[
            Literal["predicted", "real", "fake"],
            Field(description="Class to explain; 'predicted' explains the model's decision."),
        ] = "predicted",
    ) -> ExplanationOut:
        """Score one image and show where the model looked (Grad-CAM on the last conv block)."""
        loop = asyncio.get_running_loop()
        client_key = self._client_key(ctx)
        return await loop.run_in_executor(
            self.explain_pool, self._explain, image, target, client_key
        )

    @bentoml.api(route="/predict_video")
    async def predict_video(self, video: Path, ctx: bentoml.Context) -> VideoPredictionOut:
        """Score a clip: a verdict, the per-frame timeline, and where the strongest frame looks.

        Frames are sampled at ``DEEPFAKENET_VIDEO_SAMPLE_FPS`` from a decode bounded in bytes,
        duration, frames, resolution and time (:mod:`deepfakenet.video`), cropped by the one
        preprocessing function and scored by the same batched scorer as images. The clip's
        score is the ``DEEPFAKENET_VIDEO_QUANTILE`` quantile of its frames' calibrated P(fake),
        judged at ``DEEPFAKENET_VIDEO_THRESHOLD``; unset, both come from the rule ``make
        video-eval`` chose for the served version (:func:`video_rule`). One record per clip,
        with the strongest frame's feature vector; that frame's crop is archived (the admin page
        shows it). Feedback on a clip is stored but never labels an image for retraining
        (:func:`deepfakenet.store.collect_labels`).
        """
        client_key = self._client_key(ctx)
        loop = asyncio.get_running_loop()
        model = self.models.current
        meta, provenance, sampled, crops = await loop.run_in_executor(
            self.video_pool, self._prepare_video, video, model
        )
        results = await self._infer([ScoreItem.from_crop(c) for c in crops])
        if any(r.model_version != model.version for r in results):
            # The champion changed while the frames were scored: the rule, the Grad-CAM and
            # the frames must all be one model's.
            raise ServiceUnavailable("the model changed while the clip was scored: send it again")
        probs = np.array([r.prob_fake for r in results])
        quantile, threshold = video_rule(model)
        score = clip_score(probs, quantile)
        label = LABELS[int(score >= threshold)]
        strongest = int(np.argmax(probs))
        heatmap = await loop.run_in_executor(
            self.explain_pool, self._heatmap, model, crops[strongest], LABELS.index("fake")
        )
        # The archive may wait for room (back-pressure): off the event loop.
        await asyncio.to_thread(self.recorder.archive, meta["sha256"], sampled.frames[strongest])
        vector = np.frombuffer(base64.b64decode(results[strongest].features), dtype=np.float32)
        clip = ScoreResult(
            prob_fake=score,
            label=label,
            threshold=threshold,
            model_version=results[strongest].model_version,
            features="",
        )
        committed = self._record(VIDEO_ENDPOINT, meta, clip, vector, client_key, provenance)
        pred_id = await asyncio.wrap_future(committed)
        times = sampled.times
        return VideoPredictionOut(
            prediction_id=pred_id,
            label=label,  # type: ignore[arg-type]
            prob_fake=score,
            threshold=threshold,
            quantile=quantile,
            model_version=clip.model_version,
            duration_s=sampled.duration_s,
            width=sampled.width,
            height=sampled.height,
            sampled_fps=1.0 / sampled.sample_interval_s,
            frames=[FramePoint(t=t, prob_fake=float(p)) for t, p in zip(times, probs, strict=True)],
            strongest=StrongestFrame(
                index=strongest,
                t=times[strongest],
                prob_fake=float(probs[strongest]),
                heatmap_png=heatmap,
            ),
            provenance=_provenance_out(provenance, label),
        )

    @bentoml.api(route="/feedback")
    async def feedback(
        self,
        prediction_id: Annotated[
            str,
            Field(description="From a /predict or /explain answer.", pattern=r"^[0-9a-f]{32}$"),
        ],
        label: Annotated[Literal["real", "fake"], Field(description="The true label.")],
        comment: Annotated[
            str | None,
            Field(
                description="Free text, optional; no NUL characters (a text column refuses them).",
                max_length=SETTINGS.max_comment_chars,
                # Said in the document, so a schema-valid comment is never refused later (the
                # store checks it too, for callers that skip this route).
                pattern=r"^[^\x00]*$",
            ),
        ] = None,
    ) -> FeedbackOut:
        """Confirm or correct a prediction; stored durably for the retraining loop.

        A later vote on the same prediction replaces the earlier one. With
        ``DEEPFAKENET_FEEDBACK_TOKEN`` set, the route requires ``Authorization: Bearer <token>``
        (checked by the upload guard, before the body is read).
        """
        try:
            feedback_id = await asyncio.to_thread(
                self.store.add_feedback,
                prediction_id,
                label,
                comment,
                SETTINGS.max_comment_chars,
            )
        except (InvalidFeedbackError, NotFoundError) as err:
            raise client_error(err) from err
        return FeedbackOut(feedback_id=feedback_id)

    @admin_app.get("/model", response_model=ModelOut)
    def model_info(self) -> ModelOut:
        """The model being served: registry version, alias, run, data version, input size.

        ``registry`` says whether the champion watcher reaches the registry: ``off`` (no
        DEEPFAKENET_MLFLOW_TRACKING_URI), ``ok``, or ``failing`` since ``registry_failing_since``
        (the model served stays; the service log has the error).
        """
        return self._model_out()

    @admin_app.post("/admin/reload", response_model=ModelOut)
    def reload_model(self, authorization: Annotated[str | None, Header()] = None) -> ModelOut:
        """Load the registry's current champion now (bearer token from DEEPFAKENET_ADMIN_TOKEN)."""
        token = SETTINGS.admin_token.get_secret_value() if SETTINGS.admin_token else ""
        if not token or self.watcher is None:
            raise HTTPException(404, "reloading is not enabled on this server")
        given = (authorization or "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, f"Bearer {token}".encode()):
            raise HTTPException(401, "a valid admin bearer token is required")
        try:
            self.watcher.check()
        except (RegistryError, MlflowException) as err:
            raise HTTPException(409, str(err)) from err
        return self._model_out()

    # ------------------------------------------------------------------ helpers

    def _model_out(self) -> ModelOut:
        """``GET /model``: the current model and whether the registry answers the watcher."""
        watcher = self.watcher
        failing_since = None if watcher is None else watcher.failing_since
        registry_state = "off" if watcher is None else "ok" if failing_since is None else "failing"
        return ModelOut(
            **self.models.current.info(),  # type: ignore[arg-type]
            registry=registry_state,
            registry_failing_since=failing_since and failing_since.isoformat(),
        )

    def _prepare(self, path: Path, model: LoadedModel) -> tuple[torch.Tensor, dict, Provenance]:
        """Read provenance, decode and crop an upload, queue it for the archive; 4xx for bad input.

        The C2PA manifest is read from the raw bytes before decoding: the decoder keeps pixels
        only, and a manifest binds the bytes as sent.

        Returns:
            The uint8 evaluation crop, the record's image fields and the upload's provenance.
        """
        data = path.read_bytes()  # BentoML's own temporary file: a failure here is ours (500)
        provenance = self.provenance.read(data)
        try:
            decoded = decode_image(data, self.limits)
        except InvalidImageError as err:
            raise client_error(err) from err
        sha = hashlib.sha256(data).hexdigest()
        self.recorder.archive(sha, decoded.image)
        pixels = crop([decoded.image], model.net.crop_size)[0]
        meta = {
            "sha256": sha,
            "width": decoded.width,
            "height": decoded.height,
            "format": decoded.format,
        }
        return pixels, meta, provenance

    def _prepare_video(
        self, path: Path, model: LoadedModel
    ) -> tuple[dict, Provenance, SampledVideo, torch.Tensor]:
        """Check a clip, read its provenance, sample its frames within the limits, crop them.

        The cheap checks (bytes, container) come first, so a 100 MB upload of garbage costs no
        manifest read. 4xx for bad input.

        Returns:
            The record's fields, the provenance, the sampled frames and their uint8 crops.
        """
        data = path.read_bytes()
        try:
            check_upload(data, self.video_limits)
            provenance = self.provenance.read(data)
            # Only the model's centre crop of each sampled frame is kept (memory stays small).
            sampled = sample_frames(
                data, self.video_limits, keep=PilCenterCrop(model.net.crop_size)
            )
        except InvalidImageError as err:  # InvalidVideoError and its 413 subclass
            raise client_error(err) from err
        meta = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "width": sampled.width,
            "height": sampled.height,
            "format": sampled.container[:16],
        }
        return meta, provenance, sampled, crop(sampled.frames, model.net.crop_size)

    def _client_key(self, ctx: bentoml.Context) -> str | None:
        """The requesting client's pseudonymous key (never its address)."""
        return self.client_keys.key(client_host(ctx))

    def _record(
        self,
        endpoint: str,
        meta: dict,
        result: ScoreResult,
        vector: np.ndarray,
        client_key: str | None,
        provenance: Provenance,
    ) -> Future[str]:
        """Queue the prediction record and its feature row; the future resolves to its id.

        It resolves once the record is committed (:class:`deepfakenet.recording.Recorder`), so
        an id a client is given can be used for feedback at once.
        """
        record = PredictionRecord(
            id=new_id(),
            created_at=utcnow(),
            endpoint=endpoint,
            model_name=self.models.current.labels.get("model_name", SETTINGS.model_name),
            model_version=result.model_version,
            prob_fake=result.prob_fake,
            label=result.label,
            threshold=result.threshold,
            client_key=client_key,
            provenance=_stored_provenance(provenance, result.label),
            **meta,
        )
        return self.recorder.record(record, vector)

    async def _infer(self, items: list[ScoreItem]) -> list[ScoreResult]:
        """Many items (a clip's frames) through ``infer``, in chunks of the largest batch."""
        size = SETTINGS.max_batch_size
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        answers = await asyncio.gather(*(self._infer_one(chunk) for chunk in chunks))
        return [ScoreResult.model_validate(r) for answer in answers for r in answer]

    async def _infer_one(self, item: ScoreItem | list[ScoreItem]) -> Any:
        """Item(s) through the batchable ``infer`` API (so concurrent requests share a batch).

        BentoML 1.4.40 routes this self-call through an in-process HTTP client that it replaces
        every 100 requests (or 300 s) by closing the old session, which aborts the calls still in
        flight on it ("Server disconnected": measured as 55 of 600 requests failing at 16
        concurrent clients). ``infer`` has no side effects, so a dropped call is sent again.
        """
        items = item if isinstance(item, list) else [item]
        for attempt in range(1, INFER_ATTEMPTS + 1):
            try:
                results = await self.to_async.infer(items)  # type: ignore[attr-defined]
                return results if isinstance(item, list) else results[0]
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as err:
                if attempt == INFER_ATTEMPTS:
                    raise
                log.info("internal infer call dropped (%s); retrying", err)
        raise AssertionError("unreachable")

    async def _score(
        self, image: Path, endpoint: str, client_key: str | None
    ) -> tuple[str, ScoreResult, np.ndarray, Provenance]:
        """Score through the batcher and record it: id, result, feature vector, provenance."""
        model = self.models.current
        pixels, meta, provenance = await asyncio.to_thread(self._prepare, image, model)
        result = ScoreResult.model_validate(await self._infer_one(ScoreItem.from_crop(pixels)))
        vector = np.frombuffer(base64.b64decode(result.features), dtype=np.float32)
        committed = self._record(endpoint, meta, result, vector, client_key, provenance)
        pred_id = await asyncio.wrap_future(committed)
        return pred_id, result, vector, provenance

    def _grad_cam(self, model: LoadedModel, batch: torch.Tensor, wanted: int) -> tuple[str, Any]:
        """Grad-CAM of class ``wanted`` for one normalised crop: base64 PNG overlay, the CAM."""
        with model.explain_lock:
            cam = grad_cam(model.explain_net, batch, SETTINGS.explain_layer, target=wanted)
        pixels_01 = denormalize(batch)[0].permute(1, 2, 0).numpy()
        heat = overlay(pixels_01, cam.upsampled[0].numpy())
        return base64.b64encode(png_bytes(heat)).decode("ascii"), cam

    def _heatmap(self, model: LoadedModel, pixels: torch.Tensor, wanted: int) -> str:
        """The base64 PNG Grad-CAM overlay of one uint8 crop (a clip's strongest frame)."""
        return self._grad_cam(model, normalize(pixels[None]), wanted)[0]

    def _explain(self, image: Path, target: str, client_key: str | None) -> ExplanationOut:
        model = self.models.current
        pixels, meta, provenance = self._prepare(image, model)
        batch = normalize(pixels[None])
        # Scored by the serving backend, as /predict scores it; only the CAM needs torch.
        logits, vectors = model.backend.run(batch.numpy())
        scores = scores_from_outputs(model.net, torch.from_numpy(logits), torch.from_numpy(vectors))
        wanted = LABELS.index(scores.labels[0] if target == "predicted" else target)
        heatmap, cam = self._grad_cam(model, batch, wanted)
        result = ScoreResult(
            prob_fake=float(scores.prob_fake[0]),
            label=scores.labels[0],
            threshold=float(model.net.threshold),
            model_version=model.version,
            features="",
        )
        pred_id = self._record(
            "explain", meta, result, scores.features[0].numpy(), client_key, provenance
        ).result(timeout=RECORD_TIMEOUT_S)
        return ExplanationOut(
            prediction_id=pred_id,
            label=result.label,  # type: ignore[arg-type]
            prob_fake=result.prob_fake,
            model_version=result.model_version,
            target=LABELS[wanted],  # type: ignore[arg-type]
            provenance=_provenance_out(provenance, result.label),
            heatmap_png=heatmap,
            cam=cam.cams[0].tolist(),
            layer=SETTINGS.explain_layer,
        )


def video_rule(model: LoadedModel) -> tuple[float, float]:
    """The clip rule ``(quantile, threshold)`` for ``model``.

    The settings' pair, else the version's own, else the image threshold with a warning
    (:func:`deepfakenet.video.served_rule`).
    """
    override = (
        (SETTINGS.video_quantile, SETTINGS.video_threshold)
        if SETTINGS.video_quantile is not None and SETTINGS.video_threshold is not None
        else None
    )
    quantile, threshold, measured = served_rule(
        model.labels, float(model.net.threshold), override, DEFAULT_VIDEO_QUANTILE
    )
    if not measured and model.version not in _UNMEASURED_WARNED:
        _UNMEASURED_WARNED.add(model.version)
        log.warning(
            "model version %s has no video rule (run `make video-eval REF=%s`): clips are judged "
            "at quantile %g and its image threshold, never measured on clips",
            model.version,
            model.version,
            quantile,
        )
    return quantile, threshold


#: Versions already warned about for having no measured video rule.
_UNMEASURED_WARNED: set[str] = set()


def _provenance_out(provenance: Provenance, label: str) -> ProvenanceOut:
    """The provenance as answered, with its (dis)agreement with ``label``."""
    return ProvenanceOut(**provenance.to_dict(), disagrees=provenance.disagrees_with(label))


def _stored_provenance(provenance: Provenance, label: str) -> str | None:
    """What the prediction record keeps of the provenance (JSON), None without a manifest.

    The signer only when trusted: an untrusted certificate's name may be a person's, and the
    records outlive the archived images.
    """
    if not provenance.manifest_present:
        return None
    stored = _provenance_out(provenance, label).model_dump()
    if stored["validation_state"] != "Trusted":
        stored["signer"] = None
    return json.dumps(stored)


#: The batch route: reachable only by the service's own in-process client.
INTERNAL_ROUTES = frozenset({"/infer"})
#: Routes that require a bearer token, and the token.
BEARER_TOKENS = (
    {"/feedback": SETTINGS.feedback_token.get_secret_value()} if SETTINGS.feedback_token else {}
)


def _openapi() -> dict[str, Any]:
    """BentoML's OpenAPI document of this service, corrected (see :mod:`serving.openapi`)."""
    return document_service(
        DeepfakeDetector.openapi_spec.asdict(),
        internal_routes=INTERNAL_ROUTES,
        bearer_routes=BEARER_TOKENS,
    )


DeepfakeDetector.add_asgi_middleware(
    UploadGuard,
    max_bytes=SETTINGS.max_upload_bytes + 65536,  # room for the multipart envelope
    routes={"/predict": set(), "/features": set(), "/explain": {"target"}, "/predict_video": set()},
    file_fields={"/predict_video": "video"},
    byte_limits={"/predict_video": SETTINGS.max_video_bytes + 65536},
    read_timeouts={"/predict_video": SETTINGS.video_read_timeout_s},
    max_concurrent={"/predict_video": SETTINGS.max_concurrent_videos},
    # A comment of max_comment_chars characters, each \u-escaped as a surrogate pair (12 bytes
    # of JSON), plus room for the other fields: a valid body is never refused for its size.
    json_routes={"/feedback": 12 * SETTINGS.max_comment_chars + 4096},
    read_timeout_s=SETTINGS.request_read_timeout_s,
    internal_routes=INTERNAL_ROUTES,
    bearer_tokens=BEARER_TOKENS,
    openapi=_openapi,
)
