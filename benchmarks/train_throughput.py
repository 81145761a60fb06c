"""Lightning's training loop vs a plain PyTorch loop: ``python benchmarks/train_throughput.py``.

Both loops train the same network (``conf/model``'s ResNet18 and optimizer) on the same
batches: the embedded generator's images, preprocessed once by the training transform and held
in memory, so the figure compares the loops rather than JPEG decoding. Each loop runs the same
number of steps after the same warm-up; the script prints images/s for both and their ratio
(goal: Lightning >= 0.95 x plain). Runs alternate (plain, Lightning, plain, ...) and the median
is reported, so a noisy neighbour hurts both alike.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader, Dataset

from deepfakenet.data.datamodule import DeepfakeDataModule
from deepfakenet.data.synth import generate_dataset
from deepfakenet.models import DetectorModule

ROOT = Path(__file__).resolve().parents[1]


class Batches(Dataset):
    """A fixed list of ready-made batches (``batch_size=None`` loaders yield them as they are)."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batches[i]


def make_batches(crop: int, batch_size: int, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` training batches from a freshly generated tree (augmented like training)."""
    root = Path(tempfile.mkdtemp(prefix="train-bench-"))
    n = max(batch_size * 4, 256)
    generate_dataset(
        root, n_real=n, n_fake=n, min_size=crop, max_size=crop * 2, seed=0, progress=False
    )
    dm = DeepfakeDataModule(
        root,
        crop_size=crop,
        batch_size=batch_size,
        num_workers=0,
        val_fraction=0.0,
        test_fraction=0.0,
    )
    dm.setup()
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    while len(batches) < steps:
        batches.extend(dm.train_dataloader())
    return batches[:steps]


def new_module(crop: int, seed: int) -> DetectorModule:
    """A fresh module exactly as ``conf/model`` builds it (network, optimizer, scheduler)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train.yaml", overrides=[f"data.crop_size={crop}"])
    torch.manual_seed(seed)
    return hydra.utils.instantiate(cfg.model)


def plain_loop(batches: list, crop: int, warmup: int) -> float:
    """Images/s of a hand-written loop: forward, loss, backward, step."""
    module = new_module(crop, 0)
    net, criterion = module.net.train(), module.criterion
    optimizer = module.optimizer_factory(params=net.parameters())
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(net(x), y)
        loss.backward()
        optimizer.step()
    return sum(len(y) for _, y in batches[warmup:]) / (time.perf_counter() - start)


class StepTimer(L.Callback):
    """Starts the clock after the warm-up steps, stops it after the last step."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.images = warmup, 0.0, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self.images += len(batch[1])
            self.end = time.perf_counter()


def lightning_loop(batches: list, crop: int, warmup: int) -> float:
    """Images/s of ``Trainer.fit`` on the same batches (no validation, no checkpoints)."""
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
    )
    loader = DataLoader(Batches(batches), batch_size=None, shuffle=False)
    trainer.fit(new_module(crop, 0), train_dataloaders=loader)
    return timer.images / (timer.end - timer.start)


def main() -> None:
    """Print both loops' images/s and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error("--steps must be larger than --warmup")

    batches = make_batches(args.crop, args.batch_size, args.steps)
    plain, lightning = [], []
    for _ in range(args.repeats):
        plain.append(plain_loop(batches, args.crop, args.warmup))
        lightning.append(lightning_loop(batches, args.crop, args.warmup))
    p, lt = statistics.median(plain), statistics.median(lightning)
    print(
        f"threads={torch.get_num_threads()} crop={args.crop} batch={args.batch_size} "
        f"steps={args.steps} (warm-up {args.warmup}) repeats={args.repeats}"
    )
    print(f"plain PyTorch loop : {p:8.1f} img/s  runs {[round(v, 1) for v in plain]}")
    print(f"Lightning Trainer  : {lt:8.1f} img/s  runs {[round(v, 1) for v in lightning]}")
    print(f"ratio Lightning / plain = {lt / p:.3f}  (goal >= 0.95)")


if __name__ == "__main__":
    main()
