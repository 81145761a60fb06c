"""deepfakenet.provenance: every validation state on signed JPEG and PNG, hostile bytes, config.

The images are signed here (tests/signing.py: a test CA and leaf, made once per session), so
the suite runs offline and in about a second.
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from deepfakenet.errors import ConfigError
from deepfakenet.provenance import (
    NO_MANIFEST,
    UNKNOWN_STATE,
    UNREADABLE,
    Provenance,
    ProvenanceReader,
    provenance_from_store,
    sniff_mime,
)
from tests.signing import (
    CLAIM_GENERATOR,
    CLAIM_GENERATOR_VERSION,
    DIGITAL_CAPTURE,
    IPTC,
    MIME_BY_FORMAT,
    SIGNER_ORG,
    Credentials,
    make_credentials,
    make_image,
    sign_image,
    tamper_pixels,
    with_garbage_manifest,
)

FORMATS = ("JPEG", "PNG")
UNTRUSTED = "signingCredential.untrusted"
HASH_MISMATCH = "assertion.dataHash.mismatch"


@dataclasses.dataclass(frozen=True)
class Samples:
    """One format's test images."""

    mime: str
    raw: bytes
    ai: bytes  # signed, trainedAlgorithmicMedia
    capture: bytes  # signed, digitalCapture
    tampered: bytes  # ai with pixels changed after signing
    garbage: bytes  # raw with a garbage manifest store


@pytest.fixture(scope="session")
def creds() -> Credentials:
    return make_credentials()


@pytest.fixture(scope="session")
def anchors_dir(tmp_path_factory: pytest.TempPathFactory, creds: Credentials) -> Path:
    folder = tmp_path_factory.mktemp("anchors")
    (folder / "ca.pem").write_text(creds.ca_pem)
    (folder / "other.pem").write_text(make_credentials("Some Other Org").ca_pem)
    return folder


@pytest.fixture(scope="session")
def plain() -> ProvenanceReader:
    return ProvenanceReader()


@pytest.fixture(scope="session")
def anchored(anchors_dir: Path) -> ProvenanceReader:
    return ProvenanceReader(anchors_dir / "ca.pem")


@pytest.fixture(scope="session")
def wrong_anchor(anchors_dir: Path) -> ProvenanceReader:
    return ProvenanceReader(str(anchors_dir / "other.pem"))  # a str path works too


@pytest.fixture(scope="session")
def samples(creds: Credentials) -> dict[str, Samples]:
    out = {}
    for fmt in FORMATS:
        mime, raw = MIME_BY_FORMAT[fmt], make_image(fmt)
        ai = sign_image(raw, mime, creds.chain_pem, creds.key_pem)
        out[fmt] = Samples(
            mime=mime,
            raw=raw,
            ai=ai,
            capture=sign_image(raw, mime, creds.chain_pem, creds.key_pem, DIGITAL_CAPTURE),
            tampered=tamper_pixels(ai, mime),
            garbage=with_garbage_manifest(raw, mime),
        )
    return out


