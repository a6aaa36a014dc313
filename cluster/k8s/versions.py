"""Versions come from one place: every Ray resource runs the Ray this project runs, every image is
pinned (the overlays include k8s/components/versions, which sets both)."""

from __future__ import annotations

from importlib.metadata import version as installed_version

from cluster.k8s.manifest import RAY_KINDS, Objects, Problems, cluster_spec, name_of, pod_templates


def check_ray_versions(objects: Objects) -> Problems:
    ray_version = installed_version("ray")
    ray_objects = [(o, cluster_spec(o).get("rayVersion")) for o in objects if o.get("kind") in RAY_KINDS]
    return [f"{name_of(o)}: rayVersion {wanted!r} is not the Ray this project runs ({ray_version})"
            for o, wanted in ray_objects if str(wanted) != ray_version]


def check_images(objects: Objects) -> Problems:
    problems = []
    for obj in objects:
        for where, spec, _ in pod_templates(obj):
            for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
                image = str(container.get("image", ""))
                tag = image.rsplit("/", 1)[-1]
                if ":" not in tag and "@" not in image or tag.endswith(":latest"):
                    problems.append(f"{name_of(obj)}: {where}container {container.get('name')}: image {image!r} has no "
                                    "pinned tag (overlays include k8s/components/versions, which sets it)")
    return problems
