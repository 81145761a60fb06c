"""Tiny learned autoencoders whose decoders make the "learned" fake families.

The fixed fake families (:mod:`deepfakenet.data.fakes`) upsample with hand-drawn random kernels.
Real generators, and the VAE decoders of latent-diffusion models in particular, upsample a
latent four times smaller than the image with *learned* filters; those leave subtler traces,
and a detector trained only on hand-drawn kernels scores poorly on them (AUROC 0.61 / 0.85
measured on such decoders). So three small conv autoencoders are trained here, each with an
encoder that reduces the image by 4 (a stride-4 patchify: space-to-depth then convolutions, the
same as a strided 12x12 convolution) and a decoder that enlarges it by 4 through two 2x stages
of one generator block:

* ``ae_transposed``: stride-2 transposed convolutions (DCGAN / many GAN decoders);
* ``ae_resize_conv``: nearest-neighbour upsampling followed by a 3x3 convolution (the
  latent-diffusion VAE decoder block);
* ``ae_pixel_shuffle``: convolution to 4x channels followed by ``pixel_shuffle`` (ESPCN,
  sub-pixel GAN generators).

They are trained, seeded and on the CPU, for about a minute and a half each on random crops of the
bundled real photos (L1 plus a small image-gradient L1 term, so edges are not just averaged
away), and their weights ship as package data (``decoder_weights/<name>.pt``, fp16, < 1 MB each)
together with ``training.json`` (steps, seconds, held-out PSNR). Run
``python training/train_decoders.py`` to re-create them.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "decoder_weights"
"""Package folder holding ``<name>.pt`` state dicts and ``training.json``."""
TRAINING_JSON = "training.json"

UPSAMPLERS: dict[str, str] = {
    "ae_transposed": "transposed_conv",
    "ae_resize_conv": "resize_conv",
    "ae_pixel_shuffle": "pixel_shuffle",
}
"""Decoder (= learned fake family) name -> kind of its two 2x upsampling blocks."""
DECODER_NAMES: tuple[str, ...] = tuple(UPSAMPLERS)

FACTOR = 4
"""Spatial reduction of the encoder (and enlargement of the decoder)."""
WIDTH = 32
"""Channels at full resolution; the 1/2 and 1/4 resolution stages use twice as many."""
LATENT_CHANNELS = 12
"""Latent channels at 1/4 resolution: 48 input values per 4x4 patch -> 12, a 4:1 bottleneck."""
GRADIENT_LOSS_WEIGHT = 0.2
"""Weight of the image-gradient L1 term relative to the pixel L1 term."""


def _upsample_block(kind: str, c_in: int, c_out: int) -> nn.Module:
    """One learned 2x upsampling block of the given kind."""
    if kind == "transposed_conv":
        return nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1)
    if kind == "resize_conv":
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1)
        )
    if kind == "pixel_shuffle":
        # No ICNR initialisation: tried twice, it ended 0.7-1 dB lower in this budget.
        return nn.Sequential(nn.Conv2d(c_in, 4 * c_out, 3, padding=1), nn.PixelShuffle(2))
    kinds = sorted(set(UPSAMPLERS.values()))
    raise ValueError(f"unknown upsampler {kind!r}; expected one of {kinds}")


class TinyAutoencoder(nn.Module):
    """Conv autoencoder: encoder /4 by space-to-depth + convs, decoder x4 by two learned 2x blocks.

    Inputs and outputs are Bx3xHxW in [0, 1] with H and W multiples of :data:`FACTOR`. No
    output activation: a sigmoid would saturate highlights and add its own non-linearity, and
    the caller clips anyway.
    """

    def __init__(self, upsampler: str, width: int = WIDTH, latent: int = LATENT_CHANNELS):
        super().__init__()
        wide = 2 * width
        self.upsampler = upsampler
        # Space-to-depth then convolutions at 1/4 resolution: as strided as a conv stack, but
        # no information is thrown away before the bottleneck and it costs a third of the
        # FLOPs, which is what matters with a few CPU minutes of training. Only the decoder's
        # upsampling traces matter for the fakes.
        self.encoder = nn.Sequential(
            nn.PixelUnshuffle(FACTOR),
            nn.Conv2d(3 * FACTOR * FACTOR, 2 * wide, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(2 * wide, wide, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(wide, latent, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent, wide, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(wide, wide, 3, padding=1),
            nn.GELU(),
            _upsample_block(upsampler, wide, wide),
            nn.GELU(),
            nn.Conv2d(wide, width, 3, padding=1),
            nn.GELU(),
            _upsample_block(upsampler, width, width),
            nn.GELU(),
            nn.Conv2d(width, 3, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``x`` through the /4 latent."""
        return self.decoder(self.encoder(x))


