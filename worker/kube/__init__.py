"""Kubernetes manifests for gradesync, generated from ``destinations.toml`` and a small cluster file.

Why a generator and not a Helm chart or kustomize overlays: the objects that matter for scaling exist
*per destination group* — a worker Deployment, its PodDisruptionBudget and its KEDA ScaledObject with
one trigger per destination queue — and their numbers come from the destinations file (which
destinations exist, their rate limits, the secrets they name). Kustomize cannot loop over a TOML file;
a Helm chart would have to repeat destinations.toml in values.yaml and compute the replica caps in Go
templates. A small typed generator that reads the real file (the same one the workers mount) cannot drift
from it, write plain YAML that ``kubectl apply -k`` takes as it is, and are tested like the rest of the
code (``tests/unit/test_kube_manifests.py``). Neither helm nor kustomize is needed to run it.

    python -m worker.kube --cluster deploy/kubernetes/cluster.example.toml \\
        --destinations deploy/destinations.example.toml --out deploy/kubernetes/example
"""
