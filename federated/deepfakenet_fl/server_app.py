"""The ServerApp: FedAvg rounds under SecAgg+, then one registered (never aliased) version.

It starts from the champion's head, runs ``num-rounds`` of FedAvg through Flower's
``DefaultWorkflow`` with ``SecAggPlusWorkflow`` (the only SecAgg+ Flower has: the legacy API with a
``LegacyContext``), then calibrates the champion + federated head on its own validation vectors
and registers it (:mod:`deepfakenet.federated.model`). Registration is the very last step and
happens only after every round finished: a run that fails or is stopped before registers
nothing. ``out-dir/result.json`` reports the run; with ``record-received=true`` every reply the
server received is kept in ``out-dir/received/`` (what left the sites, for an audit).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from flwr.app import Context
from flwr.common import FitRes, Parameters, Scalar, bytes_to_ndarray, ndarrays_to_parameters
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg, Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

from deepfakenet import registry
from deepfakenet.federated.head import get_arrays, make_head, set_arrays
from deepfakenet.federated.model import calibrated, head_metrics, register_federated
from deepfakenet.federated.sites import load_split

log = logging.getLogger("deepfakenet.federated.server")

app = ServerApp()


class CountingFedAvg(FedAvg):
    """FedAvg that keeps, per round, how many sites' answers were aggregated and their weight."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rounds: list[dict[str, Any]] = []

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[Any],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Refuse a round in which no site had a row (the average of nothing is not a head)."""
        weight = sum(res.num_examples for _, res in results)
        self.rounds.append(
            {"round": server_round, "answers": len(results), "failures": len(failures)}
        )
        if results and weight == 0:
            raise RuntimeError(
                f"round {server_round}: no site had a labelled row for this model version"
            )
        return super().aggregate_fit(server_round, results, failures)


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
    """Run the rounds, calibrate, register; write ``out-dir/result.json``."""
    logging.basicConfig(level=logging.INFO)
    started = time.monotonic()
    cfg = context.run_config
    out = Path(str(cfg["out-dir"]))
    out.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(str(cfg["tracking-uri"]))
    registry.fail_fast_http_calls()
    name, version = str(cfg["model-name"]), str(cfg["model-version"])
    champion, champion_version = registry.load_net(name, version)
    kind = str(cfg["head"])
    head = make_head(kind, champion.backbone.fc, int(cfg["adapter-hidden"]))
    sites = int(cfg["min-sites"])
    fedavg = CountingFedAvg(
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
    if bool(cfg["record-received"]):
        grid = _recording(grid, out / "received")
    log.info(
        "federated %s head on %s v%s: %d rounds over %d sites, SecAgg+ %s, DP %s",
        kind,
        name,
        version,
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
    val = load_split(str(cfg["server-val"]))
    net, calibration = calibrated(champion, head, val)
    val_metrics = head_metrics(head, val[0], val[1], net)
    np.savez(out / "head.npz", *get_arrays(head))
    params = {k: str(v) for k, v in cfg.items()}
    tags = {
        "base_version": str(champion_version.version),
        "head": kind,
        "rounds": str(cfg["num-rounds"]),
        "secagg": str(bool(cfg["secagg"])).lower(),
        "dp": str(bool(cfg["dp"])).lower(),
    }
    if cfg["dp"]:
        tags["dp.noise_multiplier"] = str(cfg["noise-multiplier"])
        tags["dp.clipping_norm"] = str(cfg["clipping-norm"])
    metrics = {**calibration, **{f"val/{k}": v for k, v in val_metrics.items()}}
    registered = register_federated(net, name, str(cfg["experiment-name"]), params, metrics, tags)
    result = {
        "model_version": str(registered.version),
        "base_version": str(champion_version.version),
        "head": kind,
        "rounds": fedavg.rounds,
        "val": val_metrics,
        "seconds": round(time.monotonic() - started, 1),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    log.info("federated version %s registered (not aliased): %s", registered.version, result)
