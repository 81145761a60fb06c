"""C2PA content credentials of uploads: read and verified on the raw bytes, before decoding.

A manifest is evidence beside the pixel model's verdict, never a part of it: a generator can
sign its output as ``trainedAlgorithmicMedia``, a camera its photo as ``digitalCapture``, and
anyone can strip a manifest. So :class:`ProvenanceReader` reports what the upload declares and
how far the declaration holds (``validation_state``), and :meth:`Provenance.disagrees_with`
says when it contradicts the verdict; what to make of it is the reader's call.

Validation states (c2pa-rs): ``Invalid`` (the manifest is broken, the pixels or the manifest
were changed after signing, or the signature does not verify), ``Valid`` (intact and signed,
by a signer outside the configured trust anchors: anyone can make such a certificate) and
``Trusted`` (also chained to a trust anchor). Without anchors nothing is ever ``Trusted``.

Everything runs offline: remote manifests and OCSP are never fetched, so a hostile upload
cannot make the service open a connection. Most uploads carry no manifest: c2pa finds that out
by walking the container's segments (under 0.5 ms for a 200 KB JPEG).
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import re
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import c2pa

from deepfakenet.errors import ConfigError

log = logging.getLogger(__name__)

ValidationState = Literal["Valid", "Trusted", "Invalid"]

#: Our failure code for a manifest that is there but cannot be parsed (garbled JUMBF, a
#: truncated manifest): reported with ``c2pa.error.<Kind>``, the native library's error class.
UNREADABLE = "manifest.unreadable"
#: Our failure code for a manifest read with a validation state c2pa-rs did not document.
UNKNOWN_STATE = "manifest.unknownState"

#: Digital source types that declare generative AI (IPTC): made by a model trained on sampled
#: content, or a composite with such content (generative fill). ``algorithmicMedia`` (pure
#: computation, e.g. a fractal), ``algorithmicallyEnhanced`` (denoising) and
#: ``compositeSynthetic`` (any synthetic element, CGI included) are not generative AI.
AI_SOURCE_TYPES = frozenset({"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"})
#: The digital source type of a camera capture.
CAPTURE_SOURCE_TYPE = "digitalCapture"
#: Actions that start a manifest's history: their source type is the asset's origin.
ORIGIN_ACTIONS = frozenset({"c2pa.created", "c2pa.opened"})
#: Assertion labels holding actions (v1 and v2; a label may carry an ``__N`` instance suffix).
ACTIONS_LABELS = ("c2pa.actions", "c2pa.actions.v2")

#: Longest string kept from a manifest, and most failure codes kept: a hostile manifest must
#: not blow up a prediction record.
MAX_TEXT = 200
MAX_CODES = 32

#: c2pa-rs settings for every read. ``remote_manifest_fetch`` is on by default in c2pa-rs (an
#: upload could make the service fetch a URL); unknown keys are silently ignored, so the names
#: here were checked against the native library (0.91).
BASE_SETTINGS: dict[str, Any] = {
    "verify": {"verify_trust": True, "remote_manifest_fetch": False, "ocsp_fetch": False}
}


@dataclass(frozen=True)
class Provenance:
    """The content credentials of one upload, as answered by the service and recorded.

    Attributes:
        manifest_present: Whether the upload carries a C2PA manifest (readable or not).
        validation_state: ``Valid``, ``Trusted`` or ``Invalid``; None without a manifest.
        failure_codes: c2pa validation failure codes of the active manifest (and of its
            ingredients), e.g. ``assertion.dataHash.mismatch``, ``signingCredential.untrusted``;
            or :data:`UNREADABLE` and ``c2pa.error.<Kind>`` for a manifest that cannot be read.
        claim_generator: What made the active manifest, ``name/version``.
        signer: The organisation (else the common name) of the active manifest's signing
            certificate. Unverified unless the state is ``Trusted``.
        digital_source_type: Short IPTC term of the asset's origin (the ``c2pa.created`` or
            ``c2pa.opened`` action, else the first action declaring one), e.g.
            ``trainedAlgorithmicMedia``, ``digitalCapture``.
        ai_generated_declared: Some action declares an :data:`AI_SOURCE_TYPES` source (a
            camera photo edited with generative fill counts). Reported in every state in which
            the manifest could be read, ``Invalid`` included: an invalid signature still says
            what its maker claimed. :meth:`disagrees_with` applies the validity rule.
        capture_declared: The origin is ``digitalCapture`` and no action declares generative
            AI (a photo with generative fill is not a capture claim). Same rule on states.
    """

    manifest_present: bool
    validation_state: ValidationState | None
    failure_codes: tuple[str, ...]
    claim_generator: str | None
    signer: str | None
    digital_source_type: str | None
    ai_generated_declared: bool
    capture_declared: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields (lists, not tuples), exactly the dataclass fields."""
        return {
            "manifest_present": self.manifest_present,
            "validation_state": self.validation_state,
            "failure_codes": list(self.failure_codes),
            "claim_generator": self.claim_generator,
            "signer": self.signer,
            "digital_source_type": self.digital_source_type,
            "ai_generated_declared": self.ai_generated_declared,
            "capture_declared": self.capture_declared,
        }

    def disagrees_with(self, label: str) -> bool:
        """Whether the declaration contradicts the pixel verdict ``label`` (``real``/``fake``).

        Two cases, chosen by what a declaration is worth:

        * generative AI declared, verdict ``real``, signature ``Valid`` or ``Trusted``. An
          untrusted signer suffices: nobody forges an AI label to look fake, so a generator's
          own (intact) declaration is strong evidence that the model missed a fake.
        * camera capture declared, verdict ``fake``, signature ``Trusted`` only. A capture
          claim is what a forger would fake, and anyone can make a certificate that validates;
          only a trusted signer (a camera maker's CA) makes it evidence against the model.

        An ``Invalid`` manifest never counts: its declaration was made for other bytes (pixels
        changed after signing) or cannot be attributed at all.
        """
        if self.validation_state == "Trusted":
            return (self.ai_generated_declared and label == "real") or (
                self.capture_declared and label == "fake"
            )
        if self.validation_state == "Valid":
            return self.ai_generated_declared and label == "real"
        return False


