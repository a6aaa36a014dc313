"""The kustomize tree under k8s/: every overlay renders and validates offline (KubeRay CRDs,
Kubernetes schemas, cross-references, stage entrypoints and configs, the Serve config, pod
security, read-only serving, Redis's password and NetworkPolicy), versions come from one place,
and broken manifests are caught."""

from __future__ import annotations

import base64
import copy
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from cluster import k8s
from cluster.stages import STAGES
from crawl_actors.config import CrawlConfig
from tests.k8s.conftest import OVERLAYS, REPO
from train_jobs.config import TrainConfig

BATCH_STAGES = {"crawl": "crawl_actors", "build-dataset": "dataset_jobs", "train": "train_jobs",
                "evaluate": "serve.evaluate"}
PLACEHOLDER_SECRETS = {"weibo-cookies", "llm-api-key", "serve-token", "redis-password", "redis-url"}
# Not the bare overlay name: the suite's conftest skips any test whose keywords include "gpu".
OVERLAY_IDS = [f"overlays/{name}" for name in OVERLAYS]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name))


def stage_config(objects: list[dict[str, Any]], key: str) -> str:
    return find(objects, "ConfigMap")["data"][key]


def secret_values(objects: list[dict[str, Any]]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in find(objects, "Secret")["data"].items()}


# --- every overlay validates ------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_ray_resources_match_the_kuberay_crds_and_admission_rules(renders, crd_schemas, overlay: str) -> None:
    ray = [o for o in renders[overlay] if o["kind"] in k8s.RAY_KINDS]
    assert {o["kind"] for o in ray} == {"RayJob", "RayService"}
    problems = [p for o in ray for p in k8s.check_ray_schema(o, crd_schemas) + k8s.check_kuberay_rules(o)]
    assert problems == []


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_core_resources_and_ray_pod_templates_pass_kubernetes_validate(renders, overlay: str) -> None:
    assert [p for o in renders[overlay] for p in k8s.check_core_schema(o)] == []


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_every_secret_configmap_and_volume_a_pod_uses_is_in_the_render(renders, overlay: str) -> None:
    assert k8s.check_references(renders[overlay]) == []


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_each_rayjob_runs_a_stage_module_whose_mounted_config_loads(renders, overlay: str) -> None:
    assert k8s.check_stages(renders[overlay]) == []


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_the_rayservice_serves_serve_config_yaml_and_the_app_builds_from_it(renders, overlay: str) -> None:
    assert k8s.check_serve(renders[overlay], build_app=True) == []


