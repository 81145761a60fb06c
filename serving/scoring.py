"""The body of the service's batched ``infer`` API, importable (and testable) without BentoML.

One batch: uint8 crops are stacked, normalised by the second half of the one preprocessing
function, run through the model's backend (torch, ONNX fp32 or ONNX int8) and turned into
calibrated decisions by :func:`deepfakenet.inference.scores_from_outputs`, the one calibration
path. Items are grouped by shape, so a model swap that changes the input size cannot break a batch
in flight.
"""

from __future__ import annotations

import base64

import numpy as np
import torch

from deepfakenet.inference import scores_from_outputs
from deepfakenet.preprocessing import normalize
from deepfakenet.runtime import LoadedModel
from serving.schemas import ScoreItem, ScoreResult


def score_items(model: LoadedModel, items: list[ScoreItem]) -> list[ScoreResult]:
    """Score validated crops with ``model``, one forward pass per distinct shape."""
    threshold = float(model.net.threshold)
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item.shape, []).append(i)
    results: dict[int, ScoreResult] = {}
    for indices in groups.values():
        pixels = torch.from_numpy(np.stack([items[i].to_array() for i in indices]))
        logits, features = model.backend.run(normalize(pixels).numpy())
        scores = scores_from_outputs(
            model.net, torch.from_numpy(logits), torch.from_numpy(features)
        )
        vectors = np.ascontiguousarray(features, dtype=np.float32)
        for j, i in enumerate(indices):
            results[i] = ScoreResult(
                prob_fake=float(scores.prob_fake[j]),
                label=scores.labels[j],
                threshold=threshold,
                model_version=model.version,
                features=base64.b64encode(vectors[j].tobytes()).decode("ascii"),
            )
    return [results[i] for i in range(len(items))]
