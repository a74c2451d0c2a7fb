"""Deployment files stay valid: the KubeRay RayJob against a schema of the RayJob fields
(transcribed from KubeRay's ray.io/v1 CRD) and its pod templates against the Kubernetes API
schema (kubernetes-validate); the GPU example config composes and passes parkrl's checks; the
mixed CPU+GPU spot RayJob likewise, its roles' node labels set by its worker groups."""

import shlex
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


ENV_MANIFEST = repo_root() / "deploy" / "envs" / "env-service.yaml"


def test_env_service_manifests_are_valid_and_the_gateway_reaches_every_server():
    """deploy/envs/env-service.yaml: valid objects; the commands parse with the server's and the
    gateway's own parsers, auth on; the gateway lists each server pod; the secrets they read are mounted;
    the gateway's call deadline is above the default env.step_timeout_s."""
    from parkrl.config import EnvConfig
    from parkrl.envs.server.__main__ import parse_args
    from parkrl.gateway.__main__ import build_parser

    docs = {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(ENV_MANIFEST.read_text())}
    assert set(docs) == {"Service/parkrl-env", "StatefulSet/parkrl-env", "Service/parkrl-env-gateway",
                         "Deployment/parkrl-env-gateway"}
    for doc in docs.values():
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    servers, gateway_doc = docs["StatefulSet/parkrl-env"], docs["Deployment/parkrl-env-gateway"]
    server_cmd = servers["spec"]["template"]["spec"]["containers"][0]["command"]
    assert server_cmd[:3] == ["python", "-m", "parkrl.envs.server"]
    server = parse_args(server_cmd[3:])
    assert not server.insecure_no_auth and server.allow  # auth on, and only the listed environment packages
    gateway_cmd = gateway_doc["spec"]["template"]["spec"]["containers"][0]["command"]
    gateway = build_parser().parse_args(gateway_cmd[3:])
    assert not gateway.insecure_no_auth and gateway.call_timeout_s > EnvConfig.step_timeout_s
    headless = docs["Service/parkrl-env"]
    assert headless["spec"]["clusterIP"] == "None" and servers["spec"]["serviceName"] == headless["metadata"]["name"]
    expected = [f"http://{servers['metadata']['name']}-{i}.{headless['metadata']['name']}:{server.port}"
                for i in range(servers["spec"]["replicas"])]
    assert gateway.servers.split(",") == expected
    mounts = {m["mountPath"] for c in (servers, gateway_doc)
              for m in c["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    for path in (server.token_file, gateway.tokens_file, gateway.server_token_file, gateway.secret_file):
        assert str(Path(path).parent) in mounts


SPOT_MANIFEST = repo_root() / "deploy" / "kuberay" / "rayjob-spot.yaml"


@pytest.fixture(scope="module")
def spot_rayjob() -> dict:
    return yaml.safe_load(SPOT_MANIFEST.read_text())


def spot_config(rayjob: dict):
    """The parkrl config the manifest's entrypoint runs (its command line, split as a shell would)."""
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "parkrl.train"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return to_config(compose(config_name="parkrl", overrides=argv[3:]))


def placements(cfg) -> dict[str, tuple[dict[str, str], float, float]]:
    """Each role the run starts workers for: (node_labels, CPUs in all, GPUs in all)."""
    res = cfg.resources
    out = {f"resources.{r}": (getattr(res, r).node_labels, getattr(res, r).num_workers * getattr(res, r).cpus_per_worker,
                              getattr(res, r).num_workers * getattr(res, r).gpus_per_worker) for r in ("learner", "rollout")}
    for role, servers in (("sandbox", cfg.sandbox.servers), ("env", cfg.env.servers)):
        if servers:  # N servers and their gateway
            out[f"resources.{role}"] = (getattr(res, role).node_labels, (servers + 1) * getattr(res, role).cpus_per_worker, 0.0)
    for k, m in enumerate(cfg.reward.models):
        r = m.resources
        out[f"reward.models[{k}].resources"] = (r.node_labels, r.num_workers * r.cpus_per_worker, r.num_workers * r.gpus_per_worker)
    return out


def group_labels(rayjob: dict) -> dict[str, dict[str, str]]:
    """Each worker group's Ray node labels, parsed by Ray's own `ray start --labels` parser."""
    from ray._private.label_utils import parse_node_labels_string

    return {g["groupName"]: parse_node_labels_string(g["rayStartParams"].get("labels", ""))
            for g in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]}


def test_spot_rayjob_matches_the_crd_fields_and_its_pods_are_valid(spot_rayjob):
    jsonschema.validate(spot_rayjob, RAYJOB)
    cluster = spot_rayjob["spec"]["rayClusterSpec"]
    for t in [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": t["spec"]}
        kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    gpu, cpu = groups["gpu"], groups["cpu"]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == gpu["rayStartParams"]["num-gpus"] == "8"
    assert cpu["template"]["spec"]["nodeSelector"] == {"cloud.google.com/gke-spot": "true"}  # the spot group
    for spec in (cluster["headGroupSpec"]["template"]["spec"], gpu["template"]["spec"]):  # kept off spot nodes
        assert "cloud.google.com/gke-spot" not in spec.get("nodeSelector", {})
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert {"key": "cloud.google.com/gke-spot", "operator": "DoesNotExist"} in terms[0]["matchExpressions"]
        assert spec["terminationGracePeriodSeconds"] >= 600  # a step plus the SIGTERM checkpoint
    assert cpu["minReplicas"] <= cpu["replicas"] <= cpu["maxReplicas"] and cpu["maxReplicas"] > cpu["minReplicas"]
    assert cluster["enableInTreeAutoscaling"] is True
    # every group mounts the shared claim: checkpoints, and the service tokens written under output_dir
    for t in [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]:
        assert {"name": "shared", "mountPath": "/shared"} in t["spec"]["containers"][0]["volumeMounts"]


def test_spot_entrypoint_composes_and_validates_with_gpu_roles_on_gpu_and_services_on_cpu(spot_rayjob):
    cfg = spot_config(spot_rayjob)
    validate(cfg, registered_names())
    assert cfg.trainer.ray_address == "auto" and cfg.trainer.output_dir.startswith("/shared/")
    roles = placements(cfg)
    assert set(roles) == {"resources.learner", "resources.rollout", "resources.sandbox", "resources.env",
                          "reward.models[0].resources"}
    on_gpus = {k for k, (labels, _, _) in roles.items() if labels == {"pool": "gpu"}}
    on_cpus = {k for k, (labels, _, _) in roles.items() if labels == {"pool": "cpu"}}
    assert on_gpus == {"resources.learner", "resources.rollout"}
    assert on_cpus == set(roles) - on_gpus
    assert all(roles[k][2] == 0 for k in on_cpus)  # nothing on the CPU group asks for a GPU
    assert cfg.env.remote and cfg.sandbox.servers == 8 and cfg.env.servers == 4


def test_spot_node_labels_are_ones_the_worker_groups_set_and_the_roles_fit(spot_rayjob):
    """The overrides' node_labels must be labels some group's `ray start --labels` sets, or the
    roles never place; and the roles on each group must fit its minimum size."""
    def fits(rayjob: dict) -> list[str]:
        problems = []
        cluster = rayjob["spec"]["rayClusterSpec"]
        groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
        labels = group_labels(rayjob)
        used = {name: [0.0, 0.0] for name in groups}
        for role, (wanted, cpus, gpus) in placements(spot_config(rayjob)).items():
            matching = [name for name, have in labels.items() if wanted.items() <= have.items()]
            if len(matching) != 1:
                problems.append(f"{role}.node_labels={wanted} matches groups {matching}")
                continue
            used[matching[0]][0] += cpus
            used[matching[0]][1] += gpus
        for name, (cpus, gpus) in used.items():
            start = groups[name]["rayStartParams"]
            n = groups[name]["minReplicas"]
            if cpus > n * float(start.get("num-cpus", groups[name]["template"]["spec"]["containers"][0]["resources"]
                                       ["limits"]["cpu"])) or gpus > n * float(start.get("num-gpus", 0)):
                problems.append(f"group {name}: {cpus} CPUs, {gpus} GPUs do not fit {n} replica(s)")
        return problems

    assert group_labels(spot_rayjob) == {"gpu": {"pool": "gpu"}, "cpu": {"pool": "cpu"}}
    assert fits(spot_rayjob) == []
    drifted = yaml.safe_load(SPOT_MANIFEST.read_text())  # a renamed label must be caught
    drifted["spec"]["rayClusterSpec"]["workerGroupSpecs"][1]["rayStartParams"]["labels"] = "pool=cpus"
    assert fits(drifted) == [f"{role}.node_labels={{'pool': 'cpu'}} matches groups []" for role in
                             ("resources.sandbox", "resources.env", "reward.models[0].resources")]
    small = yaml.safe_load(SPOT_MANIFEST.read_text())
    small["spec"]["rayClusterSpec"]["workerGroupSpecs"][1]["minReplicas"] = 1
    assert fits(small) == ["group cpu: 22.0 CPUs, 0.0 GPUs do not fit 1 replica(s)"]