def test_the_cli_checks_overlays(crd_dir: Path, capsys) -> None:
    assert k8s.main([str(REPO / "k8s" / "overlays" / "dev"), "--crds", str(crd_dir)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].endswith("dev: ok")
    listed = k8s.placeholder_secrets(k8s.render(REPO / "k8s" / "overlays" / "dev"))
    assert lines[1:] == [f"  placeholders to replace before deploying: {listed[0]}"]


def test_the_cli_finds_the_crds_beside_the_checkout_or_from_the_environment(crd_dir: Path) -> None:
    assert k8s.find_crds({"SOCIALALIGN_KUBERAY_CRDS": str(crd_dir)}) == crd_dir
    assert k8s.find_crds({"SOCIALALIGN_KUBERAY_CRDS": str(REPO / "k8s")}) is None  # set: nothing else is tried
    assert REPO.parent / "shared" / "schemas" / "kuberay" in k8s.crd_candidates({})


def test_the_cli_refuses_to_skip_the_crd_schemas_unless_told(
    renders, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    dev = str(REPO / "k8s" / "overlays" / "dev")
    monkeypatch.setenv("SOCIALALIGN_KUBERAY_CRDS", str(tmp_path))  # an empty directory
    assert k8s.main([dev]) == 2
    crd_files = "ray.io_rayclusters.yaml, ray.io_rayjobs.yaml, ray.io_rayservices.yaml"
    assert f"error: no KubeRay CRDs ({crd_files}) in {tmp_path}" in capsys.readouterr().err
    assert k8s.main([dev, "--crds", str(tmp_path)]) == 2
    assert k8s.main([dev, "--no-crds"]) == 0
    captured = capsys.readouterr()
    assert "checked without their CRD schema" in captured.err and "dev: ok\n" in captured.out


# --- what the tree must contain -----------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_a_rayjob_per_batch_stage_runs_its_module_with_its_config_file(renders, overlay: str) -> None:
    jobs = {o["metadata"]["labels"]["socialalign.io/stage"]: o for o in renders[overlay] if o["kind"] == "RayJob"}
    assert set(BATCH_STAGES) <= set(jobs)
    for stage, job in jobs.items():
        module = STAGES[stage].module
        assert BATCH_STAGES.get(stage, module) == module
        assert shlex.split(job["spec"]["entrypoint"]) == ["python", "-m", module, "--config", f"/config/{stage}.yaml"]
        assert yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
        assert job["spec"]["shutdownAfterJobFinishes"] is True and job["spec"]["ttlSecondsAfterFinished"] > 0
        assert job["spec"]["rayClusterSpec"]["headGroupSpec"] and job["spec"]["suspend"] is True
        assert job["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}


def test_serve_config_v2_is_the_file_the_cli_uses(renders) -> None:
    on_disk = yaml.safe_load((REPO / "serve" / "serve_config.yaml").read_text())
    for objects in renders.values():
        assert yaml.safe_load(find(objects, "RayService")["spec"]["serveConfigV2"]) == on_disk


def test_images_and_the_ray_version_are_set_in_one_place(renders) -> None:
    component = yaml.safe_load((REPO / "k8s" / "components" / "versions" / "kustomization.yaml").read_text())
    pinned = {i["name"]: f"{i.get('newName', i['name'])}:{i['newTag']}" for i in component["images"]}
    versions = yaml.safe_load((REPO / "k8s" / "components" / "versions" / "versions.yaml").read_text())
    ray_version = versions["data"]["rayVersion"]
    for objects in renders.values():
        images = {c["image"] for o in objects for _, spec, _ in k8s.pod_templates(o) for c in spec["containers"]}
        assert images == set(pinned.values())
        assert {k8s.cluster_spec(o)["rayVersion"] for o in objects if o["kind"] in k8s.RAY_KINDS} == {ray_version}
    # Nowhere else: manifests name the bare image and never a rayVersion; the Dockerfile and the pin agree.
    for path in (REPO / "k8s").rglob("*.yaml"):
        if "components" not in path.parts:
            text = path.read_text()
            assert "rayVersion" not in text, path
            assert set(re.findall(r"image:\s*(\S+)", text)) <= set(pinned), path
    assert f"ARG RAY_VERSION={ray_version}\n" in (REPO / "k8s" / "Dockerfile").read_text()
    low, high = re.search(r'"ray\[[^]]*\]>=([\d.]+),<([\d.]+)"', (REPO / "pyproject.toml").read_text()).groups()
    assert _version(low) <= _version(ray_version) < _version(high)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in text.split("."))


def test_secrets_are_placeholders_outside_dev(renders) -> None:
    for overlay in ("gpu", "local.example"):
        values = secret_values(renders[overlay])
        assert {k for k, v in values.items() if "PLACEHOLDER" in v} == PLACEHOLDER_SECRETS
    dev = secret_values(renders["dev"])
    assert dev["serve-token"] == "dev-serve-token-not-a-secret" and dev["weibo-cookies"].startswith("SUB=sim-")
    for overlay in OVERLAYS:  # the URL the crawl gets carries the password Redis asks for
        values = secret_values(renders[overlay])
        url = urlsplit(values["redis-url"])
        assert url.password == values["redis-password"] and (url.hostname, url.port) == ("socialalign-redis", 6379)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_placeholders_are_listed_and_checked_as_stand_ins(renders, overlay: str) -> None:
    """A placeholder is what the operator replaces: the checks read it as a stand-in of the same shape
    (serve would refuse the placeholder itself as a token), and list it."""
    listed = k8s.placeholder_secrets(renders[overlay])
    expected = {"llm-api-key"} if overlay == "dev" else PLACEHOLDER_SECRETS
    assert len(listed) == 1 and set(listed[0].split(": ", 1)[1].split(", ")) == expected
    serve_head = _head(find(renders[overlay], "RayService"))
    env, _ = k8s.pod_environment(serve_head, renders[overlay])
    assert "PLACEHOLDER" not in env["SOCIALALIGN_SERVE_TOKEN"] and len(env["SOCIALALIGN_SERVE_TOKEN"]) >= 12


def test_dev_is_cpu_only_small_and_one_node(renders) -> None:
    objects = renders["dev"]
    assert "nvidia.com/gpu" not in yaml.safe_dump_all(objects)
    for obj in (o for o in objects if o["kind"] in k8s.RAY_KINDS):
        cluster = k8s.cluster_spec(obj)
        assert not cluster.get("workerGroupSpecs"), obj["metadata"]["name"]
        assert k8s.ray_resources(cluster["headGroupSpec"]) == (4, 0)
    assert {o["spec"]["accessModes"][0] for o in objects if o["kind"] == "PersistentVolumeClaim"} == {"ReadWriteOnce"}
    train = TrainConfig.model_validate(yaml.safe_load(stage_config(objects, "train.yaml")))
    assert not train.use_gpu and train.precision in ("auto", "fp32")


def test_gpu_overlay_gives_train_and_serve_gpus_and_bf16(renders) -> None:
    objects = renders["gpu"]
    train_job, serve = find(objects, "RayJob", "socialalign-train"), find(objects, "RayService")
    for obj in (train_job, serve):
        groups = k8s.cluster_spec(obj)["workerGroupSpecs"]
        assert all(g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] for g in groups)
        assert all(g["template"]["spec"]["tolerations"] for g in groups)
    others = [o for o in objects if o["kind"] == "RayJob" and o is not train_job]
    assert "nvidia.com/gpu" not in yaml.safe_dump_all(others)
    train = yaml.safe_load(stage_config(objects, "train.yaml"))
    assert train["use_gpu"] is True and train["precision"] == "bf16" and train["resources_per_worker"]["GPU"] == 1
    serve_config = yaml.safe_load(stage_config(objects, "serve.yaml"))
    assert serve_config["replica_gpus"] == 1 and serve_config["dtype"] == "bfloat16"


def test_dev_crawl_reads_the_simulator_it_deploys(renders) -> None:
    """The simulator Deployment's seed and size decide its topics, dates and cookies: the dev
    crawl config and secret must name exactly those."""
    from crawl_actors.simulator import SimulatorConfig, WeiboSimulator
    from crawl_actors.tasks import BEIJING

    objects = renders["dev"]
    simulator_pod = find(objects, "Deployment", "socialalign-weibo-simulator")["spec"]["template"]["spec"]
    valued = [a for a in simulator_pod["containers"][0]["args"] if a != "--unlimited"]
    options = dict(zip(valued[::2], valued[1::2], strict=True))
    simulator = WeiboSimulator(SimulatorConfig(seed=int(options["--seed"]), num_users=int(options["--users"])))
    topics = simulator.topics()
    crawl = CrawlConfig.model_validate(yaml.safe_load(stage_config(objects, "crawl.yaml")))
    assert sorted(crawl.keywords) == sorted(t.name for t in topics)
    assert crawl.start <= f"{min(t.start for t in topics).astimezone(BEIJING):%Y-%m-%d}"
    assert crawl.end >= f"{max(t.end for t in topics).astimezone(BEIJING):%Y-%m-%d}"
    assert secret_values(objects)["weibo-cookies"].split("\n")[:2] == simulator.new_cookies(int(options["--cookies"]))
    assert {str(url) for url in crawl.endpoints.model_dump().values()} == {"http://socialalign-weibo-simulator:8765"}


# --- a compromised pod stays small --------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_every_pod_template_drops_its_privileges(renders, overlay: str) -> None:
    assert k8s.check_pod_security(renders[overlay]) == []
    templates = [(o, spec) for o in renders[overlay] for _, spec, _ in k8s.pod_templates(o)]
    assert {o["kind"] for o, _ in templates} >= {"RayJob", "RayService", "Deployment", "StatefulSet"}
    for obj, spec in templates:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"}, obj["metadata"]
        for container in spec["containers"]:
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True}
    # Every RayJob names its submitter pod (KubeRay's default one has no securityContext).
    assert all(o["spec"].get("submitterPodTemplate") for o in renders[overlay] if o["kind"] == "RayJob")