#: The common case: no manifest (or a format that cannot carry one).
NO_MANIFEST = Provenance(
    manifest_present=False,
    validation_state=None,
    failure_codes=(),
    claim_generator=None,
    signer=None,
    digital_source_type=None,
    ai_generated_declared=False,
    capture_declared=False,
)

_BMFF_IMAGE_BRANDS = {
    b"avif": "image/avif",
    b"avis": "image/avif",
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"heim": "image/heic",
    b"heis": "image/heic",
    b"hevc": "image/heic",
    b"hevx": "image/heic",
    b"mif1": "image/heif",
    b"msf1": "image/heif",
}


def sniff_mime(data: bytes) -> str | None:
    """The MIME type of ``data`` by its magic bytes, among formats c2pa can read; else None.

    JPEG, PNG, WebP, TIFF (and DNG), GIF, JPEG XL (container), HEIC/HEIF/AVIF, MP4 and
    QuickTime. BMP and the rest cannot carry a manifest: None. Not a validation of the whole
    file (that is the decoder's job); c2pa itself reconciles the type with the container.
    """
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        return "image/jxl"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _BMFF_IMAGE_BRANDS:
            return _BMFF_IMAGE_BRANDS[brand]
        return "video/quicktime" if brand == b"qt  " else "video/mp4"
    return None


def _short_source_type(value: object) -> str | None:
    """``trainedAlgorithmicMedia`` of an IPTC (or c2pa.org) URI; None for a non-string."""
    if not isinstance(value, str) or not value:
        return None
    return value.rstrip("/").rsplit("/", 1)[-1][:MAX_TEXT] or None


def _text(value: object) -> str | None:
    """A manifest string, bounded; None for anything else."""
    return value[:MAX_TEXT] if isinstance(value, str) and value else None


def _claim_generator(manifest: dict[str, Any]) -> str | None:
    """``claim_generator`` (v1 claims), else ``name/version`` of ``claim_generator_info``."""
    if text := _text(manifest.get("claim_generator")):
        return text
    info = manifest.get("claim_generator_info")
    first = info[0] if isinstance(info, list) and info else None
    if not isinstance(first, dict) or not (name := _text(first.get("name"))):
        return None
    version = _text(first.get("version"))
    return f"{name}/{version}"[:MAX_TEXT] if version else name


def _signer(manifest: dict[str, Any]) -> str | None:
    """The signing certificate's organisation (``issuer`` in c2pa's JSON), else common name."""
    info = manifest.get("signature_info")
    if not isinstance(info, dict):
        return None
    return _text(info.get("issuer")) or _text(info.get("common_name"))


