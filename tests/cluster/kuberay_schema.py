"""JSON schemas for the KubeRay ``ray.io/v1`` RayCluster and RayJob fields our manifests use.

Checked field by field (types, formats, defaults, enums, ``required``; ``v1`` schema only, not the
``v1alpha1`` one the same files carry) against generated KubeRay CRDs, read in place; the CRD text itself
is not vendored here:
- RayCluster: ray-project/kuberay ``helm-chart/kuberay-operator/crds/ray.io_rayclusters.yaml`` at commit
  017710c0 (master after v1.5.0; it already has the unused 1.6 fields ttlSecondsAfterIdle, upgradeStrategy).
- RayJob: ray-project/kuberay ``helm-chart/kuberay-operator/crds/ray.io_rayjobs.yaml`` at commit 037e91b0
  (an older line, controller-gen v0.15), and the v1.5-era copy in the DataDog/kuberay fork,
  ``ray-operator/config/crd/bases/ray.io_rayjobs.yaml`` at commit 5a956492 (controller-gen v0.16.5,
  with authOptions and deletionRules); submissionMode values from ``ray-operator/apis/ray/v1/rayjob_types.go``.
Deliberately stricter than the CRDs, and marked so below: ``additionalProperties: false`` everywhere,
because the API server silently prunes unknown fields of a structural CRD, so a misspelt field would
otherwise be dropped without a word instead of failing here; a container ``image``; lower bounds on
counts; enums where the CRD has a plain string of which core/v1 or the operator knows only a few values.
"""

