"""The ServerApp: FedAvg rounds under SecAgg+, then one registered (never aliased) version.

It starts from the champion's head, runs ``num-rounds`` of FedAvg through Flower's
``DefaultWorkflow`` with ``SecAggPlusWorkflow`` (the only SecAgg+ Flower has: the legacy API with a
``LegacyContext``), then calibrates the champion + federated head on its own validation vectors
and registers it (:mod:`deepfakenet.federated.model`). Registration is the very last step and
happens only after every round finished: a run that fails or is stopped before registers
nothing. Its own settings (registry, validation vectors, out dir) come from the file named by
``$DEEPFAKENET_FEDERATED_SERVER`` in the SuperLink's environment, never from the run config,
which Flower hands to every site. ``result.json`` reports the run; with ``record_received``
every reply the server received is kept in ``received/`` (what left the sites, for an audit).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.common import FitRes, Parameters, Scalar, bytes_to_ndarray, ndarrays_to_parameters
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg, Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

from deepfakenet import registry
from deepfakenet.federated.head import get_arrays, make_head, save_head, set_arrays
from deepfakenet.federated.model import (
    ServerSettings,
    calibrated,
    head_metrics,
    register_federated,
)
from deepfakenet.federated.sites import load_split

log = logging.getLogger("deepfakenet.federated.server")

app = ServerApp()


class CountingFedAvg(FedAvg):
    """FedAvg that refuses a round it should not average, and counts the rounds it did.

    Refused (the run fails, nothing is registered): a round with no answer at all (every
    site failed, or refused a plain update), and a round with fewer than ``min_contributing``
    sites that had rows: SecAgg+ hides a site among the others, and a "sum" of one site's
    update is that update.
    """

    def __init__(self, min_contributing: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_contributing = min_contributing
        self.rounds: list[dict[str, Any]] = []

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[Any],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """FedAvg's average, once the round is known to be one worth averaging."""
        contributing = sum(1 for _, res in results if res.num_examples > 0)
        if contributing < self.min_contributing:
            raise RuntimeError(
                f"round {server_round}: {contributing} site(s) with labelled rows answered "
                f"({len(results)} answers, {len(failures)} failures); at least "
                f"{self.min_contributing} are needed"
            )
        parameters, metrics = super().aggregate_fit(server_round, results, failures)
        if parameters is None:
            raise RuntimeError(f"round {server_round}: FedAvg returned no parameters")
        self.rounds.append(
            {
                "round": server_round,
                "answers": len(results),
                "contributing": contributing,
                "failures": len(failures),
            }
        )
        return parameters, metrics


def _array(blob: bytes) -> np.ndarray:
    """``blob`` as the array it serialises, else as raw bytes."""
    try:
        return bytes_to_ndarray(blob)
    except (ValueError, OSError, EOFError):
        return np.frombuffer(blob, np.uint8)


