"""Scoring a split: one ECE and one calibrated probability everywhere, per-group rates, layering."""

import functools
import math
import subprocess
import sys

import lightning as L
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from deepfakenet import analytics
from deepfakenet.calibration import calibrate, calibrated_prob
from deepfakenet.evaluation import GROUP_COLUMNS, cell_metrics, group_rates
from deepfakenet.labels import FAKE_LABEL, FAKE_TARGET, LABELS, REAL_LABEL, REAL_TARGET
from deepfakenet.metrics import defined_metrics, expected_calibration_error
from deepfakenet.models import DeepfakeNet, DetectorModule


@pytest.fixture
def spread_net_and_data():
    """A random ResNet whose head is scaled up, so P(fake) spreads over many ECE bins."""
    torch.manual_seed(0)
    net = DeepfakeNet(crop_size=32).eval()
    with torch.no_grad():
        net.backbone.fc.weight.mul_(40.0)
    images = torch.randn(48, 3, 32, 32)
    targets = torch.arange(48) % 2
    with torch.no_grad():
        logits = net(images)
    return net, images, targets, logits


def test_ece_agrees_in_training_calibration_report_and_dashboard(spread_net_and_data):
    net, images, targets, logits = spread_net_and_data
    result = calibrate(net, logits, targets)  # stores T, b and the threshold in the net
    prob = net.prob_from_logits(logits)
    assert 0.01 < result.ece_after < 0.9, "a trivial ECE would not test the binning"
    assert len(torch.unique((prob * 15).floor())) > 3

    # Training: the LightningModule's val/ and test/ metrics, batch by batch through a Trainer.
    module = DetectorModule(net, optimizer=functools.partial(torch.optim.SGD, lr=0.1))
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader(TensorDataset(images, targets), batch_size=8)
    (val,) = trainer.validate(module, loader, verbose=False)
    (test,) = trainer.test(module, loader, verbose=False)

    # The evaluation report and the protocol's table cells.
    report = defined_metrics(prob, targets, float(net.threshold))
    cell = cell_metrics(net, prob, targets)

    # The admin dashboard, on people's verdicts that happen to equal the labels.
    feedback = pd.DataFrame(
        {
            "prediction_id": [f"p{i}" for i in range(len(targets))],
            "created_at": pd.date_range("2026-01-01", periods=len(targets), freq="min"),
            "prob_fake": prob.double().numpy(),
            "human_label": [LABELS[int(t)] for t in targets],
            "model_label": [LABELS[int(d)] for d in net.decide(prob)],
        }
    )
    dashboard = analytics.calibration(feedback).ece

    seen = {
        "val/ece": float(val["val/ece"]),
        "test/ece": float(test["test/ece"]),
        "calibration.ece_after": result.ece_after,
        "evaluate metrics.ece": report["ece"],
        "protocol cell ece": cell["ece"],
        "dashboard ece": dashboard,
        "metrics.expected_calibration_error": expected_calibration_error(prob, targets),
    }
    reference = seen["test/ece"]
    for where, value in seen.items():
        assert value == pytest.approx(reference, abs=1e-6), (where, seen)


def test_ece_is_the_binned_gap_by_hand():
    prob = torch.tensor([0.8, 0.8, 0.1])
    targets = torch.tensor([1, 0, 0])
    # 10 bins: (2 * |0.8 - 0.5| + 1 * |0.1 - 0|) / 3
    assert expected_calibration_error(prob, targets, 10) == pytest.approx((2 * 0.3 + 0.1) / 3)


def test_calibrated_prob_is_the_nets_own_formula(spread_net_and_data):
    net, _, targets, logits = spread_net_and_data
    calibrate(net, logits, targets)
    fitted = calibrated_prob(logits, float(net.temperature), float(net.logit_bias))
    assert torch.allclose(fitted.float(), net.prob_from_logits(logits), atol=1e-6)
    assert torch.allclose(calibrated_prob(logits), torch.softmax(logits.double(), dim=1)[:, 1])


def test_labels_have_one_home():
    assert LABELS == (REAL_LABEL, FAKE_LABEL) == ("real", "fake")
    assert (REAL_TARGET, FAKE_TARGET) == (0, 1)
    from deepfakenet.models.net import LABELS as NET_LABELS

    assert NET_LABELS is LABELS


def test_group_rates_give_source_fpr_and_family_recall():
    net = DeepfakeNet(crop_size=32)
    with torch.no_grad():
        net.threshold.fill_(0.5)
    prob = torch.tensor([0.9, 0.1, 0.2, 0.3, 0.6, 0.7, 0.4, 0.8])
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    groups = ["camA", "camA", "camB", "camB", "famX", "famX", "famY", ""]
    table = group_rates(net, prob, targets, groups)
    assert tuple(table.columns) == GROUP_COLUMNS
    rows = table.set_index("group")
    assert rows.loc["camA", ["n", "flagged", "fpr"]].tolist() == [2, 1, 0.5]
    assert rows.loc["camB", "fpr"] == 0.0 and math.isnan(rows.loc["camB", "tpr"])
    assert rows.loc["famX", "tpr"] == 1.0 and math.isnan(rows.loc["famX", "fpr"])
    assert rows.loc["famY", "tpr"] == 0.0
    assert rows.loc["(none)", ["label", "tpr"]].tolist() == ["fake", 1.0]
    assert table["label"].tolist()[:2] == ["real", "real"], "reals first"
    with pytest.raises(ValueError, match="differ"):
        group_rates(net, prob, targets, groups[:-1])


def test_pipeline_never_imports_protocol():
    code = (
        "import sys, deepfakenet.pipeline, deepfakenet.evaluation; "
        "assert 'deepfakenet.protocol' not in sys.modules, 'pipeline imports protocol'; "
        "import deepfakenet.protocol"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
