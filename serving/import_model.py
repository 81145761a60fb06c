"""Import a registered MLflow model into the BentoML model store: ``make bento``.

``python serving/import_model.py [model_ref=champion] [if_missing=true]``. The service serves the
newest model of that name in the store (``deepfakenet:latest``), so importing the champion is how
a deployment picks its model. The BentoML model is labelled with the registry version, run id,
DVC data version and alias, which the service reports at ``GET /model``.
"""

from __future__ import annotations

import logging

import bentoml
import hydra
from omegaconf import DictConfig

from deepfakenet import registry

log = logging.getLogger(__name__)


def import_model(cfg: DictConfig) -> bentoml.Model:
    """Import ``cfg.model_ref`` of the registry into the BentoML store; return the stored model."""
    client = registry.use(registry.registry_config(cfg))
    name = cfg.registry.model_name
    version = registry.resolve_version(client, name, cfg.model_ref)
    alias = "" if str(cfg.model_ref).isdigit() else str(cfg.model_ref)
    labels = registry.version_labels(version, alias=alias)
    if cfg.if_missing:
        stored = sorted(bentoml.models.list(name), key=lambda m: m.creation_time)
        if stored and stored[-1].info.labels.get("model_version") == labels["model_version"]:
            log.info("%s already serves registry version %s", stored[-1].tag, version.version)
            return stored[-1]
    uri = registry.model_uri(name, version.version)
    model = bentoml.mlflow.import_model(name, uri, labels=labels)
    log.info("imported %s as %s with labels %s", uri, model.tag, labels)
    return model


@hydra.main(version_base="1.3", config_path="../conf", config_name="import_model.yaml")
def main(cfg: DictConfig) -> None:
    """Run the import."""
    import_model(cfg)


if __name__ == "__main__":
    main()
