"""Cluster manifests: KubeRay (RayCluster, RayJob, RayService, the shared volume claim), the AWS cluster launcher, the
image and its build context, .rayignore.

Nothing here needs a cluster or the network: every key of every Kubernetes manifest is checked against the fields its
type has (KubeRay's v1 types as written down below, the Pod template and the claim through the `kubernetes` client's
models), and the files against the installed Ray, Ray's own cluster-config schema and validation, the CLI's option
parser and config validation, and serve/config.yaml.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes.client
import pytest
import ray
import yaml
from conftest import REPO

from pareto_ray.cli import build_parser
from pareto_ray.config import load_config

KUBERAY = REPO / "cluster" / "kuberay"
IMAGE_ROOT = "/home/ray/pareto-ray"  # where cluster/Dockerfile puts the project
HEAD_PORTS = {6379, 8265, 10001, 8000}
SHARED_CLAIM = "pareto-ray-shared"
GIB = 2**30

# ---------------------------------------------------------------------------------------------------------------------
# The fields of KubeRay's ray.io/v1 types, read off the json tags of ray-operator/apis/ray/v1/*_types.go at KubeRay
# v1.5.1, the oldest KubeRay the manifests are for. v1.7.0 and master add fields (RayClusterSpec.networkPolicy,
# WorkerGroupSpec.priority, RayJobSpec.preRunningDeadlineSeconds, ...) and rename or remove none of these, so what
# passes here is valid there too; a field they added would be reported, since v1.5.1 drops it.
# A field's value says what it holds: the name of another entry here, the name of a model of the `kubernetes` client
# (corev1 types: "V1PodTemplateSpec"), MAP (map[string]string), [T] (a list of T), a scalar type, or a tuple of the
# allowed strings (an enum).
MAP = "map[string]string"
KUBERAY_V1: dict[str, dict[str, Any]] = {
    "RayCluster": {"apiVersion": str, "kind": str, "metadata": "V1ObjectMeta", "spec": "RayClusterSpec"},
    "RayJob": {"apiVersion": str, "kind": str, "metadata": "V1ObjectMeta", "spec": "RayJobSpec"},
    "RayService": {"apiVersion": str, "kind": str, "metadata": "V1ObjectMeta", "spec": "RayServiceSpec"},
    "RayClusterSpec": {
        "authOptions": "AuthOptions", "suspend": bool, "managedBy": str, "autoscalerOptions": "AutoscalerOptions",
        "headServiceAnnotations": MAP, "enableInTreeAutoscaling": bool, "gcsFaultToleranceOptions": "GcsFaultToleranceOptions",
        "headGroupSpec": "HeadGroupSpec", "rayVersion": str, "workerGroupSpecs": ["WorkerGroupSpec"]},
    "AuthOptions": {"mode": ("disabled", "token")},
    "GcsFaultToleranceOptions": {"redisUsername": "RedisCredential", "redisPassword": "RedisCredential",
                                 "externalStorageNamespace": str, "redisAddress": str},
    "RedisCredential": {"valueFrom": "V1EnvVarSource", "value": str},
    "HeadGroupSpec": {"template": "V1PodTemplateSpec", "headService": "V1Service", "enableIngress": bool, "resources": MAP,
                      "labels": MAP, "rayStartParams": MAP, "serviceType": str},
    "WorkerGroupSpec": {"suspend": bool, "groupName": str, "replicas": int, "minReplicas": int, "maxReplicas": int,
                        "idleTimeoutSeconds": int, "resources": MAP, "labels": MAP, "rayStartParams": MAP,
                        "template": "V1PodTemplateSpec", "scaleStrategy": "ScaleStrategy", "numOfHosts": int},
    "ScaleStrategy": {"workersToDelete": [str]},
    "AutoscalerOptions": {"resources": "V1ResourceRequirements", "image": str, "imagePullPolicy": str,
                          "securityContext": "V1SecurityContext", "idleTimeoutSeconds": int, "upscalingMode": str,
                          "version": ("v1", "v2"), "env": ["V1EnvVar"], "envFrom": ["V1EnvFromSource"],
                          "volumeMounts": ["V1VolumeMount"]},
    "RayJobSpec": {
        "activeDeadlineSeconds": int, "backoffLimit": int, "rayClusterSpec": "RayClusterSpec",
        "submitterPodTemplate": "V1PodTemplateSpec", "metadata": MAP, "clusterSelector": MAP,
        "submitterConfig": "SubmitterConfig", "managedBy": str, "deletionStrategy": "DeletionStrategy", "entrypoint": str,
        "runtimeEnvYAML": str, "jobId": str, "submissionMode": ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"),
        "entrypointResources": str, "entrypointNumCpus": float, "entrypointNumGpus": float, "ttlSecondsAfterFinished": int,
        "shutdownAfterJobFinishes": bool, "suspend": bool},
    "SubmitterConfig": {"backoffLimit": int},
    "DeletionStrategy": {"onSuccess": "DeletionPolicy", "onFailure": "DeletionPolicy", "deletionRules": ["DeletionRule"]},
    "DeletionPolicy": {"policy": str},
    "DeletionRule": {"policy": str, "condition": "DeletionCondition"},
    "DeletionCondition": {"jobStatus": str, "ttlSeconds": int},
    "RayServiceSpec": {
        "rayClusterDeletionDelaySeconds": int, "serviceUnhealthySecondThreshold": int,
        "deploymentUnhealthySecondThreshold": int, "serveService": "V1Service", "upgradeStrategy": "RayServiceUpgradeStrategy",
        "serveConfigV2": str, "rayClusterConfig": "RayClusterSpec", "excludeHeadPodFromServeSvc": bool},
    "RayServiceUpgradeStrategy": {"type": str, "clusterUpgradeOptions": "ClusterUpgradeOptions"},
    "ClusterUpgradeOptions": {"maxSurgePercent": int, "stepSizePercent": int, "intervalSeconds": int,
                              "gatewayClassName": str},
}
# Fields the v1.5.1 CRDs mark required (the Pod template's own required fields are the API server's to check).
KUBERAY_REQUIRED = {"RayClusterSpec": {"headGroupSpec"}, "HeadGroupSpec": {"template"},
                    "WorkerGroupSpec": {"groupName", "minReplicas", "maxReplicas", "template"},
                    "RayServiceSpec": {"rayClusterConfig"}, "GcsFaultToleranceOptions": {"redisAddress"},
                    "DeletionRule": {"condition", "policy"},
                    "ClusterUpgradeOptions": {"gatewayClassName", "intervalSeconds", "stepSizePercent"}}
_SCALARS = {"str": str, "int": int, "bool": bool, "float": float}


def _k8s_fields(model_name: str) -> dict[str, Any]:
    """JSON field name -> field type of a `kubernetes` client model (both the 'list[X]' and the 'List[X]' spellings).

    The models are those of the client's Kubernetes release (client 34 is Kubernetes 1.34, the corev1 that KubeRay
    v1.5.1 embeds in its CRDs; the dev extra asks for >= 29). A client newer than 1.34 also knows Pod fields that
    v1.5.1 would drop: the manifests use none of those, and a misspelling is reported by any client version.
    """
    model = getattr(kubernetes.client, model_name)
    return {model.attribute_map[attr]: _k8s_type(t) for attr, t in model.openapi_types.items()}


def _k8s_type(t: str) -> Any:
    if m := re.fullmatch(r"[lL]ist\[(.+)\]", t):
        return [_k8s_type(m.group(1))]
    if re.fullmatch(r"dict\(str, .+\)|Dict\[str, .+\]", t):
        return "map"  # labels, annotations, resource quantities: any key, scalar values
    if t in _SCALARS:
        return "quantity" if t == "str" else _SCALARS[t]  # a str field of corev1 may hold a quantity written as a number
    if t in ("object", "datetime", "bytes"):
        return object  # int-or-string and the like
    return t


def violations(value: Any, kind: Any, path: str) -> list[str]:
    """Every key of ``value`` that ``kind`` does not have, and every value of the wrong shape, as 'path: problem'."""
    if isinstance(kind, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        return [v for i, item in enumerate(value) for v in violations(item, kind[0], f"{path}[{i}]")]
    if isinstance(kind, tuple):
        return [] if value in kind else [f"{path}: {value!r} is not one of {', '.join(kind)}"]
    if kind in (MAP, "map"):
        if not isinstance(value, dict):
            return [f"{path}: expected a map, got {type(value).__name__}"]
        bad = [k for k, v in value.items() if not isinstance(v, str if kind == MAP else (str, int, float, bool))]
        return [f"{path}.{k}: expected a string, got {type(value[k]).__name__}" for k in bad]
    if kind is object:
        return []
    if kind == "quantity":
        ok = isinstance(value, (str, int, float)) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected a string, got {type(value).__name__}"]
    if isinstance(kind, type):
        ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
        ok = ok or (kind is float and isinstance(value, int) and not isinstance(value, bool))
        return [] if ok else [f"{path}: expected {kind.__name__}, got {type(value).__name__}"]
    fields = KUBERAY_V1[kind] if kind in KUBERAY_V1 else _k8s_fields(kind)
    if not isinstance(value, dict):
        return [f"{path}: expected a {kind} mapping, got {type(value).__name__}"]
    out = [f"{path}.{key}: not a field of {kind}" for key in value if key not in fields]
    out += [f"{path}.{key}: required by {kind}" for key in sorted(KUBERAY_REQUIRED.get(kind, set()) - set(value))]
    for key, item in value.items():
        if key in fields:
            out += violations(item, fields[key], f"{path}.{key}")
    return out


def manifest_violations(manifest: dict[str, Any]) -> list[str]:
    kind, api = manifest.get("kind"), manifest.get("apiVersion")
    if api == "ray.io/v1" and kind in ("RayCluster", "RayJob", "RayService"):
        return violations(manifest, kind, kind)
    if api == "v1" and kind == "PersistentVolumeClaim":
        return violations(manifest, f"V1{kind}", kind)
    return [f"{kind} {api}: not a kind these checks know"]


def _documents() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, doc) for path in sorted(KUBERAY.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())]


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((KUBERAY / name).read_text())


def _cluster_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    spec = manifest["spec"]
    return {"RayCluster": lambda: spec, "RayJob": lambda: spec["rayClusterSpec"],
            "RayService": lambda: spec["rayClusterConfig"]}[manifest["kind"]]()


def _groups(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    return [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]


def _containers(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for g in _groups(cluster) for c in g["template"]["spec"]["containers"]]


def _quantity(q: str | int | float) -> float:
    """A Kubernetes quantity as a number (CPUs, bytes, devices)."""
    m = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi|Ti|k|M|G|T)?", str(q))
    assert m, f"not a quantity: {q!r}"
    scale = {None: 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    return float(m.group(1)) * scale[m.group(2)]


# --- every key is a field ----------------------------------------------------------------------------------------------

def test_the_manifests_are_the_ones_checked_here():
    kinds = sorted((name, doc["kind"]) for name, doc in _documents())
    assert kinds == [("raycluster.yaml", "RayCluster"), ("rayjob.yaml", "RayJob"), ("rayservice.yaml", "RayService"),
                     ("shared-pvc.yaml", "PersistentVolumeClaim")]


@pytest.mark.parametrize(("name", "manifest"), _documents(), ids=[n for n, _ in _documents()])
def test_every_key_is_a_field_of_its_type(name, manifest):
    assert manifest_violations(manifest) == []


def _rename(obj: dict[str, Any], key: str, new: str) -> None:
    obj[new] = obj.pop(key)


@pytest.mark.parametrize(("name", "mutate", "reported"), [
    ("raycluster.yaml", lambda m: _rename(m["spec"], "workerGroupSpecs", "workerGroupSpec"),
     "RayCluster.spec.workerGroupSpec: not a field of RayClusterSpec"),
    ("raycluster.yaml", lambda m: _rename(m["spec"]["headGroupSpec"], "rayStartParams", "rayStartParam"),
     "RayCluster.spec.headGroupSpec.rayStartParam: not a field of HeadGroupSpec"),
    ("raycluster.yaml", lambda m: m["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
     "RayCluster.spec.headGroupSpec.rayStartParams.num-cpus: expected a string, got int"),
    ("raycluster.yaml", lambda m: m["spec"].update(authOptions={"mode": "tokens"}),
     "RayCluster.spec.authOptions.mode: 'tokens' is not one of disabled, token"),
    ("rayjob.yaml", lambda m: _rename(m["spec"], "backoffLimit", "backofLimit"),
     "RayJob.spec.backofLimit: not a field of RayJobSpec"),
    ("rayjob.yaml", lambda m: _rename(m["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0],
                                      "volumeMounts", "volumeMount"),
     "RayJob.spec.rayClusterSpec.workerGroupSpecs[0].template.spec.containers[0].volumeMount: not a field of V1Container"),
    ("rayjob.yaml", lambda m: m["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].pop("maxReplicas"),
     "RayJob.spec.rayClusterSpec.workerGroupSpecs[0].maxReplicas: required by WorkerGroupSpec"),
    ("rayservice.yaml", lambda m: _rename(m["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"], "containers",
                                          "container"),
     "RayService.spec.rayClusterConfig.headGroupSpec.template.spec.container: not a field of V1PodSpec"),
    ("rayservice.yaml", lambda m: m["spec"].update(networkPolicy={}),  # KubeRay >= 1.6 only
     "RayService.spec.networkPolicy: not a field of RayServiceSpec"),
    ("shared-pvc.yaml", lambda m: _rename(m["spec"], "accessModes", "accessMode"),
     "PersistentVolumeClaim.spec.accessMode: not a field of V1PersistentVolumeClaimSpec"),
])
def test_a_misspelled_or_misplaced_key_is_reported(name, mutate, reported):
    manifest = copy.deepcopy(_load(name))
    assert manifest_violations(manifest) == []
    mutate(manifest)
    assert reported in manifest_violations(manifest)


# --- what the objects say ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "kind"), [("raycluster.yaml", "RayCluster"), ("rayjob.yaml", "RayJob"),
                                            ("rayservice.yaml", "RayService")])
def test_kuberay_manifest_matches_installed_ray(name, kind):
    manifest = _load(name)
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == kind and manifest["metadata"]["name"]
    cluster = _cluster_spec(manifest)
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["authOptions"]["mode"] == "token"
    for container in _containers(cluster):
        assert re.search(rf"ray{re.escape(ray.__version__)}(-gpu)?$", container["image"]), container["image"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in head["ports"]} == HEAD_PORTS
    for group in cluster["workerGroupSpecs"]:
        assert group["groupName"] and group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_the_shared_claim_is_shipped_and_read_write_many():
    (claim,) = [doc for _, doc in _documents() if doc["kind"] == "PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == SHARED_CLAIM
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", claim["spec"]["storageClassName"])  # the parameter
    assert _quantity(claim["spec"]["resources"]["requests"]["storage"]) > 0
    claimed = {}
    for name, doc in _documents():
        if doc["kind"] != "PersistentVolumeClaim":
            for group in _groups(_cluster_spec(doc)):
                for volume in group["template"]["spec"].get("volumes", []):
                    if "persistentVolumeClaim" in volume:
                        claimed.setdefault(volume["persistentVolumeClaim"]["claimName"], set()).add(name)
    assert claimed == {SHARED_CLAIM: {"raycluster.yaml", "rayjob.yaml"}}  # every claim mounted is one shipped here


def _shared_mounts(cluster: dict[str, Any]) -> list[set[str]]:
    """Per container: where it mounts the shared claim."""
    out = []
    for group in _groups(cluster):
        spec = group["template"]["spec"]
        shared = {v["name"] for v in spec.get("volumes", [])
                  if v.get("persistentVolumeClaim", {}).get("claimName") == SHARED_CLAIM}
        out += [{m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] in shared} for c in spec["containers"]]
    return out


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_every_pod_mounts_the_shared_claim_at_mnt_shared(name):
    cluster = _cluster_spec(_load(name))
    assert _shared_mounts(cluster) == [{"/mnt/shared"}] * len(_containers(cluster))
    for container in _containers(cluster):
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["PARETO_RAY_CACHE"].startswith("/mnt/shared/")


# Allocatable of the nodes the pods are sized for, the low end of what raycluster.yaml's header works out (EKS-optimized
# AMI defaults): 4 vCPU / 16 GiB, so 3920m CPU and 13.8 GiB after kube-reserved and the eviction threshold. Each pod must
# also leave room for the node's DaemonSets.
NODES = {"g5.xlarge": {"cpu": 3.92, "memory": 13.8 * GIB, "nvidia.com/gpu": 1},  # GPU workers (also g4dn.xlarge)
         "m5.xlarge": {"cpu": 3.92, "memory": 13.8 * GIB}}                        # heads, CPU workers
DAEMONSET_ROOM = {"cpu": 0.5, "memory": 1 * GIB}


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml", "rayservice.yaml"])
def test_pods_fit_the_allocatable_resources_of_the_nodes_named(name):
    for container in _containers(_cluster_spec(_load(name))):
        resources = container["resources"]
        assert resources["requests"] == resources["limits"], container["name"]  # Guaranteed; Ray reads the limits
        node = NODES["g5.xlarge" if "nvidia.com/gpu" in resources["limits"] else "m5.xlarge"]
        for resource, amount in resources["requests"].items():
            room = DAEMONSET_ROOM.get(resource, 0)
            assert _quantity(amount) <= node[resource] - room, (container["name"], resource, amount)


def test_raycluster_autoscales_a_gpu_worker_group():
    cluster = _cluster_spec(_load("raycluster.yaml"))
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (gpu,) = [g for g in cluster["workerGroupSpecs"]
              if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert gpu["maxReplicas"] > gpu["minReplicas"]


def _training_config(spec: dict[str, Any]):
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["python", f"{IMAGE_ROOT}/jobs/train.py"]
    assert (REPO / "jobs" / "train.py").is_file()
    args = build_parser().parse_args(["train", *argv[2:]])  # jobs/train.py takes `pareto-ray train`'s options
    return load_config(REPO / Path(args.config).relative_to(IMAGE_ROOT), args.set)


def test_rayjob_runs_a_valid_training_command_and_tears_down():
    spec = _load("rayjob.yaml")["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    cfg = _training_config(spec)
    assert cfg.ray.use_gpu
    gpu_workers = sum(g["replicas"] for g in spec["rayClusterSpec"]["workerGroupSpecs"])
    assert gpu_workers >= cfg.ray.num_workers


def test_rayjob_retries_resume_the_named_run_from_the_shared_volume():
    """A retry (backoffLimit) or a delete + apply submits the same entrypoint to a new cluster: it resumes only if the
    run has a fixed name and its checkpoints are on the claim, which outlives the RayJob."""
    spec = _load("rayjob.yaml")["spec"]
    assert spec["backoffLimit"] >= 1
    assert spec.get("submissionMode", "K8sJobMode") != "InteractiveMode"  # KubeRay rejects backoffLimit there
    assert "activeDeadlineSeconds" not in spec  # a deadline failure is never retried
    cfg = _training_config(spec)
    assert cfg.name, "without a fixed name every submission is a new run"
    assert cfg.ray.max_failures >= 1  # worker and node losses resume inside the attempt
    mounts = _shared_mounts(spec["rayClusterSpec"])
    assert all(any(cfg.ray.storage_path.startswith(m + "/") for m in mount) for mount in mounts), cfg.ray.storage_path


def test_rayservice_serves_serve_config_applications():
    serve_config = REPO / "serve" / "config.yaml"
    assert serve_config.is_file(), "serve/config.yaml is missing"
    embedded = yaml.safe_load(_load("rayservice.yaml")["spec"]["serveConfigV2"])
    assert embedded["applications"] == yaml.safe_load(serve_config.read_text())["applications"]
    assert embedded["http_options"]["port"] == 8000
    for app in embedded["applications"]:
        module = app["import_path"].split(":")[0]
        assert (REPO / (module.replace(".", "/") + ".py")).is_file()


# --- the image ---------------------------------------------------------------------------------------------------------

def _instructions(dockerfile: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", "\n".join(ln for ln in dockerfile.splitlines() if not ln.lstrip().startswith("#")))
    return [ln.strip() for ln in joined.splitlines() if ln.strip()]


def test_image_builds_on_the_pinned_ray_with_a_workdir_ray_can_write():
    dockerfile = (REPO / "cluster" / "Dockerfile").read_text()
    assert f"ARG RAY_VERSION={ray.__version__}\n" in dockerfile
    assert "FROM rayproject/ray:${RAY_VERSION}" in dockerfile
    steps = _instructions(dockerfile)
    mkdir = steps.index(f"RUN install -d -o ray -g users {IMAGE_ROOT}")
    workdir = steps.index(f"WORKDIR {IMAGE_ROOT}")
    (install,) = [i for i, s in enumerate(steps) if s.startswith("RUN pip install") and " -e ." in s]
    assert mkdir < workdir < install  # the directory exists, owned by ray, before WORKDIR would create it as root
    users = [s for s in steps[:install] if s.startswith("USER ")]
    assert users[-1] == "USER ray" and steps[mkdir - 1] == "USER root"
    assert [s for s in steps if s.startswith("USER ")][-1] == "USER ray"  # the image runs as Ray's user


def _dockerignore(text: str):
    """Docker's .dockerignore matching (moby/patternmatcher): '*' and '?' stop at '/', '**' spans directories, a path is
    excluded when it or one of its parent directories matches, and the last matching pattern ('!' re-includes) wins."""
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        pattern = posixpath.normpath(line.lstrip("!").strip()).lstrip("/")
        assert "[" not in pattern, "character classes are not modelled here"
        regex = ""
        for token in re.findall(r"\*\*/?|\*|\?|\\.|.", pattern):
            regex += {"**": ".*", "**/": "(.*/)?", "*": "[^/]*", "?": "[^/]"}.get(token) or re.escape(token.lstrip("\\"))
        patterns.append((exclude, re.compile(regex)))

    def excluded(path: str) -> bool:
        parts = path.split("/")
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        matched = False
        for exclude, regex in patterns:
            if exclude != matched and any(regex.fullmatch(c) for c in candidates):
                matched = exclude
        return matched

    return excluded


def test_dockerignore_sends_only_what_the_image_copies():
    excluded = _dockerignore((REPO / ".dockerignore").read_text())  # the build context is the repository root
    copied = [src for step in _instructions((REPO / "cluster" / "Dockerfile").read_text()) if step.startswith("COPY ")
              for src in step.split()[1:-1] if not src.startswith("--")]
    assert copied == ["pyproject.toml", "README.md", "pareto_ray", "jobs", "serve"]
    for path in [*copied, "pareto_ray/trainer.py", "pareto_ray/methods/__init__.py", "jobs/configs/quickstart.yaml",
                 "serve/app.py"]:
        assert not excluded(path), path
    for path in (".venv/bin/python", "ray_results/run/checkpoint_0/model.safetensors", "mlflow.db", "mlruns/0/meta.yaml",
                 "mlartifacts/1/x", "data/MNIST/raw/t10k", "runs/x/log", ".git/HEAD", "tests/test_cli.py",
                 "pareto_ray/__pycache__/trainer.cpython-311.pyc", "pareto_ray.egg-info/PKG-INFO"):
        assert excluded(path), path


def test_dockerignore_matcher_follows_docker_rules():
    excluded = _dockerignore("*\n!keep\n**/__pycache__\nkeep/drop*.txt\n")
    assert excluded("x") and excluded("x/y/z") and not excluded("keep") and not excluded("keep/a/b.py")
    assert excluded("keep/a/__pycache__/b.pyc") and excluded("keep/drop1.txt") and not excluded("keep/a/drop1.txt")


# --- the AWS cluster launcher ------------------------------------------------------------------------------------------

def _aws_config() -> dict[str, Any]:
    return yaml.safe_load((REPO / "cluster" / "aws.yaml").read_text())


def test_aws_cluster_launcher_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _aws_config()
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)  # what `ray up` validates
    validate_config(prepare_config(copy.deepcopy(config)))  # and with the AWS defaults filled in (docker config too)
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    (gpu,) = [t for t in types.values() if t["node_config"]["InstanceType"].startswith(("g", "p"))]
    assert 0 <= gpu["min_workers"] < gpu["max_workers"] <= config["max_workers"]
    for command in (config["head_start_ray_commands"][-1], config["worker_start_ray_commands"][-1]):
        assert "RAY_AUTH_MODE=token ray start" in command


def test_aws_nodes_run_the_pinned_ray_image_on_a_pinned_ami():
    config = _aws_config()
    docker, types = config["docker"], config["available_node_types"]
    for image in (docker["head_image"], docker["worker_image"]):
        m = re.fullmatch(rf"rayproject/ray:{re.escape(ray.__version__)}-py3(\d+)(-gpu)?", image)
        assert m and int(m.group(1)) >= 10, image  # Ray 2.60 needs Python >= 3.10
    assert docker["worker_image"].endswith("-gpu") and not docker["head_image"].endswith("-gpu")
    amis = {t["node_config"]["ImageId"] for t in types.values()}
    assert len(amis) == 1 and not {a.lower() for a in amis} & {"", "latest_dlami"}  # Ubuntu 18.04, CUDA 11.2 in Ray 2.60
    (gpu,) = [t for t in types.values() if t["node_config"]["InstanceType"].startswith(("g", "p"))]
    assert "--gpus all" in gpu["docker"]["worker_run_options"]
    head_pip = " ".join(config["head_setup_commands"])
    worker_pip = " ".join(config["worker_setup_commands"])
    for pip, index in ((head_pip, "whl/cpu"), (worker_pip, "whl/cu128")):
        assert pip.startswith("pip install") and index in pip  # the image's Python, not the host's python3
        assert f"ray[default,train,tune,serve]=={ray.__version__}" in pip and "-e ~/pareto-ray" in pip
    assert config["file_mounts"]["~/pareto-ray"] == "."


def test_aws_nodes_mount_efs_before_the_container_starts():
    config = _aws_config()
    (init,) = config["initialization_commands"]  # on the host, before Docker starts the container
    efs = re.search(r"EFS_ID=(\S+) EFS_REGION=(\S+);", init)
    assert efs and efs.group(2) == config["provider"]["region"]
    assert re.search(r"mount -t nfs4 -o nfsvers=4\.1\S* \"\$EFS_ID\.efs\.\$EFS_REGION\.amazonaws\.com:/\" /mnt/efs", init)
    assert "mountpoint -q /mnt/efs ||" in init  # idempotent: `ray up` runs it again on a live head
    assert "-v /mnt/efs:/mnt/efs" in config["docker"]["run_options"]


def test_rayignore_keeps_data_runs_and_venvs_out_of_the_upload():
    from ray._private.runtime_env.packaging import _get_ignore_file  # the matcher `ray job submit` applies

    excluded = _get_ignore_file(REPO, ".rayignore")
    for path in (".venv/bin/python", "data/MNIST/raw/t10k", "runs/x/log", "ray_results/run/checkpoint_0/model.safetensors",
                 "mlruns/0/meta.yaml", "mlartifacts/1/x", "mlflow.db", ".git/HEAD"):
        assert excluded(REPO / path), path
    for path in ("pareto_ray/training/worker.py", "jobs/train.py", "jobs/configs/quickstart.yaml", "serve/config.yaml"):
        assert not excluded(REPO / path), path
