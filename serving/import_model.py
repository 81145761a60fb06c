"""Import a registered MLflow model into the BentoML model store: ``make bento``.

``python serving/import_model.py [model_ref=champion] [if_missing=true]``. The service serves the
newest model of that name in the store (``deepfakenet:latest``), so importing the champion is how
a deployment picks its model. The BentoML model is labelled with the registry version, run id,
DVC data version and alias, which the service reports at ``GET /model``.

Exit codes are those of :mod:`deepfakenet.cli`: 0 imported (or already there), 2 when the
reference does not exist in the registry (no champion yet: run ``make demo`` or ``make train``
first), 1 for anything unexpected.
"""

from __future__ import annotations

import logging

import bentoml
import hydra
from bentoml.exceptions import NotFound
from omegaconf import DictConfig

from deepfakenet import registry
from deepfakenet.cli import run_job
from deepfakenet.errors import RegistryError
from deepfakenet.security import redact
from deepfakenet.store import sqlite_file

log = logging.getLogger(__name__)


def stored_models(name: str) -> list[bentoml.Model]:
    """Every model called ``name`` in the BentoML store, oldest first; [] when there is none.

    ``bentoml.models.list(name)`` raises :class:`bentoml.exceptions.NotFound` instead of
    returning an empty list when the store has never held a model of that name (a fresh
    ``BENTOML_HOME``, i.e. the first ``make serve`` on a new machine).
    """
    try:
        found = bentoml.models.list(name)
    except NotFound:
        return []
    return sorted(found, key=lambda m: m.creation_time)


def import_model(cfg: DictConfig) -> bentoml.Model:
    """Import ``cfg.model_ref`` of the registry into the BentoML store; return the stored model.

    Raises:
        RegistryError: There is no registry yet (its SQLite file is missing: nothing is
            created), or it has no model under ``cfg.model_ref``.
    """
    config = registry.registry_config(cfg)
    path = sqlite_file(config.tracking_uri)
    if path is not None and not path.is_file():  # MLflow would create an empty one
        raise RegistryError(
            f"no MLflow registry at {redact(config.tracking_uri)}: train and register a model "
            "first (`make demo` or `make train`)"
        )
    client = registry.use(config)
    name = cfg.registry.model_name
    try:
        version = registry.resolve_version(client, name, cfg.model_ref)
    except RegistryError as err:
        raise RegistryError(
            f"{err}: train and register a model first (`make demo` or `make train`)"
        ) from err
    alias = "" if str(cfg.model_ref).isdigit() else str(cfg.model_ref)
    labels = registry.version_labels(version, alias=alias)
    if cfg.if_missing:
        stored = stored_models(name)
        if stored and stored[-1].info.labels.get("model_version") == labels["model_version"]:
            log.info("%s already serves registry version %s", stored[-1].tag, version.version)
            return stored[-1]
    uri = registry.model_uri(name, version.version)
    model = bentoml.mlflow.import_model(name, uri, labels=labels)
    log.info("imported %s as %s with labels %s", uri, model.tag, labels)
    return model


@hydra.main(version_base="1.3", config_path="../conf", config_name="import_model.yaml")
def main(cfg: DictConfig) -> None:
    """Run the import (exit 2 with one line when the registry lacks the model)."""
    run_job("import_model", lambda: import_model(cfg))


if __name__ == "__main__":
    main()
