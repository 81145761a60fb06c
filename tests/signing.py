"""Test helper: sign images with C2PA content credentials, tamper with them, forge garbage.

Tests import this module (``from tests.signing import ...``); nothing here is a test. c2pa-rs
refuses a self-signed signing certificate, so :func:`make_credentials` makes a small PKI: an
EC P-256 CA and a leaf it issued, with the extensions a C2PA claim signer needs (digitalSignature,
the emailProtection EKU, SKI/AKI). The chain handed to the signer is leaf + CA. Key generation
costs a few milliseconds, the results are cached per ``organisation``, so a whole test session
shares one PKI (and a second organisation gives an unrelated CA for "wrong anchor" tests).
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import random
import struct
import zlib
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
TRAINED_ALGORITHMIC_MEDIA = IPTC + "trainedAlgorithmicMedia"
DIGITAL_CAPTURE = IPTC + "digitalCapture"
CLAIM_GENERATOR = "deepfakenet-tests"
CLAIM_GENERATOR_VERSION = "1.0"
#: The organisation (O) of the test certificates: c2pa reports it as the signer's ``issuer``.
SIGNER_ORG = "DeepFakeNet Test Signer"
#: c2pa's UUID of a C2PA manifest store's JUMBF description box.
C2PA_STORE_UUID = bytes.fromhex("6332706100110010800000AA00389B71")

MIME_BY_FORMAT = {"JPEG": "image/jpeg", "PNG": "image/png"}


@dataclass(frozen=True)
class Credentials:
    """PEM text of a test PKI: the CA (a trust anchor) and the leaf's chain and key."""

    ca_pem: str
    chain_pem: str  # leaf first, then the CA
    key_pem: str  # the leaf's private key (PKCS#8)
    organisation: str


def make_credentials(organisation: str = SIGNER_ORG) -> Credentials:
    """A CA and a leaf it signed (EC P-256, ES256), both valid from yesterday for 30 days.

    One PKI per organisation per process: ``make_credentials()`` and
    ``make_credentials(SIGNER_ORG)`` are the same CA (a cache keyed on the call as written
    would make two).
    """
    return _credentials(organisation)


