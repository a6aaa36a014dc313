"""One real multi-node Ray cluster for tests/multinode: a head (1 CPU) and two worker nodes (2 CPUs
each), started by `cluster.local_cluster` as `socialalign cluster up` starts it, and stopped by the
processes it started at the end of the session."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster import local_cluster

pytestmark = pytest.mark.multinode


@pytest.fixture(scope="session")
def multinode() -> Iterator[local_cluster.ClusterState]:
    directory = Path(tempfile.mkdtemp(prefix="sa-multinode-"))
    state = local_cluster.up(directory, workers=2, worker_cpus=2, head_cpus=1)
    try:
        yield state
    finally:
        local_cluster.down(directory)


@pytest.fixture()
def cluster_env(multinode: local_cluster.ClusterState) -> dict[str, str]:
    """The environment a user's shell has after `socialalign cluster up` (submit reads the token from it)."""
    env = {**os.environ, **multinode.environment, "RAY_USAGE_STATS_ENABLED": "0"}
    return env
