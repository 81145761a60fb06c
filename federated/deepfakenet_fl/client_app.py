"""The ClientApp: runs at a site, next to its service's records, and trains the head there.

Each round it reads the site's labelled vectors of the champion's version
(:func:`deepfakenet.federated.sites.labelled_rows`), trains the head from the global one it
received, and answers with the new head and its row count. ``secaggplus_mod`` masks that answer
before it leaves: the server can only ever unmask the sum over the sites. With ``dp=true``,
``fixedclipping_mod`` clips the update first (it must run inside the SecAgg+ mod, on the plain
update).

The site's settings come from its SuperNode's ``--node-config`` (its own paths, never sent to
the server): ``site-name``, ``store-url``, ``features-dir`` and, optionally, ``audit-dir``, where
the site keeps a copy of each plain update it sent (its own record; tests compare the server's
aggregate with it).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from flwr.app import Context, Message
from flwr.client import Client, ClientApp, NumPyClient
from flwr.client.mod import fixedclipping_mod, secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.typing import NDArrays, Scalar

from deepfakenet.federated.head import HeadTraining, get_arrays, make_head, set_arrays, train_head
from deepfakenet.federated.sites import Site, labelled_rows

log = logging.getLogger("deepfakenet.federated.client")


class SiteClient(NumPyClient):
    """One site: its records (from the node config) and the run's training settings."""

    def __init__(self, context: Context) -> None:
        node, run = context.node_config, context.run_config
        self.site = Site(str(node["site-name"]), str(node["store-url"]), str(node["features-dir"]))
        self.audit_dir = str(node.get("audit-dir", ""))
        self.run = run
        self.version = str(run["model-version"])
        self.kind = str(run["head"])
        self.hidden = int(run["adapter-hidden"])
        self.max_weight = int(float(run["max-weight"]))
        # Under DP every site weighs 1, a skipped one too (with a zero update): the noise is
        # sized for the plain mean of the sites' clipped updates.
        self.equal_weights = bool(run["dp"])

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict]:
        """Train the head on this site's rows; a site without rows sends the head back as is."""
        server_round = int(config.get("server_round", 0))
        features, labels = labelled_rows(self.site, self.version)
        if len(labels) == 0:
            log.warning(
                "%s has no labelled rows for model version %s: skipped in round %d (it answers "
                "with the global head unchanged, %s)",
                self.site.name,
                self.version,
                server_round,
                "weight 1 under DP" if self.equal_weights else "weight 0",
            )
            return parameters, int(self.equal_weights), {}
        # Shape only: the weights come from the global head just received.
        from torch import nn

        head = make_head(self.kind, nn.Linear(features.shape[1], 2), self.hidden)
        set_arrays(head, parameters)
        training = HeadTraining.from_run_config(self.run, seed=server_round)
        loss = train_head(head, features, labels, training)
        arrays = get_arrays(head)
        weight = 1 if self.equal_weights else min(len(labels), self.max_weight)
        log.info(
            "%s round %d: trained on %d rows (weight %d), loss %.4f",
            self.site.name,
            server_round,
            len(labels),
            weight,
            loss,
        )
        if self.audit_dir:
            out = Path(self.audit_dir)
            out.mkdir(parents=True, exist_ok=True)
            np.savez(out / f"round{server_round}.npz", *arrays, weight=weight)
        # No metrics: SecAgg+ masks the arrays only, whatever goes in metrics leaves in clear.
        return arrays, weight, {}


def client_fn(context: Context) -> Client:
    """Flower's factory: a fresh client per message (each runs in its own process)."""
    logging.basicConfig(level=logging.INFO)
    return SiteClient(context).to_client()


def _clip_if_dp(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """``fixedclipping_mod`` when the run asks for differential privacy, else pass through.

    Flower's mod divides by the update's norm, so a skipped site (it sends the global head
    back unchanged, a zero update) raises ZeroDivisionError there; its answer then goes out
    as it is: there is nothing to clip.
    """
    if not bool(context.run_config.get("dp", False)):
        return call_next(msg, context)
    answers = []

    def remember(message: Message, ctxt: Context) -> Message:
        answers.append(call_next(message, ctxt))
        return answers[-1]

    try:
        return fixedclipping_mod(msg, context, remember)
    except ZeroDivisionError:
        if not answers:
            raise
        return answers[-1]


def _secagg_if_on(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """``secaggplus_mod``; plain updates only where the site itself allows them.

    The server chooses the run's settings, so a site does not take its word for it: unless
    the SuperNode's node config says ``allow-plain-updates=true``, a run without SecAgg+ gets
    an error from this site, not its update.
    """
    if bool(context.run_config.get("secagg", True)):
        return secaggplus_mod(msg, context, call_next)
    if not bool(context.node_config.get("allow-plain-updates", False)):
        raise PermissionError(
            "this site sends masked (SecAgg+) updates only; the run has secagg=false and the "
            "node config does not set allow-plain-updates=true"
        )
    return call_next(msg, context)


# mods[0] is the outermost: SecAgg+ masks what the (optional) clipping mod let through.
app = ClientApp(client_fn=client_fn, mods=[_secagg_if_on, _clip_if_dp])