@cache
def _credentials(organisation: str) -> Credentials:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    not_before, not_after = now - dt.timedelta(days=1), now + dt.timedelta(days=30)

    def name(common: str) -> x509.Name:  # O = organisation: c2pa reports it as the issuer
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
                x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            ]
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name(f"{organisation} Root CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_cert = (
        x509.CertificateBuilder()
        .subject_name(name(f"{organisation} Leaf"))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    def cert_pem(cert: x509.Certificate) -> str:
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    key_pem = leaf_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return Credentials(
        ca_pem=cert_pem(ca_cert),
        chain_pem=cert_pem(leaf_cert) + cert_pem(ca_cert),
        key_pem=key_pem,
        organisation=organisation,
    )


def make_image(fmt: str = "JPEG", size: tuple[int, int] = (48, 48), seed: int = 0) -> bytes:
    """A small smooth gradient with noise, encoded as ``fmt`` (``"JPEG"`` or ``"PNG"``)."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / max(1, w - 1), y * 255 / max(1, h - 1), (x + y) % 256], -1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def sign_image(
    data: bytes,
    mime: str,
    chain_pem: str,
    key_pem: str,
    digital_source_type: str | None = TRAINED_ALGORITHMIC_MEDIA,
    claim_generator: str = CLAIM_GENERATOR,
    claim_generator_version: str = CLAIM_GENERATOR_VERSION,
) -> bytes:
    """``data`` with an embedded C2PA manifest: one ``c2pa.created`` action in ``c2pa.actions``.

    ``digital_source_type`` is a full IPTC URI (or None for an action without one). The signer
    is the leaf of ``chain_pem``; no timestamp authority is contacted (offline).
    """
    import c2pa

    action: dict[str, object] = {"action": "c2pa.created"}
    if digital_source_type is not None:
        action["digitalSourceType"] = digital_source_type
    definition = {
        "claim_generator_info": [{"name": claim_generator, "version": claim_generator_version}],
        "title": "deepfakenet test image",
        "format": mime,
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [action]}}],
    }
    info = c2pa.C2paSignerInfo(
        c2pa.C2paSigningAlg.ES256, chain_pem.encode(), key_pem.encode(), None
    )
    src, dst = io.BytesIO(data), io.BytesIO()
    with c2pa.Signer.from_info(info) as signer, c2pa.Builder(json.dumps(definition)) as builder:
        builder.sign(signer, mime, src, dst)
    return dst.getvalue()


# --- JPEG / PNG surgery ------------------------------------------------------------------------


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """``(marker, start, end)`` of every marker segment from SOI up to and including SOS."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    out, pos = [(0xD8, 0, 2)], 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError(f"no marker at {pos}")
        marker = data[pos + 1]
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        out.append((marker, pos, pos + 2 + length))
        pos += 2 + length
        if marker == 0xDA:  # SOS: entropy-coded data follows
            break
    return out


def png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """``(type, start, end)`` of every chunk of a PNG (``end`` includes the CRC)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    out, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        out.append((data[pos + 4 : pos + 8], pos, pos + 12 + length))
        pos += 12 + length
    return out


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with its length and CRC."""
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _manifest_span(data: bytes, mime: str) -> tuple[int, int]:
    """Byte range of the embedded manifest: the APP11 segments (JPEG) or the caBX chunk (PNG)."""
    if mime == "image/jpeg":
        spans = [(s, e) for m, s, e in jpeg_segments(data) if m == 0xEB]
    elif mime == "image/png":
        spans = [(s, e) for k, s, e in png_chunks(data) if k == b"caBX"]
    else:
        raise ValueError(f"unsupported {mime}")
    if not spans:
        raise ValueError("no manifest segment")
    # c2pa writes the segments of one manifest store contiguously
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    return spans[0][0], spans[-1][1]


def tamper_pixels(signed: bytes, mime: str) -> bytes:
    """``signed`` with altered pixels but the original manifest: a still decodable image.

    The pixels are decoded, a 12x12 patch is painted over, the image is re-encoded with the
    same settings and the signed file's manifest bytes (APP11 segments / caBX chunk) are put back
    at the same offset, so c2pa finds the manifest but the data hash no longer matches.
    """
    fmt = {"image/jpeg": "JPEG", "image/png": "PNG"}[mime]
    img = Image.open(io.BytesIO(signed)).convert("RGB")
    pixels = np.array(img)
    pixels[4:16, 4:16] = 255 - pixels[4:16, 4:16]
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    fresh = buf.getvalue()
    start, end = _manifest_span(signed, mime)
    # The re-encoded file's header before the manifest (SOI + JFIF APP0 / signature + IHDR)
    # is the signed file's, so the manifest lands exactly where its hash exclusion says.
    at = start if fresh[:start] == signed[:start] else (2 if fmt == "JPEG" else 33)
    return fresh[:at] + signed[start:end] + fresh[at:]


def with_garbage_manifest(data: bytes, mime: str, seed: int = 0, size: int = 600) -> bytes:
    """``data`` (unsigned) with a C2PA manifest store whose content is random bytes.

    The store is a ``jumb`` superbox with a proper ``jumd`` description (the C2PA store UUID,
    label ``c2pa``) followed by garbage, in a JPEG APP11 segment (``JP`` header) or a PNG
    ``caBX`` chunk before the pixels: c2pa recognises a manifest and has to parse the garbage.
    (A ``jumb`` box without the description is not recognised in a JPEG at all.) The image
    still decodes.
    """
    rng = random.Random(seed)
    junk = bytes(rng.randrange(256) for _ in range(size))
    label = C2PA_STORE_UUID + b"\x03" + b"c2pa\x00"  # toggles 3: requestable, has a label
    description = struct.pack(">I", 8 + len(label)) + b"jumd" + label
    box = struct.pack(">I", 8 + len(description) + len(junk)) + b"jumb" + description + junk
    if mime == "image/jpeg":
        payload = b"JP" + struct.pack(">HI", 0x0200, 1) + box  # CI, En (box instance), Z (seq)
        segment = b"\xff\xeb" + struct.pack(">H", 2 + len(payload)) + payload
        return data[:2] + segment + data[2:]
    if mime == "image/png":
        ihdr_end = png_chunks(data)[0][2]
        return data[:ihdr_end] + png_chunk(b"caBX", box) + data[ihdr_end:]
    raise ValueError(f"unsupported {mime}")