INT_OR_STRING = {"anyOf": [{"type": "integer"}, {"type": "string",
                                                "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
                                                           r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?"
                                                           r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"}]}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
INT32_MAX = 2**31 - 1


def _obj(properties: dict, required: tuple = ()) -> dict:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def _int32(minimum: int, **default) -> dict:
    """A ``format: int32`` integer of the CRD; the lower bound is ours (the CRD sets none), the default is its."""
    return {"type": "integer", "format": "int32", "minimum": minimum, "maximum": INT32_MAX, **default}


_KEY_REF = _obj({"name": {"type": "string"}, "key": {"type": "string"}, "optional": {"type": "boolean"}}, ("key",))
ENV_VAR = _obj({"name": {"type": "string"}, "value": {"type": "string"},
                "valueFrom": _obj({"secretKeyRef": _KEY_REF, "configMapKeyRef": _KEY_REF})}, ("name",))
ENV_FROM = _obj({"prefix": {"type": "string"},
                 "secretRef": _obj({"name": {"type": "string"}, "optional": {"type": "boolean"}}),
                 "configMapRef": _obj({"name": {"type": "string"}, "optional": {"type": "boolean"}})})
RESOURCES = _obj({"requests": {"type": "object", "additionalProperties": INT_OR_STRING},
                  "limits": {"type": "object", "additionalProperties": INT_OR_STRING}})
CONTAINER = _obj({
    "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
    "image": {"type": "string", "minLength": 1},
    "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},  # CRD: string; the core/v1 values
    "command": {"type": "array", "items": {"type": "string"}},
    "args": {"type": "array", "items": {"type": "string"}},
    "resources": RESOURCES,
    "env": {"type": "array", "items": ENV_VAR},
    "envFrom": {"type": "array", "items": ENV_FROM},
    "ports": {"type": "array", "items": _obj({"containerPort": {"type": "integer"}, "name": {"type": "string"},
                                              "protocol": {"type": "string"}}, ("containerPort",))},
    "volumeMounts": {"type": "array", "items": _obj({"name": {"type": "string"}, "mountPath": {"type": "string"},
                                                     "readOnly": {"type": "boolean"},
                                                     "subPath": {"type": "string"}}, ("name", "mountPath"))},
}, ("name", "image"))  # the CRD leaves image optional (core/v1 does); a Ray pod without one cannot start
VOLUME = _obj({
    "name": {"type": "string"},
    "persistentVolumeClaim": _obj({"claimName": {"type": "string"}, "readOnly": {"type": "boolean"}},
                                  ("claimName",)),
    "emptyDir": _obj({"medium": {"type": "string"}, "sizeLimit": INT_OR_STRING}),
    "secret": _obj({"secretName": {"type": "string"}, "optional": {"type": "boolean"}}),
}, ("name",))
POD_TEMPLATE = _obj({
    "metadata": _obj({"labels": STRING_MAP, "annotations": STRING_MAP}),
    "spec": _obj({
        "containers": {"type": "array", "minItems": 1, "items": CONTAINER},
        "volumes": {"type": "array", "items": VOLUME},
        "nodeSelector": STRING_MAP,
        "tolerations": {"type": "array", "items": {"type": "object"}},
        "serviceAccountName": {"type": "string"},
        "terminationGracePeriodSeconds": {"type": "integer", "format": "int64", "minimum": 0},  # core/v1 PodSpec
    }, ("containers",)),
})
RAY_START_PARAMS = STRING_MAP  # the CRD types every value as a string: num-cpus: "0", not 0
HEAD_GROUP = _obj({"rayStartParams": RAY_START_PARAMS, "template": POD_TEMPLATE,
                   # CRD: plain string; the values of core/v1 ServiceType
                   "serviceType": {"type": "string", "enum": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]},
                   "enableIngress": {"type": "boolean"}}, ("template",))
WORKER_GROUP = _obj({
    "groupName": {"type": "string", "minLength": 1},
    "replicas": _int32(0, default=0),
    "minReplicas": _int32(0, default=0),
    "maxReplicas": _int32(0, default=INT32_MAX),
    "idleTimeoutSeconds": _int32(0),
    "numOfHosts": _int32(1, default=1),
    "rayStartParams": RAY_START_PARAMS,  # required in 037e91b0, optional in the v1.5/master CRDs
    "template": POD_TEMPLATE,
}, ("groupName", "maxReplicas", "minReplicas", "template"))  # the CRD's list (the API server fills the defaults)
RAY_CLUSTER_SPEC = _obj({
    "rayVersion": {"type": "string"},
    "enableInTreeAutoscaling": {"type": "boolean"},
    "autoscalerOptions": {"type": "object"},
    # KubeRay >= 1.5.1 (PR 4179): a token Secret per cluster, RAY_AUTH_MODE/RAY_AUTH_TOKEN set on every pod
    "authOptions": _obj({"mode": {"enum": ["disabled", "token"]}}),
    "headGroupSpec": HEAD_GROUP,
    "workerGroupSpecs": {"type": "array", "items": WORKER_GROUP},
    "suspend": {"type": "boolean"},
}, ("headGroupSpec",))
METADATA = _obj({"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                 "namespace": {"type": "string"}, "labels": STRING_MAP, "annotations": STRING_MAP}, ("name",))

RAYCLUSTER = _obj({"apiVersion": {"const": "ray.io/v1"}, "kind": {"const": "RayCluster"},
                   "metadata": METADATA, "spec": RAY_CLUSTER_SPEC}, ("apiVersion", "kind", "metadata", "spec"))
RAYJOB = _obj({"apiVersion": {"const": "ray.io/v1"}, "kind": {"const": "RayJob"}, "metadata": METADATA,
               "spec": _obj({
                   "entrypoint": {"type": "string"},  # optional in v1 (InteractiveMode has none)
                   "runtimeEnvYAML": {"type": "string"},
                   "jobId": {"type": "string"},
                   # CRD: plain string, default K8sJobMode; the JobSubmissionMode values of v1.5
                   "submissionMode": {"type": "string", "default": "K8sJobMode",
                                      "enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
                   "shutdownAfterJobFinishes": {"type": "boolean"},
                   "ttlSecondsAfterFinished": _int32(0, default=0),
                   "activeDeadlineSeconds": _int32(1),  # "must be positive" (RayJobSpec doc), unchecked by the CRD
                   "backoffLimit": _int32(0, default=0),
                   "entrypointNumCpus": {"type": "number"},
                   "entrypointNumGpus": {"type": "number"},
                   "clusterSelector": STRING_MAP,
                   "suspend": {"type": "boolean"},
                   "rayClusterSpec": RAY_CLUSTER_SPEC,
               })}, ("apiVersion", "kind", "metadata", "spec"))

SCHEMAS = {"RayCluster": RAYCLUSTER, "RayJob": RAYJOB}
