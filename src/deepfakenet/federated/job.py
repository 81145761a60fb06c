"""The federated job (``make federated-demo``): sites, a Flower run on loopback, a comparison.

1. **Sites**: ``sites_dir`` if given, else :func:`~deepfakenet.federated.demo.prepare_demo` on
   the data tree with the champion (three non-IID sites, the server's val/test vectors).
2. **Rounds**: a SuperLink and one SuperNode per site (:class:`LocalFederation`), the app in
   ``federated/`` run with ``cfg.run``; the ServerApp registers the result, unaliased.
3. **Comparison** on the pooled test split: the champion's own head, the federated head, a head
   trained centrally on the union of the sites' rows, and each site's locally trained head
   (and, with ``compare_dp``, the federated head under differential privacy).

Only the demo holds every site's rows (to train the baselines); a real federation cannot.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from deepfakenet import registry
from deepfakenet.calibration import CalibrationConfig
from deepfakenet.errors import ConfigError
from deepfakenet.federated.deployment import LocalFederation, RunOutcome
from deepfakenet.federated.head import HeadTraining, load_arrays, make_head, set_arrays
from deepfakenet.federated.model import (
    SERVER_SETTINGS_ENV,
    ServerSettings,
    baseline_heads,
    calibrated,
    head_metrics,
)
from deepfakenet.federated.sites import (
    POOLED_TEST,
    SERVER_VAL,
    SITES_FILE,
    Site,
    labelled_rows,
    load_split,
)

log = logging.getLogger(__name__)

#: Columns of the comparison table.
METRICS = ("auroc", "ap", "acc", "ece")


def run_config(cfg: DictConfig, sites: int, version: str, **extra: Any) -> dict[str, Any]:
    """The Flower app's run config: ``cfg.run`` and what follows from the sites.

    Flower sends the run config to every site, so nothing of the server's goes in it (see
    :class:`~deepfakenet.federated.model.ServerSettings`). Every site must answer
    (``min-sites``), SecAgg+ deals one share per site and needs all but one of them back
    (at least 2), so one site may drop out mid-round.
    """
    config = dict(OmegaConf.to_container(cfg.run, resolve=True))  # type: ignore[arg-type]
    config.update(
        {
            "model-version": version,
            "min-sites": sites,
            "num-shares": sites,
            "reconstruction-threshold": max(2, sites - 1),
        }
    )
    config.update(extra)
    return config


def calibration_fields(cfg: DictConfig) -> dict[str, Any]:
    """``cfg.calibration`` as :class:`CalibrationConfig` fields (empty: its defaults)."""
    fields = OmegaConf.to_container(cfg.get("calibration") or {}, resolve=True)
    return {k: v for k, v in dict(fields).items() if k != "_target_"}  # type: ignore[arg-type]


def federate(
    cfg: DictConfig, sites: list[Site], sites_dir: Path, out: Path, version: str, **extra: Any
) -> tuple[RunOutcome, dict[str, Any] | None]:
    """One Flower run over ``sites`` on loopback; the outcome and the server's result.json."""
    bin_dir = Path(cfg.flower.bin_dir or Path(sys.executable).parent)
    if not (bin_dir / "flower-superlink").exists():
        raise ConfigError(
            f"no flower-superlink in {bin_dir}: run `make federated-setup` and start this job "
            "with .venv-federated/bin/python (make federated-demo does)"
        )
    node_configs = [
        {
            "site-name": site.name,
            "store-url": site.store_url,
            "features-dir": site.features_dir,
            "audit-dir": str(out / "site-audit" / site.name),
        }
        for site in sites
    ]
    settings = ServerSettings(
        tracking_uri=str(cfg.registry.tracking_uri),
        model_name=str(cfg.registry.model_name),
        experiment_name=str(cfg.registry.experiment_name),
        artifact_location=cfg.registry.get("artifact_location"),
        server_val=str(sites_dir / SERVER_VAL),
        out_dir=str(out),
        record_received=bool(cfg.flower.record_received),
        calibration=calibration_fields(cfg),
    )
    server_env = {SERVER_SETTINGS_ENV: str(settings.write(out / "server.json"))}
    with LocalFederation(bin_dir, out / "flower", node_configs, server_env) as federation:
        run_id = federation.submit(
            Path(cfg.flower.app_dir), run_config(cfg, len(sites), version, **extra)
        )
        log.info("flwr run %s submitted; waiting for its rounds", run_id)
        outcome = federation.wait(run_id, float(cfg.flower.run_timeout_s))
    (out / "run.log").write_text(outcome.log)
    result_file = out / "result.json"
    result = json.loads(result_file.read_text()) if result_file.exists() else None
    log.info("run %s: %s/%s in %.0f s", run_id, outcome.status, outcome.sub_status, outcome.seconds)
    return outcome, result


