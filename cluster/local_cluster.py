"""A real multi-node Ray cluster on one machine: `socialalign cluster up --workers 2` / `down`.

Each node is its own `ray start --block` process (head or worker): its own raylet and object store,
its own logical CPUs and a custom resource naming it (`{"node_1": 1}`), as KubeRay's head and worker
pods are. Token authentication is on, as Ray 2.60 does it, with a token file of this cluster; the
dashboard listens on 127.0.0.1. The cluster's state (ports, pids, the token file's path; never the
token) lives in `<dir>/cluster.json`, and `down` stops exactly the processes `up` started, by their
process groups, never by name (`ray stop` would stop every Ray on the machine).
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_FILE = "cluster.json"
# Every port a node binds, given explicitly: Ray's defaults collide when several nodes share a machine.
NODE_PORTS = ("node_manager", "object_manager", "agent", "agent_grpc", "metrics", "runtime_env")
START_TIMEOUT_S = 240.0  # a loaded machine (load 50 on 2 cores) has taken minutes
START_ATTEMPTS = 3


@dataclass
class Node:
    name: str  # "head", "node_1", "node_2", ...
    cpus: float
    pid: int = 0  # the `ray start --block` process; its process group is the node
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def resources(self) -> dict[str, float]:
        return {self.name: 1.0}


@dataclass
class ClusterState:
    directory: str
    gcs_address: str
    dashboard_url: str
    token_path: str
    temp_dir: str  # the head's --temp-dir: short, for Ray's socket paths
    nodes: list[Node]

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    @property
    def environment(self) -> dict[str, str]:
        """What a client needs to reach this cluster (`socialalign submit`, `ray job submit`, ray.init)."""
        return {"RAY_ADDRESS": self.dashboard_url, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": self.token_path}


def up(directory: Path, workers: int = 2, worker_cpus: float = 2, head_cpus: float = 1,
       env: dict[str, str] | None = None) -> ClusterState:
    """Start a head and `workers` worker nodes; returns once every node is alive. `env` is added to every
    node's environment (the cluster's environment: where jobs find secrets such as SOCIALALIGN_REDIS_URL);
    it is never written to the state file."""
    directory = directory.resolve()
    if (directory / STATE_FILE).is_file():
        raise RuntimeError(f"a cluster is already up in {directory} (socialalign cluster down --dir {directory})")
    directory.mkdir(parents=True, exist_ok=True)
    token_path = directory / "token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    head = Node("head", head_cpus, ports=_free_ports("port", "dashboard", "client", *NODE_PORTS))
    state = ClusterState(str(directory), f"127.0.0.1:{head.ports['port']}",
                         f"http://127.0.0.1:{head.ports['dashboard']}", str(token_path),
                         tempfile.mkdtemp(prefix="sa-ray-", dir="/tmp"), [head])
    try:
        _start_until_alive(state, head, env)
        for index in range(1, workers + 1):
            # One node at a time: nodes starting together on one machine race for the same socket
            # and log file names in the session folder, and a raylet dies on "address already in use".
            node = Node(f"node_{index}", worker_cpus, ports=_free_ports(*NODE_PORTS))
            state.nodes.append(node)
            _start_until_alive(state, node, env)
    except BaseException:
        _stop_all(state)
        shutil.rmtree(state.temp_dir, ignore_errors=True)
        raise
    _save(state)
    return state


def down(directory: Path) -> list[str]:
    """Stop every node `up` started in `directory`, workers first; returns their names."""
    state = load(directory)
    stopped = _stop_all(state)
    (Path(state.directory) / STATE_FILE).unlink(missing_ok=True)
    shutil.rmtree(state.temp_dir, ignore_errors=True)
    return stopped


def load(directory: Path) -> ClusterState:
    path = directory.resolve() / STATE_FILE
    if not path.is_file():
        raise RuntimeError(f"no cluster is up in {directory.resolve()} (socialalign cluster up)")
    data = json.loads(path.read_text())
    return ClusterState(**{**data, "nodes": [Node(**node) for node in data["nodes"]]})


def kill_raylet(state: ClusterState, name: str) -> int:
    """SIGKILL the raylet of node `name` (found among the processes its `ray start` started), as a
    machine loss would end it; returns the raylet's pid."""
    import psutil

    group = os.getpgid(state.node(name).pid)
    for process in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            if os.getpgid(process.pid) == group and "raylet" in (process.info["name"] or ""):
                process.kill()
                return process.pid
        except (psutil.Error, ProcessLookupError):
            continue
    raise RuntimeError(f"node {name}: no raylet among its processes")


def restart_node(state: ClusterState, name: str, env: dict[str, str] | None = None) -> None:
    """Bring node `name` back (after a kill): stop what is left of it, start it again (with `env`, as
    `up` gave it), wait for it."""
    node = state.node(name)
    _stop(node, grace_s=5.0)  # what is left of a killed node need not shut down gracefully
    node.ports = _free_ports(*NODE_PORTS)
    _start_until_alive(state, node, env)
    _save(state)