def _recording(grid: Grid, folder: Path) -> Grid:
    """Keep every reply the server receives in ``folder`` (one ``.npz`` per reply with arrays)."""
    folder.mkdir(parents=True, exist_ok=True)
    receive = grid.send_and_receive
    count = {"calls": 0}

    def send_and_receive(messages: Any, *, timeout: float | None = None) -> Any:
        replies = list(receive(messages, timeout=timeout))
        count["calls"] += 1
        for i, reply in enumerate(replies):
            if reply.has_error():
                continue
            arrays = {
                f"{record}.{key}": value.numpy()
                for record, items in reply.content.array_records.items()
                for key, value in items.items()
            }
            for record, items in reply.content.config_records.items():
                for key, value in items.items():
                    if isinstance(value, list) and value and isinstance(value[0], bytes):
                        # SecAgg+ sends its masked vectors (and key shares, ciphertexts) as
                        # bytes in config records: serialised arrays where they parse as one.
                        arrays.update(
                            {f"{record}.{key}.{j}": _array(b) for j, b in enumerate(value)}
                        )
            name = f"call{count['calls']:03d}-reply{i}-node{reply.metadata.src_node_id}.npz"
            np.savez(folder / name, **arrays)
        return replies

    grid.send_and_receive = send_and_receive  # type: ignore[method-assign]
    return grid


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the rounds, calibrate, register; write ``result.json`` in the server's out dir."""
    logging.basicConfig(level=logging.INFO)
    started = time.monotonic()
    settings = ServerSettings.from_env()  # first: a bad path fails before any round
    cfg = context.run_config
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    registry.use(
        registry.RegistryConfig(
            tracking_uri=settings.tracking_uri,
            artifact_location=settings.artifact_location,
            experiment_name=settings.experiment_name,
            model_name=settings.model_name,
        )
    )
    registry.fail_fast_http_calls()
    champion, base = registry.load_net(settings.model_name, str(cfg["model-version"]))
    kind = str(cfg["head"])
    head = make_head(kind, champion.backbone.fc, int(cfg["adapter-hidden"]))
    sites = int(cfg["min-sites"])
    fedavg = CountingFedAvg(
        min_contributing=int(cfg["min-contributing"]),
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=sites,
        min_evaluate_clients=0,
        min_available_clients=sites,
        initial_parameters=ndarrays_to_parameters(get_arrays(head)),
        on_fit_config_fn=lambda server_round: {"server_round": server_round},
    )
    strategy: Strategy = fedavg
    if bool(cfg["dp"]):
        strategy = DifferentialPrivacyClientSideFixedClipping(
            fedavg,
            noise_multiplier=float(cfg["noise-multiplier"]),
            clipping_norm=float(cfg["clipping-norm"]),
            num_sampled_clients=sites,
        )
    timeout = float(cfg["round-timeout"]) or None
    fit_workflow = (
        SecAggPlusWorkflow(
            num_shares=int(cfg["num-shares"]),
            reconstruction_threshold=int(cfg["reconstruction-threshold"]),
            max_weight=float(cfg["max-weight"]),
            clipping_range=float(cfg["clipping-range"]),
            timeout=timeout,
        )
        if bool(cfg["secagg"])
        else None
    )
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=int(cfg["num-rounds"]), round_timeout=timeout),
        strategy=strategy,
    )
    if settings.record_received:
        grid = _recording(grid, out / "received")
    log.info(
        "federated %s head on %s v%s: %d rounds over %d sites, SecAgg+ %s, DP %s",
        kind,
        settings.model_name,
        base.version,
        int(cfg["num-rounds"]),
        sites,
        "on" if fit_workflow else "off",
        "on" if cfg["dp"] else "off",
    )
    DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy)
    if len(fedavg.rounds) < int(cfg["num-rounds"]):
        raise RuntimeError(
            f"only {len(fedavg.rounds)} of {cfg['num-rounds']} rounds were aggregated "
            f"({fedavg.rounds}); nothing is registered"
        )
    set_arrays(head, legacy.state.array_records[MAIN_PARAMS_RECORD].to_numpy_ndarrays())
    val = load_split(settings.server_val)
    net, calibration = calibrated(champion, head, val, settings.calibration_config)
    val_metrics = head_metrics(head, val[0], val[1], net)
    save_head(head, out / "head.npz")
    tags = {
        "base_version": str(base.version),
        "head": kind,
        "rounds": str(cfg["num-rounds"]),
        "secagg": str(bool(cfg["secagg"])).lower(),
        "dp": str(bool(cfg["dp"])).lower(),
        "flwr_run_id": str(context.run_id),
    }
    if cfg["dp"]:
        tags["dp.noise_multiplier"] = str(cfg["noise-multiplier"])
        tags["dp.clipping_norm"] = str(cfg["clipping-norm"])
    metrics = {**calibration, **{f"val/{k}": v for k, v in val_metrics.items()}}
    params = {k: str(v) for k, v in cfg.items()}  # the run config holds no secret (see above)
    registered = register_federated(net, settings, base, params, metrics, tags)
    result = {
        "model_version": str(registered.version),
        "base_version": str(base.version),
        "head": kind,
        "rounds": fedavg.rounds,
        "val": val_metrics,
        "seconds": round(time.monotonic() - started, 1),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    log.info("federated version %s registered (not aliased): %s", registered.version, result)