def test_workers_that_call_an_llm_read_its_key_from_their_own_environment(renders) -> None:
    """Persona workers (build-dataset) and the LLM judge (evaluate) read the key where they run: every
    Ray container of those clusters gets it from the Secret, never through task or actor arguments."""
    for stage in ("build-dataset", "evaluate"):
        cluster = k8s.cluster_spec(_job(renders["gpu"], stage))
        containers = [g["template"]["spec"]["containers"][0]
                      for g in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]]
        assert len(containers) == 2
        for container in containers:
            refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container.get("env", []) if "valueFrom" in e}
            assert refs["SOCIALALIGN_LLM_API_KEY"]["key"] == "llm-api-key", (stage, container["name"])


def test_the_dev_simulator_and_setup_job_drop_their_privileges_too(renders) -> None:
    for kind, name in (("Deployment", "socialalign-weibo-simulator"), ("Job", "socialalign-tiny-model")):
        spec = find(renders["dev"], kind, name)["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_serve_pods_read_shared_storage_and_expose_only_a_population_folder(renders, overlay: str) -> None:
    assert k8s.check_read_only_serving(renders[overlay]) == []
    serve = find(renders[overlay], "RayService")
    for _, spec, _ in k8s.pod_templates(serve):
        claims = {v["name"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
        assert claims == {"data", "models"}
        assert all(v["persistentVolumeClaim"]["readOnly"] for v in spec["volumes"] if v["name"] in claims)
        mounts = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] in claims]
        assert mounts and all(m["readOnly"] is True for m in mounts)
    config = yaml.safe_load(stage_config(renders[overlay], "serve.yaml"))
    assert config["population_dir"] == "/data/populations"  # not the whole of /data: only the tables to expose


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_redis_asks_for_a_password_and_admits_only_the_crawl(renders, overlay: str) -> None:
    objects = renders[overlay]
    assert k8s.check_redis(objects) == []
    policy = find(objects, "NetworkPolicy", "socialalign-redis")["spec"]
    admitted = [(o["metadata"]["name"], where) for o in objects for where, _, meta in k8s.pod_templates(o)
                if any(peer["podSelector"]["matchLabels"].items() <= ((meta or {}).get("labels") or {}).items()
                       for rule in policy["ingress"] for peer in rule["from"])]
    crawl_groups = ["headGroupSpec.template: "] + ([] if overlay == "dev" else ["worker group cpu: "])
    assert admitted == [("socialalign-crawl", where) for where in crawl_groups]
    redis = find(objects, "StatefulSet", "socialalign-redis")["spec"]["template"]["spec"]["containers"][0]
    args = " ".join(redis["args"])
    assert "requirepass" in args and "protected-mode" not in args


def test_the_manifests_redis_command_runs_a_redis_that_wants_the_password(renders, tmp_path: Path) -> None:
    """The dev render's Redis container command, run by sh as the pod runs it (its two paths and the
    port moved onto this machine): a client without the password is refused, the Secret's
    redis-url gets in, and the password is on no process's command line."""
    import redis

    from tests.conftest import free_port

    server_binary = shutil.which("redis-server")
    if server_binary is None:
        pytest.skip("redis-server is not installed")
    objects = renders["dev"]
    container = find(objects, "StatefulSet", "socialalign-redis")["spec"]["template"]["spec"]["containers"][0]
    env, _ = k8s.pod_environment(container, objects)
    port = free_port()
    (tmp_path / "run").mkdir()
    (tmp_path / "data").mkdir()
    script = container["args"][0].replace("/run/redis", str(tmp_path / "run"))
    script = script.replace("--dir /data", f"--dir {tmp_path / 'data'}")
    script += f" --port {port} --bind 127.0.0.1"
    assert container["command"] == ["sh", "-c"]
    bin_dir = Path(server_binary).parent
    server = subprocess.Popen(["sh", "-c", script], env={"PATH": f"{bin_dir}:/usr/bin:/bin", **env},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        anonymous = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
        deadline = time.monotonic() + 10
        while True:
            try:
                anonymous.ping()
                raise AssertionError("Redis answered a client without the password")
            except redis.AuthenticationError:
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        url = secret_values(objects)["redis-url"].replace("socialalign-redis:6379", f"127.0.0.1:{port}")
        assert redis.Redis.from_url(url, socket_timeout=5).ping()
        password = secret_values(objects)["redis-password"]
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode()
        assert "redis-server" in cmdline and password not in cmdline
        assert oct((tmp_path / "run" / "auth.conf").stat().st_mode & 0o777) == "0o600"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_pod_may_keep_a_writable_root_only_saying_why(renders) -> None:
    objects = copy.deepcopy(renders["gpu"])
    toolbox = find(objects, "Deployment", "socialalign-toolbox")["spec"]["template"]
    toolbox["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    assert any("readOnlyRootFilesystem must be true" in p for p in k8s.check_pod_security(objects))
    toolbox["metadata"]["annotations"] = {k8s.WRITABLE_ROOT: "operators pip install tools here"}
    assert k8s.check_pod_security(objects) == []


def test_the_cli_fails_an_overlay_that_drops_the_security_context(tmp_path: Path, crd_dir: Path, capsys) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [{os.path.relpath(REPO / 'k8s' / 'overlays' / 'dev', tmp_path)}]\n"
        "patches:\n"
        "  - path: simulator.yaml\n    target: {kind: Deployment, name: socialalign-weibo-simulator}\n"
        "  - path: crawl.yaml\n    target: {kind: RayJob, name: socialalign-crawl}\n"
        "  - path: serve.yaml\n    target: {kind: RayService}\n")
    (tmp_path / "simulator.yaml").write_text(
        "- {op: remove, path: /spec/template/spec/securityContext}\n"
        "- {op: remove, path: /spec/template/spec/containers/0/securityContext}\n")
    (tmp_path / "crawl.yaml").write_text(
        "- {op: replace, path: /spec/rayClusterSpec/headGroupSpec/template/spec/containers/0/securityContext/"
        "allowPrivilegeEscalation, value: true}\n"
        "- {op: remove, path: /spec/submitterPodTemplate}\n")
    (tmp_path / "serve.yaml").write_text(
        "- {op: remove, path: /spec/rayClusterConfig/headGroupSpec/template/spec/containers/0/volumeMounts/2/"
        "readOnly}\n")
    assert k8s.main([str(tmp_path), "--crds", str(crd_dir)]) == 1
    out = capsys.readouterr().out
    assert "Deployment/socialalign-weibo-simulator: container simulator: securityContext.runAsNonRoot must be " \
           "true" in out
    assert "RayJob/socialalign-crawl: headGroupSpec.template: container ray-head: securityContext." \
           "allowPrivilegeEscalation must be false" in out
    assert "RayJob/socialalign-crawl: no submitterPodTemplate" in out
    assert "RayService/socialalign-serve: headGroupSpec.template: container ray-head: /data (volume data) must be " \
           "mounted readOnly" in out


# --- the guide's deploy steps fit the tree ------------------------------------------------------


def _deploy_section() -> str:
    text = (REPO / "docs" / "kubernetes.md").read_text(encoding="utf-8")
    start = text.index("## Deploy step by step")
    return text[start : text.index("\n## ", start + 1)]


def _selects(selector: str, labels: dict[str, str]) -> bool:
    """A label selector of `k=v` / `k!=v` terms, as kubectl reads it (`!=` also matches a missing key)."""
    for term in selector.split(","):
        key, op, value = re.match(r"^\s*([\w./-]+)\s*(!=|==|=)\s*([\w.-]+)\s*$", term).groups()
        if (labels.get(key) == value) != (op != "!="):
            return False
    return True


def _labels_of(obj: dict[str, Any]) -> list[dict[str, str]]:
    """The object's labels, and those of the pods it makes (`kubectl get pod -l ...` selects those)."""
    template = (obj.get("spec") or {}).get("template") or {}
    return [obj["metadata"].get("labels") or {}, (template.get("metadata") or {}).get("labels") or {}]


@pytest.mark.parametrize("overlay", ["gpu", "dev"], ids=["overlays/gpu", "overlays/dev"])
def test_every_label_selector_in_the_deploy_steps_selects_something(renders, overlay: str) -> None:
    selectors = re.findall(r"-l '([^']+)'|-l ([^\s'`]+)", _deploy_section())
    assert len(selectors) >= 3
    for selector in (quoted or bare for quoted, bare in selectors):
        assert any(_selects(selector, labels) for o in renders[overlay] for labels in _labels_of(o)), selector


@pytest.mark.parametrize("overlay", ["gpu", "dev"], ids=["overlays/gpu", "overlays/dev"])
def test_the_model_is_copied_before_the_rayservice_is_applied(renders, overlay: str) -> None:
    steps = _deploy_section()
    first_apply = re.search(r"^kubectl apply -k k8s/overlays/local(.*)$", steps, re.MULTILINE)
    selector = re.fullmatch(r" -l '([^']+)'", first_apply[1])
    assert selector, f"the first apply must leave the RayService out until the model is there: {first_apply[0]}"
    selector = selector[1]
    left_out = [o for o in renders[overlay] if not _selects(selector, o["metadata"].get("labels") or {})]
    assert [o["kind"] for o in left_out] == ["RayService"]  # the first apply holds everything else
    copy_model = steps.index("kubectl -n socialalign cp ./Qwen2.5-7B-Instruct")
    whole_tree = re.search(r"^kubectl apply -k k8s/overlays/local$", steps, re.MULTILINE).start()
    assert first_apply.start() < copy_model < whole_tree


# --- broken manifests are caught ------------------------------------------------------------------


def _job(objects: list[dict[str, Any]], stage: str) -> dict[str, Any]:
    return find(objects, "RayJob", f"socialalign-{stage}")


def _head(obj: dict[str, Any]) -> dict[str, Any]:
    return k8s.cluster_spec(obj)["headGroupSpec"]["template"]["spec"]["containers"][0]


def _set_config(objects: list[dict[str, Any]], key: str, **values: Any) -> None:
    configmap = find(objects, "ConfigMap")
    configmap["data"][key] = yaml.safe_dump({**yaml.safe_load(configmap["data"][key]), **values})


def _replicas_as_text(objects):
    _job(objects, "train")["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "two"


def _misspelt_field(objects):
    spec = _job(objects, "crawl")["spec"]
    spec["shutdownAfterJobFinish"] = spec.pop("shutdownAfterJobFinishes")


def _unknown_secret(objects):
    _head(_job(objects, "crawl"))["env"][0]["valueFrom"]["secretKeyRef"]["name"] = "socialalign-secretz"


def _unknown_secret_key(objects):
    _head(find(objects, "RayService"))["env"][0]["valueFrom"]["secretKeyRef"]["key"] = "serve-tokn"


def _unknown_module(objects):
    _job(objects, "crawl")["spec"]["entrypoint"] = "python -m crawl_actorz --config /config/crawl.yaml"


def _not_a_stage(objects):
    _job(objects, "evaluate")["spec"]["entrypoint"] = "python -m serve.engine --config /config/evaluate.yaml"


def _bad_stage_config(objects):
    _set_config(objects, "train.yaml", zero_stage=4)


def _config_not_mounted(objects):
    _job(objects, "train")["spec"]["entrypoint"] = "python -m train_jobs --config /etc/train.yaml"


def _serve_config_drift(objects):
    serve = find(objects, "RayService")
    serve["spec"]["serveConfigV2"] = serve["spec"]["serveConfigV2"].replace("port: 8000", "port: 8001")


def _serve_yaml_names_another_app(objects):
    _set_config(objects, "serve.yaml", app_name="another-app")


def _secret_as_literal(objects):
    _head(find(objects, "RayService"))["env"][0] = {"name": "SOCIALALIGN_SERVE_TOKEN", "value": "hunter2"}


def _secret_in_runtime_env(objects):
    _job(objects, "crawl")["spec"]["runtimeEnvYAML"] = "env_vars:\n  SOCIALALIGN_WEIBO_COOKIES: SUB=x\n"


def _deployment_replicas_as_text(objects):
    find(objects, "Deployment", "socialalign-toolbox")["spec"]["replicas"] = "one"


def _unknown_container_field(objects):
    _head(_job(objects, "train"))["volumeMount"] = []


def _missing_pvc(objects):
    objects.remove(find(objects, "PersistentVolumeClaim", "socialalign-models"))


def _gpus_left_unused(objects):
    _set_config(objects, "train.yaml", use_gpu=False, resources_per_worker={"CPU": 8}, precision="fp32")


def _too_many_workers(objects):
    _set_config(objects, "train.yaml", num_workers=16, effective_batch_size=16)


def _path_off_the_volumes(objects):
    _set_config(objects, "evaluate.yaml", output_dir="/tmp/evaluation")


def _redis_url_to_nowhere(objects):
    secret = find(objects, "Secret")
    secret["data"]["redis-url"] = base64.b64encode(b"redis://socialalign-rediz:6379/0").decode()


def _name_too_long(objects):
    _job(objects, "crawl")["metadata"]["name"] = "socialalign-crawl-" + "x" * 40


def _suspended_without_shutdown(objects):
    _job(objects, "crawl")["spec"]["shutdownAfterJobFinishes"] = False


def _worker_group_without_bounds(objects):
    del _job(objects, "train")["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"]


def _unpinned_image(objects):
    _head(_job(objects, "crawl"))["image"] = "ghcr.io/your-org/socialalign"


def _toolbox_as_root(objects):
    find(objects, "Deployment", "socialalign-toolbox")["spec"]["template"]["spec"]["securityContext"] = {
        "runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}}


def _capabilities_kept(objects):
    del _head(_job(objects, "train"))["securityContext"]["capabilities"]


def _privileged_worker(objects):
    worker = _job(objects, "train")["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    worker["containers"][0]["securityContext"]["privileged"] = True


def _no_seccomp(objects):
    redis = find(objects, "StatefulSet", "socialalign-redis")["spec"]["template"]["spec"]
    del redis["securityContext"]["seccompProfile"]


def _host_network(objects):
    find(objects, "Deployment", "socialalign-toolbox")["spec"]["template"]["spec"]["hostNetwork"] = True


def _default_submitter(objects):
    del _job(objects, "evaluate")["spec"]["submitterPodTemplate"]


def _serve_writes_data(objects):
    worker = k8s.cluster_spec(find(objects, "RayService"))["workerGroupSpecs"][0]["template"]["spec"]
    worker["containers"][0]["volumeMounts"] = [{**m, "readOnly": False} if m["name"] == "data" else m
                                               for m in worker["containers"][0]["volumeMounts"]]


def _redis_without_password(objects):
    redis = find(objects, "StatefulSet", "socialalign-redis")["spec"]["template"]["spec"]["containers"][0]
    redis["command"] = None
    redis["args"] = ["--appendonly", "yes", "--save", "", "--dir", "/data", "--protected-mode", "no"]


def _redis_url_without_password(objects):
    secret = find(objects, "Secret")
    secret["data"]["redis-url"] = base64.b64encode(b"redis://socialalign-redis:6379/0").decode()


def _redis_open_to_the_namespace(objects):
    find(objects, "NetworkPolicy", "socialalign-redis")["spec"]["ingress"][0]["from"] = [{"podSelector": {}}]


def _redis_without_network_policy(objects):
    objects.remove(find(objects, "NetworkPolicy", "socialalign-redis"))


def _toolbox_admitted_to_redis(objects):
    labels = find(objects, "Deployment", "socialalign-toolbox")["spec"]["template"]["metadata"]["labels"]
    labels["socialalign.io/redis-client"] = "true"


def _crawl_worker_not_admitted(objects):
    worker = _job(objects, "crawl")["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]
    del worker["metadata"]["labels"]["socialalign.io/redis-client"]


BROKEN = {
    # (how to break the gpu render, which check, what it must say)
    "type error in a RayJob": (
        _replicas_as_text, "ray_schema", "workerGroupSpecs.0.replicas: 'two' is not of type 'integer'"),
    "unknown RayJob field": (_misspelt_field, "ray_schema", "'shutdownAfterJobFinish' was unexpected"),
    "missing Secret": (_unknown_secret, "references", "Secret 'socialalign-secretz' is not in the render"),
    "missing Secret key": (_unknown_secret_key, "references", "has no key 'serve-tokn'"),
    "missing PVC": (_missing_pvc, "references", "PersistentVolumeClaim 'socialalign-models' is not in the render"),
    "unknown stage module": (_unknown_module, "stages", "'crawl_actorz' is not a stage module"),
    "module that is no stage": (_not_a_stage, "stages", "'serve.engine' is not a stage module"),
    "stage config invalid": (_bad_stage_config, "stages", "train.yaml:"),
    "config not on the ConfigMap": (_config_not_mounted, "stages", "/etc/train.yaml: not on a ConfigMap volume"),
    "serveConfigV2 drifted": (_serve_config_drift, "serve", "differs from serve/serve_config.yaml"),
    "serveConfigV2 not what deploy_config writes": (
        _serve_yaml_names_another_app, "serve", "is not what `python -m serve.deploy_config` writes"),
    "secret as a literal": (_secret_as_literal, "serve", "SOCIALALIGN_SERVE_TOKEN is a secret but set as a literal"),
    "secret in the runtime env": (_secret_in_runtime_env, "stages", "SOCIALALIGN_WEIBO_COOKIES is a secret"),
    "type error in a Deployment": (_deployment_replicas_as_text, "core_schema", "'one' is not of type 'integer'"),
    "unknown container field": (_unknown_container_field, "core_schema", "'volumeMount' was unexpected"),
    "GPUs left unused": (_gpus_left_unused, "stages", "GPUs that the stage's config never uses"),
    "more workers than GPUs": (_too_many_workers, "stages", "16 actors of 8 CPU / 1 GPU do not fit"),
    "output off the volumes": (_path_off_the_volumes, "stages", "/tmp/evaluation: not on a volume"),
    "URL to no Service": (_redis_url_to_nowhere, "stages", "no Service 'socialalign-rediz'"),
    "RayJob name too long": (_name_too_long, "kuberay_rules", "at most 47 characters"),
    "suspend without shutdown": (
        _suspended_without_shutdown, "kuberay_rules", "suspend needs shutdownAfterJobFinishes"),
    "worker group without maxReplicas": (
        _worker_group_without_bounds, "kuberay_rules", "set minReplicas and maxReplicas"),
    "image without a tag": (_unpinned_image, "stages", "has no pinned tag"),
    "pod running as root": (_toolbox_as_root, "security", "container toolbox: securityContext.runAsUser is 0"),
    "capabilities kept": (_capabilities_kept, "security", "capabilities.drop must include ALL"),
    "privileged container": (_privileged_worker, "security", "privileged must not be true"),
    "no seccomp profile": (_no_seccomp, "security", "container redis: securityContext.seccompProfile.type"),
    "host network": (_host_network, "security", "hostNetwork: the pod must not share the host's network"),
    "default submitter pod": (_default_submitter, "security", "RayJob/socialalign-evaluate: no submitterPodTemplate"),
    "Serve writes /data": (_serve_writes_data, "serving", "worker group gpu: container ray-worker: /data (volume data) "
                           "must be mounted readOnly"),
    "Redis without a password": (_redis_without_password, "redis", "Redis runs without a password"),
    "Redis URL without the password": (
        _redis_url_without_password, "redis", "SOCIALALIGN_REDIS_URL names Redis (socialalign-redis) without the "
        "password"),
    "Redis open to the namespace": (_redis_open_to_the_namespace, "redis", "admits every pod of the namespace"),
    "Redis without a NetworkPolicy": (_redis_without_network_policy, "redis", "no NetworkPolicy selects the Redis pod"),
    "Redis admits a pod that does not use it": (
        _toolbox_admitted_to_redis, "redis",
        "Deployment/socialalign-toolbox: is admitted to Redis but gets no Redis URL"),
    "Redis does not admit a crawl worker": (
        _crawl_worker_not_admitted, "redis", "worker group cpu: gets the Redis URL but no NetworkPolicy admits it"),
}


def _run(check: str, objects: list[dict[str, Any]], crd_schemas: dict[str, Any]) -> list[str]:
    per_object = {"ray_schema": lambda o: k8s.check_ray_schema(o, crd_schemas) if o["kind"] in k8s.RAY_KINDS else [],
                  "kuberay_rules": lambda o: k8s.check_kuberay_rules(o) if o["kind"] in k8s.RAY_KINDS else [],
                  "core_schema": k8s.check_core_schema}
    if check in per_object:
        return [p for o in objects for p in per_object[check](o)]
    return {"references": k8s.check_references, "stages": k8s.check_stages, "serve": k8s.check_serve,
            "security": k8s.check_pod_security, "serving": k8s.check_read_only_serving,
            "redis": k8s.check_redis}[check](objects)


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_manifest_fails_validation_naming_the_problem(renders, crd_schemas, case: str) -> None:
    breaks, check, expected = BROKEN[case]
    objects = copy.deepcopy(renders["gpu"])
    assert _run(check, objects, crd_schemas) == []
    breaks(objects)
    problems = _run(check, objects, crd_schemas)
    assert any(expected in problem for problem in problems), problems


def test_int_or_string_quantities_are_accepted(renders, crd_schemas) -> None:
    objects = copy.deepcopy(renders["gpu"])
    _head(_job(objects, "train"))["resources"] = {"limits": {"cpu": 2, "memory": "4Gi"}}
    assert k8s.check_ray_schema(_job(objects, "train"), crd_schemas) == []
    _head(_job(objects, "train"))["resources"] = {"limits": {"cpu": 2.5}}
    assert any("cpu" in p for p in k8s.check_ray_schema(_job(objects, "train"), crd_schemas))


def test_preserve_unknown_fields_allows_any_field() -> None:
    schema = k8s.openapi_to_json_schema({"type": "object", "properties": {
        "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                 "properties": {"a": {"type": "string"}}},
        "closed": {"type": "object", "properties": {"a": {"type": "string"}}}}})
    from jsonschema import Draft7Validator

    validator = Draft7Validator(schema)
    assert validator.is_valid({"open": {"a": "x", "anything": [1, 2]}})
    assert not validator.is_valid({"closed": {"a": "x", "anything": 1}})


def test_a_broken_kustomization_on_disk_fails(tmp_path: Path, crd_dir: Path, renders) -> None:
    """A whole broken overlay, as a user might write it: each kind of problem is reported."""
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [{os.path.relpath(REPO / 'k8s' / 'overlays' / 'gpu', tmp_path)}]\n"  # kustomize: relative only
        "patches:\n  - path: broken.yaml\n    target: {kind: RayJob, name: socialalign-crawl}\n")
    (tmp_path / "broken.yaml").write_text(
        "- {op: replace, path: /spec/entrypoint, value: python -m crawl_actorz --config /config/crawl.yaml}\n"
        "- {op: replace, path: /spec/rayClusterSpec/workerGroupSpecs/0/replicas, value: two}\n"
        "- {op: replace, path: /spec/rayClusterSpec/headGroupSpec/template/spec/containers/0/env/0/valueFrom/"
        "secretKeyRef/name, value: no-such-secret}\n")
    problems = k8s.validate(k8s.render(tmp_path), crd_dir)
    assert any("'two' is not of type 'integer'" in p for p in problems), problems
    assert any("'crawl_actorz' is not a stage module" in p for p in problems), problems
    assert any("Secret 'no-such-secret' is not in the render" in p for p in problems), problems
    assert k8s.main([str(tmp_path), "--crds", str(crd_dir)]) == 1
