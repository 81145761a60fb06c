"""Evaluate: ``python training/evaluate.py model_ref=champion|previous|<N> [robustness=true]``.

With ``--config-name generalisation`` it runs the generalisation protocol instead (leave one fake
family out, leave one real source out, perturbations), which trains one model per fold:
``python training/evaluate.py --config-name generalisation experiment=demo``.

Exit codes (:mod:`deepfakenet.cli`): 0 evaluated; 2 refused with one line (nothing registered
under ``model_ref``, a data tree without a class); 1 unexpected error, with its traceback.
"""

from __future__ import annotations

import json
import logging

import hydra
from omegaconf import DictConfig

from deepfakenet.cli import run_job
from deepfakenet.evaluation import to_markdown
from deepfakenet.pipeline import evaluate
from deepfakenet.protocol import run_generalisation

log = logging.getLogger(__name__)


def _generalisation(cfg: DictConfig) -> float:
    result = run_generalisation(cfg)
    log.info("generalisation goals:\n%s", to_markdown(result.goals))
    family = result.table[result.table["protocol"] == "family_out"]["auroc"]
    return float(family.min()) if len(family) else float("nan")


def _evaluate(cfg: DictConfig) -> float | None:
    report = evaluate(cfg)
    log.info("test metrics of %s:\n%s", report["model"], json.dumps(report["metrics"], indent=2))
    for warning in report["warnings"]:
        log.warning("%s", warning)
    return report["metrics"]["auroc"]


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate.yaml")
def main(cfg: DictConfig) -> float | None:
    """Run the evaluation job; return the test AUROC (the protocol: worst held-out family's)."""
    if "synth" in cfg:  # conf/generalisation.yaml (it has the data generator's settings)
        return run_job("generalisation", lambda: _generalisation(cfg))
    return run_job("evaluate", lambda: _evaluate(cfg))


if __name__ == "__main__":
    main()
