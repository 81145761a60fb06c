"""LightningModule: training, validation and test logic around :class:`DeepfakeNet`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric

from deepfakenet.metrics import StageMetrics
from deepfakenet.models.net import DeepfakeNet

log = logging.getLogger(__name__)

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class DetectorModule(L.LightningModule):
    """Cross-entropy training of the detector; metrics namespaced ``train/``, ``val/``, ``test/``.

    Args:
        net: The network to train (instantiated from ``conf/model``).
        optimizer: A partial optimizer (``_partial_: true``) completed with the parameters.
        scheduler: An optional partial LR scheduler completed with the optimizer.
    """

    def __init__(
        self,
        net: DeepfakeNet,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__()
        # The net is saved in the state_dict. The factories are Hydra partials, which do not
        # belong in a checkpoint (torch.load's weights_only refuses them): plain attributes.
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.criterion = nn.CrossEntropyLoss()
        self.val_metrics = StageMetrics(prefix="val/")
        self.test_metrics = StageMetrics(prefix="test/")
        self.val_auroc_best = MaxMetric()
        # Collected during test so the caller can draw ROC / reliability plots afterwards.
        self.test_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the wrapped network."""
        return self.net(x)

    def on_train_start(self) -> None:
        """Forget sanity-check values so the best-so-far only reflects real epochs."""
        self.val_metrics.reset()
        self.val_auroc_best.reset()

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        """One optimisation step on a batch."""
        x, y = batch
        logits = self(x)
        loss = self.criterion(logits, y)
        acc = (logits.argmax(dim=1) == y).float().mean()
        # sync_dist: under DDP the epoch's value is the mean over every rank's batches (a no-op
        # in one process).
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train/acc", acc, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.criterion(logits, y)
        prob = self.net.prob_from_logits(logits)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(prob, y, float(self.net.threshold))
        self.log(
            f"{stage}/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=stage == "val",
            sync_dist=True,
        )
        return logits

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Accumulate validation metrics."""
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        """Log the epoch's validation metrics and the best AUROC so far (the monitored key)."""
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        self.log_dict(values, sync_dist=True)
        self.val_auroc_best(values["val/auroc"])
        self.log("val/auroc_best", self.val_auroc_best.compute(), prog_bar=True, sync_dist=True)

    def on_test_epoch_start(self) -> None:
        """Start a clean collection of test outputs."""
        self.test_outputs = []
        self.test_metrics.reset()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Accumulate test metrics and keep logits for plots."""
        logits = self._eval_step(batch, "test")
        self.test_outputs.append(
            (
                logits.detach().cpu(),
                self.net.prob_from_logits(logits).detach().cpu(),
                batch[1].cpu(),
            )
        )

    def on_test_epoch_end(self) -> None:
        """Log the test metrics."""
        self.log_dict(self.test_metrics.compute(), sync_dist=True)
        self.test_metrics.reset()

    def configure_optimizers(self) -> dict[str, Any]:
        """Complete the configured optimizer (and scheduler, stepped per epoch)."""
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "frequency": 1},
        }
