"""Checks rendered manifests (`kubectl kustomize`) offline, beyond kubernetes-validate:

- ServiceMonitor and PrometheusRule against the operator's own CRD schemas (crd-schemas/,
  openAPIV3Schema v1 of prometheus-operator 0.93), strictly: a field the CRD does not know
  fails here, where the API server would prune it without a word;
- no kind left unchecked (kubernetes-validate knows the core kinds, this file the two CRDs);
- every dashboard in grafana/dashboards/ ships as a ConfigMap for Grafana's sidecar;
- what the service's design asks of its Deployment: probes on /healthz and /readyz, a grace
  period above the shutdown deadline, non-root, read-only root filesystem, limits, 3 replicas,
  the instance identity in OTEL_RESOURCE_ATTRIBUTES;
- writes the PrometheusRule's groups to RULES_OUT for `promtool check rules` / `test rules`.

    python3 validate.py RENDERED.yaml RULES_OUT.yml SHUTDOWN_DEADLINE_MS
"""

import copy
import json
import sys
from pathlib import Path

import jsonschema
import yaml

HERE = Path(__file__).resolve().parent
CORE_KINDS = {"Namespace", "ConfigMap", "Secret", "Service", "Deployment", "StatefulSet",
              "PodDisruptionBudget"}
CRDS = {"ServiceMonitor": "servicemonitor.json", "PrometheusRule": "prometheusrule.json"}


def strict(schema):
    """The schema with unknown properties refused wherever it lists the known ones."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node \
                    and not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def check_deployment(deployment, deadline_ms, problems):
    name = deployment["metadata"]["name"]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "stallscope"]
    want = {
        "3 replicas": spec.get("replicas") == 3,
        "liveness on /healthz": container.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz",
        "readiness on /readyz": container.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz",
        f"grace period above the {deadline_ms} ms shutdown deadline":
            pod.get("terminationGracePeriodSeconds", 30) * 1000 > deadline_ms,
        "non-root": pod.get("securityContext", {}).get("runAsNonRoot") is True,
        "read-only root filesystem": container.get("securityContext", {}).get("readOnlyRootFilesystem") is True,
        "no privilege escalation": container.get("securityContext", {}).get("allowPrivilegeEscalation") is False,
        "cpu and memory limits": {"cpu", "memory"} <= set(container.get("resources", {}).get("limits", {})),
        "a metrics port": any(p.get("name") == "metrics" for p in container.get("ports", [])),
        "service.instance.id from the pod's name": any(
            e["name"] == "OTEL_RESOURCE_ATTRIBUTES" and "service.instance.id=$(POD_NAME)" in e.get("value", "")
            for e in container.get("env", [])),
    }
    problems += [f"Deployment {name}: wants {what}" for what, ok in want.items() if not ok]


def main():
    rendered, rules_out, deadline_ms = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    documents = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    problems, groups, deployments = [], None, 0
    for doc in documents:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind in CRDS:
            schema = strict(json.loads((HERE / "crd-schemas" / CRDS[kind]).read_text()))
            for error in jsonschema.Draft7Validator(schema).iter_errors(doc):
                problems.append(f"{kind} {name}: {'/'.join(map(str, error.absolute_path))}: {error.message}")
            if kind == "PrometheusRule":
                groups = doc["spec"]["groups"]
        elif kind not in CORE_KINDS:
            problems.append(f"{kind} {name}: no schema checks this kind")
        if kind == "Deployment" and name == "stallscope":
            deployments += 1
            check_deployment(doc, deadline_ms, problems)
    dashboards = sorted(p.name for p in (HERE.parents[1] / "grafana" / "dashboards").glob("*.json"))
    loaded = sorted(name for doc in documents if doc["kind"] == "ConfigMap"
                    and doc["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
                    for name in doc.get("data", {}))
    if loaded != dashboards:
        problems.append(f"dashboard ConfigMaps hold {loaded}, grafana/dashboards/ has {dashboards}")
    if deployments != 1:
        problems.append(f"{deployments} stallscope Deployments rendered, expected 1")
    if groups is None:
        problems.append("no PrometheusRule rendered")
    else:
        rules_out.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    if problems:
        sys.exit("k8s manifests:\n  " + "\n  ".join(problems))
    print(f"{rendered}: {len(documents)} resources; CRDs valid against the operator's schemas; "
          "the Deployment has what the service needs")


if __name__ == "__main__":
    main()
