"""A few labelled example images for demos, generated on the fly from the embedded data source.

The detector page offers these so that someone without a suspicious image at hand can still try
the service. They are drawn exactly like the embedded data set (:mod:`deepfakenet.data.synth`):
random crops of the photographs that ship inside installed packages, and fakes re-synthesised
from such crops by one of the AutoGAN-style families. Nothing binary is committed to the
repository, and a fixed seed makes the samples the same on every machine and every run.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image

from deepfakenet.data.fakes import FAKE_FAMILIES
from deepfakenet.data.synth import random_photo_crop
from deepfakenet.labels import FAKE_LABEL, REAL_LABEL

log = logging.getLogger(__name__)

#: ``(label, source, photo, family)`` of each sample; ``family`` is empty for real photos.
#: Different photos per class, every source represented, two fake families of four.
SAMPLE_SPECS: tuple[tuple[str, str, str, str], ...] = (
    (REAL_LABEL, "skimage", "chelsea", ""),
    (REAL_LABEL, "matplotlib", "grace_hopper", ""),
    (REAL_LABEL, "sklearn", "china", ""),
    (FAKE_LABEL, "skimage", "coffee", "transposed_conv"),
    (FAKE_LABEL, "skimage", "astronaut", "pixel_shuffle"),
    (FAKE_LABEL, "sklearn", "flower", "nearest_conv"),
)


@dataclass(frozen=True)
class Sample:
    """One example image and the truth about it.

    Attributes:
        name: Human-readable name, e.g. ``"fake · coffee (transposed_conv)"``.
        label: The true label, ``real`` or ``fake``.
        png: The image, PNG-encoded (lossless, so a fake keeps its traces).
    """

    name: str
    label: str
    png: bytes


def make_samples(side: int = 128, seed: int = 0) -> list[Sample]:
    """Generate the labelled sample images of :data:`SAMPLE_SPECS`.

    Args:
        side: Side of each square sample in pixels. The default matches the largest images of
            the embedded data set (``conf/synth``), so the samples look like what the model saw.
        seed: Seed of the crops and of the fakes' random kernels.

    Returns:
        One :class:`Sample` per spec, in spec order.
    """
    samples = []
    for index, (label, source, photo, family) in enumerate(SAMPLE_SPECS):
        rng = np.random.default_rng([seed, index])
        pixels = random_photo_crop(source, photo, side, rng)
        if family:
            pixels = FAKE_FAMILIES[family](pixels, rng)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        name = f"{label} · {photo}" + (f" ({family})" if family else "")
        samples.append(Sample(name=name, label=label, png=buffer.getvalue()))
    log.debug("generated %d sample images of %d px", len(samples), side)
    return samples
