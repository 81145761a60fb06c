"""Fuzz every route of the real served app against its own OpenAPI document (schemathesis 4).

The session's ``bentoml serve`` subprocess is loaded from ``/docs.json``; every documented
operation gets the examples, coverage and fuzzing phases with *all* checks: no 5xx, every status
documented, every body (errors included) matching its schema, schema-valid requests accepted,
schema-invalid ones refused, required headers enforced, undocumented methods answered 405.
Examples per route are bounded so the whole module stays well under two minutes on 2 cores.

The only generation help is for the ``image`` and ``video`` parts: their documented media types
get strategies that produce real images and clips of each type, because a JSON schema cannot say
"bytes that decode as an image" and random bytes would (rightly) be refused. Nothing is excluded.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis.config import SchemathesisConfig
from schemathesis.config._checks import NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Fuzzed cases per operation (the coverage phase adds its own boundary cases on top).
MAX_EXAMPLES = 100
#: Pillow format of each media type the service documents for the ``image`` part.
IMAGE_FORMATS = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
}


def image_bytes(fmt: str) -> st.SearchStrategy[bytes]:
    """Small random RGB images encoded as ``fmt`` (sizes and pixels drawn by hypothesis)."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        width = draw(st.integers(4, 48))
        height = draw(st.integers(4, 48))
        seed = draw(st.integers(0, 2**32 - 1))
        pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format=fmt)
        return buf.getvalue()

    return build()


for _media_type, _fmt in IMAGE_FORMATS.items():
    schemathesis.openapi.media_type(_media_type, image_bytes(_fmt))

#: FFmpeg muxer and codec of each media type the service documents for the ``video`` part
#: (WebM is Matroska to the demuxer; the codec is what the test encoder has).
VIDEO_FORMATS = {
    "video/mp4": ("mp4", "libx264"),
    "video/quicktime": ("mov", "libx264"),
    "video/x-matroska": ("matroska", "libx264"),
    "video/webm": ("matroska", "libx264"),
    "video/x-msvideo": ("avi", "mpeg4"),
}


def video_bytes(container_format: str, codec: str) -> st.SearchStrategy[bytes]:
    """Short random clips in ``container_format`` (frame count, size and pixels drawn)."""
    from deepfakenet.data.clips import encode_clip

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        side = 2 * draw(st.integers(4, 16))
        count = draw(st.integers(1, 6))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        frames = [rng.integers(0, 255, (side, side, 3), dtype=np.uint8) for _ in range(count)]
        return encode_clip(frames, codec, fps=5, container_format=container_format)

    return build()


for _media_type, (_container, _codec) in VIDEO_FORMATS.items():
    schemathesis.openapi.media_type(_media_type, video_bytes(_container, _codec))


@pytest.fixture(scope="module")
def api_schema(service):
    """The served document, with all checks and bounded phases."""
    config = SchemathesisConfig.from_dict(
        {
            "checks": {
                "enabled": True,
                # 413 is how the service refuses a body over its byte limit (a huge invalid
                # comment, say): a rejection schemathesis does not list among its defaults.
                "negative_data_rejection": {
                    "expected-statuses": [*NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, "413"]
                },
            },
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "database": "none"},
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
            },
            "request-timeout": 60,
        }
    )
    return schemathesis.openapi.from_url(f"{service.url}/docs.json", config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request):
    """schemathesis 4.32.5's lazy loader reads and rewrites ``request.node._nodeid`` (to name each
    operation's subtest), an attribute pytest 9.2 no longer has: give it the node id."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,  # every run explores afresh; nothing is written to .hypothesis/
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_route_matches_its_documentation(case):
    # call_and_validate raises on any failed check (all checks are enabled in api_schema).
    response = case.call_and_validate(timeout=60)
    assert response.status_code < 500, response.text