def _decodes(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.size


def _assert_declares_ai(p: Provenance) -> None:
    assert p.manifest_present
    assert p.claim_generator == f"{CLAIM_GENERATOR}/{CLAIM_GENERATOR_VERSION}"
    assert p.signer == SIGNER_ORG
    assert p.digital_source_type == "trainedAlgorithmicMedia"
    assert p.ai_generated_declared
    assert not p.capture_declared


# ----------------------------------------------------------------------------- states


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_manifest(fmt, samples, plain, anchored, wrong_anchor):
    for reader in (plain, anchored, wrong_anchor):
        assert reader.read(samples[fmt].raw) == NO_MANIFEST


@pytest.mark.parametrize("fmt", FORMATS)
def test_valid_but_untrusted_without_anchors(fmt, samples, plain):
    p = plain.read(samples[fmt].ai)
    assert p.validation_state == "Valid"
    assert p.failure_codes == (UNTRUSTED,)
    _assert_declares_ai(p)


@pytest.mark.parametrize("fmt", FORMATS)
def test_trusted_with_the_ca_as_anchor(fmt, samples, anchored):
    p = anchored.read(samples[fmt].ai)
    assert p.validation_state == "Trusted"
    assert p.failure_codes == ()
    _assert_declares_ai(p)


@pytest.mark.parametrize("fmt", FORMATS)
def test_another_ca_as_anchor_is_not_trusted(fmt, samples, wrong_anchor):
    p = wrong_anchor.read(samples[fmt].ai)
    assert p.validation_state == "Valid"
    assert UNTRUSTED in p.failure_codes


@pytest.mark.parametrize("fmt", FORMATS)
def test_pixels_changed_after_signing_are_invalid(fmt, samples, plain, anchored):
    s = samples[fmt]
    assert _decodes(s.tampered) == _decodes(s.ai)  # still an image the service would score
    for reader in (plain, anchored):
        p = reader.read(s.tampered)
        assert p.validation_state == "Invalid"
        assert HASH_MISMATCH in p.failure_codes
        _assert_declares_ai(p)  # what its maker claimed, reported in every state
        assert not p.disagrees_with("real")  # but an invalid manifest never counts
    assert anchored.read(s.tampered).failure_codes == (HASH_MISMATCH,)
    assert plain.read(s.tampered).failure_codes == (UNTRUSTED, HASH_MISMATCH)


@pytest.mark.parametrize("fmt", FORMATS)
def test_garbage_manifest_is_invalid_not_an_exception(fmt, samples, plain, anchored):
    s = samples[fmt]
    _decodes(s.garbage)
    for reader in (plain, anchored):
        p = reader.read(s.garbage)
        assert p.manifest_present
        assert p.validation_state == "Invalid"
        assert p.failure_codes[0] == UNREADABLE
        assert p.failure_codes[1].startswith("c2pa.error.")  # c2pa 0.38: c2pa.error.Verify
        assert (p.claim_generator, p.signer, p.digital_source_type) == (None, None, None)
        assert not (p.ai_generated_declared or p.capture_declared)
        assert not p.disagrees_with("real") and not p.disagrees_with("fake")


@pytest.mark.parametrize("fmt", FORMATS)
def test_capture_claim_disagrees_with_fake_only_when_trusted(fmt, samples, plain, anchored):
    valid, trusted = plain.read(samples[fmt].capture), anchored.read(samples[fmt].capture)
    for p in (valid, trusted):
        assert p.digital_source_type == "digitalCapture"
        assert p.capture_declared and not p.ai_generated_declared
        assert not p.disagrees_with("real")
    assert valid.validation_state == "Valid" and not valid.disagrees_with("fake")
    assert trusted.validation_state == "Trusted" and trusted.disagrees_with("fake")


@pytest.mark.parametrize("fmt", FORMATS)
def test_ai_declaration_disagrees_with_real_when_valid_or_trusted(fmt, samples, plain, anchored):
    for reader in (plain, anchored):
        p = reader.read(samples[fmt].ai)
        assert p.disagrees_with("real")
        assert not p.disagrees_with("fake")


# ----------------------------------------------------------------------------- rules


def _declared(state: str | None, *, ai: bool = False, capture: bool = False) -> Provenance:
    return dataclasses.replace(
        NO_MANIFEST,
        manifest_present=state is not None,
        validation_state=state,
        ai_generated_declared=ai,
        capture_declared=capture,
    )


@pytest.mark.parametrize(
    ("state", "ai", "capture", "label", "expected"),
    [
        ("Trusted", True, False, "real", True),
        ("Valid", True, False, "real", True),
        ("Invalid", True, False, "real", False),
        ("Trusted", True, False, "fake", False),
        ("Trusted", False, True, "fake", True),
        ("Valid", False, True, "fake", False),
        ("Invalid", False, True, "fake", False),
        ("Trusted", False, True, "real", False),
        ("Trusted", False, False, "real", False),
        ("Trusted", False, False, "fake", False),
        ("Trusted", True, False, "uncertain", False),
        ("Trusted", False, True, "", False),
        (None, False, False, "real", False),
    ],
)
def test_disagrees_with_rules(state, ai, capture, label, expected):
    assert _declared(state, ai=ai, capture=capture).disagrees_with(label) is expected


def test_no_manifest_never_disagrees():
    assert not NO_MANIFEST.disagrees_with("real") and not NO_MANIFEST.disagrees_with("fake")


def test_to_dict_is_json_with_lists(samples, plain):
    p = plain.read(samples["JPEG"].tampered)
    d = p.to_dict()
    assert list(d) == [f.name for f in dataclasses.fields(Provenance)]
    assert d["failure_codes"] == [UNTRUSTED, HASH_MISMATCH]
    assert json.loads(json.dumps(d)) == d
    assert NO_MANIFEST.to_dict()["failure_codes"] == []


def _store(actions: list[dict], state: str = "Valid", **manifest) -> dict:
    return {
        "active_manifest": "urn:1",
        "manifests": {
            "urn:1": {
                "assertions": [{"label": "c2pa.actions__1", "data": {"actions": actions}}],
                **manifest,
            }
        },
        "validation_state": state,
    }


def test_store_parsing_v1_claims_and_edits():
    # A camera photo edited with generative fill: AI declared, not a capture claim.
    store = _store(
        [
            {"action": "c2pa.created", "digitalSourceType": IPTC + "digitalCapture"},
            {
                "action": "c2pa.edited",
                "digitalSourceType": IPTC + "compositeWithTrainedAlgorithmicMedia",
            },
        ],
        claim_generator="Camera/2.0 c2pa-rs/0.30",
        signature_info={"common_name": "Camera Maker CA"},
    )
    p = provenance_from_store(store, anchored=True)
    assert p.claim_generator == "Camera/2.0 c2pa-rs/0.30"
    assert p.signer == "Camera Maker CA"
    assert p.digital_source_type == "digitalCapture"
    assert p.ai_generated_declared and not p.capture_declared
    # Algorithmic media (no training data) is not generative AI.
    p = provenance_from_store(
        _store([{"action": "c2pa.created", "digitalSourceType": IPTC + "algorithmicMedia"}]),
        anchored=False,
    )
    assert p.digital_source_type == "algorithmicMedia" and not p.ai_generated_declared


def test_store_parsing_states():
    assert provenance_from_store(_store([], "Trusted"), anchored=False).validation_state == "Valid"
    assert provenance_from_store(_store([], "Trusted"), anchored=True).validation_state == "Trusted"
    odd = provenance_from_store(_store([], "WellFormed"), anchored=True)
    assert odd.validation_state == "Invalid" and odd.failure_codes == (UNKNOWN_STATE,)
    # A store without manifests or with junk where objects belong is read, not raised on.
    for junk in (
        {"manifests": [1], "validation_results": "x"},
        {"active_manifest": ["x"], "manifests": {}, "validation_state": ["Valid"]},
        {"validation_results": {"activeManifest": {"failure": [1, {"code": 2}, {"code": "a"}]}}},
    ):
        p = provenance_from_store(junk, anchored=False)
        assert p.manifest_present and p.validation_state == "Invalid"
        assert p.claim_generator is None and not p.ai_generated_declared


# ----------------------------------------------------------------------------- hostile bytes


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello",
        b"\x00" * 64,
        bytes(random.Random(0).randrange(256) for _ in range(4096)),
        b"\xff\xd8\xff" + b"jumb" * 10,  # JPEG magic, JUMBF type, nothing parseable
        b"\x89PNG\r\n\x1a\n" + b"jumb" * 10,
        b"%PDF-1.7 jumb",  # c2pa reads PDFs, the service does not: never handed to c2pa
    ],
    ids=["empty", "text", "zeros", "random", "jpeg-magic", "png-magic", "pdf"],
)
def test_non_images_never_raise(data, plain):
    p = plain.read(data)
    assert isinstance(p, Provenance)
    assert p.validation_state in (None, "Invalid")
    if b"jumb" not in data:
        assert p == NO_MANIFEST