def weights_path(name: str, weights_dir: Path | None = None) -> Path:
    """Path of the shipped state dict of decoder ``name``."""
    if name not in UPSAMPLERS:
        raise ValueError(f"unknown decoder {name!r}; expected one of {list(DECODER_NAMES)}")
    return (weights_dir or WEIGHTS_DIR) / f"{name}.pt"


@functools.cache
def load_decoder(name: str) -> TinyAutoencoder:
    """Load (once per process) the trained autoencoder ``name`` in eval mode, float32.

    Cached because every fake of a learned family needs it; the module is shared, so callers
    must not train or modify it.

    Raises:
        FileNotFoundError: If the weights were never trained (``training/train_decoders.py``).
    """
    path = weights_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"decoder weights {path} are missing; run python training/train_decoders.py"
        )
    model = TinyAutoencoder(UPSAMPLERS[name])
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({key: value.float() for key, value in state.items()})
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _training_photos() -> list[np.ndarray]:
    """The bundled real photos (offline, fixed): what the decoders are trained on.

    Only the sources bundled with installed wheels (scikit-image, matplotlib, scikit-learn), so
    training never needs a download. Imported lazily: :mod:`deepfakenet.data.fakes`, which
    the data set writer imports, loads this module. The shipped weights were trained on these
    photos plus scikit-image's second stereo view, since left out of the pool as a
    near-duplicate; retraining gives slightly different weights.
    """
    from deepfakenet.data import sources

    photos = [
        sources.load_photo(source, name)
        for source in sources.BUNDLED_SOURCES
        for name in sources.source_photos(source)
    ]
    if not photos:
        raise RuntimeError("no bundled real photos to train the decoders on")
    return photos


def sample_crops(
    n: int, side: int, rng: np.random.Generator, scale_range: tuple[float, float] = (0.25, 1.0)
) -> np.ndarray:
    """Draw ``n`` random ``side``-pixel crops of the real photos, as N x 3 x side x side float32.

    Each crop picks a photo uniformly, a downscale factor (Lanczos, as the data set's crops
    do), a position and a horizontal flip, so the decoders see the same kind of content the
    fakes are later made from.
    """
    pils = [Image.fromarray(photo) for photo in _training_photos()]
    out = np.empty((n, 3, side, side), dtype=np.float32)
    for i in range(n):
        pil = pils[int(rng.integers(len(pils)))]
        width, height = pil.size
        lo = max(scale_range[0], side / min(width, height))
        scale = float(rng.uniform(lo, max(lo, scale_range[1])))
        x0 = float(rng.uniform(0.0, max(width * scale - side, 0.0)))
        y0 = float(rng.uniform(0.0, max(height * scale - side, 0.0)))
        box = (x0 / scale, y0 / scale, (x0 + side) / scale, (y0 + side) / scale)
        crop = np.asarray(pil.resize((side, side), Image.Resampling.LANCZOS, box=box))
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out[i] = crop.transpose(2, 0, 1).astype(np.float32) / 255.0
    return out


