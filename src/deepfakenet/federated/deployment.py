"""Flower's Deployment Engine on one machine: a SuperLink and one SuperNode per site, on loopback.

The processes and commands are the ones a real federation runs (``flower-superlink``,
``flower-supernode``, ``flwr run``), only every address is ``127.0.0.1``; across sites the
SuperNodes point ``--superlink`` at the server and use TLS and node authentication instead of
``--insecure`` (README "Federated"). Nothing here imports Flower: the commands come from the
federated environment's ``bin/`` (``make federated-setup``), which keeps Flower's pinned
web stack out of the service's environment.

Every process is started offline and quiet (:data:`QUIET_ENV`): no telemetry, no update check,
no runtime dependency installation, and any HTTP(S) proxy variable pointing at nothing but
``no_proxy`` for loopback.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

#: Set in every process that runs Flower: its telemetry and update check call out by default.
QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "no_proxy": "127.0.0.1,localhost",
    "NO_PROXY": "127.0.0.1,localhost",
}
#: The connection name written to ``$FLWR_HOME/config.toml`` for ``flwr run``.
CONNECTION = "local"


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def toml_file(path: Path, values: Mapping[str, Any]) -> Path:
    """Write flat ``key = value`` TOML (what ``--node-config``/``--run-config`` accept as a file).

    JSON's string escapes are TOML's basic-string escapes, so ``json.dumps`` quotes safely.
    """
    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = repr(value)
        else:
            text = json.dumps(str(value))
        lines.append(f'"{key}" = {text}')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


#: Variables a site's processes never inherit from the job: the server's registry and settings.
SERVER_ONLY_PREFIXES = ("MLFLOW_", "DEEPFAKENET_")


def flower_env(bin_dir: Path, home: Path, server: bool = True) -> dict[str, str]:
    """The environment of every Flower process: quiet, offline, its own ``FLWR_HOME``.

    Args:
        bin_dir: The federated environment's ``bin/``.
        home: ``FLWR_HOME``.
        server: False for a SuperNode: the job's MLflow and DeepFakeNet variables (a registry
            URI with a password, say) stay on the server's side.
    """
    env = dict(os.environ)
    if not server:
        env = {k: v for k, v in env.items() if not k.startswith(SERVER_ONLY_PREFIXES)}
    env.update(QUIET_ENV)
    env["FLWR_HOME"] = str(home)
    # SuperLink and SuperNodes start their app processes (flwr-serverapp, flwr-clientapp) by name.
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


@dataclass
class RunOutcome:
    """How a ``flwr run`` ended: its id, Flower's status line and the run's log."""

    run_id: str
    status: str
    sub_status: str
    log: str
    seconds: float

    @property
    def succeeded(self) -> bool:
        """Whether Flower reports the run finished without error."""
        return self.status == "finished" and self.sub_status == "completed"


@dataclass
class LocalFederation:
    """A SuperLink and SuperNodes on loopback; a context manager that stops them all.

    Args:
        bin_dir: The federated environment's ``bin/`` (``flower-superlink``, ``flwr``, ...).
        home: Flower's home (``FLWR_HOME``: connections, SuperLink database) and the logs.
        node_configs: One ``--node-config`` mapping per SuperNode (a site's own settings).
        server_env: Extra variables of the SuperLink, and so of the ServerApp it starts (the
            server's settings file).
        start_timeout: Seconds to wait for each process to listen.
    """

    bin_dir: Path
    home: Path
    node_configs: Sequence[Mapping[str, Any]]
    server_env: Mapping[str, str] = field(default_factory=dict)
    start_timeout: float = 60.0
    link_port: int = 0
    node_ports: list[int] = field(default_factory=list)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def __enter__(self) -> LocalFederation:
        try:
            self.start()
        except BaseException:
            self.stop()  # what did start is not left behind
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def env(self) -> dict[str, str]:
        """The environment of the ``flwr`` commands (the user's side: no server settings)."""
        return flower_env(self.bin_dir, self.home, server=False)

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str]) -> subprocess.Popen:
        handle = (self.home / "logs" / f"{name}.log").open("wb")
        self._logs.append(handle)
        process = subprocess.Popen(
            args, env=dict(env), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes[name] = process
        return process

    def start(self) -> None:
        """Start the SuperLink, then one SuperNode per node config; wait until all listen."""
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        self.link_port = free_port()
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{self.link_port}"\ninsecure = true\n'
        )
        self._spawn(
            "superlink",
            [
                str(self.bin_dir / "flower-superlink"),
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.link_port),
                "--database",
                str(self.home / "superlink.db"),
                "--isolation",
                "subprocess",
                "--disable-runtime-dependency-installation",
            ],
            {**flower_env(self.bin_dir, self.home), **self.server_env},
        )
        self._wait_listening("superlink", self.link_port)
        for k, node_config in enumerate(self.node_configs):
            port = free_port()
            self.node_ports.append(port)
            config_file = toml_file(self.home / f"node-{k}.toml", node_config)
            self._spawn(
                f"supernode-{k}",
                [
                    str(self.bin_dir / "flower-supernode"),
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{self.link_port}",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--isolation",
                    "subprocess",
                    "--node-config",
                    str(config_file),
                ],
                self.env,
            )
            self._wait_listening(f"supernode-{k}", port)
        log.info(
            "Flower on loopback: SuperLink :%d, %d SuperNodes %s",
            self.link_port,
            len(self.node_ports),
            self.node_ports,
        )

    def _wait_listening(self, name: str, port: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited at start:\n{self.tail(name)}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{name} did not listen on :{port} in {self.start_timeout:.0f} s")

    def tail(self, name: str, chars: int = 4000) -> str:
        """The end of a process's log."""
        path = self.home / "logs" / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a ``flwr`` command against this federation's SuperLink (text output)."""
        return subprocess.run(
            [str(self.bin_dir / "flwr"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def submit(self, app_dir: Path, run_config: Mapping[str, Any]) -> str:
        """``flwr run`` the app with ``run_config``; return the run id (the run goes on)."""
        config_file = toml_file(self.home / "run-config.toml", run_config)
        out = self.flwr(
            "run", str(app_dir), CONNECTION, "--run-config", str(config_file), "--format", "json"
        )
        reply = _json(out.stdout)
        if out.returncode != 0 or "run-id" not in reply:
            raise RuntimeError(f"flwr run failed ({out.returncode}): {out.stdout}{out.stderr}")
        return str(reply["run-id"])

    def wait(self, run_id: str, timeout: float) -> RunOutcome:
        """Stream the run's log until it ends (or ``timeout``, then stop it); how it ended.

        ``flwr log`` exits 0 whatever the run did: the outcome is Flower's status of the run.
        """
        started = time.monotonic()
        try:
            streamed = self.flwr("log", run_id, CONNECTION, "--stream", timeout=timeout).stdout
        except subprocess.TimeoutExpired as err:
            streamed = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else ""
            log.error("run %s still going after %.0f s: stopping it", run_id, timeout)
            self.flwr("stop", run_id, CONNECTION, timeout=60)
        status, sub_status = self.status(run_id)
        return RunOutcome(run_id, status, sub_status, streamed, time.monotonic() - started)

    def status(self, run_id: str) -> tuple[str, str]:
        """Flower's ``(status, sub-status)`` of a run, e.g. ``("finished", "completed")``."""
        out = self.flwr("ls", CONNECTION, "--run-id", run_id, "--format", "json", timeout=60)
        runs = _json(out.stdout).get("runs") or [{}]
        status = str(runs[0].get("status", "unknown"))
        main, _, sub = status.partition(":")
        return main.strip().lower(), sub.strip().lower() or out.stderr.strip()

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM every process and what it started (nodes first); SIGKILL what is left.

        Flower starts its app processes (the ServerApp among them) in sessions of their own,
        so signalling the process groups is not enough: every descendant is found first.
        """
        import psutil

        family: list[psutil.Process] = []
        for process in self.processes.values():
            try:
                parent = psutil.Process(process.pid)
                family += [parent, *parent.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        try:
            for member in reversed(family):
                try:
                    member.terminate()
                except psutil.NoSuchProcess:
                    continue
            _, alive = psutil.wait_procs(family, timeout=grace)
            for member in alive:
                log.warning("%s ignored SIGTERM for %.0f s: killing it", member.pid, grace)
                try:
                    member.kill()
                except psutil.NoSuchProcess:
                    continue
            psutil.wait_procs(alive, timeout=10)
            for process in self.processes.values():
                if process.poll() is None:
                    process.wait(timeout=10)
        finally:
            for handle in self._logs:
                handle.close()
            self._logs.clear()


def _json(text: str) -> dict[str, Any]:
    """The JSON object a ``flwr ... --format json`` printed (from its first ``{`` on).

    Flower may print warnings before it; anything unreadable is an empty answer.
    """
    start = text.find("{")
    try:
        value = json.loads(text[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
