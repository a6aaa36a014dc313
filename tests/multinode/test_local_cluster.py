"""`socialalign cluster up/down`: each node its own raylet with its resources, token auth on, the
dashboard on loopback, and `down` stopping exactly the processes `up` started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from cluster import local_cluster

pytestmark = pytest.mark.multinode


def test_every_node_is_alive_with_its_own_resources(multinode) -> None:
    alive = local_cluster.alive_nodes(multinode)
    assert set(alive) == {"head", "node_1", "node_2"}
    assert len(set(alive.values())) == 3  # three raylets, three node ids
    nodes = local_cluster.dashboard(multinode, "/api/v0/nodes")["data"]["result"]["result"]
    cpus = {name: node["resources_total"]["CPU"] for node in nodes for name in node["resources_total"]
            if name in alive}
    assert cpus == {"head": 1.0, "node_1": 2.0, "node_2": 2.0}


def test_the_dashboard_listens_on_loopback_and_wants_the_token(multinode) -> None:
    assert multinode.dashboard_url.startswith("http://127.0.0.1:")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{multinode.dashboard_url}/api/v0/nodes", timeout=5)
    assert refused.value.code == 401
    assert "token" not in json.loads((Path(multinode.directory) / local_cluster.STATE_FILE).read_text())


def test_the_cli_reports_the_cluster_it_started(multinode) -> None:
    result = subprocess.run([str(Path(sys.executable).parent / "socialalign"), "cluster", "status", "--dir",
                             multinode.directory], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "alive: head, node_1, node_2" in result.stdout and multinode.dashboard_url in result.stdout
    assert Path(multinode.token_path).read_text() not in result.stdout + result.stderr


def test_down_stops_what_up_started_and_nothing_else(tmp_path: Path) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        state = local_cluster.up(tmp_path / "small", workers=1, worker_cpus=1, head_cpus=1)
        groups = {node.name: node.pid for node in state.nodes}
        assert all(psutil.pid_exists(pid) for pid in groups.values())
        assert local_cluster.down(tmp_path / "small") == ["node_1", "head"]
        for pid in groups.values():
            with pytest.raises(ProcessLookupError):
                os.killpg(pid, 0)
        assert bystander.poll() is None
        assert not (tmp_path / "small" / local_cluster.STATE_FILE).exists()
    finally:
        bystander.kill()
        bystander.wait()