def _sites(cfg: DictConfig, out: Path, net: Any, version: str) -> tuple[Path, list[Site]]:
    if cfg.sites_dir:
        folder = Path(cfg.sites_dir)
        listed = json.loads((folder / SITES_FILE).read_text())
        if str(listed["model_version"]) != version:
            raise ConfigError(
                f"{folder} holds vectors of v{listed['model_version']}, not of v{version}"
            )
        return folder, [Site(**s) for s in listed["sites"]]
    from deepfakenet.data.datamodule import image_sources  # heavy: Lightning
    from deepfakenet.data.split import scan_image_tree
    from deepfakenet.federated.demo import prepare_demo

    data = cfg.data
    index = scan_image_tree(data.data_dir, data.val_fraction, data.test_fraction)
    index["source"] = image_sources(index)
    folder = out / "sites"
    return folder, prepare_demo(net, version, index, folder, int(cfg.n_sites), data.batch_size)


def compare(
    cfg: DictConfig,
    champion: Any,
    sites: list[Site],
    sites_dir: Path,
    version: str,
    heads: dict[str, Any],
) -> pd.DataFrame:
    """Metrics of every head on the pooled test split (each calibrated on the server's val).

    ``heads`` are the federated ones; the champion's own head, the central head (the union of
    the sites' rows) and each site's local head are trained here, from the same start and for
    as many epochs as a site trains over all rounds.
    """
    test = load_split(sites_dir / POOLED_TEST)
    val = load_split(sites_dir / SERVER_VAL)
    rows = [labelled_rows(site, version) for site in sites]
    total = sum(len(y) for _, y in rows)
    run = run_config(cfg, len(sites), version)
    training = HeadTraining.from_run_config(run)
    fc = champion.backbone.fc
    candidates = {"champion": (make_head("linear", fc), 0)}
    candidates.update({name: (head, total) for name, head in heads.items()})
    baselines = baseline_heads(
        fc, str(run["head"]), rows, training, int(run["num-rounds"]), int(run["adapter-hidden"])
    )
    for name, head in baselines.items():
        n = total if name == "central" else len(rows[int(name.removeprefix("site-"))][1])
        candidates[name] = (head, n)
    table = []
    calibration = CalibrationConfig(**calibration_fields(cfg))
    for name, (head, n) in candidates.items():
        net, _ = calibrated(champion, head, val, calibration)
        metrics = head_metrics(head, test[0], test[1], net)
        table.append({"head": name, "rows": n, **{m: metrics.get(m) for m in METRICS}})
    return pd.DataFrame(table)


def run_federated(cfg: DictConfig) -> dict[str, Any]:
    """The whole job; returns the report written to ``out_dir/report.json``."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    registry.use(registry.registry_config(cfg))
    champion, champion_version = registry.load_net(cfg.registry.model_name, cfg.model_ref)
    version = str(champion_version.version)
    sites_dir, sites = _sites(cfg, out, champion, version)
    outcome, result = federate(cfg, sites, sites_dir, out / "secagg", version)
    if result is None:  # the ServerApp writes result.json right after registering
        raise RuntimeError(
            f"the federated run {outcome.run_id} ended {outcome.status}/{outcome.sub_status} "
            f"and registered nothing; its log: {out / 'secagg' / 'run.log'}"
        )
    if not outcome.succeeded:
        log.warning(
            "the run registered v%s but then ended %s/%s",
            result["model_version"],
            outcome.status,
            outcome.sub_status,
        )
    heads: dict[str, Any] = {}
    report: dict[str, Any] = {
        "base_version": version,
        "federated_version": result["model_version"],
        "seconds": {"secagg": round(outcome.seconds, 1)},
    }
    heads["federated"] = _head_from(cfg, out / "secagg", champion)
    if cfg.compare_dp:
        dp_outcome, dp_result = federate(cfg, sites, sites_dir, out / "dp", version, dp=True)
        if dp_outcome.succeeded and dp_result is not None:
            heads["federated+dp"] = _head_from(cfg, out / "dp", champion)
            report["federated_dp_version"] = dp_result["model_version"]
            report["seconds"]["dp"] = round(dp_outcome.seconds, 1)
        else:
            log.error("the DP run ended %s/%s", dp_outcome.status, dp_outcome.sub_status)
    table = compare(cfg, champion, sites, sites_dir, version, heads)
    report["comparison"] = table.to_dict(orient="records")
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    from deepfakenet.evaluation import to_markdown

    (out / "comparison.md").write_text(to_markdown(table) + "\n")
    log.info(
        "federated v%s registered%s (not aliased; promote through the gate: "
        "python training/retrain.py challenger=%s). Pooled test split:\n%s",
        result["model_version"],
        f", with DP v{report['federated_dp_version']}" if "federated_dp_version" in report else "",
        result["model_version"],
        to_markdown(table),
    )
    return report


def _head_from(cfg: DictConfig, run_out: Path, champion: Any) -> Any:
    """The head the server aggregated (its ``head.npz``) as a module."""
    head = make_head(str(cfg.run.head), champion.backbone.fc, int(cfg.run["adapter-hidden"]))
    set_arrays(head, load_arrays(run_out / "head.npz"))
    return head
