"""What a client gets when the Generator replica holding its request is lost with its node (no cluster
needed: the error mapping alone; test_faults.py loses a real node while serving): 503 with Retry-After,
as for an overloaded server, never a 500."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from ray.exceptions import ActorDiedError, ActorUnavailableError
from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError

from serve.http_errors import install_error_handlers

LOST = {
    "died": lambda: ActorDiedError(),
    "unavailable": lambda: ActorUnavailableError("the node is unreachable", None),
    "replica": lambda: ReplicaUnavailableError("replica gone"),
    "deployment": lambda: DeploymentUnavailableError("Generator"),
}


@pytest.mark.parametrize("kind", sorted(LOST))
def test_a_lost_replica_is_503_with_retry_after(kind: str) -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/work")
    async def work() -> None:
        raise LOST[kind]()

    response = TestClient(app, raise_server_exceptions=False).get("/work")
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"]["code"] == "replica_unavailable"
