"""Post-hoc calibration: temperature scaling and a decision threshold, fitted on validation.

A network trained with cross-entropy is usually mis-calibrated, and the 0.5 cut of its softmax is
an accident of the class balance of the training set, not a decision anyone chose. Both are fixed
after training, on the validation split, with a few scalars (Guo et al., "On Calibration of
Modern Neural Networks", 2017; Platt, 1999):

- the temperature ``T`` divides the logit margin (fake minus real); it is fitted by minimising
  the negative log-likelihood (LBFGS over ``log T``, so ``T`` stays positive). Dividing by one
  positive number never changes the ranking, so AUROC and AP are untouched;
- optionally a logit offset ``b`` is fitted with it (``P = sigmoid(margin / T + b)``, Platt
  scaling). Training augmentations that destroy the traces of some fakes (JPEG, blur,
  downscaling, applied to both classes) leave a model that is confidently right about reals but
  hedges on clean fakes: a bias, not a scale, which one temperature cannot remove (measured on
  the demo model: test ECE 0.067 with ``T`` alone, 0.035 with ``T`` and ``b``). A monotone map
  still, so the ranking is untouched;
- the threshold on the calibrated ``P(fake)`` is chosen for a target false-positive rate on the
  validation reals, because flagging an honest photo is the error users notice first.

All are written into :class:`~deepfakenet.models.net.DeepfakeNet`'s buffers so they travel with
the weights and every scorer applies them through ``predict_proba`` / ``decide``.

One definition each: the calibrated probability is :func:`deepfakenet.models.net.calibrated_prob`
(behind :meth:`DeepfakeNet.prob_from_logits`; :func:`calibrated_prob` applies it to candidate
values during the fit), and the
ECE reported here is :func:`deepfakenet.metrics.expected_calibration_error`, the one the training
metrics and the evaluation report use (re-exported under the same name).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from deepfakenet.metrics import expected_calibration_error
from deepfakenet.models.net import DeepfakeNet
from deepfakenet.models.net import calibrated_prob as net_calibrated_prob

log = logging.getLogger(__name__)

#: Bounds of the fitted temperature: beyond these the validation set is too small or degenerate
#: (all one class, or perfectly separated) for the fit to mean anything.
TEMPERATURE_BOUNDS = (0.05, 20.0)
BIAS_BOUNDS = (-10.0, 10.0)


@dataclass(frozen=True)
class CalibrationConfig:
    """How the temperature and threshold are fitted (``conf/calibration``).

    Attributes:
        enabled: Fit the temperature; when False the temperature stays 1 and the offset 0.
        fit_bias: Fit a logit offset together with the temperature (Platt scaling).
        target_fpr: Choose the threshold so that at most this share of validation reals is
            flagged; ``None`` keeps ``threshold``.
        per_source: Hold ``target_fpr`` on every real source of the validation split (with at
            least ``min_reals_per_source`` reals), not only on all reals pooled: the threshold
            is the strictest of the per-source ones. A pooled threshold is set by the sources
            the model finds easy and flags the hard ones (an unseen camera) far more often.
        min_reals_per_source: Fewest validation reals a source needs to get its own threshold
            (below that one image decides it).
        threshold: The fixed threshold used when ``target_fpr`` is ``None``.
        max_iter: LBFGS iterations for the temperature fit.
    """

    enabled: bool = True
    fit_bias: bool = True
    target_fpr: float | None = 0.05
    per_source: bool = True
    min_reals_per_source: int = 20
    threshold: float = 0.5
    max_iter: int = 100

    def __post_init__(self) -> None:
        if self.target_fpr is not None and not 0.0 <= self.target_fpr < 1.0:
            raise ValueError(f"target_fpr must be in [0, 1), got {self.target_fpr}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be at least 1, got {self.max_iter}")


@dataclass(frozen=True)
class CalibrationResult:
    """What calibration chose and how the validation split scores before and after.

    Attributes:
        temperature: The fitted temperature (1.0 when disabled).
        bias: The fitted logit offset (0.0 unless ``fit_bias``).
        threshold: The decision threshold on the calibrated ``P(fake)``.
        nll_before: Validation negative log-likelihood at temperature 1.
        nll_after: Validation negative log-likelihood at the fitted temperature.
        ece_before: Validation expected calibration error at temperature 1.
        ece_after: Validation expected calibration error at the fitted temperature.
        fpr: Share of validation reals at or above the threshold.
        tpr: Share of validation fakes at or above the threshold.
    """

    temperature: float
    bias: float
    threshold: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    fpr: float
    tpr: float

    def as_metrics(self, prefix: str = "calibration/") -> dict[str, float]:
        """The result as flat metric names (for MLflow and the metrics file)."""
        return {f"{prefix}{key}": float(value) for key, value in self.__dict__.items()}


def _check(logits: torch.Tensor, targets: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``logits`` is ``N x 2`` and ``targets`` holds N labels 0/1."""
    if logits.ndim != 2 or logits.shape[1] != 2:
        raise ValueError(f"expected N x 2 logits, got shape {tuple(logits.shape)}")
    if targets.shape != (logits.shape[0],):
        raise ValueError(f"expected {logits.shape[0]} targets, got shape {tuple(targets.shape)}")
    if logits.shape[0] == 0:
        raise ValueError("calibration needs at least one validation sample")
    if not bool(((targets == 0) | (targets == 1)).all()):
        raise ValueError("targets must be 0 (real) or 1 (fake)")


