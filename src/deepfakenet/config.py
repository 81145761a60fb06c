"""Schemas of the jobs' configs, so that a typo is an error instead of a silent default.

Hydra composes ``conf/retrain.yaml`` and ``conf/rollback.yaml`` as untyped dictionaries: a key
spelt ``promotion.max_dorp`` in the YAML file was simply never read, and the job ran with
``max_drop``'s default. The dataclasses below are OmegaConf *structured configs* (the
type-safe schemas Hydra's documentation describes); :func:`validate` merges the composed config
into its schema at the job's boundary, so an unknown key, a value of the wrong type or out of
range raises :class:`~deepfakenet.errors.ConfigError` (exit code 2, one line; see
:mod:`deepfakenet.cli`) before the job touches anything.

Why at the boundary and not as a schema in Hydra's ConfigStore, referenced from the YAML
defaults list: Hydra reports a composition error itself (exit 1, the code the jobs reserve for
bugs), and every program that composes ``conf/`` (the service's import step, benchmarks, tests)
would have to import the registration first or fail to compose. Validating the composed config
gives the same checks, a documented exit code, and leaves composition unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TypeVar

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from deepfakenet.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Test-split metrics a promotion rule may compare (higher is better for each).
PROMOTION_METRICS = ("auroc", "ap", "acc", "f1")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass
class PathsSchema:
    """``conf/paths``: every directory a job touches."""

    root_dir: str = MISSING
    data_dir: str = MISSING
    dvc_file: str = MISSING
    log_dir: str = MISSING
    reports_dir: str = MISSING
    output_dir: str = MISSING
    sources_dir: str = MISSING


@dataclass
class RegistrySchema:
    """``conf/registry``: MLflow tracking and registry (see ``registry.RegistryConfig``)."""

    tracking_uri: str = MISSING
    artifact_location: str | None = None
    experiment_name: str = "deepfakenet"
    model_name: str = "deepfakenet"


@dataclass
class StoreSchema:
    """``conf/store``: the service's records, as the retraining job reads them."""

    home: str = MISSING
    url: str = MISSING
    image_dir: str = MISSING
    feature_dir: str = MISSING
    image_retention_days: float = 30.0

    def __post_init__(self) -> None:
        _check(
            self.image_retention_days >= 0,
            f"store.image_retention_days must be >= 0, got {self.image_retention_days}",
        )


@dataclass
class NotifySchema:
    """Which running service to tell about a new champion (None: nobody)."""

    service_url: str | None = None
    admin_token: str | None = None


@dataclass
class CollectSchema:
    """How feedback becomes labels (``retrain.collect``)."""

    min_new_labels: int = 20
    min_votes: int = 1
    tie: str = "skip"

    def __post_init__(self) -> None:
        _check(self.min_new_labels >= 1, "collect.min_new_labels must be >= 1")
        _check(self.min_votes >= 1, "collect.min_votes must be >= 1")
        _check(
            self.tie in ("skip", "latest"),
            f"collect.tie must be 'skip' or 'latest', got {self.tie!r}",
        )


@dataclass
class RetrainDataSchema:
    """Where feedback images land in the data tree and how the tree is versioned."""

    feedback_folder: str = "feedback"
    dvc_push: bool = True
    git_commit: bool = True

    def __post_init__(self) -> None:
        name = self.feedback_folder
        _check(
            bool(name) and "/" not in name and name not in (".", ".."),
            f"data.feedback_folder must be one folder name, got {name!r}",
        )


@dataclass
class FeedbackRuleSchema:
    """The paired test on held-out feedback items (``promotion.feedback``)."""

    min_items: int = 10
    alpha: float = 0.05

    def __post_init__(self) -> None:
        _check(self.min_items >= 1, "promotion.feedback.min_items must be >= 1")
        _check(0 < self.alpha < 1, f"promotion.feedback.alpha must be in (0, 1), got {self.alpha}")


@dataclass
class PromotionSchema:
    """The promotion rule (``retrain.promotion``; see :func:`deepfakenet.retrain.decide`)."""

    metric: str = "auroc"
    max_drop: float = 0.01
    min_gain: float = 0.0
    require_improvement: bool = True
    feedback: FeedbackRuleSchema = field(default_factory=FeedbackRuleSchema)

    def __post_init__(self) -> None:
        _check(
            self.metric in PROMOTION_METRICS,
            f"promotion.metric must be one of {list(PROMOTION_METRICS)}, got {self.metric!r}",
        )
        _check(
            0 <= self.max_drop <= 1, f"promotion.max_drop must be in [0, 1], got {self.max_drop}"
        )
        _check(
            0 <= self.min_gain <= 1, f"promotion.min_gain must be in [0, 1], got {self.min_gain}"
        )


@dataclass
class RetrainSchema:
    """``conf/retrain.yaml`` as composed (groups included)."""

    task_name: str = "retrain"
    train_overrides: list[str] = field(default_factory=list)
    init_from_champion: bool = True
    challenger: str | None = None
    collect: CollectSchema = field(default_factory=CollectSchema)
    data: RetrainDataSchema = field(default_factory=RetrainDataSchema)
    promotion: PromotionSchema = field(default_factory=PromotionSchema)
    notify: NotifySchema = field(default_factory=NotifySchema)
    lock_file: str = MISSING
    report_dir: str = MISSING
    paths: PathsSchema = field(default_factory=PathsSchema)
    registry: RegistrySchema = field(default_factory=RegistrySchema)
    store: StoreSchema = field(default_factory=StoreSchema)


@dataclass
class RollbackSchema:
    """``conf/rollback.yaml`` as composed (groups included)."""

    task_name: str = "rollback"
    lock_file: str = MISSING
    notify: NotifySchema = field(default_factory=NotifySchema)
    paths: PathsSchema = field(default_factory=PathsSchema)
    registry: RegistrySchema = field(default_factory=RegistrySchema)


def _known_keys(schema: type, dotted: str) -> list[str]:
    """The keys the schema allows at ``dotted`` (for the "unknown key" message)."""
    root = OmegaConf.structured(schema)
    node = OmegaConf.select(root, dotted) if dotted else root
    return [str(key) for key in node] if isinstance(node, DictConfig) else []


def validate(cfg: DictConfig, schema: type[T], source: str) -> T:
    """Check ``cfg`` against ``schema``; return it as the schema's dataclass, values resolved.

    Interpolations (``${oc.env:...}``) are resolved, so a bad environment value is caught here
    too. The caller keeps using ``cfg`` where it hands nodes on (e.g. to the training config).

    Args:
        cfg: A composed config (without Hydra's own node).
        schema: The dataclass describing it.
        source: Where a user fixes a mistake (e.g. ``conf/retrain.yaml``), for the message.

    Raises:
        ConfigError: An unknown key, a wrong type, a missing or out-of-range value.
    """
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except ConfigKeyError as err:
        key = str(err.full_key or err.key or "")
        parent = key.rpartition(".")[0]
        known = ", ".join(_known_keys(schema, parent))
        where = f"'{parent}'" if parent else "the top level"
        raise ConfigError(
            f"invalid config ({source} or the command line): unknown key '{key}' "
            f"(keys of {where}: {known})"
        ) from err
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or ""
        message = str(getattr(err, "msg", None) or err).splitlines()[0]
        raise ConfigError(
            f"invalid config ({source} or the command line): {key + ': ' if key else ''}{message}"
        ) from err
    except ValueError as err:  # a range check of a schema's __post_init__
        raise ConfigError(f"invalid config ({source} or the command line): {err}") from err