def test_bmp_and_truncated_unsigned_images_have_no_manifest(samples, plain):
    buf = io.BytesIO()
    Image.open(io.BytesIO(samples["PNG"].raw)).save(buf, "BMP")
    assert plain.read(buf.getvalue()) == NO_MANIFEST
    for fmt in FORMATS:
        raw = samples[fmt].raw
        assert plain.read(raw[: len(raw) // 2]) == NO_MANIFEST
        assert plain.read(raw[:20]) == NO_MANIFEST


@pytest.mark.parametrize("fmt", FORMATS)
def test_mutilated_signed_images_never_raise(fmt, samples, anchored):
    signed = samples[fmt].ai
    rng = random.Random(fmt)
    mutants = [signed[:n] for n in (30, 200, 2000, len(signed) // 2, len(signed) - 1)]
    for _ in range(25):
        b = bytearray(signed)
        at = rng.randrange(len(b) - 16)
        b[at : at + 16] = rng.randbytes(16)
        mutants.append(bytes(b))
    for data in mutants:
        p = anchored.read(data)
        assert p == NO_MANIFEST or p.validation_state in ("Valid", "Trusted", "Invalid")
        if p.validation_state == "Trusted":  # only a mutation that c2pa does not hash
            assert p.failure_codes == ()


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [("WEBP", "image/webp"), ("TIFF", "image/tiff"), ("GIF", "image/gif")],
)
def test_other_formats_are_read(fmt, mime, creds, anchored):
    raw = io.BytesIO()
    Image.open(io.BytesIO(make_image("PNG"))).save(raw, fmt)
    assert sniff_mime(raw.getvalue()) == mime
    assert anchored.read(raw.getvalue()) == NO_MANIFEST
    p = anchored.read(sign_image(raw.getvalue(), mime, creds.chain_pem, creds.key_pem))
    assert p.validation_state == "Trusted"
    assert p.ai_generated_declared


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        (b"\xff\xd8\xff\xe0", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"II*\x00", "image/tiff"),
        (b"MM\x00*", "image/tiff"),
        (b"GIF89a", "image/gif"),
        (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "image/jxl"),
        (b"\x00\x00\x00\x1cftypavif", "image/avif"),
        (b"\x00\x00\x00\x18ftypheic", "image/heic"),
        (b"\x00\x00\x00\x18ftypmp42", "video/mp4"),
        (b"\x00\x00\x00\x14ftypqt  ", "video/quicktime"),
        (b"BM", None),
        (b"%PDF", None),
        (b"", None),
    ],
)
def test_sniff_mime(head, mime):
    assert sniff_mime(head + b"\x00" * 16) == mime


def test_an_unexpected_error_is_contained(samples, plain, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("deepfakenet.provenance.c2pa.Reader", broken)
    p = plain.read(samples["JPEG"].ai)
    assert p.validation_state == "Invalid"
    assert p.failure_codes == (UNREADABLE, "c2pa.error.RuntimeError")
    assert "C2PA reading failed" in caplog.text
    assert plain.read(samples["JPEG"].raw) == NO_MANIFEST  # no JUMBF box: nothing unreadable


def test_a_forked_child_builds_its_own_context(samples, anchors_dir):
    reader = ProvenanceReader(anchors_dir / "ca.pem")
    parent_context = reader._context
    reader._pid = -1  # as seen from a child process after fork()
    assert reader.read(samples["JPEG"].ai).validation_state == "Trusted"
    assert reader._context is not parent_context


def test_reads_from_many_threads(samples, anchored):
    inputs = [getattr(samples[f], k) for f in FORMATS for k in ("raw", "ai", "tampered", "garbage")]
    expected = [anchored.read(d) for d in inputs]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(anchored.read, inputs * 8))
    assert got == expected * 8


# ----------------------------------------------------------------------------- configuration


def test_bad_trust_anchors_are_config_errors(tmp_path, creds):
    bad_body = "-----BEGIN CERTIFICATE-----\nAAAAbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    files = {
        "text.pem": "not a certificate\n",
        "empty.pem": "",
        "body.pem": bad_body,
        "mixed.pem": creds.ca_pem + bad_body,
        "key.pem": creds.chain_pem + creds.key_pem,
        "unterminated.pem": creds.ca_pem + "-----BEGIN CERTIFICATE-----\nAAAA\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "binary.pem").write_bytes(b"\x89\xff\x00 binary")
    for name in [*files, "binary.pem", "missing.pem", "."]:
        with pytest.raises(ConfigError, match="C2PA trust anchors"):
            ProvenanceReader(tmp_path / name)


def test_a_chain_bundle_is_accepted(tmp_path, creds, samples):
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("# our CAs, Zürich\n" + creds.chain_pem)  # a system bundle's comments
    assert ProvenanceReader(bundle).read(samples["PNG"].ai).validation_state == "Trusted"
