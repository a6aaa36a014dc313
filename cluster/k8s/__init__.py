"""Check a kustomize overlay of `k8s/` offline, before `kubectl apply -k`: `python -m cluster.k8s k8s/overlays/gpu`.

Every check returns problems as lines "<Kind>/<name>: <what is wrong>"; none means it passed.

- `check_ray_schema` (crds): RayJob/RayService/RayCluster against the KubeRay CRDs' openAPIV3Schema,
  with unknown fields as errors (what `kubectl apply`'s strict field validation does);
  `check_kuberay_rules` (admission): the admission rules KubeRay applies that can be checked
  without a cluster.
- `check_core_schema` (core_schema): every core resource, and every pod template inside a Ray
  resource, with kubernetes-validate (the Kubernetes OpenAPI schemas, strict).
- `check_references` (references): every Secret, ConfigMap (and key) and PVC a pod uses is in the
  render; volume mounts name volumes; Services select pods and name their ports.
- `check_stages` (rayjobs): each RayJob runs `python -m <stage module> --config <file>` of a stage
  registered in cluster.stages, whose config file (from the mounted ConfigMap, with the pod's
  environment: pod_config) loads with that stage's model; secrets come from Secrets, never
  literals or the runtime env; absolute paths lie on mounted volumes and in-cluster URLs name
  Services that exist (targets); the Ray cluster holds the actors the stage asks for, and every
  GPU it asks for is used (fit); Ray versions and images are pinned (versions).
- `check_serve` (rayservice): the RayService's serveConfigV2 is serve/serve_config.yaml, and is
  what the serve stage's deploy-config action writes for the mounted serve.yaml; optionally the
  app builds from it.
- `check_pod_security`, `check_read_only_serving`, `check_redis` (security): every pod template
  drops its privileges (non-root, no privilege escalation, no capabilities, seccomp, read-only
  root); the RayService's pods mount shared storage read-only; Redis asks for a password from a
  Secret, every Redis URL carries it, and a NetworkPolicy admits exactly the pods that get it.
  Secret values holding PLACEHOLDER are read as stand-ins and listed by `placeholder_secrets`.

`render` and `validate` (overlay) run them all on an overlay; `main` (cli) is the command. Like the
rest of the entry layer, this package knows the stages only through the registry.
"""

from cluster.k8s.admission import check_kuberay_rules
from cluster.k8s.cli import main
from cluster.k8s.core_schema import K8S_VERSION, check_core_schema
from cluster.k8s.crds import (
    CRD_DIRS,
    CRD_ENV,
    CRD_FILES,
    check_ray_schema,
    crd_candidates,
    crd_schemas,
    find_crds,
    has_crds,
    openapi_to_json_schema,
)
from cluster.k8s.fit import ray_resources, stage_demand
from cluster.k8s.manifest import RAY_KINDS, cluster_spec, pod_templates
from cluster.k8s.overlay import RenderError, render, validate
from cluster.k8s.pod_config import load_mounted_config, placeholder_secrets, pod_environment
from cluster.k8s.rayjobs import check_stages, rayjob_command, stage_of_module
from cluster.k8s.rayservice import SERVE_CONFIG, check_serve, deploy_config_document
from cluster.k8s.references import check_references
from cluster.k8s.security import WRITABLE_ROOT, check_pod_security, check_read_only_serving, check_redis

__all__ = [
    "CRD_DIRS",
    "CRD_ENV",
    "CRD_FILES",
    "K8S_VERSION",
    "RAY_KINDS",
    "SERVE_CONFIG",
    "WRITABLE_ROOT",
    "RenderError",
    "check_core_schema",
    "check_kuberay_rules",
    "check_pod_security",
    "check_ray_schema",
    "check_read_only_serving",
    "check_redis",
    "check_references",
    "check_serve",
    "check_stages",
    "cluster_spec",
    "crd_candidates",
    "crd_schemas",
    "deploy_config_document",
    "find_crds",
    "has_crds",
    "load_mounted_config",
    "main",
    "openapi_to_json_schema",
    "placeholder_secrets",
    "pod_environment",
    "pod_templates",
    "ray_resources",
    "rayjob_command",
    "render",
    "stage_demand",
    "stage_of_module",
    "validate",
]