def alive_nodes(state: ClusterState) -> dict[str, str]:
    """Custom node name -> Ray node id of every node the GCS counts alive."""
    nodes = dashboard(state, "/api/v0/nodes?limit=1000")["data"]["result"]["result"]
    found = {}
    for node in nodes:
        names = [key for key in node.get("resources_total", {}) if key == "head" or key.startswith("node_")]
        if node.get("state") == "ALIVE" and names:
            found[names[0]] = node["node_id"]
    return found


def _start(state: ClusterState, node: Node, env: dict[str, str] | None = None) -> None:
    ports = node.ports
    command = [_ray(), "start", "--block", f"--num-cpus={node.cpus:g}", f"--resources={json.dumps(node.resources)}",
               f"--dashboard-agent-listen-port={ports['agent']}", f"--metrics-export-port={ports['metrics']}",
               f"--runtime-env-agent-port={ports['runtime_env']}", f"--node-manager-port={ports['node_manager']}",
               f"--object-manager-port={ports['object_manager']}", f"--dashboard-agent-grpc-port={ports['agent_grpc']}",
               "--disable-usage-stats"]
    if node.name == "head":
        command += ["--head", f"--port={node.ports['port']}", "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={node.ports['dashboard']}", f"--ray-client-server-port={node.ports['client']}",
                    f"--temp-dir={state.temp_dir}"]
    else:
        # Its own temp dir: nodes sharing one would share one runtime_resources folder, and a node's runtime
        # env agent would delete a job's working dir as unused there while the driver on another node runs in it.
        temp_dir = tempfile.mkdtemp(prefix=f"{node.name}-", dir=state.temp_dir)
        command += [f"--address={state.gcs_address}", f"--temp-dir={temp_dir}"]
    log = open(Path(state.directory) / f"{node.name}.log", "ab")  # noqa: SIM115 - the node process owns it
    process = subprocess.Popen(command, env={**_node_env(state), **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    node.pid = process.pid


def _node_env(state: ClusterState) -> dict[str, str]:
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": state.token_path,
           "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    return env


def _stop_all(state: ClusterState) -> list[str]:
    stopped = []
    for node in reversed(state.nodes):  # workers first, the head last
        if node.pid:
            _stop(node)
            stopped.append(node.name)
    return stopped


def _stop(node: Node, grace_s: float = 30.0) -> None:
    """SIGTERM the node's process group (ray start --block shuts its node down), SIGKILL what is left."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(node.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and _group_alive(node.pid):
            time.sleep(0.2)
        if not _group_alive(node.pid):
            return


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    _reap(group)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _start_until_alive(state: ClusterState, node: Node, env: dict[str, str] | None, attempts: int = START_ATTEMPTS
                       ) -> None:
    """Start `node` and wait until the GCS counts it alive. On a loaded machine `ray start` gives up when
    its raylet does not register within Ray's fixed 30 s (the process then exits): start it again, on
    fresh ports, up to `attempts` times."""
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            _stop(node, grace_s=5.0)
            node.ports = _free_ports(*node.ports)
            if node.name == "head":
                state.gcs_address = f"127.0.0.1:{node.ports['port']}"
                state.dashboard_url = f"http://127.0.0.1:{node.ports['dashboard']}"
        _start(state, node, env)
        if _wait_until_alive(state, node):
            return
    raise TimeoutError(f"node {node.name} did not come up after {attempts} tries (see {state.directory}/"
                       f"{node.name}.log)")


def _wait_until_alive(state: ClusterState, node: Node) -> bool:
    """True once the GCS counts `node` alive; False when its `ray start` process exits first or after
    START_TIMEOUT_S. The dashboard may refuse or drop requests while it starts: those are retried."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not _group_alive(node.pid) or _exited(node.pid):
            return False
        try:
            if node.name in alive_nodes(state):
                return True
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            pass  # the dashboard is starting, or too busy to answer in time
        time.sleep(0.5)
    return False


def _exited(pid: int) -> bool:
    """Whether our child `ray start` process has exited (it is reaped here)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not _pid_exists(pid)
    return done == pid


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def dashboard(state: ClusterState, path: str, method: str = "GET") -> dict:
    """The cluster's dashboard REST API (jobs, Ray's state API, Serve) at `path`, with its token; the JSON
    answer."""
    token = Path(state.token_path).read_text().strip()
    request = urllib.request.Request(state.dashboard_url + path, method=method,
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def _save(state: ClusterState) -> None:
    path = Path(state.directory) / STATE_FILE
    path.write_text(json.dumps({**asdict(state), "nodes": [asdict(n) for n in state.nodes]}, indent=2))


def _free_ports(*names: str) -> dict[str, int]:
    probes = [socket.socket() for _ in names]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return {name: probe.getsockname()[1] for name, probe in zip(names, probes)}
    finally:
        for probe in probes:
            probe.close()


def _ray() -> str:
    return str(Path(sys.executable).parent / "ray")


def describe(state: ClusterState) -> Iterator[str]:
    yield f"Ray cluster in {state.directory}: dashboard {state.dashboard_url}, GCS {state.gcs_address}"
    for node in state.nodes:
        yield f"  {node.name}: {node.cpus:g} CPUs, resource {{\"{node.name}\": 1}}, pid {node.pid}"
    yield "use it:"
    yield "  export " + " ".join(f"{key}={value}" for key, value in state.environment.items())
