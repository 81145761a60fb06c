"""The real-photo pool: every photograph the real class is cut from, and where it comes from.

Why this module exists: a deepfake detector learns "real" from whatever the real pool looks
like, and sixteen sample photos bundled in scikit-image, matplotlib and scikit-learn are too few
and too uniform (a detector can memorise them). Camera-like photographs that the package
registries serve are the one large, versioned, licensed and always-reachable supply this project
may use: Debian packages that ship photographs (wallpapers, education and game data, OpenCV's
sample data) and PyPI wheels that carry sample photos. They are fetched once per machine into a
cache (:func:`fetch_sources`; the first ``make data`` does it), after which data generation
and training need no network; the tests use the bundled sources, and the ones that fetch
package sources skip outside CI when the registries cannot be reached.

What is recorded, and why:

- Each package source names its package, the **pinned version** the registry served when the
  list was curated, and its **licence** (read from the package's copyright file / metadata), so
  a data set built from it can say where every real photo came from.
- Each photo is an **explicit, curated file** inside the package, with its **sha256**. Only
  photographs are listed (no illustrations, renders, logos, screenshots, paintings, quantised
  palette images or synthetic blurs); of a wallpaper shipped at several resolutions only one
  real file is taken (the package's other sizes are symlinks to it). Near-duplicates (stereo
  pairs, calibration sequences, the same monument twice) are kept out so that a photo-level
  split cannot leak a scene across train and test. A file that does not hash to the recorded
  value is never used: the registry served different bytes, or the cache was corrupted.
- Every photo has a short side of at least :data:`MIN_SHORT_SIDE` pixels, so crops of up to
  288 px are taken without upscaling (upscaling would put interpolation traces on *reals*).

Sources are of three kinds: ``bundled`` (photos inside wheels the project already depends on,
loaded directly), ``debian`` (``apt-get download`` of the pinned ``.deb``; only the listed
members are read from its data archive via ``dpkg-deb --fsys-tarfile``) and ``pypi``
(``pip download --no-deps`` of the pinned wheel, read as a zip). GCompris keeps its images
inside Qt resource bundles (``.rcc``); such a photo's ``file`` is ``<bundle>!<resource path>``
and the bundle is unpacked here (zlib entries; no Qt needed).

Photo names are unique across all sources and use only ``[A-Za-z0-9_-]``, so a generated file
name ``<photo>_<index>.png`` maps back to its source (:func:`photo_source`). Greyscale photos are
replicated to three channels and alpha is dropped: a black-and-white camera is a genuine source
and "colourless" must not mean anything to the detector.

Two pools select photos: :data:`EMBEDDED` (every source, at most :data:`EMBEDDED_PER_SOURCE`
photos each: the cheap default for ``make demo``) and :data:`FULL` (every curated photo).

Example:
    ``python -m deepfakenet.data.sources --fetch`` fills the default cache
    (``$DEEPFAKENET_SOURCES_DIR`` or ``~/.cache/deepfakenet/sources``) and logs the manifest.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import io
import logging
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from filelock import FileLock
from PIL import Image

from deepfakenet.errors import DatasetError

log = logging.getLogger(__name__)

SOURCES_DIR_ENV = "DEEPFAKENET_SOURCES_DIR"
"""Environment variable that overrides the default cache directory of the package sources."""
MIN_SHORT_SIDE = 300
"""Smallest short side (px) of any photo of the pool: 288 px crops need no upscaling."""
EMBEDDED = "embedded"
"""Pool name: every source, at most :data:`EMBEDDED_PER_SOURCE` photos each (cheap default)."""
FULL = "full"
"""Pool name: every curated photo of every source."""
POOLS = (EMBEDDED, FULL)
EMBEDDED_PER_SOURCE = 40
"""Photos per source in the :data:`EMBEDDED` pool (spread evenly over the curated list). Enough
that a photo-level split still puts a few hundred images in validation and in test."""
MANIFEST_COLUMNS = (
    "source",
    "photo",
    "kind",
    "package",
    "version",
    "licence",
    "file",
    "sha256",
    "width",
    "height",
)
DOWNLOAD_TIMEOUT_S = 1800
"""Upper bound on one ``apt-get download`` / ``pip download`` call, so a stalled mirror fails."""

Kind = Literal["bundled", "debian", "pypi"]


@dataclass(frozen=True)
class Photo:
    """One curated photograph inside a package.

    Attributes:
        name: Unique photo name across all sources (``[A-Za-z0-9_-]``).
        file: Path inside the package (``.deb`` data tree or wheel); for a photo inside a Qt
            resource bundle, ``<bundle path>!<resource path>``. Empty when unknown.
        sha256: Hex digest of the file's bytes as the registry serves them ("" for bundled
            photos, which come with an installed dependency and are not fetched).
        width: Width in pixels.
        height: Height in pixels.
    """

    name: str
    file: str
    sha256: str
    width: int
    height: int

    @property
    def suffix(self) -> str:
        """File extension of the photo (of the resource, for a photo inside a bundle)."""
        return Path(self.file.rsplit("!", 1)[-1]).suffix.lower()


@dataclass(frozen=True)
class Source:
    """A real source: one package and the photographs curated from it.

    Attributes:
        name: Source name (also the cache sub-directory and the data set's folder name).
        kind: ``bundled`` (inside an installed dependency), ``debian`` or ``pypi``.
        package: Package name in its registry.
        version: Pinned version (for ``bundled``: the version the dimensions were recorded at;
            the manifest reports the installed one).
        licence: SPDX-style licence expression of the photos, from the package's copyright
            file / metadata (``AND`` when files of the package carry different terms).
        photos: The curated photographs.
    """

    name: str
    kind: Kind
    package: str
    version: str
    licence: str
    photos: tuple[Photo, ...]


# --------------------------------------------------------------------------------------------
# Bundled sources (inside wheels the project depends on): unchanged from the original pool
# --------------------------------------------------------------------------------------------


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as a C-contiguous HxWx3 uint8 array (drops alpha, rejects grey)."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 colour photo, got shape {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {array.dtype}")
    return np.ascontiguousarray(array[:, :, :3])


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    """Replicate a 2-D uint8 greyscale photo to three channels (a black-and-white camera)."""
    grey = np.asarray(grey)
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 greyscale photo, got {grey.shape} {grey.dtype}")
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def _skimage(name: str) -> Callable[[], np.ndarray]:
    """Loader for a photo bundled with scikit-image (only names that need no pooch download)."""

    def load() -> np.ndarray:
        import skimage.data

        return _as_rgb_uint8(getattr(skimage.data, name)())

    return load


def _stereo_motorcycle(view: int) -> Callable[[], np.ndarray]:
    """Loader for one view of scikit-image's stereo pair (only one is used: a near-duplicate)."""

    def load() -> np.ndarray:
        import skimage.data

        return _as_rgb_uint8(skimage.data.stereo_motorcycle()[view])

    return load


def _grace_hopper() -> np.ndarray:
    """Load matplotlib's bundled ``grace_hopper.jpg``."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    with Image.open(path) as img:
        return _as_rgb_uint8(np.asarray(img.convert("RGB")))


def _skimage_grey(name: str) -> Callable[[], np.ndarray]:
    """Loader for a greyscale photo bundled with scikit-image, replicated to three channels."""

    def load() -> np.ndarray:
        import skimage.data

        return _grey_to_rgb(getattr(skimage.data, name)())

    return load


def _sklearn_sample(index: int) -> Callable[[], np.ndarray]:
    """Loader for one of scikit-learn's two bundled sample images (0: china, 1: flower)."""

    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_images

        return _as_rgb_uint8(load_sample_images().images[index])

    return load


BUNDLED_LOADERS: dict[str, dict[str, Callable[[], np.ndarray]]] = {
    "skimage": {
        "astronaut": _skimage("astronaut"),
        "chelsea": _skimage("chelsea"),
        "coffee": _skimage("coffee"),
        "rocket": _skimage("rocket"),
        "motorcycle_left": _stereo_motorcycle(0),
        "hubble_deep_field": _skimage("hubble_deep_field"),
    },
    "matplotlib": {"grace_hopper": _grace_hopper},
    "sklearn": {"china": _sklearn_sample(0), "flower": _sklearn_sample(1)},
    "skimage_grey": {
        "camera": _skimage_grey("camera"),
        "moon": _skimage_grey("moon"),
        "coins": _skimage_grey("coins"),
        "grass": _skimage_grey("grass"),
        "gravel": _skimage_grey("gravel"),
        "brick": _skimage_grey("brick"),
    },
}
"""Bundled source -> photo name -> loader returning an HxWx3 uint8 photo.

Only photographs that ship inside the installed wheels are listed; scikit-image images that are
fetched with pooch on first use (``lily``, ``skin``, ``kidney``, ...) are left out because they
fail offline. Non-photographs (``logo``, ``colorwheel``, ``page``, ``text``) and microscopy /
medical images (``immunohistochemistry``, ``retina``, ``cell``) are left out too, and ``cat``
duplicates ``chelsea``. ``skimage_grey`` holds scikit-image's black-and-white photographs
(replicated to RGB): a source from a different kind of camera.
"""

# --------------------------------------------------------------------------------------------
# Curated photo lists: (name, width, height, file relative to the source's root, sha256)
# --------------------------------------------------------------------------------------------

# fmt: off
_SKIMAGE_PHOTOS = (
    ("astronaut", 512, 512, "astronaut.png", ""),
    ("chelsea", 451, 300, "chelsea.png", ""),
    ("coffee", 600, 400, "coffee.png", ""),
    ("rocket", 640, 427, "rocket.jpg", ""),
    ("motorcycle_left", 741, 500, "motorcycle_left.png", ""),
    ("hubble_deep_field", 1000, 872, "hubble_deep_field.jpg", ""),
)
_MATPLOTLIB_PHOTOS = (("grace_hopper", 512, 600, "grace_hopper.jpg", ""),)
_SKLEARN_PHOTOS = (
    ("china", 640, 427, "china.jpg", ""),
    ("flower", 640, 427, "flower.jpg", ""),
)
_SKIMAGE_GREY_PHOTOS = (
    ("camera", 512, 512, "camera.png", ""),
    ("moon", 512, 512, "moon.png", ""),
    ("coins", 384, 303, "coins.png", ""),
    ("grass", 512, 512, "grass.png", ""),
    ("gravel", 512, 512, "gravel.png", ""),
    ("brick", 512, 512, "brick.png", ""),
)
_GCOMPRIS_PHOTOS = (
    ("gcompris_spray", 320, 320,
     "categorization.rcc!categorization/resource/images/tools/spray.webp",
     "c63a0145cf7e0fdbe15d5c89884ab6825a5ae3a1bd8ff1eb65370400e439a5d6"),
    ("gcompris_windmill6", 309, 320,
     "categorization.rcc!categorization/resource/images/renewable/windmill6.webp",
     "0dc109b5dc42a98b52c52d125f16fa28ac0c471e0e3ae830e65997c0e8f33f46"),
    ("gcompris_victoriaMemorial", 301, 320,
     "categorization.rcc!categorization/resource/images/monuments/victoriaMemorial.webp",
     "acb47a53be1d913d83bdc1081f7769a1615fa8cf43c7d68b873fef45fcd4b8a6"),
    ("gcompris_numbers", 400, 319,
     "categorization.rcc!categorization/resource/images/numbers/numbers.webp",
     "9bee0d3330c34f97894fcab90559d13e68000133533a2df60bc56bfc8d8b1b66"),
    ("gcompris_alphabets", 400, 304,
     "categorization.rcc!categorization/resource/images/alphabets/alphabets.webp",
     "76cdfd62ea1dde174d3483f87eff3f73b081c737374bba2df743e8d112423fa2"),
    ("gcompris_baseball", 320, 317,
     "categorization.rcc!categorization/resource/images/others/baseball.webp",
     "374c9ed08f3aef66ad05698e575718d2f02e2cdc9629e6607c1223480d49ca89"),
    ("gcompris_volleyball", 320, 320,
     "categorization.rcc!categorization/resource/images/others/volleyball.webp",
     "33bfa2aa2d236679ab30807634170aecf7d8c64983a01277bb50c49a9936ae1b"),
    ("gcompris_sea1", 1440, 1080,
     "clickgame.rcc!clickgame/resource/sea1.webp",
     "a3a8c196d24f6c37fc2e9bebd421ffa339485cf511fc2c3258ba9e5a17076170"),
    ("gcompris_sea2", 1440, 1080,
     "clickgame.rcc!clickgame/resource/sea2.webp",
     "533dcc0d871a390d5ee648ce1b4cfbccb41890cc1e514e5966f3cc02550d75a4"),
    ("gcompris_sea3", 1440, 1080,
     "clickgame.rcc!clickgame/resource/sea3.webp",
     "9c8236a6ade2a59fb05dfe03802cd9aa5d5e672c85731b136847287c33265974"),
    ("gcompris_sea4", 1620, 1080,
     "clickgame.rcc!clickgame/resource/sea4.webp",
     "21295e109d35b0f11a9c8dd17524be6212571cb28fad56613be1f8789a261f5e"),
    ("gcompris_sea5", 1440, 1080,
     "clickgame.rcc!clickgame/resource/sea5.webp",
     "08c6d1ae0ea47c5136137148c817472da329ca1e67063b0fb3e60190e5c55b00"),
    ("gcompris_sea6", 1603, 1080,
     "clickgame.rcc!clickgame/resource/sea6.webp",
     "42f7a4152c54f8bf065e8ad182472729a5374a6860c573a4de1ea0987e026cf3"),
    ("gcompris_FanoeWindmill", 333, 500,
     "details.rcc!details/resource/image/FanoeWindmill_background.webp",
     "3cea5251d1e93a9a2e03d3d6001a26098c9614e4b7922725924307a305148068"),
    ("gcompris_EgeskovSlotSpejling", 680, 473,
     "details.rcc!details/resource/image/EgeskovSlotSpejling_background.webp",
     "6ba38f91b6f6f53c4c105c57f647bd43d11b737293f23b1cef1806a81b872106"),
    ("gcompris_GizahPyramids", 680, 452,
     "details.rcc!details/resource/image/GizahPyramids_background.webp",
     "71946fdfe1a1dab7b081b97a53fe4d2beed6eaf8bf02e0df7ecf4a1974bbe7db"),
    ("gcompris_EilanDonanCastle", 680, 453,
     "details.rcc!details/resource/image/EilanDonanCastle_background.webp",
     "cd94fbfc2ef05477d23688eb24401fb8b8dd550f6eb0aa2b8cbcb6f646c7a62f"),
    ("gcompris_TowerBridgeLondon", 680, 340,
     "details.rcc!details/resource/image/TowerBridgeLondon_background.webp",
     "a811a6b2294807122fdde6295e2decb59e80ef6e248eddb4b228a6785a354e8c"),
    ("gcompris_NDP", 376, 500,
     "details.rcc!details/resource/image/NDP_background.webp",
     "0bbfd0f6edd1145aeee774587635d7738c73274271b4be83eec9b476a3c421ee"),
    ("gcompris_Nagoya", 680, 383,
     "details.rcc!details/resource/image/Nagoya_background.webp",
     "84b09f2cc12c464b1404e4fdb3c45ac7f7f51e9b4b3dfe450bf7cdf669946cd7"),
    ("gcompris_OperaSidney", 680, 376,
     "details.rcc!details/resource/image/OperaSidney_background.webp",
     "702de281dd3a2fa4c4c3bea385e2e12d5030fc8b46268e96dcfda5a3d0d3bb90"),
    ("gcompris_gorilla", 1920, 1080,
     "erase.rcc!erase/resource/gorilla.webp",
     "5ce6131ce966f585b263e2f04cbd504dd7366f99885ca3cbef12aa25d559b5d4"),
    ("gcompris_northern_harrier", 1920, 1080,
     "erase.rcc!erase/resource/northern_harrier.webp",
     "e2b2f388dc6f92ce2ea0f40f2d8d2d1ec6e8a135d05986cae67a7d0330c1ac26"),
    ("gcompris_pika", 1920, 1080,
     "erase.rcc!erase/resource/pika.webp",
     "1c8a4014d079380622c55d15afe6cad5bb53c42b09eb5b4e7bec8f127fdd063f"),
    ("gcompris_caterpillar", 1920, 1080,
     "erase.rcc!erase/resource/caterpillar.webp",
     "1aca9fcc5a0e3e9f2b2bc7d0f231e509f935dd8207b064e7c1810e0466e9403a"),
    ("gcompris_giraffe", 1920, 1080,
     "erase.rcc!erase/resource/giraffe.webp",
     "c39106edc785a65bf0eee10bf039375b2fc3f72b405d76fec392a1a40b39d4f0"),
    ("gcompris_calf", 1920, 1080,
     "erase.rcc!erase/resource/calf.webp",
     "5957d392349d9016e0b6a2ca900ebd12a6a6eed6b21a1fb69111d1fabbca3973"),
    ("gcompris_penguin", 1920, 1080,
     "erase.rcc!erase/resource/penguin.webp",
     "1c8be6df0a6ff161ad49a789b5699f842b18f5dc93bf6b66fd5f1342266643b2"),
    ("gcompris_nubian_ibex", 1920, 1080,
     "erase.rcc!erase/resource/nubian_ibex.webp",
     "5268033ecc366dbcf949a06e62361785a7be788dfa2b1ad343e7ded8104cfaf2"),
    ("gcompris_camels", 1920, 1080,
     "erase.rcc!erase/resource/camels.webp",
     "df4da85790b8a403f5095e796d042f28f8386831a4970ab4b3035746ae038edc"),
    ("gcompris_macaque", 1920, 1080,
     "erase.rcc!erase/resource/macaque.webp",
     "3a97a3c854c6d93cc67cc608e569ed0e6157f22cd5dd7e118fb0a42641eeada8"),
    ("gcompris_swans", 1920, 1080,
     "erase.rcc!erase/resource/swans.webp",
     "5fe69699bf37d702c3ca9b2b76c727aff717494ba368272952e05ac233028eda"),
    ("gcompris_dolphin", 1920, 1080,
     "erase.rcc!erase/resource/dolphin.webp",
     "2847f84c4c9698a9b55124145dd679868da1239b0f174db8f2c83e173cbb9d8c"),
    ("gcompris_long_nosed_monkey", 1920, 1080,
     "erase.rcc!erase/resource/long_nosed_monkey.webp",
     "7dcb1048527339524e6decd296d4bf8c22d74415fe5d6fcaa3354ae17530bf86"),
    ("gcompris_kingfisher", 1920, 1080,
     "erase.rcc!erase/resource/kingfisher.webp",
     "b637658d7e0f8f555b5683a8c912646d57ba37be6ba9684df893a1d07ee9e637"),
    ("gcompris_heron", 1920, 1080,
     "erase.rcc!erase/resource/heron.webp",
     "63006dabe8b74b826eba8d8d80c4330ff38f57fd3e1010254f4644d830c48067"),
    ("gcompris_chamaeleon", 1920, 1080,
     "erase.rcc!erase/resource/chamaeleon.webp",
     "8a338c7df32949c5a5e1fef4b901d554b1c1af71c6a5bd81882522c11e0c41e5"),
    ("gcompris_flying_fox", 1920, 1080,
     "erase.rcc!erase/resource/flying_fox.webp",
     "076622230f0634c0ef952f8f197280262db2355205c22f0c8f7731a13557c54a"),
    ("gcompris_gibbon", 1920, 1080,
     "erase.rcc!erase/resource/gibbon.webp",
     "a7b242c4b014e7e37f2f3fac95c841c49e2dea5d5aa886e2ab4758e0372af9f8"),
    ("gcompris_rhinoceros", 1920, 1080,
     "erase.rcc!erase/resource/rhinoceros.webp",
     "250140eb6d3a0af11b87c084ce18a6c41a8ed679c97ef758b58ba54e04b11f9c"),
    ("gcompris_crab", 1920, 1080,
     "erase.rcc!erase/resource/crab.webp",
     "822be2d08adc89a71e6eeff1500eea684c6f0961c98ddb1b23f0e66bbae4f987"),
    ("gcompris_goat", 1920, 1080,
     "erase.rcc!erase/resource/goat.webp",
     "acba63337c11582a5cc3fd97573e4fefd353da82e63a06f1947cdbb11f49b7bd"),
    ("gcompris_toucan", 1920, 1080,
     "erase.rcc!erase/resource/toucan.webp",
     "977b0ff4277075a4ef79e0c335276fd5a2ae68f8bf366503fd33203c49f82b04"),
    ("gcompris_gosling", 1920, 1080,
     "erase.rcc!erase/resource/gosling.webp",
     "dab7bc930f6fe4f7a32db0b8f1bd86d905db50d8aa2e646522c428c731a80853"),
    ("gcompris_horse", 1920, 1080,
     "erase.rcc!erase/resource/horse.webp",
     "15b49393342bf7de3fef6c1bb083cc7b643fa90b5b46e1a344833eb1d515a795"),
    ("gcompris_alpaca", 1920, 1080,
     "erase.rcc!erase/resource/alpaca.webp",
     "ffd29864f09bf7439144e8da04d772fb455cfe9891d50e60ae70b99a16e42d5e"),
    ("gcompris_cheetah", 1920, 1080,
     "erase.rcc!erase/resource/cheetah.webp",
     "b9d85c2e2899036e7b0caf458696586adf63d431e5034362bb48a0abd8d29149"),
    ("gcompris_butterfly", 1920, 1080,
     "erase.rcc!erase/resource/butterfly.webp",
     "e12b50bb4ee6bb36bd4e3ab428a2d1ea87d5390b5a6a4aa189b10950a1925860"),
    ("gcompris_bee", 1885, 1060,
     "erase.rcc!erase/resource/bee.webp",
     "810de9fea0499e4d1a7584c8b62b509ef1c404d9bec3094d53aeb8a77abdc7b2"),
    ("gcompris_meerkats", 1920, 1080,
     "erase.rcc!erase/resource/meerkats.webp",
     "459198d83393a1835c76861d901144d209a0bead29f4b9d2ef5b472eeab01fdd"),
    ("gcompris_kitten", 1920, 1080,
     "erase.rcc!erase/resource/kitten.webp",
     "c6f3a52585a3d6179c78e15375a9d9b11f37bfd0ac33b477f3b67cda06c59727"),
    ("gcompris_red_panda", 1920, 1080,
     "erase.rcc!erase/resource/red_panda.webp",
     "ec755f7b9d8953037161a7cf4f01270fdc92382913b33d987ceb27c1dfa6ded1"),
    ("gcompris_squirrel", 1920, 1080,
     "erase.rcc!erase/resource/squirrel.webp",
     "56bdd761a41440bdd47eae4aa75b1703f9d24c5d09c8352f9b462deaa6b9b96f"),
    ("gcompris_spoonbills", 1920, 1080,
     "erase.rcc!erase/resource/spoonbills.webp",
     "f67d7d04bf3ba2270953db11be657fc3fc7292d4d070891f5164fef5b1665f96"),
    ("gcompris_dog", 1024, 768,
     "explore_farm_animals.rcc!explore_farm_animals/resource/animals/dog.webp",
     "5e9d9544495740101e4cfff817d986b683731112b2cf17fde2e4c2a26c3c5314"),
    ("gcompris_cow", 1024, 768,
     "explore_farm_animals.rcc!explore_farm_animals/resource/animals/cow.webp",
     "db359136be5ef7c435a2521e7f782a7f13ab48634f8a955864b1557ca21926db"),
    ("gcompris_cat", 1024, 768,
     "explore_farm_animals.rcc!explore_farm_animals/resource/animals/cat.webp",
     "ab7c3e1b04e80bc567b00dba49946918b5a38be1f37618f0d2b4887ef5792770"),
    ("gcompris_chicken", 1024, 683,
     "explore_farm_animals.rcc!explore_farm_animals/resource/animals/chicken.webp",
     "30a07d3c7dfc191ff4d160826ad14babb4cfb9cb47b15ec8a098857f135bfcd4"),
    ("gcompris_horse_explore_farm_animals", 1024, 664,
     "explore_farm_animals.rcc!explore_farm_animals/resource/animals/horse.webp",
     "87879a9644b71713f52aadf22562f30cc3e6e25a36e07d602a90e0cf6ec888aa"),
    ("gcompris_duck", 1024, 966,
     "explore_farm_animals.rcc!explore_farm_animals/resource/animals/duck.webp",
     "fa4572f2022a3aded4b627b9234fb8abf1658d125b267dc8d28cb1a8213c3b60"),
    ("gcompris_sheep", 1024, 742,
     "explore_farm_animals.rcc!explore_farm_animals/resource/animals/sheep.webp",
     "3bac61d5dabb709cdea2511f63bab6bfcde9736536a39f1f7510f5258a75b088"),
    ("gcompris_owl", 1024, 683,
     "explore_farm_animals.rcc!explore_farm_animals/resource/animals/owl.webp",
     "e8b7d705a955799f02eb3e8ded6487991d2c5c8274fee828ac75c0b917b3e237"),
    ("gcompris_pig", 1024, 768,
     "explore_farm_animals.rcc!explore_farm_animals/resource/animals/pig.webp",
     "4f3d27d1fd3d0b3c0482d72a7b62101c133329f95427dcb3fb1319e69d53b7c8"),
    ("gcompris_canyondeChelly", 1024, 692,
     "explore_monuments.rcc!explore_monuments/resource/usa/canyondeChelly.webp",
     "2148fe45a54186a6e8bc4a395bbbffa0e3530e65232ceda5b841397a0d031bfb"),
    ("gcompris_georgeWashingtonBirthplace", 1024, 683,
     "explore_monuments.rcc!explore_monuments/resource/usa/georgeWashingtonBirthplace.webp",
     "134f44b0e1c333202da337c73b6752db36fcbb5cb73e05cfcb4e5f4ff2fb4f43"),
    ("gcompris_lincolnMemorial", 1024, 548,
     "explore_monuments.rcc!explore_monuments/resource/usa/lincolnMemorial.webp",
     "52eab4d110bd168e644c9152a60a911cdd8ba5e3d4b661e966f256a074f66fb8"),
    ("gcompris_navajo", 1024, 768,
     "explore_monuments.rcc!explore_monuments/resource/usa/navajo.webp",
     "fa8d36162b1380ac7998ab32d82f7b86b390cdce830acd807ef314291cc03ee5"),
    ("gcompris_cabrillo", 359, 1024,
     "explore_monuments.rcc!explore_monuments/resource/usa/cabrillo.webp",
     "e109eb44fd12f853a4adfa0c30ca5a6bcc03205a58c9e6802b88886751d42277"),
    ("gcompris_mountRushmore", 1024, 768,
     "explore_monuments.rcc!explore_monuments/resource/usa/mountRushmore.webp",
     "d9fec7d6ac491a64c5dab74fed447054e9d188dc9732715bef12bd63909e87c8"),
    ("gcompris_statueofLiberty", 768, 1024,
     "explore_monuments.rcc!explore_monuments/resource/usa/statueofLiberty.webp",
     "8eeda3c92c734520b4b7865eb04a900402a329890064058bcb4448d21669a3a8"),
    ("gcompris_castillodeSanMarcos", 1024, 626,
     "explore_monuments.rcc!explore_monuments/resource/usa/castillodeSanMarcos.webp",
     "b1d3584272eb66d8211a9cb71a3647e88597986f8020eca9691c488282ea9a88"),
    ("gcompris_fortSumter", 1024, 672,
     "explore_monuments.rcc!explore_monuments/resource/usa/fortSumter.webp",
     "42c8376f99f770fa9daa92afb8cde44dc58dd3282b10c5ba8fabec02ea4b9643"),
    ("gcompris_castleClinton", 1024, 808,
     "explore_monuments.rcc!explore_monuments/resource/usa/castleClinton.webp",
     "c36913b06cea891736c82132a9124d178c11a0b1e1f0d511e9f8158a8271ac62"),
    ("gcompris_meidumPyramid", 1024, 768,
     "explore_monuments.rcc!explore_monuments/resource/egypt/meidumPyramid.webp",
     "694a4eaebc52849aacf802383bc5c755c0fff97b8342a4ef733c7a36c6e6aa53"),
    ("gcompris_greatPyramidOfGiza", 1024, 685,
     "explore_monuments.rcc!explore_monuments/resource/egypt/greatPyramidOfGiza.webp",
     "f8427c09579493e7918d00134423ed40140c2f3fa09fb13341d3c1a0640fc1e9"),
    ("gcompris_bentPyramid", 1024, 768,
     "explore_monuments.rcc!explore_monuments/resource/egypt/bentPyramid.webp",
     "ca717a088d790a901ffa1b03162c5cc438f99924d457f988263f158a7cc2cb38"),
    ("gcompris_redPyramid", 1024, 768,
     "explore_monuments.rcc!explore_monuments/resource/egypt/redPyramid.webp",
     "7df87dfe904e18fee2062e8dba2cbfc5c7b807e27c688b271a7380000865c2cf"),
    ("gcompris_greatStupa", 1024, 683,
     "explore_monuments.rcc!explore_monuments/resource/india/greatStupa.webp",
     "3b6741152471d00646271d3a413c08af0533766f09dc87af19abb9ff71801886"),
    ("gcompris_gatewayofIndia", 1024, 768,
     "explore_monuments.rcc!explore_monuments/resource/india/gatewayofIndia.webp",
     "8d1053776a85a9703f819ae6a82f981cbfa9a8961712404afee235afd87a0e48"),
    ("gcompris_konarkSunTemple", 1024, 768,
     "explore_monuments.rcc!explore_monuments/resource/india/konarkSunTemple.webp",
     "c94ddb83bb2d878fecaf0677e8e6c1e73ede7dd39bd69f5e84d2f68e84515156"),
    ("gcompris_charminar", 768, 1024,
     "explore_monuments.rcc!explore_monuments/resource/india/charminar.webp",
     "a657a2139787bded963966d92b4ff9825327572e5e73d4badc1ac52cc063db0f"),
    ("gcompris_hawaMahal", 1024, 768,
     "explore_monuments.rcc!explore_monuments/resource/india/hawaMahal.webp",
     "4edb7eed9db596bd7f3ad98eb34a82c04c32ff1d57aeec80a815c1248feb8e04"),
    ("gcompris_rangGhar", 1024, 768,
     "explore_monuments.rcc!explore_monuments/resource/india/rangGhar.webp",
     "41791947f8772c9bf483ddb13a4fa4dfbbd1eef44f29937a99eebc5361d981a2"),
    ("gcompris_victoriaMemorial_explore_monuments", 1024, 451,
     "explore_monuments.rcc!explore_monuments/resource/india/victoriaMemorial.webp",
     "be7b3264cd3391e5b50714e0cec31f2e23e658498b5aba584a4b9aaf526dc51e"),
    ("gcompris_mysorePalace", 1024, 578,
     "explore_monuments.rcc!explore_monuments/resource/india/mysorePalace.webp",
     "a84a26be8d9447341e5235dd319acc71a49f2d91c8dd55a17a89867c64a580c0"),
    ("gcompris_goldenTemple", 1024, 768,
     "explore_monuments.rcc!explore_monuments/resource/india/goldenTemple.webp",
     "ec52355726f8c36c78f0db526dc0fd8c823f5572a5ced04e8914a82a7b496a8c"),
    ("gcompris_ajantaCave", 1024, 768,
     "explore_monuments.rcc!explore_monuments/resource/india/ajantaCave.webp",
     "7dbf980b3711f7557ed4d5748e494c48f72ac34ff601cf1a46f272ff9ab20543"),
    ("gcompris_qutubMinar", 768, 1024,
     "explore_monuments.rcc!explore_monuments/resource/india/qutubMinar.webp",
     "dea912cbd3950dacbba8cd810e39713525c27d54e58ce6ba7502a0f83cf24c95"),
    ("gcompris_chateaudeChambord", 1024, 768,
     "explore_monuments.rcc!explore_monuments/resource/france/chateaudeChambord.webp",
     "a96693bfff66c9a747a066b8d798aaf876427de969603c4125bf881f8af0ac2d"),
    ("gcompris_pontduGard", 1024, 681,
     "explore_monuments.rcc!explore_monuments/resource/france/pontduGard.webp",
     "b9e560a9ae2fd919baec7f5ceb08877d57194e614481b25058693a88c232897f"),
    ("gcompris_palaisdesPapes", 1024, 769,
     "explore_monuments.rcc!explore_monuments/resource/france/palaisdesPapes.webp",
     "fded6367850d2fafaf5ecad961ba51efbdc0c3d3171f7cc058d2ccfd2e6897e6"),
    ("gcompris_reimsCathedral", 1024, 768,
     "explore_monuments.rcc!explore_monuments/resource/france/reimsCathedral.webp",
     "720ddce0a3124d68e306008c152fb19ec2a2917b3609ba8a31607cffaf52c2d2"),
    ("gcompris_eiffelTower", 1024, 769,
     "explore_monuments.rcc!explore_monuments/resource/france/eiffelTower.webp",
     "cf115ede228937f0dfea0ffd7efa5fa24a948f388091ce1a123e7636b25c080b"),
    ("gcompris_citedeCarcassonne", 1024, 768,
     "explore_monuments.rcc!explore_monuments/resource/france/citedeCarcassonne.webp",
     "b9de4b334e76df53df948de034f4bcc744be682a904ad7c61a9f9f7ac8de326b"),
    ("gcompris_arlesAmphitheater", 1024, 768,
     "explore_monuments.rcc!explore_monuments/resource/france/arlesAmphitheater.webp",
     "62d80a80ca5e5040bdb87c6f2fb57fa333d9b190c9a41066e4017cd4268656d9"),
    ("gcompris_chateaudeChenonceau", 1024, 768,
     "explore_monuments.rcc!explore_monuments/resource/france/chateaudeChenonceau.webp",
     "4e414fc35ae9b4e18e3219d6278287fb720e89facd332fef9a1c4fe9c3c3adc3"),
    ("gcompris_montStMichel", 1024, 576,
     "explore_monuments.rcc!explore_monuments/resource/france/montStMichel.webp",
     "1c097b958c4bc0e52384e572c3e3ed70abbb54e9b4936cd0852320e1ce12561e"),
    ("gcompris_rocamadour", 1024, 682,
     "explore_monuments.rcc!explore_monuments/resource/france/rocamadour.webp",
     "e9642c03c23004248bcdf0a364d9828625ba5ef75f82e4a10bfdf2b16bd0a18c"),
    ("gcompris_berlinCathedral", 1024, 683,
     "explore_monuments.rcc!explore_monuments/resource/germany/berlinCathedral.webp",
     "b552994f64727ceaa04218d6a5e7a86b08cb8b550c1eeae0b010f857286d308e"),
    ("gcompris_schwerinPalace", 1024, 683,
     "explore_monuments.rcc!explore_monuments/resource/germany/schwerinPalace.webp",
     "91be8dd19821221b2b3c30a78cb43a17d8017751a1d36acd751b1e9417acbbae"),
    ("gcompris_trierImperialBaths", 1024, 569,
     "explore_monuments.rcc!explore_monuments/resource/germany/trierImperialBaths.webp",
     "dd1818360d153c095e227157d128e498fe9b29437594e8e5c663184cad4120fb"),
    ("gcompris_aulaPalatina", 1024, 682,
     "explore_monuments.rcc!explore_monuments/resource/germany/aulaPalatina.webp",
     "5b39680425fca3ff5f56b3bd79d11683a46a009d66ef23445e165ea72524b3cb"),
    ("gcompris_brandenburgGate", 1024, 768,
     "explore_monuments.rcc!explore_monuments/resource/germany/brandenburgGate.webp",
     "2cb312c79a20e0cd8ed865c5b15a95af86d8d95a0ab96da8814c073857abf4bb"),
    ("gcompris_neuschwansteinCastle", 1024, 683,
     "explore_monuments.rcc!explore_monuments/resource/germany/neuschwansteinCastle.webp",
     "15ec5fcb8758d54efa65581b9682e5cc766d700f3f329d700a06d0550d2c8e03"),
    ("gcompris_wormsCathedral", 888, 1024,
     "explore_monuments.rcc!explore_monuments/resource/germany/wormsCathedral.webp",
     "c90cdcbf981bcd5f118b553b059448db6fb0bfe801b40240e02ccd2975b92a59"),
    ("gcompris_machuPicchu", 1024, 576,
     "explore_monuments.rcc!explore_monuments/resource/wonders/machuPicchu.webp",
     "e04e163ccef6e59411dff15c3459768b2f442fe2ff5042369d9a480f1f272068"),
    ("gcompris_tajMahal", 1024, 673,
     "explore_monuments.rcc!explore_monuments/resource/wonders/tajMahal.webp",
     "fc0d45ec5a258568858c70d2d78eb23a5eb769255d74b384f70c20422d2eb351"),
    ("gcompris_chichenItza", 1024, 545,
     "explore_monuments.rcc!explore_monuments/resource/wonders/chichenItza.webp",
     "9882593801be435822f1d948afb36b171ed7fc7a301dfa74b11df5ea9afaf681"),
    ("gcompris_colosseum", 1024, 666,
     "explore_monuments.rcc!explore_monuments/resource/wonders/colosseum.webp",
     "0d38a0c2d4910f895c003825999345a86da080ff76d709bba923153cbd654945"),
    ("gcompris_petra", 1024, 720,
     "explore_monuments.rcc!explore_monuments/resource/wonders/petra.webp",
     "cc782ccdd5b508299ad17402df2d0d375c26e1f9b18e4d2e6c3fd474fcaeb458"),
    ("gcompris_greatWallofChina", 1024, 766,
     "explore_monuments.rcc!explore_monuments/resource/wonders/greatWallofChina.webp",
     "546e2483d17c2b732ce375d946afba6fc612166abcd6d976217747a982b60777"),
    ("gcompris_christTheRedeemer", 1024, 685,
     "explore_monuments.rcc!explore_monuments/resource/wonders/christTheRedeemer.webp",
     "3133f2872b3d791595296fd4bf4812654326e01f5c7cd2d870765bfd6772fa2b"),
    ("gcompris_crocodile", 1024, 506,
     "explore_world_animals.rcc!explore_world_animals/resource/animals/crocodile.webp",
     "840cf54b69bf4fb9a14a99fe502e237ad36e7230c146ca884b7b0e444ec12534"),
    ("gcompris_giraffe_explore_world_animals", 1024, 683,
     "explore_world_animals.rcc!explore_world_animals/resource/animals/giraffe.webp",
     "68014ed783cf6a8b8c9c4202cf2c467a34819dab08bf566e93d5fcd872e41f5c"),
    ("gcompris_koala", 768, 1024,
     "explore_world_animals.rcc!explore_world_animals/resource/animals/koala.webp",
     "77b243c27d79f3f5706497af5c1e8e9134f87d634def2b81e2074b572b575d18"),
    ("gcompris_bison", 1024, 768,
     "explore_world_animals.rcc!explore_world_animals/resource/animals/bison.webp",
     "11f3b2c5b876ee083924ff3ffab233c3e1d161993605b67d4d2ab5a9f1d9cf25"),
    ("gcompris_dragon", 1024, 682,
     "explore_world_animals.rcc!explore_world_animals/resource/animals/dragon.webp",
     "fc36683cc2069ac83ae84f2da61c2774149d1a1dcb99820380b724ca50d3532e"),
    ("gcompris_jaguar", 1024, 683,
     "explore_world_animals.rcc!explore_world_animals/resource/animals/jaguar.webp",
     "22704727b6643480c62487ffb2d9fd618a3f499dde84b1eb789d4b0b11477e85"),
    ("gcompris_hedgehog", 1024, 731,
     "explore_world_animals.rcc!explore_world_animals/resource/animals/hedgehog.webp",
     "780aceaa624415db1f6ff304ed13e804572686316e69d21ee0e13856ef173f7e"),
    ("gcompris_kangaroo", 1024, 768,
     "explore_world_animals.rcc!explore_world_animals/resource/animals/kangaroo.webp",
     "683964b6f57fdced539b3da8983ef4f4c9d78a0be3e251363fc5a17d4fb4fe7e"),
    ("gcompris_narwhal", 1024, 530,
     "explore_world_animals.rcc!explore_world_animals/resource/animals/narwhal.webp",
     "2a94d2fc7482ca806ce60210031f167782f7407ed47cd721371355e2ab575afc"),
    ("gcompris_moose", 1024, 683,
     "explore_world_animals.rcc!explore_world_animals/resource/animals/moose.webp",
     "2252a671c2e0ade9ce6ff6d41957348a81ebccfd952ba59bfddceff0b059ea48"),
    ("gcompris_panda", 1024, 681,
     "explore_world_animals.rcc!explore_world_animals/resource/animals/panda.webp",
     "70ccf9a9db5008100eb6955ae25fabd4f7769427be784d627cf6315f6dfce692"),
    ("gcompris_chameleon", 1024, 768,
     "explore_world_animals.rcc!explore_world_animals/resource/animals/chameleon.webp",
     "f3ececf0133c1301227fdea62d74bce7bcc0d138b048714b116aa4a0744260d5"),
    ("gcompris_lemur", 1024, 683,
     "explore_world_animals.rcc!explore_world_animals/resource/animals/lemur.webp",
     "4fccf91dd5e6a749d9eb621f982e6a0d7072830db91ba0daabcd86b1de7a9747"),
    ("gcompris_polar_bear", 1024, 768,
     "explore_world_animals.rcc!explore_world_animals/resource/animals/polar_bear.webp",
     "0544cef0a7d6940d3c143a04eecb7065bf9b90d7d367ad8bacbef6631b506070"),
    ("gcompris_scarlet_macaw", 1024, 793,
     "explore_world_animals.rcc!explore_world_animals/resource/animals/scarlet_macaw.webp",
     "8b088ed71a87e7e929cf08b49a1e1c977c47544307d348e52a0f4a85128662a0"),
    ("gcompris_italy", 1024, 683,
     "explore_world_music.rcc!explore_world_music/resource/music/italy.webp",
     "b30a023e5d36bb053a4ee8e57bd0b4fa2042e3d0a5ab8e663a341ba6e35672ad"),
    ("gcompris_america", 1024, 768,
     "explore_world_music.rcc!explore_world_music/resource/music/america.webp",
     "72af64588442d1e251ed33568629d35bf88b3fa348def66265320571bdda0927"),
    ("gcompris_australia", 683, 1024,
     "explore_world_music.rcc!explore_world_music/resource/music/australia.webp",
     "b7e0bc6da6f9fd8b2ae453f9a4a7021e5439bbd8944d4566b938134c0fa24951"),
    ("gcompris_japan", 1024, 683,
     "explore_world_music.rcc!explore_world_music/resource/music/japan.webp",
     "0f0aa2d3116e01acdc693b626b1b60699124145670e624121289a7ced5020679"),
    ("gcompris_orchestra", 1024, 613,
     "explore_world_music.rcc!explore_world_music/resource/music/orchestra.webp",
     "b4a6d85a40cefbd33cc6801ffcbb3ad7026d8d79be134c753b4f12b0b862cedf"),
    ("gcompris_africa", 1024, 643,
     "explore_world_music.rcc!explore_world_music/resource/music/africa.webp",
     "c4b27aebe08498a882efa57ebc1ac2798ae2173228656f107cd8bff6098b5acf"),
    ("gcompris_ireland", 1024, 416,
     "explore_world_music.rcc!explore_world_music/resource/music/ireland.webp",
     "20ef5a10a55b03632dc5fec2434c3a7814c15abbbe7489dedb4aa97ee6b111af"),
    ("gcompris_mexico", 1024, 680,
     "explore_world_music.rcc!explore_world_music/resource/music/mexico.webp",
     "cd1286e5d7649bc446a47297f0127a38295e5a5f39a641b528e0c5063675c9d1"),
    ("gcompris_middleeast", 561, 1024,
     "explore_world_music.rcc!explore_world_music/resource/music/middleeast.webp",
     "bc847e52730f5920b6743b59c881cc16430a1d2438ceba9008a2880530f7aaf2"),
)
_OPENCV_PHOTOS = (
    ("opencv_aero1", 640, 480,
     "data/aero1.jpg",
     "d9a69191f6e3642ea361bc3c62e677b2f40fe6534b78da540f4155e0734b59ef"),
    ("opencv_aloeL", 1282, 1110,
     "data/aloeL.jpg",
     "cce5736808efe80d9f04b118dbb978c344d4345672b332718c3e039a3eeb8eee"),
    ("opencv_apple", 512, 512,
     "data/apple.jpg",
     "e86879de3d9a807dedc742a8f464f39e6b74bbb531a1fba3583155d94997d1cd"),
    ("opencv_baboon", 512, 512,
     "data/baboon.jpg",
     "1a1dd18d78eec44420af3b0b7f08ee3d41c982916cae3ce203d7ff35d754cc0f"),
    ("opencv_basketball1", 640, 480,
     "data/basketball1.png",
     "ba06f6701f7260998b430c39b6557f775497e6ce7b1a74f0b7ea6af371bf54a6"),
    ("opencv_board", 640, 480,
     "data/board.jpg",
     "4c9a24ba67138ad5486d550f586cc5dd1161be112f1c1bea336d6c550cdf255f"),
    ("opencv_box_in_scene", 512, 384,
     "data/box_in_scene.png",
     "8b0225ff76244a42bd1400c0904f8b7afea7d97b7d8115495e42e98ad347bd51"),
    ("opencv_building", 868, 600,
     "data/building.jpg",
     "742a1baad62ac82e91e718e77eedf7e85c2eddc4badfb8c87c6cbc86c45a8b07"),
    ("opencv_butterfly", 493, 356,
     "data/butterfly.jpg",
     "34a99716b78ded10eae87b4880de739d3e68cc7dd1a96812bb28f469d5eeaea8"),
    ("opencv_chicky_512", 512, 512,
     "data/chicky_512.png",
     "4d2cf040de084fd3f34d5e3f96f1251faaa4787c1ac3b548fec5809a0d01854e"),
    ("opencv_ela_original", 902, 770,
     "data/ela_original.jpg",
     "b55798b35e2dcb24675f0865a2442d0e4887eeb6aff322ecb1968d936cc23e7f"),
    ("opencv_fruits", 512, 480,
     "data/fruits.jpg",
     "9c031d80a1c52da5eca790db896baffec6a7e52bf786cdb7bbfca5c7f880e6a1"),
    ("opencv_graf1", 800, 640,
     "data/graf1.png",
     "1504b769303c7bde00fa578eeaad3c68e02aceabeb1242e556f1f8d19e4bdea5"),
    ("opencv_home", 512, 384,
     "data/home.jpg",
     "23b8cf46a1965d0ec33459b875aed43187802834db49e0daa9fa2cc842e9d8d2"),
    ("opencv_left", 612, 459,
     "data/left.jpg",
     "fb314330c3eb0a81651c682803e73b348898157267fbc37c4c2c07d1b3a8e321"),
    ("opencv_left01", 640, 480,
     "data/left01.jpg",
     "9621899098adffa1440c8264606bb7be535ccfd9ad126ae8e0bd9b0c5a5b8676"),
    ("opencv_leuvenA", 751, 563,
     "data/leuvenA.jpg",
     "b2977cdbd9fb3f94dadd6f76cf586d145676deb8a22b5f0f42149d21c058c09f"),
    ("opencv_messi5", 548, 342,
     "data/messi5.jpg",
     "1d570e49654e84c7a943918537bd9e5e1ef82920152e147c834006e235be97c9"),
    ("opencv_orange", 512, 512,
     "data/orange.jpg",
     "152c20d2f380ac985de25e474e1a5f06ed34b932191342099b8272a63a15a079"),
    ("opencv_rubberwhale1", 584, 388,
     "data/rubberwhale1.png",
     "eb312435369dac9efcc92f7e098edbd9ed8d7e6dfede8b3b4d8e3702cd80b796"),
    ("opencv_squirrel_cls", 535, 426,
     "data/squirrel_cls.jpg",
     "20bb6e8ae96918a36c9886b6d48e54eedeb3948591e1485c206bc1dc60c8dc8b"),
    ("opencv_stuff", 640, 480,
     "data/stuff.jpg",
     "21cd00afbdd0727f445dd91c0a09633e6345ed5b05a3d2355453a1f3c314c6c5"),
    ("opencv_sudoku", 558, 563,
     "data/sudoku.png",
     "000cf81b7ce795013ae02bc9dfb0952aa34153c8c0e7fc99c81918e0738d1f09"),
    ("opencv_scenetext01", 800, 600,
     "text/scenetext01.jpg",
     "7f3041a7019ab4d33d2452bc757d8c4f38616bfde71431e12f7ec370d7b2018e"),
    ("opencv_scenetext02", 1280, 960,
     "text/scenetext02.jpg",
     "d4295bff9f348012f91a2cf745753124f85041fe3c3717146c6759c4cd977211"),
    ("opencv_scenetext03", 1004, 958,
     "text/scenetext03.jpg",
     "cadf4a3d29a7ba6fe976b53fa65f490cc2868375e8feb3d93f26029f05c662ca"),
    ("opencv_scenetext04", 1280, 868,
     "text/scenetext04.jpg",
     "28e08d142a04f92f96d01ff2674f7804321841cba95bd968980cdc85ef0af6df"),
    ("opencv_scenetext05", 1280, 960,
     "text/scenetext05.jpg",
     "63985ac1a9989a8320605d5be0ec285af0c6304a78cc9cc5de6c2c7c435f7c0b"),
    ("opencv_scenetext06", 640, 480,
     "text/scenetext06.jpg",
     "e4d64f10bbfb27b2c5980cb048fd0abe20dd74868ba5460298de473ced53b518"),
    ("opencv_scenetext_segmented_word01", 640, 480,
     "text/scenetext_segmented_word01.jpg",
     "b1524d1ae02ba1ee07bc32285df1083cceca851a28a2f34db63f7cf1169893b2"),
    ("opencv_scenetext_segmented_word02", 640, 480,
     "text/scenetext_segmented_word02.jpg",
     "1c648c38ebf826968e5daacde0b6845ecfd824420de17a3132096056aa12a6c2"),
    ("opencv_scenetext_segmented_word03", 640, 480,
     "text/scenetext_segmented_word03.jpg",
     "6f60d1b006b81d95dcbae0723c4135dfcfe37b87b472faf056c8a35d910a2a7c"),
    ("opencv_scenetext_segmented_word04", 640, 480,
     "text/scenetext_segmented_word04.jpg",
     "43524ab83453638e1f4e1aae64c50ecee898cf687612ffec6937ff7e6fd30a35"),
    ("opencv_scenetext_segmented_word05", 640, 480,
     "text/scenetext_segmented_word05.jpg",
     "3c805afc795596442fedaf3576b4c29d5fbad98e472cb6f30151ea62697115fa"),
    ("opencv_plant", 500, 333,
     "alphamat/input_images/plant.jpg",
     "9928b44eee0d1d7ab2ffd9d6d80bbbff962d6e85c7786de2cd3c97fe72229186"),
)
_TUXPAINT_PHOTOS = (
    ("tuxpaint_burnt_bark", 960, 638,
     "templates/burnt_bark.jpg",
     "14f3d6ad3fa5dd2cc0a2a996ed95d09e07f858269a0c90564d8f6f09d679f3b8"),
    ("tuxpaint_cliff", 1296, 864,
     "templates/cliff.jpg",
     "ff8da5b7a4eb5f5558a9768764871330ba245dc54ff55d5766129f47a45e7392"),
    ("tuxpaint_corn_maze", 1024, 680,
     "templates/corn_maze.jpg",
     "e3c5dfd777c38fbf79126795ba1165fee41e62402436196363a5e2d938a2d3be"),
    ("tuxpaint_jellyfish", 1280, 768,
     "templates/jellyfish.jpg",
     "340228d44027370689e43fe44e3a01a3793d79224a7fd20b3d52f824a65f787d"),
    ("tuxpaint_lighthouse", 638, 960,
     "templates/lighthouse.jpg",
     "bf92c1139da97690208a3948c9d1051649deb44bb51baa288820f5c64f9e6365"),
    ("tuxpaint_mossy_bark", 640, 480,
     "templates/mossy_bark.jpg",
     "153b9d8eb33c6f0f6c4a8014039606ccbf1a89677209877de64ab3645324edbb"),
    ("tuxpaint_mossy_log", 960, 638,
     "templates/mossy_log.jpg",
     "02ba4842fcf5f48f000d8325da89d85bedd8edc0d8cf551603dfdcfca12064e2"),
    ("tuxpaint_mudstone", 960, 638,
     "templates/mudstone.jpg",
     "ce1d13d3b66155bea3bc28db56694ade9ed27bd8814814672a0d58cd1b0d93f5"),
    ("tuxpaint_ocean_splash", 960, 638,
     "templates/ocean_splash.jpg",
     "a6c1697ed8dc06c72136041363b0808f5092625a466e8f9c5f7752375a398404"),
    ("tuxpaint_ocean_waves", 960, 638,
     "templates/ocean_waves.jpg",
     "b99c24c7148cb2935c7a9cfde12b81f368f8162e32349e554a8cb2dd44c5624e"),
    ("tuxpaint_redwoods_above", 960, 638,
     "templates/redwoods_above.jpg",
     "cda5f9d27e979e01e22bc16fce24e00b175f4cbfa99e12aa414f308c9aa00745"),
    ("tuxpaint_rocks", 1296, 864,
     "templates/rocks.jpg",
     "f3ddf517f26bc77a3f6a98010fc0bfa0ccac431869388755e0032a4f7bb6d748"),
    ("tuxpaint_sheep", 1138, 665,
     "templates/sheep.jpg",
     "cb408f8b3fc324798d012f71595a148f9fa360c17d1bde91371bd7c01e9cf881"),
    ("tuxpaint_spiders_web", 960, 638,
     "templates/spiders_web.jpg",
     "a105461c86ff3c61aa46a6bc75747da570cd836d5c5a465b8faefb564f55ed30"),
    ("tuxpaint_sun_behind_clouds", 1296, 864,
     "templates/sun_behind_clouds.jpg",
     "a76583449fb6cf58ca3fd88deac57932f5e0623df8f6ca733258a2ceab3abf91"),
    ("tuxpaint_sun_behind_leaves", 960, 638,
     "templates/sun_behind_leaves.jpg",
     "a6373334dc5af701d9e5f0efa0e1e4671202897a8e49db4b97d7e826b4590ff8"),
    ("tuxpaint_trees_above", 604, 453,
     "templates/trees_above.jpg",
     "d75bcb1c0c9cd3f9d9568b09f008e469c1e07ecc0fb84fe2aa858717228310c1"),
    ("tuxpaint_trees_at_dusk", 604, 453,
     "templates/trees_at_dusk.jpg",
     "9499116f8e8f494bd776b12b9cb4782a118662801ddff98c4127c866cf255720"),
    ("tuxpaint_wool_mill_machine", 720, 480,
     "templates/wool_mill_machine.jpg",
     "e66d36c482d32cc5bfd001923e584cf6398ef95039d92e9d2e65f64c33274a18"),
    ("tuxpaint_skyline-sf-dusk-back", 448, 376,
     "starters/skyline-sf-dusk-back.jpeg",
     "579d9908616ddcb85b09d7762ddb04da5eb988002c985f22ef413caa0dc96607"),
)
_LOMIRI_PHOTOS = (
    ("lomiri_Bridge_by_Sander_Klootwijk", 4352, 2448,
     "Bridge_by_Sander_Klootwijk.jpg",
     "bd86b081f9975e2b83527f71e49b9271a8ab40885428395969d9f7d834d7f050"),
    ("lomiri_Dragonfly_by_Bolly", 4224, 3168,
     "Dragonfly_by_Bolly.jpg",
     "af5af17841009732def24b09bb1e669a1b09d2b4bdeee7812c371101c30d2bb3"),
    ("lomiri_Picture_0B_by_freespace", 2572, 1740,
     "Picture_0B_by_freespace.jpg",
     "c8c0ab18e48d9e0419fe42881112137f3afafc27dfddc29ec3a6d54c56d225ad"),
    ("lomiri_Picture_1A_by_freespace", 1365, 1074,
     "Picture_1A_by_freespace.jpg",
     "89e86af38d04daaef975665dc2127e9fa76f0fd68f4eea105a2d0ae3390b010b"),
    ("lomiri_Wine_by_Jakkub_Mede", 2560, 3837,
     "Wine_by_Jakkub_Mede.jpg",
     "d2e96e6d4da40dd804b3d0ce295e94de04a2d7d9b6785d42cd9d92ba58bced74"),
    ("lomiri_aitzgorri_by_Aitzol_Berasategi", 3088, 2056,
     "aitzgorri_by_Aitzol_Berasategi.jpg",
     "66268e7b48f8854d36a28765fac6e23ec1aee251daa6da1f64715f201020ad36"),
    ("lomiri_free_by_Peter_Nerlich", 2880, 2160,
     "free_by_Peter_Nerlich.jpg",
     "85a5453c2fed514c75973016f3d862aca62eb7ca087618822469274ac1092373"),
    ("lomiri_friends_by_Aitzol_Berasategi", 2056, 3088,
     "friends_by_Aitzol_Berasategi.jpg",
     "cc40e313c74e421edffe3403def413c16878ce14661cce7ec5915baeab35538d"),
    ("lomiri_life_by_Aitzol_Berasategi", 3088, 2056,
     "life_by_Aitzol_Berasategi.jpg",
     "4c119350ead80201fe256850c3d316309ddfb4bdf10b235ce982dcde0c667c05"),
    ("lomiri_picosdeeuropa_by_Aitzol_Berasategi", 3264, 2448,
     "picosdeeuropa_by_Aitzol_Berasategi.jpg",
     "414d0072b2f6f2c555deafeaef6e45c4fed6fa9ad26eba6560ca8803959cf97a"),
    ("lomiri_seeding_by_Clements_Engelhardt", 5312, 2988,
     "seeding_by_Clements_Engelhardt.jpg",
     "a5634d1ab5e41a3568e92d4a894a500c92b891f9ff734e50bd224d6e185a605f"),
    ("lomiri_sunset_by_Aitzol_Berasategi", 4272, 2848,
     "sunset_by_Aitzol_Berasategi.jpg",
     "474dab6a4b9f94dc76c29dfe30e9f5db4af0fd2e33fe5d695f8152b371efca18"),
)
_MATE_PHOTOS = (
    ("mate_Aqua", 2560, 1600,
     "Aqua.jpg",
     "5c30118205982da441bf7e6a1ada636a8a0be879408140b3148280c665ed6bce"),
    ("mate_Blinds", 1920, 1200,
     "Blinds.jpg",
     "f7aac0dcc2e06d0491643e84df3da1d9db7c4610f58806a880d56e074799f600"),
    ("mate_Dune", 1680, 1050,
     "Dune.jpg",
     "8a67c2cb0be8c46b70c237311a4fa4d2b4ac7d39568135384787801fa5cc9a91"),
    ("mate_FreshFlower", 1600, 1203,
     "FreshFlower.jpg",
     "972b0a0c4e5e3fa93f4f244fc84bc64b121a5eac3aaa5856f1308c1f38a02f8e"),
    ("mate_Garden", 2560, 1600,
     "Garden.jpg",
     "d3095ee09d425ef23d27155412136cf14fc3c9af76ca58b452f55e23da324e78"),
    ("mate_GreenMeadow", 1280, 1024,
     "GreenMeadow.jpg",
     "8fa0de0aa4089f7319c9fb7a6d006d4cab6023e8c8853731557cff53567b4832"),
    ("mate_LadyBird", 2560, 1600,
     "LadyBird.jpg",
     "e35a9a4126ef969c90b29c038058c5a575a20eadd84106a37bf1fa9931e7b61d"),
    ("mate_RainDrops", 1920, 1200,
     "RainDrops.jpg",
     "3e4ea9671c28c90a86cf67b3db9daf18c4741587c596333a7529ca589aaa0c16"),
    ("mate_Storm", 1920, 1280,
     "Storm.jpg",
     "77ca53077831d3237f73393a91fc879158abc046d852941c26e90de336356957"),
    ("mate_TwoWings", 2560, 1600,
     "TwoWings.jpg",
     "665e5abf8a5399070a91a9a8e455fe071e5b61697ff78fdeda4e9843ef545aeb"),
    ("mate_Wood", 2560, 1920,
     "Wood.jpg",
     "19c78500ac00a622e19907ab9cc7d06d46fe08c4a6142759a84195696150ec07"),
    ("mate_YellowFlower", 2560, 1600,
     "YellowFlower.jpg",
     "254da96256acb7add685679775a04d1e4a5bc8cd13e5a5a3d61351ce198a5306"),
)
_PLASMA_PHOTOS = (
    ("plasma_BytheWater", 2560, 1600,
     "BytheWater/contents/images/2560x1600.jpg",
     "c272434ef39f2abf1ed48a15a8910088020f3165329a5092f3940ec9464bc05f"),
    ("plasma_ColdRipple", 2560, 1600,
     "ColdRipple/contents/images/2560x1600.jpg",
     "05bef6722fc0ed81292cceb3ed026c38d17e510f3c84be7d68610c2b1a723c3f"),
    ("plasma_DarkestHour", 2560, 1600,
     "DarkestHour/contents/images/2560x1600.jpg",
     "8e3703fae3a3c217b1fc2b399b706cd3720584268d071ba153e4809daa55f1ce"),
    ("plasma_EveningGlow", 2560, 1600,
     "EveningGlow/contents/images/2560x1600.jpg",
     "586682dcb362b9f620068f10138f87d0d3649939aef238adc5807cb951976a7a"),
    ("plasma_FallenLeaf", 2560, 1600,
     "FallenLeaf/contents/images/2560x1600.jpg",
     "95603a6560c7e8d50e0e03b3f4adbe39c5258c72528e74e4ecaea1daf4e499de"),
    ("plasma_Grey", 2560, 1600,
     "Grey/contents/images/2560x1600.jpg",
     "88c31d8944b7e6935d1b9a296654c692f0772cb512491713eb30a972a604c0ed"),
    ("plasma_OneStandsOut", 2560, 1600,
     "OneStandsOut/contents/images/2560x1600.jpg",
     "cb507baf1dafdcae362264f3aba9483ed4be5f6c9fdd770f0ec0920c6d9e80fd"),
    ("plasma_Path", 2560, 1600,
     "Path/contents/images/2560x1600.jpg",
     "7477457d7f17b736259f1b021864778ad4ba802cf3214e6728181ff29126bba8"),
    ("plasma_summer_1am", 2560, 1600,
     "summer_1am/contents/images/2560x1600.jpg",
     "c868b50789591dd42910153c768053f1ba0a98cb36bbfc2b7a96a1045d0477f8"),
)
_PALAPELI_PHOTOS = (
    ("palapeli_castle_maintenon", 1024, 681,
     "castle-maintenon.jpg",
     "f4a6bf48b97d97715413f9ebd2d8744bd46df0e492bc8326e2513d51084f2612"),
    ("palapeli_cincinnati_bridge", 1302, 953,
     "cincinnati-bridge.jpg",
     "09772d09318b34a5c5edd58ee86ff462bcd2907006f31cc8e0704310f8e9ab60"),
    ("palapeli_citrus_fruits", 1350, 890,
     "citrus-fruits.jpg",
     "0cbd7154a14789803167c86705130d0358875198231269df168ea26224e70848"),
    ("palapeli_european_honey_bee", 1620, 1280,
     "european-honey-bee.jpg",
     "9d54ae706bddd899c91b2b801d9ca4556a5a9a399b4043f9d539df62a8cb7f27"),
    ("palapeli_panther_chameleon_female", 1306, 1530,
     "panther-chameleon-female.jpg",
     "adb9e2834a8a3db40ca3817452b956ada527085e5aa2bd604c465651a3834ae4"),
)
_ULTRALYTICS_PHOTOS = (
    ("ultralytics_bus", 810, 1080,
     "bus.jpg",
     "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63"),
    ("ultralytics_zidane", 1280, 720,
     "zidane.jpg",
     "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb"),
)
_MAHOTAS_PHOTOS = (
    ("mahotas_DepartmentStore", 1024, 768,
     "DepartmentStore.jpg",
     "1b6ae6ab0fd757370501368981f989fe7b1b6d0d7703028990a6bffe94cc67e0"),
    ("mahotas_luispedro", 300, 377,
     "luispedro.jpg",
     "27e7af47501a4e9a06e4d8bd8b834bd773fe7b187baef2f47e120c663524bed1"),
)
_IMGAUG_PHOTOS = (
    ("imgaug_quokka", 960, 643,
     "quokka.jpg",
     "bf1059d0f925e7d0c712cadf07a04ba4cfc98957d7be65d3a7d8ae0c464cd76e"),
)
_PYWAVELETS_PHOTOS = (
    ("pywavelets_aero", 512, 512,
     "aero.npz",
     "df862635798bac94226b8928f224da8cef8b0d00492c1fdf48fac6dfaf97a94b"),
    ("pywavelets_ascent", 512, 512,
     "ascent.npz",
     "a6d56bc8e96571d6124f34cedeba49f1d3599507f6c890ad9ba538544454e8f7"),
)
# fmt: on

_PhotoRow = tuple[str, int, int, str, str]


def _photos(root: str, rows: Iterable[_PhotoRow], bundle_root: str = "") -> tuple[Photo, ...]:
    """Build :class:`Photo` records; ``bundle_root`` is prefixed to resource paths after ``!``."""
    out = []
    for name, width, height, rel, sha256 in rows:
        if "!" in rel:
            bundle, resource = rel.split("!", 1)
            rel = f"{bundle}!{bundle_root}{resource}"
        out.append(Photo(name, root + rel, sha256, width, height))
    return tuple(out)


_GCOMPRIS_LICENCE = (
    "GPL-3.0-or-later AND CC-BY-SA-3.0 AND CC-BY-SA-4.0 AND CC-BY-SA-2.0 AND CC-BY-2.0 "
    "AND CC-BY-3.0 AND CC0-1.0 AND LicenseRef-public-domain"
)

_SOURCE_LIST: tuple[Source, ...] = (
    Source(
        "skimage",
        "bundled",
        "scikit-image",
        "0.26.0",
        "BSD-3-Clause",
        _photos("skimage/data/", _SKIMAGE_PHOTOS),
    ),
    Source(
        "matplotlib",
        "bundled",
        "matplotlib",
        "3.11.2",
        "LicenseRef-matplotlib AND LicenseRef-public-domain",
        _photos("matplotlib/mpl-data/sample_data/", _MATPLOTLIB_PHOTOS),
    ),
    Source(
        "sklearn",
        "bundled",
        "scikit-learn",
        "1.9.1",
        "CC-BY-2.0",
        _photos("sklearn/datasets/images/", _SKLEARN_PHOTOS),
    ),
    Source(
        "skimage_grey",
        "bundled",
        "scikit-image",
        "0.26.0",
        "BSD-3-Clause",
        _photos("skimage/data/", _SKIMAGE_GREY_PHOTOS),
    ),
    Source(
        "gcompris",
        "debian",
        "gcompris-qt-data",
        "3.1-2",
        _GCOMPRIS_LICENCE,
        _photos("usr/share/gcompris-qt/rcc/", _GCOMPRIS_PHOTOS, "/gcompris/src/activities/"),
    ),
    Source(
        "opencv",
        "debian",
        "opencv-doc",
        "4.6.0+dfsg-12",
        "BSD-3-Clause AND Apache-2.0",
        _photos("usr/share/doc/opencv-doc/examples/", _OPENCV_PHOTOS),
    ),
    Source(
        "tuxpaint",
        "debian",
        "tuxpaint-data",
        "1:0.9.28-sdl2-1",
        "GPL-2.0-or-later",
        _photos("usr/share/tuxpaint/", _TUXPAINT_PHOTOS),
    ),
    Source(
        "lomiri",
        "debian",
        "lomiri-wallpapers-16.04",
        "20.04.0-2",
        "CC-BY-4.0 AND CC-BY-SA-4.0 AND CC0-1.0",
        _photos("usr/share/backgrounds/", _LOMIRI_PHOTOS),
    ),
    Source(
        "mate",
        "debian",
        "mate-backgrounds",
        "1.26.0-1",
        "GPL-2.0-or-later",
        _photos("usr/share/backgrounds/mate/nature/", _MATE_PHOTOS),
    ),
    Source(
        "plasma",
        "debian",
        "plasma-workspace-wallpapers",
        "4:5.27.5-2",
        "GPL-2.0-or-later",
        _photos("usr/share/wallpapers/", _PLASMA_PHOTOS),
    ),
    Source(
        "palapeli",
        "debian",
        "palapeli-data",
        "4:22.12.3-1",
        "GPL-2.0-or-later",
        _photos("usr/share/palapeli/collection/", _PALAPELI_PHOTOS),
    ),
    Source(
        "ultralytics",
        "pypi",
        "ultralytics",
        "8.4.190",
        "AGPL-3.0-only",
        _photos("ultralytics/assets/", _ULTRALYTICS_PHOTOS),
    ),
    Source(
        "mahotas",
        "pypi",
        "mahotas",
        "1.4.19",
        "MIT",
        _photos("mahotas/demos/data/", _MAHOTAS_PHOTOS),
    ),
    Source("imgaug", "pypi", "imgaug", "0.4.0", "MIT", _photos("imgaug/", _IMGAUG_PHOTOS)),
    Source(
        "pywavelets",
        "pypi",
        "PyWavelets",
        "1.9.0",
        "MIT AND BSD-3-Clause",
        _photos("pywt/data/", _PYWAVELETS_PHOTOS),
    ),
)
"""Every real source, in a stable order (bundled first).

Curated from the packages the registries served (Debian bookworm, PyPI) and looked at one by
one. Left out on purpose: ``gnome-backgrounds``, ``ukui-wallpapers``, ``sway-backgrounds`` and
the ``debian-edu-artwork-*`` packages (illustrations and renders only), ``lomiri-wallpapers-20.04``
(one photograph for 11 MB), ``tuxpaint-stamps-default`` (cut-outs on transparency), OpenCV's
stereo partners, calibration series (one of fourteen kept), synthetic blurs and renders, and
``stellarium-data`` (a few panoramas for 250 MB). PyWavelets' ``camera`` duplicates scikit-image's
and mahotas' ``lena`` is left out.
"""

SOURCES: dict[str, Source] = {source.name: source for source in _SOURCE_LIST}
"""Source name -> :class:`Source`."""
BUNDLED_SOURCES = tuple(s.name for s in _SOURCE_LIST if s.kind == "bundled")
PACKAGE_SOURCES = tuple(s.name for s in _SOURCE_LIST if s.kind != "bundled")

_PHOTOS: dict[str, dict[str, Photo]] = {s.name: {p.name: p for p in s.photos} for s in _SOURCE_LIST}
_PHOTO_SOURCE: dict[str, str] = {p: s for s, photos in _PHOTOS.items() for p in photos}

REAL_SOURCES: dict[str, tuple[str, ...]] = {s: tuple(photos) for s, photos in _PHOTOS.items()}
"""Source -> its photo names (every curated photo). Kept for callers of the old pool's name;
note that iterating it covers the :data:`FULL` pool, which needs the package sources fetched."""


# --------------------------------------------------------------------------------------------
# Static metadata
# --------------------------------------------------------------------------------------------


def default_sources_dir() -> Path:
    """The default cache of package sources: ``$DEEPFAKENET_SOURCES_DIR`` or the user cache.

    Shared by every checkout and data set of the user, so the packages are fetched once per
    machine, not once per run.
    """
    env = os.environ.get(SOURCES_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "deepfakenet" / "sources"


def _cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    """``cache_dir`` as an absolute path, or the default cache when it is None."""
    root = default_sources_dir() if cache_dir is None else Path(cache_dir).expanduser()
    return root.absolute()


def available_sources() -> list[str]:
    """Every source name, bundled first, in a stable order."""
    return [source.name for source in _SOURCE_LIST]


def _check_sources(sources: Sequence[str] | str | None) -> list[str]:
    """Validate source names (None: all), keeping the given order and dropping repeats.

    Raises:
        ValueError: For an unknown source, naming the known ones.
    """
    if sources is None:
        return available_sources()
    if isinstance(sources, str):
        sources = [sources]
    unknown = [name for name in sources if name not in SOURCES]
    if unknown:
        raise ValueError(
            f"unknown photo source(s) {unknown}; known sources: {', '.join(available_sources())}"
        )
    return list(dict.fromkeys(sources))


def _photo_entry(source: str, photo: str) -> Photo:
    """The curated record of one photo.

    Raises:
        ValueError: If the source or the photo is unknown.
    """
    _check_sources([source])
    try:
        return _PHOTOS[source][photo]
    except KeyError:
        raise ValueError(f"unknown photo {source}/{photo}") from None


def source_photos(source: str) -> list[str]:
    """Every curated photo name of ``source`` (the :data:`FULL` pool's share of it).

    Raises:
        ValueError: If the source is unknown.
    """
    _check_sources([source])
    return list(_PHOTOS[source])


def photo_source(photo: str) -> str | None:
    """The source a photo name belongs to, or None for a name the pool does not know.

    Files written by the data set generator are named ``<photo>_<index>.png`` in both classes,
    so this recovers which source a *fake* was made from (its folder names the family), which a
    leave-one-source-out protocol needs to keep that source's fakes out of training too.
    """
    return _PHOTO_SOURCE.get(photo)


def _embedded_subset(photos: Sequence[str], limit: int = EMBEDDED_PER_SOURCE) -> list[str]:
    """At most ``limit`` photos spread evenly over the curated order.

    The curated lists are grouped by theme (GCompris: animals, then monuments, ...), so an
    even spread keeps the small pool as varied as the full one; it is deterministic, so the
    embedded data set does not change between runs.
    """
    if len(photos) <= limit:
        return list(photos)
    step = len(photos) / limit
    return [photos[int(i * step)] for i in range(limit)]


def select_photos(pool: str, sources: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """The ``(source, photo)`` pairs of a pool, restricted to ``sources``.

    Args:
        pool: :data:`EMBEDDED` (at most :data:`EMBEDDED_PER_SOURCE` per source) or
            :data:`FULL` (every curated photo).
        sources: Source names (None: every source).

    Returns:
        The pairs, source by source in the order given, photos in curated order.

    Raises:
        ValueError: For an unknown pool or source.
    """
    if pool not in POOLS:
        raise ValueError(f"unknown photo pool {pool!r}; expected one of {list(POOLS)}")
    pairs = []
    for source in _check_sources(sources):
        photos = list(_PHOTOS[source])
        chosen = photos if pool == FULL else _embedded_subset(photos)
        pairs.extend((source, photo) for photo in chosen)
    return pairs


def _installed_version(package: str, pinned: str) -> str:
    """The installed version of a bundled source's package (the pinned one if not installed)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return pinned


def source_manifest(sources: Sequence[str] | None = None) -> pd.DataFrame:
    """Static metadata of every curated photo of ``sources`` (None: all); downloads nothing.

    Returns:
        One row per photo with the columns of :data:`MANIFEST_COLUMNS`. Bundled photos have an
        empty ``sha256`` (they come with an installed dependency and are not fetched) and the
        installed package version.

    Raises:
        ValueError: For an unknown source.
    """
    rows = []
    for name in _check_sources(sources):
        source = SOURCES[name]
        version = (
            _installed_version(source.package, source.version)
            if source.kind == "bundled"
            else source.version
        )
        for photo in source.photos:
            rows.append(
                {
                    "source": name,
                    "photo": photo.name,
                    "kind": source.kind,
                    "package": source.package,
                    "version": version,
                    "licence": source.licence,
                    "file": photo.file,
                    "sha256": photo.sha256,
                    "width": photo.width,
                    "height": photo.height,
                }
            )
    return pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))


def photo_path(source: str, photo: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where a package source's photo lives in the cache: ``<cache_dir>/<source>/<photo><ext>``.

    Raises:
        ValueError: For an unknown photo, or a bundled one (it has no cached file).
    """
    entry = _photo_entry(source, photo)
    if SOURCES[source].kind == "bundled":
        raise ValueError(f"{source}/{photo} is bundled with {SOURCES[source].package}: no cache")
    return _cache_root(cache_dir) / source / f"{photo}{entry.suffix}"


# --------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _leave_out_hint(source: str) -> str:
    """How to build without a source, for error messages."""
    others = [name for name in available_sources() if name != source]
    return (
        f"to build without it, leave '{source}' out of the sources "
        f"(e.g. sources={[*others[:3], '...']}, or the synth config's source list)"
    )


def _run(cmd: list[str], cwd: Path, source: Source) -> None:
    """Run a download command, turning every failure into a :class:`DatasetError`."""
    log.debug("running %s in %s", " ".join(cmd), cwd)
    try:
        done = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise DatasetError(
            f"photo source '{source.name}': could not download {source.kind} package "
            f"{source.package}={source.version} ({error}); {_leave_out_hint(source.name)}"
        ) from error
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        hint = " (run `apt-get update` first?)" if source.kind == "debian" else ""
        raise DatasetError(
            f"photo source '{source.name}': downloading {source.kind} package "
            f"{source.package}={source.version} failed{hint}: {' | '.join(tail)}; "
            f"{_leave_out_hint(source.name)}"
        )


def _pip_command() -> list[str]:
    """The pip to download wheels with: this interpreter's, else one on the PATH."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        path = shutil.which(name)
        if path:
            return [path]
    return []


def _download_package(source: Source, dest: Path) -> Path:
    """Download ``source``'s pinned package file into ``dest`` and return its path.

    Debian: ``apt-get download <package>=<version>`` (needs the apt lists; no root needed).
    PyPI: ``pip download --no-deps --only-binary=:all: <package>==<version>`` (the wheel only;
    photos are data files, identical in every platform's wheel).

    Raises:
        DatasetError: If the tool is missing or the download fails.
    """
    if source.kind == "debian":
        missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
        if missing:
            raise DatasetError(
                f"photo source '{source.name}' is a Debian package ({source.package}) but "
                f"{' and '.join(missing)} is not available here; {_leave_out_hint(source.name)}"
            )
        _run(["apt-get", "download", f"{source.package}={source.version}"], dest, source)
        pattern = "*.deb"
    elif source.kind == "pypi":
        pip = _pip_command()
        if not pip:
            raise DatasetError(
                f"photo source '{source.name}' is a PyPI wheel ({source.package}) but pip is "
                f"not available here; {_leave_out_hint(source.name)}"
            )
        cmd = [*pip, "download", "--no-deps", "--only-binary=:all:", "--no-input"]
        cmd += ["--disable-pip-version-check", "-d", str(dest)]
        _run([*cmd, f"{source.package}=={source.version}"], dest, source)
        pattern = "*.whl"
    else:
        raise ValueError(f"source '{source.name}' is bundled: nothing to download")
    found = sorted(dest.glob(pattern))
    if not found:
        raise DatasetError(
            f"photo source '{source.name}': the download of {source.package} left no {pattern} "
            f"in {dest}; {_leave_out_hint(source.name)}"
        )
    return found[0]


def _deb_members(deb: Path, wanted: set[str], source: Source) -> dict[str, bytes]:
    """Read the ``wanted`` members of a ``.deb``'s data archive (one streaming pass).

    Equivalent to ``dpkg-deb -x`` followed by reading the files, without writing the whole
    package (hundreds of MB for ``opencv-doc``) to disk.
    """
    out: dict[str, bytes] = {}
    with subprocess.Popen(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|*") as tar:
                for member in tar:
                    name = member.name.removeprefix("./")
                    if name not in wanted:
                        continue
                    handle = tar.extractfile(member) if member.isfile() else None
                    if handle is None:
                        raise DatasetError(
                            f"photo source '{source.name}': {name} in {deb.name} is not a "
                            "regular file (a link?); the curated list must name the real file"
                        )
                    out[name] = handle.read()
                    if len(out) == len(wanted):
                        break
        except tarfile.TarError as error:
            raise DatasetError(
                f"photo source '{source.name}': cannot read {deb.name} ({error}); "
                f"{_leave_out_hint(source.name)}"
            ) from error
        finally:
            proc.stdout.close()
            proc.kill()
    return out


def _wheel_members(wheel: Path, wanted: set[str], source: Source) -> dict[str, bytes]:
    """Read the ``wanted`` members of a wheel (a zip archive)."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            return {name: archive.read(name) for name in wanted if name in names}
    except zipfile.BadZipFile as error:
        raise DatasetError(
            f"photo source '{source.name}': {wheel.name} is not a valid wheel ({error}); "
            f"{_leave_out_hint(source.name)}"
        ) from error


def _rcc_index(data: bytes) -> dict[str, tuple[int, int]]:
    """Map every file of a Qt resource bundle (``.rcc``) to ``(data offset, flags)``.

    Format (Qt's ``rcc`` v1-v3): ``qres``, version, then offsets of the tree, the data and the
    names. A tree node is 14 bytes (v1) or 22 (v2+, with a timestamp): name offset, flags
    (2: directory, 1: zlib, 4: zstd), then child count + first child for a directory, or
    locale + data offset for a file.
    """
    if data[:4] != b"qres":
        raise ValueError("not a Qt resource bundle")
    version, tree, payload, names = struct.unpack(">IIII", data[4:20])
    node_size = 14 if version == 1 else 22

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", data[names + offset : names + offset + 2])
        return data[names + offset + 6 : names + offset + 6 + 2 * length].decode("utf-16-be")

    index: dict[str, tuple[int, int]] = {}
    stack = [(0, "")]
    while stack:
        node, prefix = stack.pop()
        base = tree + node * node_size
        name_offset, flags = struct.unpack(">IH", data[base : base + 6])
        path = prefix if node == 0 else f"{prefix}/{name_at(name_offset)}"
        if flags & 2:
            count, first = struct.unpack(">II", data[base + 6 : base + 14])
            stack.extend((child, path) for child in range(first, first + count))
        else:
            (offset,) = struct.unpack(">I", data[base + 10 : base + 14])
            index[path] = (payload + offset, flags)
    return index


def _rcc_read(data: bytes, index: dict[str, tuple[int, int]], resource: str) -> bytes:
    """The bytes of one file of a Qt resource bundle (inflating zlib entries)."""
    offset, flags = index[resource]
    (size,) = struct.unpack(">I", data[offset : offset + 4])
    blob = data[offset + 4 : offset + 4 + size]
    if flags & 4:
        raise ValueError(f"{resource} is zstd-compressed, which is not supported")
    if flags & 1:
        return zlib.decompress(blob[4:])  # qCompress: 4-byte big-endian length, then zlib
    return blob


def _extract(source: Source, package_file: Path, photos: Sequence[Photo]) -> dict[str, bytes]:
    """The bytes of each photo's file (photo name -> bytes), from a downloaded package."""
    outer = {photo.file.split("!", 1)[0] for photo in photos}
    reader = _deb_members if source.kind == "debian" else _wheel_members
    blobs = reader(package_file, outer, source)
    out: dict[str, bytes] = {}
    indexes: dict[str, dict[str, tuple[int, int]]] = {}
    for photo in photos:
        member, _, resource = photo.file.partition("!")
        if member not in blobs:
            raise DatasetError(
                f"photo source '{source.name}': {member} is not in {package_file.name}; the "
                f"curated list does not match {source.package} {source.version}"
            )
        if not resource:
            out[photo.name] = blobs[member]
            continue
        try:
            index = indexes.setdefault(member, _rcc_index(blobs[member]))
            out[photo.name] = _rcc_read(blobs[member], index, resource)
        except (KeyError, ValueError, struct.error, zlib.error) as error:
            raise DatasetError(
                f"photo source '{source.name}': cannot read {resource} from {member} ({error})"
            ) from error
    return out


def _is_cached(path: Path, photo: Photo) -> bool:
    """Whether ``path`` holds exactly the curated bytes (a corrupt file is logged and redone)."""
    if not path.is_file():
        return False
    if _sha256(path.read_bytes()) == photo.sha256:
        return True
    log.warning("cached photo %s does not match its sha256: fetching it again", path)
    return False


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fetch_source(source: Source, root: Path) -> int:
    """Bring ``source``'s missing photos into ``root/<source>``; return how many were written."""
    missing = [p for p in source.photos if not _is_cached(root / source.name / _name(p), p)]
    if not missing:
        log.debug("photo source %s: all %d photos cached", source.name, len(source.photos))
        return 0
    log.info(
        "photo source %s: fetching %s %s %s for %d missing photo(s)",
        source.name,
        source.kind,
        source.package,
        source.version,
        len(missing),
    )
    with tempfile.TemporaryDirectory(prefix=f"deepfakenet-{source.name}-") as tmp:
        package_file = _download_package(source, Path(tmp))
        blobs = _extract(source, package_file, missing)
    for photo in missing:
        data = blobs[photo.name]
        digest = _sha256(data)
        if digest != photo.sha256:
            raise DatasetError(
                f"photo source '{source.name}': {photo.file} in {source.package} "
                f"{source.version} has sha256 {digest}, expected {photo.sha256} (the registry "
                f"served different bytes); {_leave_out_hint(source.name)}"
            )
        _write_atomic(root / source.name / _name(photo), data)
    return len(missing)


def _name(photo: Photo) -> str:
    """The cache file name of a photo."""
    return f"{photo.name}{photo.suffix}"


def fetch_sources(
    cache_dir: str | os.PathLike[str] | None = None, sources: Sequence[str] | None = None
) -> pd.DataFrame:
    """Make sure every photo of ``sources`` is in the cache, downloading only what is missing.

    For each package source with a missing or corrupted photo, the pinned package is downloaded
    once into a temporary directory, only the listed files are taken out of it and each one is
    checked against its recorded sha256 before it is written (atomically) to
    ``<cache_dir>/<source>/<photo><ext>``. Verified files are never fetched again, so calling
    this again is cheap (it only re-hashes the cache). A lock per source makes concurrent calls
    (parallel jobs sharing the cache) safe. Bundled sources need nothing.

    Args:
        cache_dir: Cache directory (None: :func:`default_sources_dir`).
        sources: Source names (None: every source).

    Returns:
        The manifest rows of the photos of ``sources`` (:func:`source_manifest`).

    Raises:
        ValueError: For an unknown source.
        DatasetError: If apt-get / dpkg-deb / pip is missing, a download fails, or a file does
            not match its recorded sha256; the message names the source and how to leave it out.
    """
    names = _check_sources(sources)
    root = _cache_root(cache_dir)
    written = 0
    for name in names:
        source = SOURCES[name]
        if source.kind == "bundled":
            continue
        (root / name).mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / f".{name}.lock")):
            written += _fetch_source(source, root)
    if written:
        log.info("fetched %d photo(s) into %s", written, root)
    return source_manifest(names)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _decode(data: bytes, file: str) -> np.ndarray:
    """Decode a photo file to HxWx3 uint8: grey is replicated to RGB, alpha is dropped."""
    if file.endswith(".npz"):
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return _grey_to_rgb(archive["data"])
    with Image.open(io.BytesIO(data)) as img:
        has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
        rgb = img.convert("RGBA" if has_alpha else "RGB")
        return np.ascontiguousarray(np.asarray(rgb)[:, :, :3])


@functools.cache
def _load_bundled(source: str, photo: str) -> np.ndarray:
    image = BUNDLED_LOADERS[source][photo]()
    image.setflags(write=False)
    return image


@functools.cache
def _load_cached(source: str, photo: str, root: str) -> np.ndarray:
    entry = _PHOTOS[source][photo]
    path = Path(root) / source / _name(entry)
    if not path.is_file():
        raise DatasetError(
            f"photo {source}/{photo} is not in the sources cache {root}: fetch it first with "
            f"fetch_sources() or `python -m deepfakenet.data.sources --fetch --sources {source}`"
        )
    data = path.read_bytes()
    if _sha256(data) != entry.sha256:
        raise DatasetError(
            f"cached photo {path} does not match its recorded sha256 (corrupted?); "
            "fetch_sources() replaces it"
        )
    image = _decode(data, entry.file)
    if image.shape[:2] != (entry.height, entry.width):
        raise DatasetError(f"photo {source}/{photo} decodes to {image.shape}, not as recorded")
    image.setflags(write=False)
    return image


def load_photo(
    source: str, photo: str, cache_dir: str | os.PathLike[str] | None = None
) -> np.ndarray:
    """Load (once) and return one real photo of the pool.

    Cached (``functools.cache``) because every one of thousands of crops re-reads the same
    photos; the returned array is read-only so no caller can corrupt the cache. Call
    :func:`clear_photo_cache` to free the memory (the :data:`FULL` pool decodes to ~1 GB).

    Args:
        source: Source name (:func:`available_sources`).
        photo: Photo name within that source.
        cache_dir: Cache of the package sources (None: :func:`default_sources_dir`); unused
            for bundled sources.

    Returns:
        The photo as an HxWx3 uint8 array (read-only).

    Raises:
        ValueError: If the source or photo is unknown.
        DatasetError: If a package photo is not fetched yet or its cached file is corrupted.
    """
    _photo_entry(source, photo)
    if SOURCES[source].kind == "bundled":
        return _load_bundled(source, photo)
    return _load_cached(source, photo, str(_cache_root(cache_dir)))


def clear_photo_cache() -> None:
    """Forget every decoded photo (memory, or after the cache directory changed)."""
    _load_bundled.cache_clear()
    _load_cached.cache_clear()


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deepfakenet.data.sources [--fetch] [--sources ...] [--cache-dir DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fetch", action="store_true", help="download what is missing")
    parser.add_argument("--sources", nargs="+", choices=available_sources(), default=None)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--pool", choices=POOLS, default=FULL)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.fetch:
        manifest = fetch_sources(args.cache_dir, args.sources)
    else:
        manifest = source_manifest(args.sources)
    chosen = set(select_photos(args.pool, args.sources))
    keep = [pair in chosen for pair in zip(manifest.source, manifest.photo, strict=True)]
    manifest = manifest[keep]
    for (source, kind, package, version), rows in manifest.groupby(
        ["source", "kind", "package", "version"], sort=False
    ):
        log.info("%-12s %-7s %s %s: %d photos", source, kind, package, version, len(rows))
    log.info("%d photos from %d sources", len(manifest), manifest.source.nunique())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