def _margin(logits: torch.Tensor) -> torch.Tensor:
    """The logit margin ``fake - real`` in double precision, detached and autograd-safe."""
    # A clone: the logits may be inference-mode tensors, which autograd must not save.
    return (logits[:, 1] - logits[:, 0]).detach().double().clone()


def calibrated_prob(
    logits: torch.Tensor, temperature: float = 1.0, bias: float = 0.0
) -> torch.Tensor:
    """``P(fake) = sigmoid((fake - real) / temperature + bias)`` for candidate values.

    Not a second formula: it runs :func:`deepfakenet.models.net.calibrated_prob`, the function
    behind :meth:`DeepfakeNet.prob_from_logits`, on the candidate temperature and offset (in
    double precision), so the reliability plots and the threshold see what the registered model
    serves. (The fit itself minimises the same expression in its logit form, ``margin / T + b``
    inside a BCE-with-logits, for numerical stability.)

    Args:
        logits: ``N x 2`` uncalibrated logits.
        temperature: The temperature dividing the margin.
        bias: The logit offset added after it.

    Returns:
        ``N`` probabilities, float64.
    """
    return net_calibrated_prob(logits.detach().double(), float(temperature), float(bias))


def nll(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0, bias: float = 0.0
) -> float:
    """Mean negative log-likelihood of the targets under :func:`calibrated_prob`."""
    z = _margin(logits) / temperature + bias
    return float(F.binary_cross_entropy_with_logits(z, targets.double()))


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature that minimises the NLL of ``targets`` under ``softmax(logits / T)``.

    Args:
        logits: ``N x 2`` uncalibrated logits.
        targets: ``N`` labels, 0 (real) or 1 (fake).
        max_iter: LBFGS iteration limit.

    Returns:
        The fitted temperature, clipped to :data:`TEMPERATURE_BOUNDS`.

    Raises:
        ValueError: On mis-shaped inputs or labels other than 0/1.
    """
    return fit_scaling(logits, targets, fit_bias=False, max_iter=max_iter)[0]


def fit_scaling(
    logits: torch.Tensor, targets: torch.Tensor, fit_bias: bool = True, max_iter: int = 100
) -> tuple[float, float]:
    """Temperature (and logit offset) minimising the NLL of ``targets`` under calibrated_prob.

    Optimises ``log T`` (and ``b``) with LBFGS in double precision: one or two parameters and a
    smooth objective, so this converges in a few iterations. The temperature is clipped to
    :data:`TEMPERATURE_BOUNDS` and the offset to :data:`BIAS_BOUNDS`: with perfectly separated
    validation logits the NLL keeps falling as ``T -> 0``, and no finite answer is better than a
    bounded one.

    Args:
        logits: ``N x 2`` uncalibrated logits.
        targets: ``N`` labels, 0 (real) or 1 (fake).
        fit_bias: Fit the offset ``b`` too; otherwise it stays 0.
        max_iter: LBFGS iteration limit.

    Returns:
        ``(temperature, bias)``.

    Raises:
        ValueError: On mis-shaped inputs or labels other than 0/1.
    """
    _check(logits, targets)
    z = _margin(logits)
    y = targets.detach().double().clone()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=fit_bias)
    params = [log_t, bias] if fit_bias else [log_t]
    optimizer = torch.optim.LBFGS(params, lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z / log_t.exp() + bias, y)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    temperature, offset = float(log_t.detach().exp()), float(bias.detach())
    if not (math.isfinite(temperature) and math.isfinite(offset)):
        log.warning("calibration fit diverged; keeping T = 1, b = 0")
        return 1.0, 0.0
    return (
        min(max(temperature, TEMPERATURE_BOUNDS[0]), TEMPERATURE_BOUNDS[1]),
        min(max(offset, BIAS_BOUNDS[0]), BIAS_BOUNDS[1]),
    )


def threshold_for_fpr(prob_fake: torch.Tensor, targets: torch.Tensor, target_fpr: float) -> float:
    """The threshold that flags at most ``target_fpr`` of the reals in ``prob_fake``.

    With ``n`` reals, at most ``k = floor(target_fpr * n)`` may score at or above the threshold,
    so it is placed halfway between the ``(k+1)``-th highest real score and the next higher
    distinct score (or 1): the midpoint leaves room on both sides for unseen data rather than
    sitting on one validation image, and ties never push the rate over the target.

    Args:
        prob_fake: Calibrated ``P(fake)`` of the validation images.
        targets: Their labels, 0 (real) or 1 (fake).
        target_fpr: Largest accepted share of reals flagged as fake, in ``[0, 1)``.

    Returns:
        The threshold, in ``(0, 1)``.

    Raises:
        ValueError: If there is no real image or ``target_fpr`` is out of range.
    """
    if not 0.0 <= target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr}")
    reals = torch.sort(prob_fake[targets == 0].double(), descending=True).values
    if len(reals) == 0:
        raise ValueError("choosing a threshold for a false-positive rate needs real images")
    k = math.floor(target_fpr * len(reals) + 1e-9)
    below = float(reals[k]) if k < len(reals) else 0.0
    # The next distinct score above it (ties with the (k+1)-th score must stay below the cut).
    higher = reals[reals > below]
    above = float(higher.min()) if len(higher) else 1.0
    threshold = (below + above) / 2.0
    # Keep it strictly inside (0, 1) so both decisions stay reachable.
    return min(max(threshold, 1e-6), 1.0 - 1e-6)


def threshold_for_source_fpr(
    prob_fake: torch.Tensor,
    targets: torch.Tensor,
    sources: Sequence[str],
    target_fpr: float,
    min_reals: int = 20,
) -> tuple[float, str]:
    """The lowest threshold that flags at most ``target_fpr`` of the reals of *every* source.

    Each source with at least ``min_reals`` reals gets :func:`threshold_for_fpr` on its own
    reals; the pooled reals get one too; the highest of these wins. Sources with fewer reals
    still count in the pooled rate.

    Args:
        prob_fake: Calibrated ``P(fake)`` of the validation images.
        targets: Their labels, 0 (real) or 1 (fake).
        sources: The real source of each image (``""`` when unknown).
        target_fpr: Largest accepted share of a source's reals flagged as fake.
        min_reals: Fewest reals a source needs to set the threshold.

    Returns:
        ``(threshold, source)``: the threshold and the source that set it (``"(pooled)"`` when
        no single source is stricter than all reals together).
    """
    if len(sources) != len(targets):
        raise ValueError(f"expected {len(targets)} sources, got {len(sources)}")
    candidates = {"(pooled)": threshold_for_fpr(prob_fake, targets, target_fpr)}
    names = np.asarray(sources, dtype=object)
    reals = (targets == 0).cpu().numpy()
    for source in sorted(set(names[reals]) - {""}):
        mask = torch.from_numpy(reals & (names == source))
        if int(mask.sum()) >= min_reals:
            candidates[source] = threshold_for_fpr(prob_fake[mask], targets[mask], target_fpr)
    strictest = max(candidates, key=lambda name: candidates[name])
    return candidates[strictest], strictest


def calibrate(
    net: DeepfakeNet,
    logits: torch.Tensor,
    targets: torch.Tensor,
    config: CalibrationConfig | None = None,
    sources: Sequence[str] | None = None,
) -> CalibrationResult:
    """Fit temperature, logit offset and threshold on validation logits; store them in ``net``.

    Args:
        net: The trained network; its ``temperature``, ``logit_bias`` and ``threshold`` buffers
            are overwritten.
        logits: ``N x 2`` uncalibrated validation logits of ``net``.
        targets: ``N`` validation labels, 0 (real) or 1 (fake).
        config: Fitting rules; defaults to :class:`CalibrationConfig`.
        sources: The real source of each validation image, for ``config.per_source`` (``None``:
            the pooled rule).

    Returns:
        What was chosen, with validation NLL / ECE before and after.

    Raises:
        ValueError: On mis-shaped inputs or labels other than 0/1.
    """
    config = config or CalibrationConfig()
    _check(logits, targets)
    logits = logits.detach().cpu().float()
    targets = targets.detach().cpu().long()
    temperature, bias = (
        fit_scaling(logits, targets, config.fit_bias, config.max_iter)
        if config.enabled
        else (1.0, 0.0)
    )
    prob_before = calibrated_prob(logits)
    prob_after = calibrated_prob(logits, temperature, bias)
    if config.target_fpr is None:
        threshold = config.threshold
    elif not bool((targets == 0).any()):
        log.warning(
            "no real image in the validation split: keeping the fixed threshold %.3f instead of "
            "one for a %.3f false-positive rate",
            config.threshold,
            config.target_fpr,
        )
        threshold = config.threshold
    elif config.per_source and sources is not None:
        threshold, strictest = threshold_for_source_fpr(
            prob_after, targets, sources, config.target_fpr, config.min_reals_per_source
        )
        log.info("threshold set by the strictest source: %s", strictest)
    else:
        threshold = threshold_for_fpr(prob_after, targets, config.target_fpr)
    flagged = prob_after >= threshold
    reals, fakes = targets == 0, targets == 1
    if config.target_fpr is not None and reals.any():
        achieved = float(flagged[reals].double().mean())
        if achieved > config.target_fpr:
            # Only when the reals' scores saturate at 1: no threshold below 1 separates them.
            log.warning(
                "the threshold %.6f flags %.3f of the validation reals, above the target %.3f",
                threshold,
                achieved,
                config.target_fpr,
            )
    result = CalibrationResult(
        temperature=temperature,
        bias=bias,
        threshold=threshold,
        nll_before=nll(logits, targets),
        nll_after=nll(logits, targets, temperature, bias),
        ece_before=expected_calibration_error(prob_before, targets),
        ece_after=expected_calibration_error(prob_after, targets),
        fpr=float(flagged[reals].double().mean()) if reals.any() else float("nan"),
        tpr=float(flagged[fakes].double().mean()) if fakes.any() else float("nan"),
    )
    with torch.no_grad():
        net.temperature.fill_(temperature)
        net.logit_bias.fill_(bias)
        net.threshold.fill_(threshold)
    log.info(
        "calibrated on %d validation images: T=%.3f b=%.3f (NLL %.4f -> %.4f, ECE %.4f -> "
        "%.4f), threshold %.4f (val FPR %.3f, TPR %.3f)",
        len(targets),
        temperature,
        bias,
        result.nll_before,
        result.nll_after,
        result.ece_before,
        result.ece_after,
        threshold,
        result.fpr,
        result.tpr,
    )
    return result
