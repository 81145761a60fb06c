"""Temperature scaling and the decision threshold (deepfakenet.calibration)."""

import math

import pytest
import torch

from deepfakenet.calibration import (
    CalibrationConfig,
    calibrate,
    calibrated_prob,
    expected_calibration_error,
    fit_scaling,
    fit_temperature,
    nll,
    threshold_for_fpr,
)
from deepfakenet.models import DeepfakeNet


def _overconfident(n: int = 4000, scale: float = 4.0, seed: int = 0):
    """Labels drawn from sigmoid(z) (a calibrated model), logits reported as scale * z."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator=g) * 1.5
    targets = (torch.rand(n, generator=g) < torch.sigmoid(z)).long()
    logits = torch.stack([torch.zeros(n), scale * z], dim=1)
    return logits, targets


def test_temperature_scaling_lowers_nll_of_an_overconfident_model():
    logits, targets = _overconfident(scale=4.0)
    temperature = fit_temperature(logits, targets)
    assert temperature == pytest.approx(4.0, rel=0.15), "recovers the over-confidence factor"
    assert nll(logits, targets, temperature) < nll(logits, targets) - 0.1
    prob_before = torch.softmax(logits, 1)[:, 1]
    prob_after = torch.softmax(logits / temperature, 1)[:, 1]
    before = expected_calibration_error(prob_before, targets)
    after = expected_calibration_error(prob_after, targets)
    assert after < before / 2, (before, after)


def test_an_already_calibrated_model_keeps_a_temperature_near_one():
    logits, targets = _overconfident(scale=1.0, seed=1)
    assert fit_temperature(logits, targets) == pytest.approx(1.0, abs=0.15)


def test_the_logit_offset_removes_a_bias_temperature_cannot():
    # A calibrated model whose fake logit was shifted down: hedging on fakes, sure about reals.
    logits, targets = _overconfident(scale=1.0, seed=4)
    logits[:, 1] -= 2.0
    only_t = fit_temperature(logits, targets)
    t, b = fit_scaling(logits, targets, fit_bias=True)
    assert t == pytest.approx(1.0, abs=0.15) and b == pytest.approx(2.0, abs=0.25)
    assert nll(logits, targets, t, b) < nll(logits, targets, only_t) - 0.05
    ece_t = expected_calibration_error(calibrated_prob(logits, only_t), targets)
    ece_tb = expected_calibration_error(calibrated_prob(logits, t, b), targets)
    assert ece_tb < ece_t / 2, (ece_t, ece_tb)


def test_threshold_meets_the_target_false_positive_rate():
    g = torch.Generator().manual_seed(0)
    prob = torch.rand(1000, generator=g)
    targets = (torch.arange(1000) % 2).long()
    for target in (0.0, 0.01, 0.05, 0.2):
        threshold = threshold_for_fpr(prob, targets, target)
        fpr = float((prob[targets == 0] >= threshold).double().mean())
        assert fpr <= target + 1e-12, (target, fpr)
        # And not needlessly strict: one more real would break the target.
        assert fpr > target - 2 / 500, (target, fpr)
    assert 0 < threshold_for_fpr(prob, targets, 0.0) < 1


def test_tied_scores_never_push_the_false_positive_rate_over_the_target():
    prob = torch.tensor([0.9, 0.9, 0.9, 0.2, 0.1] + [0.05] * 15)
    targets = torch.zeros(20, dtype=torch.long)
    threshold = threshold_for_fpr(prob, targets, 0.1)  # two false positives allowed, three tie
    assert float((prob >= threshold).double().mean()) <= 0.1


def test_threshold_needs_reals_and_a_valid_rate():
    with pytest.raises(ValueError, match="real"):
        threshold_for_fpr(torch.tensor([0.2, 0.9]), torch.tensor([1, 1]), 0.05)
    with pytest.raises(ValueError, match="target_fpr"):
        threshold_for_fpr(torch.tensor([0.2, 0.9]), torch.tensor([0, 1]), 1.0)


def test_calibrate_stores_temperature_and_threshold_that_scoring_then_uses():
    logits, targets = _overconfident(scale=3.0, seed=2)
    net = DeepfakeNet(crop_size=32)
    result = calibrate(net, logits, targets, CalibrationConfig(target_fpr=0.1))
    assert float(net.temperature) == pytest.approx(result.temperature)
    assert float(net.threshold) == pytest.approx(result.threshold)
    assert result.nll_after < result.nll_before and result.ece_after < result.ece_before
    assert result.fpr <= 0.1
    assert float(net.logit_bias) == pytest.approx(result.bias)
    # The network's own scoring path applies them all.
    prob = net.prob_from_logits(logits)
    margin = (logits[:, 1] - logits[:, 0]) / result.temperature + result.bias
    torch.testing.assert_close(prob, torch.sigmoid(margin))
    decisions = net.decide(prob)
    assert torch.equal(decisions, (prob >= net.threshold).long())
    assert float((decisions[targets == 0]).double().mean()) == pytest.approx(result.fpr)
    assert set(result.as_metrics()) >= {"calibration/temperature", "calibration/threshold"}


def test_fixed_threshold_and_disabled_scaling():
    logits, targets = _overconfident(seed=3)
    net = DeepfakeNet(crop_size=32)
    result = calibrate(
        net, logits, targets, CalibrationConfig(enabled=False, target_fpr=None, threshold=0.7)
    )
    assert result.temperature == 1.0 and float(net.temperature) == 1.0
    assert float(net.threshold) == pytest.approx(0.7)
    assert math.isclose(result.nll_before, result.nll_after)


@pytest.mark.parametrize(
    ("logits", "targets", "message"),
    [
        (torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), "N x 2"),
        (torch.zeros(4, 2), torch.zeros(3, dtype=torch.long), "targets"),
        (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), "at least one"),
        (torch.zeros(2, 2), torch.tensor([0, 2]), "0 \\(real\\) or 1"),
    ],
)
def test_bad_inputs_are_value_errors(logits, targets, message):
    with pytest.raises(ValueError, match=message):
        fit_temperature(logits, targets)


@pytest.mark.parametrize(
    "kwargs", [{"target_fpr": 1.0}, {"target_fpr": -0.1}, {"threshold": 1.0}, {"max_iter": 0}]
)
def test_bad_config_is_a_value_error(kwargs):
    with pytest.raises(ValueError):
        CalibrationConfig(**kwargs)


def test_the_strictest_source_sets_the_threshold():
    from deepfakenet.calibration import threshold_for_source_fpr

    gen = torch.Generator().manual_seed(0)
    easy = torch.rand(200, generator=gen) * 0.3  # reals the model finds easy
    hard = 0.3 + torch.rand(40, generator=gen) * 0.5  # an unfamiliar camera: higher scores
    fakes = 0.6 + torch.rand(100, generator=gen) * 0.4
    prob = torch.cat([easy, hard, fakes])
    targets = torch.cat([torch.zeros(240), torch.ones(100)]).long()
    sources = ["easy"] * 200 + ["hard"] * 40 + ["fam"] * 100
    pooled = threshold_for_fpr(prob, targets, 0.05)
    threshold, source = threshold_for_source_fpr(prob, targets, sources, 0.05, min_reals=20)
    assert source == "hard" and threshold > pooled
    for name, scores in (("easy", easy), ("hard", hard)):
        assert float((scores >= threshold).double().mean()) <= 0.05, name
    assert float((hard >= pooled).double().mean()) > 0.05, "the pooled rule fails the hard source"
    # A source with too few reals does not get a say (one image would decide it).
    _, source = threshold_for_source_fpr(prob, targets, sources, 0.05, min_reals=50)
    assert source == "(pooled)"
    with pytest.raises(ValueError, match="sources"):
        threshold_for_source_fpr(prob, targets, sources[:-1], 0.05)