def _source_types(manifest: dict[str, Any]) -> tuple[str | None, list[str]]:
    """The origin's short source type and every declared one, from the actions assertions."""
    origin: str | None = None
    declared: list[str] = []
    assertions = manifest.get("assertions")
    for assertion in assertions if isinstance(assertions, list) else []:
        if not isinstance(assertion, dict):
            continue
        label = assertion.get("label")
        if not isinstance(label, str) or label.split("__", 1)[0] not in ACTIONS_LABELS:
            continue
        data = assertion.get("data")
        actions = data.get("actions") if isinstance(data, dict) else None
        for action in actions if isinstance(actions, list) else []:
            if not isinstance(action, dict):
                continue
            source = _short_source_type(action.get("digitalSourceType"))
            if source is None:
                continue
            declared.append(source)
            if origin is None and action.get("action") in ORIGIN_ACTIONS:
                origin = source
    return origin or (declared[0] if declared else None), declared


def _failure_codes(store: dict[str, Any]) -> list[str]:
    """Failure codes of the active manifest and the ingredients' deltas, in order, once each."""
    entries: list[Any] = []
    results = store.get("validation_results")
    if isinstance(results, dict):
        active = results.get("activeManifest")
        if isinstance(active, dict) and isinstance(active.get("failure"), list):
            entries += active["failure"]
        deltas = results.get("ingredientDeltas")
        for delta in deltas if isinstance(deltas, list) else []:
            inner = delta.get("validationDeltas") if isinstance(delta, dict) else None
            if isinstance(inner, dict) and isinstance(inner.get("failure"), list):
                entries += inner["failure"]
    elif isinstance(store.get("validation_status"), list):  # the pre-2.0 report
        entries += store["validation_status"]
    codes: list[str] = []
    for entry in entries:
        code = _text(entry.get("code")) if isinstance(entry, dict) else None
        if code and code not in codes:
            codes.append(code)
    return codes[:MAX_CODES]


def provenance_from_store(store: dict[str, Any], anchored: bool) -> Provenance:
    """A :class:`Provenance` of c2pa's manifest store JSON (``Reader.json()``), parsed.

    Args:
        store: The parsed manifest store.
        anchored: Whether trust anchors were configured. Without them a ``Trusted`` state
            (c2pa-rs's own defaults trusting someone) is reported as ``Valid``: only the
            service's anchors may make a signer trusted.
    """
    codes = _failure_codes(store)
    state = store.get("validation_state")
    if state == "Trusted" and not anchored:
        state = "Valid"
    if state not in ("Valid", "Trusted", "Invalid"):
        log.info("C2PA manifest with unknown validation state %.40r: read as Invalid", state)
        state, codes = "Invalid", [UNKNOWN_STATE, *codes]
    active = store.get("active_manifest")
    manifests = store.get("manifests")
    manifest = (
        manifests.get(active) if isinstance(manifests, dict) and isinstance(active, str) else None
    )
    if not isinstance(manifest, dict):
        manifest = {}
    origin, declared = _source_types(manifest)
    ai = any(source in AI_SOURCE_TYPES for source in declared)
    return Provenance(
        manifest_present=True,
        validation_state=state,
        failure_codes=tuple(codes),
        claim_generator=_claim_generator(manifest),
        signer=_signer(manifest),
        digital_source_type=origin,
        ai_generated_declared=ai,
        capture_declared=origin == CAPTURE_SOURCE_TYPE and not ai,
    )


def _unreadable(kind: str) -> Provenance:
    """A manifest that is there but cannot be read: Invalid, with the native error class."""
    return Provenance(
        manifest_present=True,
        validation_state="Invalid",
        failure_codes=(UNREADABLE, f"c2pa.error.{kind}"),
        claim_generator=None,
        signer=None,
        digital_source_type=None,
        ai_generated_declared=False,
        capture_declared=False,
    )


def _error_kind(error: Exception) -> str:
    """``Verify`` of c2pa's ``"Verify: expected JUMD"`` (the native error's class)."""
    prefix = str(error).split(":", 1)[0].strip()
    if prefix.isidentifier() and len(prefix) <= 40:
        return prefix
    return type(error).__name__.removeprefix("_C2pa") or "Error"


_PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----[^-]*-----END CERTIFICATE-----", re.ASCII
)


