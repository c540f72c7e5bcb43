"""Write the KubeRay manifests in cluster/ from one description, so they cannot drift apart.

    python cluster/render.py           rewrite cluster/raycluster.yaml, cluster/rayjob-*.yaml and
                                       jobs/runtime-env-gpu.yaml
    python cluster/render.py --check   exit 1 if a committed manifest differs from what this writes

Edit the constants here (image, storage, node shape, lease timing) or RUNS, then re-render. Production
pods run PROJECT_IMAGE (cluster/Dockerfile: the code and its pinned dependencies), so the RayJobs'
runtime environment carries environment variables only: no `pip`, no `working_dir`. The pip list of
jobs/runtime-env-gpu.yaml, for development submissions of a checkout, comes from pyproject.toml (the
base dependencies + the gpu extra).
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))  # doc_blocks: generated files
from doc_blocks import write_or_check  # noqa: E402

HERE = Path(__file__).resolve().parent
RAY_VERSION = "2.60.0"
BASE_IMAGE = f"rayproject/ray:{RAY_VERSION}-py311-gpu"   # what cluster/Dockerfile builds on (its FROM)
# The project image built from cluster/Dockerfile and pushed by you: a placeholder, set your registry. Tag it
# with a release and push a new tag for every change of code or pins (never a moving tag such as `latest`):
# a retried job then runs exactly the code and packages its first attempt ran. Head and workers run it.
PROJECT_IMAGE = "ghcr.io/YOUR-ORG/upft-ray:0.1.0"
SHARED_PVC = "upft-shared"        # a ReadWriteMany claim: data, HF cache, run directories, checkpoints
HF_SECRET = "hf-token"            # kubectl create secret generic hf-token --from-literal=token=...
S3_SECRET = "upft-s3-credentials"  # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION keys
GPU_NODE = {"cpu": "160", "memory": "1500Gi", "nvidia.com/gpu": "8"}   # one 8xH100 node per worker pod

# The run directory's lease (upft_ray/io/lease.py) against the RayJobs' retries (backoffLimit). A retry
# starts a new cluster while the old attempt's claim can still look live: its heartbeat is up to
# LEASE_TIMEOUT_S old before it counts as stale, and the old pods may go on beating through their
# termination grace period (POD_GRACE_S). With no wait the new driver would exit 2 at once
# and spend a retry; waiting LEASE_WAIT_S (well above timeout + grace) it takes the run over instead.
# A live attempt that is still beating after the wait is refused (exit 2) as before.
LEASE_TIMEOUT_S = 60   # a holder silent this long is taken over (UPFT_LEASE_TIMEOUT_S, the package default)
LEASE_WAIT_S = 180     # how long a new attempt waits for a live holder to go stale (UPFT_LEASE_WAIT_S)
POD_GRACE_S = 30       # terminationGracePeriodSeconds of every pod (Kubernetes' default, written out)
BACKOFF_LIMIT = 2      # RayJob retries, each on a fresh cluster that resumes from the run directory
assert LEASE_WAIT_S >= LEASE_TIMEOUT_S + POD_GRACE_S + 60, "a retry must outwait the attempt it replaces"
LEASE_ENV = {"UPFT_LEASE_TIMEOUT_S": str(LEASE_TIMEOUT_S), "UPFT_LEASE_WAIT_S": str(LEASE_WAIT_S)}


def _configs(run: str, *baselines: str) -> list[str]:
    """Return the job configs of one RayJob: the UPFT run, then its baselines (sft, rft16, label-filter)."""
    return [f"jobs/configs/{run}.yaml"] + [f"jobs/configs/{run}-{b}.yaml" for b in baselines]


# name: (configs run in turn, GPU nodes, activeDeadlineSeconds); docs/PAPER.md maps the paper's rows to them
RUNS = {
    "qwen-math-omi2": (_configs("qwen-math-omi2", "sft"), 2, 4 * 86400),
    "qwen-math-uhard": (_configs("qwen-math-uhard", "sft"), 2, 2 * 86400),
    "qwen-math-prm12k": (_configs("qwen-math-prm12k", "sft", "rft16", "label-filter"), 2, 3 * 86400),
    "qwen-math-limo": (_configs("qwen-math-limo", "sft"), 1, 86400),
    "llama-prm12k": (_configs("llama-prm12k", "sft", "rft16"), 2, 2 * 86400),
    "r1distill-limo": (_configs("r1distill-limo", "sft"), 1, 86400),
    "r1distill-uhard": (_configs("r1distill-uhard", "sft"), 2, 6 * 86400),
    "r1distill-prm12k": (_configs("r1distill-prm12k", "rft16"), 2, 6 * 86400),
}


def pod_template(name: str, resources: dict, env: dict | None = None) -> dict:
    """Return a Ray pod template of the project image: shared storage, /dev/shm for NCCL and vLLM,
    credentials from secrets, plus the environment variables ``env``."""
    return {"spec": {
        "containers": [{
            "name": name,
            "image": PROJECT_IMAGE,
            "resources": {"requests": dict(resources), "limits": dict(resources)},
            "env": [
                {"name": "HF_HOME", "value": "/mnt/shared/hf-cache"},
                {"name": "UPFT_CACHE", "value": "/mnt/shared/upft-cache"},
                *({"name": k, "value": v} for k, v in (env or {}).items()),
                {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": HF_SECRET, "key": "token",
                                                                    "optional": True}}},
            ],
            "envFrom": [{"secretRef": {"name": S3_SECRET, "optional": True}}],
            "volumeMounts": [{"name": "shared", "mountPath": "/mnt/shared"},
                             {"name": "dshm", "mountPath": "/dev/shm"}],
        }],
        "terminationGracePeriodSeconds": POD_GRACE_S,
        "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": SHARED_PVC}},
                    {"name": "dshm", "emptyDir": {"medium": "Memory"}}],
    }}


def cluster_spec(min_nodes: int, max_nodes: int, nodes: int, autoscale: bool,
                 head_env: dict | None = None) -> dict:
    """Return a RayClusterSpec: a CPU-only head (the job driver, no tasks; ``head_env`` added to its
    environment) and a GPU worker group."""
    return {
        "rayVersion": RAY_VERSION,
        "enableInTreeAutoscaling": autoscale,
        # Ray 2.60 heads want token auth; KubeRay (>= 1.5.1) makes one token Secret per cluster and
        # gives it to the head, the workers and a RayJob's submitter.
        "authOptions": {"mode": "token"},
        "headGroupSpec": {
            "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
            "template": pod_template("ray-head", {"cpu": "8", "memory": "64Gi"}, head_env),
        },
        "workerGroupSpecs": [{
            "groupName": "gpu",
            "replicas": nodes,
            "minReplicas": min_nodes,
            "maxReplicas": max_nodes,
            "rayStartParams": {},
            "template": pod_template("ray-worker", GPU_NODE),
        }],
    }


def pip_requirements() -> list[str]:
    """Return the packages the development runtime environment installs: pyproject's dependencies + gpu extra."""
    project = tomllib.loads((HERE.parent / "pyproject.toml").read_text())["project"]
    # The image already has this Ray; reinstalling it per job would only risk a mismatch.
    deps = [d for d in project["dependencies"] if not d.startswith("ray[")]
    return deps + project["optional-dependencies"]["gpu"]