def _gradient_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 distance between the horizontal and vertical finite differences of ``a`` and ``b``."""
    dx = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    dy = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR in dB over a batch of [0, 1] images (each image clipped and scored alone)."""
    mse = (a.clamp(0, 1) - b.clamp(0, 1)).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10.0 * torch.log10(1.0 / mse)).mean())


def train_decoder(
    name: str,
    seed: int = 0,
    steps: int = 2500,
    batch: int = 16,
    side: int = 32,
    lr: float = 2e-3,
    pool: int = 4096,
) -> tuple[TinyAutoencoder, dict[str, float]]:
    """Train one autoencoder on random real crops; return it with its training figures.

    Adam with a cosine learning-rate decay over a fixed number of steps (a time budget would
    make the weights depend on machine speed). The crops are drawn once into a pool and
    batches are sampled from it, which keeps the photo resampling out of the loop.

    Returns:
        The model (eval mode, float32) and ``{"steps", "seconds", "final_loss", "params"}``.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 1])
    crops = torch.from_numpy(sample_crops(pool, side, rng))
    model = TinyAutoencoder(UPSAMPLERS[name])
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * step / steps))
    )
    start = time.perf_counter()
    running = 0.0
    model.train()
    for step in range(steps):
        index = torch.from_numpy(rng.integers(0, pool, size=batch))
        x = crops[index]
        y = model(x)
        loss = (y - x).abs().mean() + GRADIENT_LOSS_WEIGHT * _gradient_l1(y, x)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        value = loss.item()
        running = 0.98 * running + 0.02 * value if step else value
        if (step + 1) % 100 == 0:
            log.info("%s step %d/%d loss %.4f", name, step + 1, steps, running)
    model.eval()
    figures = {
        "steps": steps,
        "seconds": round(time.perf_counter() - start, 1),
        "final_loss": round(running, 5),
        "params": sum(p.numel() for p in model.parameters()),
    }
    return model, figures


def evaluate_decoder(model: nn.Module, crops: torch.Tensor) -> float:
    """Held-out reconstruction PSNR (dB) of ``model`` on ``crops`` (N x 3 x H x W, /4 sides)."""
    with torch.no_grad():
        return psnr(model(crops), crops)


def train_all(
    out_dir: str | Path | None = None,
    seed: int = 0,
    steps: int = 2500,
    names: tuple[str, ...] = DECODER_NAMES,
) -> dict[str, dict[str, float]]:
    """Train every decoder, save fp16 state dicts and a JSON of figures; return the figures.

    The held-out PSNR is measured with the *saved* (fp16-rounded) weights on 64 crops of
    64 px drawn from a different seed, next to the PSNR of a plain bicubic x4 of a Lanczos /4
    (what a decoder that learned nothing beyond interpolation would reach).
    """
    out = Path(out_dir) if out_dir is not None else WEIGHTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        held_out = torch.from_numpy(sample_crops(64, 64, np.random.default_rng([seed, 2])))
        low = F.avg_pool2d(held_out, FACTOR)
        bicubic = F.interpolate(low, scale_factor=FACTOR, mode="bicubic", align_corners=False)
        figures: dict[str, dict[str, float]] = {
            "_baseline": {"avgpool4_bicubic_psnr_db": round(psnr(bicubic, held_out), 2)}
        }
        for name in names:
            model, stats = train_decoder(name, seed=seed, steps=steps)
            state = {key: value.half() for key, value in model.state_dict().items()}
            path = weights_path(name, out)
            torch.save(state, path)
            reloaded = TinyAutoencoder(UPSAMPLERS[name])
            reloaded.load_state_dict({key: value.float() for key, value in state.items()})
            reloaded.eval()
            stats["psnr_db"] = round(evaluate_decoder(reloaded, held_out), 2)
            stats["bytes"] = path.stat().st_size
            figures[name] = stats
            log.info("%s: %s", name, stats)
    finally:
        torch.set_num_threads(threads)
    (out / TRAINING_JSON).write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    load_decoder.cache_clear()
    return figures
