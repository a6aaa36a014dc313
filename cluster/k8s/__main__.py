"""`python -m cluster.k8s <overlay>...`: check kustomize overlays offline (exit 0 ok, 1 problems, 2 no CRDs)."""

import sys

from cluster.k8s.cli import main

sys.exit(main())