def runtime_env() -> dict:
    """Return the development runtime environment (jobs/runtime-env-gpu.yaml): pyproject's open ranges,
    installed at job start, for a checkout submitted with `ray job submit --working-dir .`. Production
    jobs run the code and the pinned packages of PROJECT_IMAGE instead (rayjob_runtime_env)."""
    return {"pip": pip_requirements(), "env_vars": {"TOKENIZERS_PARALLELISM": "false"}}


def rayjob_runtime_env() -> dict:
    """Return the RayJobs' runtime environment: environment variables only (the code and packages are the
    image's), seen by the driver and every worker. The lease timing is also in the head's environment."""
    return {"env_vars": {"TOKENIZERS_PARALLELISM": "false", **LEASE_ENV}}


def rayjob(name: str, configs: list[str], nodes: int, deadline_s: int) -> dict:
    """Return the RayJob for one large run: its own cluster, torn down after the job."""
    env = rayjob_runtime_env()
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": f"upft-{name}", "labels": {"app.kubernetes.io/name": "upft-ray"}},
        "spec": {
            "entrypoint": "python jobs/upft_pipeline.py " + " ".join(f"--config {c}" for c in configs),
            "runtimeEnvYAML": yaml.safe_dump(env, sort_keys=False),
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 3600,
            "activeDeadlineSeconds": deadline_s,
            # A retry gets a new cluster; the run directory on shared storage lets it resume, the lease
            # wait lets it outlast the attempt it replaces, and the image makes it run the same code.
            "backoffLimit": BACKOFF_LIMIT,
            "rayClusterSpec": cluster_spec(nodes, nodes, nodes, autoscale=False, head_env=LEASE_ENV),
        },
    }


def raycluster() -> dict:
    """Return the long-lived RayCluster that `ray job submit` targets (GPU workers autoscale 0-4)."""
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster",
            "metadata": {"name": "upft-ray", "labels": {"app.kubernetes.io/name": "upft-ray"}},
            "spec": cluster_spec(0, 4, 0, autoscale=True)}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (runtimeEnvYAML) as literal blocks, long lines unwrapped."""


_Dumper.add_representer(str, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style="|" if "\n" in v else None))


def _dump(doc: dict) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1 << 16)


def manifests() -> dict[str, str]:
    """Return {path relative to the repository: YAML text} for every file this script writes."""
    header = "# Written by cluster/render.py from one description; edit that file and re-render.\n"
    dev = ("# For development only; production jobs use the image (cluster/Dockerfile).\n"
           "# Installs pyproject.toml's open ranges at job start, for a checkout:\n"
           "# Use: ray job submit --working-dir . --runtime-env jobs/runtime-env-gpu.yaml "
           "-- python jobs/upft_pipeline.py ...\n")
    out = {"jobs/runtime-env-gpu.yaml": header + dev + _dump(runtime_env()),
           "cluster/raycluster.yaml": header + "# Apply: kubectl apply -f cluster/raycluster.yaml (see cluster/README.md)\n"
           + _dump(raycluster())}
    for name, (configs, nodes, deadline) in RUNS.items():
        out[f"cluster/rayjob-{name}.yaml"] = (header + f"# Apply: kubectl apply -f cluster/rayjob-{name}.yaml\n"
                                      + _dump(rayjob(name, configs, nodes, deadline)))
    return out


def main() -> int:
    check = "--check" in sys.argv
    stale = [name for name, text in manifests().items() if not write_or_check(HERE.parent / name, text, check)]
    if stale:
        print(f"stale manifests (run python cluster/render.py): {', '.join(stale)}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
