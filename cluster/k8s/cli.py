"""Check a kustomize overlay of `k8s/` offline, before `kubectl apply -k`: `python -m cluster.k8s k8s/overlays/gpu`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cluster.k8s.crds import CRD_DIRS, CRD_ENV, CRD_FILES, crd_candidates, find_crds, has_crds
from cluster.k8s.overlay import RenderError, render, validate
from cluster.k8s.pod_config import placeholder_secrets

PROG = "python -m cluster.k8s"


def main(argv: list[str] | None = None) -> int:
    """0 when every overlay passes, 1 when one has problems, 2 when the CRDs to check Ray resources are missing."""
    parser = _parser()
    args = parser.parse_args(argv)
    crd_dir = _crd_dir(args, parser.prog)
    if crd_dir is None and not args.no_crds:
        return 2
    failed = False
    for overlay in args.overlays:
        placeholders: list[str] = []
        try:
            objects = render(overlay)
            problems = validate(objects, crd_dir, build_app=args.build_app)
            placeholders = placeholder_secrets(objects)
        except RenderError as error:
            problems = [str(error)]
        failed |= bool(problems)
        print(f"{overlay}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
        for problem in problems:
            print(f"  {problem}")
        if placeholders:  # the base's and the example's: a template, not a deployment
            print(f"  placeholders to replace before deploying: {'; '.join(placeholders)}")
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("overlays", nargs="+", help="kustomize directories, e.g. k8s/overlays/gpu")
    crds = parser.add_mutually_exclusive_group()
    crds.add_argument("--crds", help=f"directory with KubeRay's ray.io_*.yaml CRDs (default: ${CRD_ENV}, "
                      f"else the first of {' and '.join(str(d) for d in CRD_DIRS)} that has them)")
    crds.add_argument("--no-crds", action="store_true", help="check Ray resources without their CRD schema")
    parser.add_argument("--build-app", action="store_true",
                        help="also build the Serve app from the RayService's config")
    return parser


def _crd_dir(args: argparse.Namespace, prog: str) -> Path | None:
    """The CRD directory to use; None (with the reason on stderr) when there is none."""
    if args.no_crds:
        print(f"{prog}: warning: --no-crds: Ray resources are checked without their CRD schema", file=sys.stderr)
        return None
    if args.crds is not None:
        found = Path(args.crds) if has_crds(args.crds) else None
        where = args.crds
    else:
        found = find_crds()
        where = " or ".join(str(d) for d in crd_candidates())
    if found is None:
        print(f"{prog}: error: no KubeRay CRDs ({', '.join(CRD_FILES.values())}) in {where}: put KubeRay v1.7's "
              f"ray-operator/config/crd/bases there, point --crds or ${CRD_ENV} at them, or pass --no-crds "
              "to check Ray resources without their schema", file=sys.stderr)
    return found
