"""Deployment files stay valid: the KubeRay RayJob against a schema of the RayJob fields
(transcribed from KubeRay's ray.io/v1 CRD) and its pod templates against the Kubernetes API
schema (kubernetes-validate); the GPU example config composes and passes parkrl's checks."""

from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from conftest import repo_root
from hydra import compose, initialize_config_dir

from parkrl.algorithms import registered_names
from parkrl.config import validate
from parkrl.train import CONF_DIR, to_config

MANIFEST = repo_root() / "deploy" / "kuberay" / "rayjob.yaml"


def obj(properties: dict, required: tuple = ()) -> dict:
    """A closed object: a misspelled field is an error, as with the CRD's structural schema."""
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


POD_TEMPLATE = {"type": "object", "required": ["spec"]}  # checked separately against the Kubernetes schema
START_PARAMS = {"type": "object", "additionalProperties": {"type": "string"}}
WORKER_GROUP = obj({
    "groupName": {"type": "string"}, "replicas": {"type": "integer", "minimum": 0},
    "minReplicas": {"type": "integer", "minimum": 0}, "maxReplicas": {"type": "integer", "minimum": 0},
    "numOfHosts": {"type": "integer", "minimum": 1}, "idleTimeoutSeconds": {"type": "integer"},
    "rayStartParams": START_PARAMS, "template": POD_TEMPLATE, "scaleStrategy": {"type": "object"},
    "suspend": {"type": "boolean"}, "resources": {"type": "object"}, "labels": {"type": "object"},
}, ("groupName", "template"))
RAYJOB = obj({
    "apiVersion": {"const": "ray.io/v1"}, "kind": {"const": "RayJob"},
    "metadata": {"type": "object", "required": ["name"]},
    "spec": obj({
        "entrypoint": {"type": "string", "minLength": 1}, "runtimeEnvYAML": {"type": "string"},
        "jobId": {"type": "string"}, "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
        "shutdownAfterJobFinishes": {"type": "boolean"}, "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
        "activeDeadlineSeconds": {"type": "integer"}, "backoffLimit": {"type": "integer", "minimum": 0},
        "entrypointNumCpus": {"type": "number"}, "entrypointNumGpus": {"type": "number"},
        "entrypointResources": {"type": "string"}, "suspend": {"type": "boolean"}, "managedBy": {"type": "string"},
        "clusterSelector": {"type": "object"}, "submitterPodTemplate": POD_TEMPLATE, "submitterConfig": {"type": "object"},
        "deletionStrategy": {"type": "object"}, "metadata": {"type": "object"},
        "rayClusterSpec": obj({
            "rayVersion": {"type": "string"}, "enableInTreeAutoscaling": {"type": "boolean"},
            "autoscalerOptions": {"type": "object"}, "headServiceAnnotations": {"type": "object"},
            "suspend": {"type": "boolean"}, "managedBy": {"type": "string"}, "gcsFaultToleranceOptions": {"type": "object"},
            "headGroupSpec": obj({"rayStartParams": START_PARAMS, "template": POD_TEMPLATE, "serviceType": {"type": "string"},
                                  "headService": {"type": "object"}, "enableIngress": {"type": "boolean"},
                                  "resources": {"type": "object"}, "labels": {"type": "object"}}, ("template",)),
            "workerGroupSpecs": {"type": "array", "items": WORKER_GROUP},
        }, ("headGroupSpec",)),
    }, ("entrypoint",)),
}, ("apiVersion", "kind", "metadata", "spec"))


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def test_rayjob_matches_the_crd_fields(rayjob):
    jsonschema.validate(rayjob, RAYJOB)
    broken = yaml.safe_load(MANIFEST.read_text())
    broken["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replica"] = 1  # a typo must not pass
    with pytest.raises(jsonschema.ValidationError, match="'replica' was unexpected"):
        jsonschema.validate(broken, RAYJOB)


def test_rayjob_pod_templates_are_valid_pods(rayjob):
    cluster = rayjob["spec"]["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for t in templates:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": t["spec"]}
        kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)
    gpus = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert int(gpus) == 8  # what the example config's 4 learner + 4 rollout GPUs need


def test_gpu_example_config_composes_and_validates(rayjob):
    assert "recipe=qwen2.5-0.5b-gsm8k" in rayjob["spec"]["entrypoint"]
    search = f"hydra.searchpath=[file://{repo_root() / 'examples' / 'gpu'}]"
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = to_config(compose(config_name="parkrl", overrides=[
            "recipe=qwen2.5-0.5b-gsm8k", search, "data.train_file=/shared/train.jsonl",
            "data.eval_file=/shared/test.jsonl"]))
    validate(cfg, registered_names())
    gpus = sum(r.num_workers * r.gpus_per_worker for r in (cfg.resources.learner, cfg.resources.rollout))
    assert gpus == 8
    per_rank = cfg.trainer.prompts_per_step * cfg.rollout.n // cfg.learner.mini_batches // cfg.resources.learner.num_workers
    assert per_rank == 32 and per_rank % cfg.learner.micro_batch_size == 0  # the arithmetic in the file's comment


SANDBOX_MANIFEST = repo_root() / "deploy" / "sandbox" / "sandbox-service.yaml"


@pytest.fixture(scope="module")
def sandbox_docs() -> dict[str, dict]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(SANDBOX_MANIFEST.read_text())}


def test_sandbox_service_manifests_are_valid_kubernetes_objects(sandbox_docs):
    assert set(sandbox_docs) == {"Service/parkrl-sandbox", "StatefulSet/parkrl-sandbox", "Service/parkrl-gateway",
                                 "Deployment/parkrl-gateway"}
    for doc in sandbox_docs.values():
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    broken = dict(sandbox_docs["Deployment/parkrl-gateway"], spec={"replica": 1})  # a typo must not pass
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_sandbox_service_commands_parse_and_the_gateway_reaches_every_server(sandbox_docs):
    from parkrl.gateway.__main__ import build_parser
    from parkrl.sandbox.server import parse_args

    servers = sandbox_docs["StatefulSet/parkrl-sandbox"]
    server_cmd = servers["spec"]["template"]["spec"]["containers"][0]["command"]
    assert server_cmd[:3] == ["python", "-m", "parkrl.sandbox.server"]
    server = parse_args(server_cmd[3:])
    assert not server.insecure_no_auth and not server.insecure_no_isolation  # secure by default, in the manifest too
    gateway_cmd = sandbox_docs["Deployment/parkrl-gateway"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert gateway_cmd[:3] == ["python", "-m", "parkrl.gateway"]
    gateway = build_parser().parse_args(gateway_cmd[3:])
    assert not gateway.insecure_no_auth
    # affinity needs one address per server pod: the headless Service's per-pod DNS names, one per replica
    headless = sandbox_docs["Service/parkrl-sandbox"]
    assert headless["spec"]["clusterIP"] == "None" and servers["spec"]["serviceName"] == headless["metadata"]["name"]
    name, port = servers["metadata"]["name"], server.port
    expected = [f"http://{name}-{i}.{headless['metadata']['name']}:{port}" for i in range(servers["spec"]["replicas"])]
    assert gateway.servers.split(",") == expected
    # every secret file a command reads is mounted
    mounts = {m["mountPath"] for c in (servers, sandbox_docs["Deployment/parkrl-gateway"])
              for m in c["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    for path in (server.token_file, gateway.tokens_file, gateway.server_token_file, gateway.secret_file):
        assert str(Path(path).parent) in mounts