def load_trust_anchors(path: str | Path) -> str:
    """The certificates of a PEM bundle, each one parsed, as PEM text; else :class:`ConfigError`.

    c2pa-rs accepts garbage between PEM markers without a word (every signature would then
    read as merely ``Valid``), so the bundle is parsed here by OpenSSL (:mod:`ssl`). Text
    around the certificates (a system bundle's comments) is dropped. A private key in the
    bundle is refused: it is a secret in the wrong file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"C2PA trust anchors: no file {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"C2PA trust anchors: cannot read {path} ({err})") from None
    if "PRIVATE KEY-----" in text:
        raise ConfigError(f"C2PA trust anchors: {path} holds a private key; give certificates")
    blocks = _PEM_CERTIFICATE.findall(text)
    if not blocks:
        raise ConfigError(f"C2PA trust anchors: {path} holds no PEM certificate")
    pem = "\n".join(blocks) + "\n"
    if text.count("-----BEGIN CERTIFICATE-----") != len(blocks) or not pem.isascii():
        raise ConfigError(f"C2PA trust anchors: {path} has a broken PEM certificate")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=pem)
    except ssl.SSLError as err:
        raise ConfigError(f"C2PA trust anchors: {path} has a broken certificate ({err})") from None
    return pem


class ProvenanceReader:
    """Reads and verifies the C2PA manifest of raw upload bytes; one per service, any thread.

    The c2pa settings (trust anchors included) are parsed once into a shared native Context;
    every :meth:`read` makes its own c2pa ``Reader`` on that Context (c2pa-python lets
    concurrent readers share a Context). After a fork the child builds its own Context: c2pa
    refuses one made in another process.
    """

    def __init__(self, trust_anchors: str | Path | None = None) -> None:
        """Load the trust anchors (a PEM file) now, so a broken bundle stops the start.

        Raises:
            ConfigError: The file is missing, unreadable, holds no PEM certificate or a broken
                one, or c2pa refuses it.
        """
        self.trust_anchors = Path(trust_anchors) if trust_anchors is not None else None
        self._settings: dict[str, Any] = copy.deepcopy(BASE_SETTINGS)
        if self.trust_anchors is not None:
            self._settings["trust"] = {"trust_anchors": load_trust_anchors(self.trust_anchors)}
        self._lock = threading.Lock()
        self._pid = os.getpid()
        try:
            self._context = self._new_context()
        except c2pa.C2paError as err:
            raise ConfigError(f"C2PA trust anchors: {self.trust_anchors} refused ({err})") from None

    @property
    def anchored(self) -> bool:
        """Whether trust anchors are configured (without them nothing is ``Trusted``)."""
        return self.trust_anchors is not None

    def _new_context(self) -> c2pa.Context:
        """A native Context with :data:`BASE_SETTINGS` and the anchors."""
        return c2pa.Context(settings=c2pa.Settings.from_dict(self._settings))

    def _current_context(self) -> c2pa.Context:
        """The shared Context, rebuilt once in a forked child."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._context = self._new_context()
                    self._pid = os.getpid()
        return self._context

    def read(self, data: bytes) -> Provenance:
        """The content credentials of ``data``; never raises, whatever the bytes.

        Formats that cannot carry a manifest (or that the service does not read) are
        :data:`NO_MANIFEST` without calling c2pa. c2pa walks the container's segments or boxes
        and says when there is no manifest: cheaper than scanning the bytes (the boxes of a
        100 MB MP4 in 0.2 ms, where a scan takes 100 ms). When it cannot parse the container at
        all, the bytes decide: no JUMBF box anywhere (every embedded manifest store is one,
        compressed stores included) is :data:`NO_MANIFEST`, a truncated or garbage upload being
        the decoder's to refuse; with one, the manifest is there but unreadable: ``Invalid``
        with :data:`UNREADABLE`.
        """
        mime = sniff_mime(data)
        if mime is None:
            return NO_MANIFEST
        try:
            with c2pa.Reader(mime, io.BytesIO(data), context=self._current_context()) as reader:
                store = json.loads(reader.json())
            if not isinstance(store, dict):
                raise ValueError("the manifest store is not a JSON object")
            return provenance_from_store(store, self.anchored)
        except (c2pa.C2paError.ManifestNotFound, c2pa.C2paError.NotSupported):
            return NO_MANIFEST
        except (c2pa.C2paError, ValueError) as err:
            kind = _error_kind(err)
            log.debug("c2pa cannot read a %s upload: %s", mime, err)
        except Exception as err:  # a bug or a native surprise: the upload still gets scored
            kind = type(err).__name__
            log.warning("C2PA reading failed on a %s upload", mime, exc_info=True)
        return _unreadable(kind) if b"jumb" in data else NO_MANIFEST
