"""Dashboard metrics: every custom metric is declared once in cluster/metrics.py with its tags, every
call site records a declared metric with exactly those tags, and a real Ray node exports them all
on its Prometheus endpoint (the one the dashboard's Grafana and a Prometheus scrape read)."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess

from cluster.metrics import SPECS
from tests.cluster.prometheus import scrape_until
from tests.conftest import REPO, VENV_BIN

PACKAGES = ("cluster", "crawl_actors", "dataset_jobs", "train_jobs", "serve")


def test_every_metric_is_declared_with_a_name_a_description_and_tags() -> None:
    for name, spec in SPECS.items():
        assert name == spec.name and re.fullmatch(r"[a-z][a-z0-9_]*", name), name
        assert not name.endswith("_total"), f"{name}: Prometheus adds _total to counters itself"
        assert spec.kind in ("counter", "gauge", "histogram") and len(spec.description) > 10, name
        assert all(re.fullmatch(r"[a-z][a-z0-9_]*", tag) for tag in spec.tags), name
        assert spec.kind != "histogram" or list(spec.boundaries) == sorted(set(spec.boundaries)) != [], name


def _call_sites() -> list[tuple[str, str, set[str] | None]]:
    """(where, metric name, tag keys; None when passed as **kwargs) of every recording call:
    `count("x", v, tag=...)`, `gauge("x", v, tag=...)`, `metric("x").observe(v, tags={...})`."""
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if path == REPO / "cluster" / "metrics.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            imported = {alias.asname or alias.name for node in ast.walk(tree)
                        if isinstance(node, ast.ImportFrom) and node.module == "cluster.metrics"
                        for alias in node.names}
            for node in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
                func = node.func
                if isinstance(func, ast.Name) and func.id in imported & {"count", "gauge"}:
                    named, tags = node, _keyword_tags(node)
                elif (isinstance(func, ast.Attribute) and func.attr in ("observe", "inc", "set")
                      and isinstance(func.value, ast.Call) and isinstance(func.value.func, ast.Name)
                      and func.value.func.id in imported & {"metric"}):
                    named, tags = func.value, _dict_tags(node)
                else:
                    continue
                first = named.args[0] if named.args else None
                if isinstance(first, ast.Constant):
                    found.append((f"{path.relative_to(REPO)}:{node.lineno}", first.value, tags))
    return found


def _keyword_tags(call: ast.Call) -> set[str] | None:
    return None if any(k.arg is None for k in call.keywords) else {k.arg for k in call.keywords}


def _dict_tags(call: ast.Call) -> set[str] | None:
    tags = next((k.value for k in call.keywords if k.arg == "tags"), None)
    if isinstance(tags, ast.Dict) and all(isinstance(k, ast.Constant) for k in tags.keys):
        return {k.value for k in tags.keys}
    return None


def test_every_call_site_records_a_declared_metric_with_exactly_its_tags() -> None:
    sites = _call_sites()
    assert len(sites) >= 15  # the crawl, train and serve call sites are found
    for where, name, tags in sites:
        assert name in SPECS, f"{where}: metric {name!r} is not declared in cluster/metrics.py SPECS"
        if tags is not None:
            assert tags == set(SPECS[name].tags), f"{where}: {name} tags {sorted(tags)} != {list(SPECS[name].tags)}"
    recorded = {name for _, name, _ in sites}
    assert recorded == set(SPECS), f"declared but never recorded: {sorted(set(SPECS) - recorded)}"


# A driver on the test cluster: an actor records every declared metric through cluster.metrics,
# then the driver prints the node's metrics export port and stays up (so does the actor) until told.
DRIVER = """
import json, sys
import ray
from cluster.metrics import SPECS, count, gauge, metric

ray.init(address=sys.argv[1], log_to_driver=False)

@ray.remote(num_cpus=0)
class Recorder:
    def record(self):
        for name, spec in SPECS.items():
            tags = {tag: f"t-{tag}" for tag in spec.tags}
            if spec.kind == "counter":
                count(name, 2, **tags)
            elif spec.kind == "gauge":
                gauge(name, 1.5, **tags)
            else:
                metric(name).observe(spec.boundaries[0], tags=tags)
        return ray.get_runtime_context().get_node_id()

recorder = Recorder.remote()
node_id = ray.get(recorder.record.remote())
port = next(n["MetricsExportPort"] for n in ray.nodes() if n["NodeID"] == node_id)
print(json.dumps({"port": port}), flush=True)
sys.stdin.readline()
"""


def _exported_name(name: str, kind: str) -> str:
    return f"ray_socialalign_{name}" + {"counter": "_total", "gauge": "", "histogram": "_count"}[kind]


def test_metrics_recorded_in_an_actor_reach_the_nodes_prometheus_endpoint(ray_head) -> None:
    env = {**os.environ, "PATH": ray_head["PATH"], "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": ray_head["token_path"]}
    env.pop("RAY_ADDRESS", None)
    driver = subprocess.Popen([str(VENV_BIN / "python"), "-c", DRIVER, ray_head["gcs_address"]], env=env, cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = json.loads(driver.stdout.readline())["port"]
        assert port == int(ray_head["metrics_export_port"])  # Ray's node info names the port we gave `ray start`
        expected = {_exported_name(name, spec.kind): spec for name, spec in SPECS.items()}
        series, text = scrape_until(port, lambda found: set(expected) <= set(found), timeout_s=60)
        missing = sorted(set(expected) - set(series))
        assert not missing, f"not exported after 60 s: {missing}"
        for exported, spec in expected.items():
            wanted = {tag: f"t-{tag}" for tag in spec.tags}
            assert any(wanted.items() <= labels.items() for labels, _ in series[exported]), (exported, series[exported])
            base = exported.removesuffix("_total").removesuffix("_count")
            assert f"# HELP {base} {spec.description}" in text or f"# HELP {exported} {spec.description}" in text
    finally:
        driver.stdin.write("\n")
        driver.stdin.close()
        try:
            driver.wait(timeout=30)
        except subprocess.TimeoutExpired:
            driver.kill()
