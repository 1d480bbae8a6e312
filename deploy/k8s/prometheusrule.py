"""Writes base/prometheusrule.yaml: prometheus/rules.yml's groups as Prometheus Operator's
PrometheusRule, so Kubernetes and the compose stack run the same rules from one source.

    python3 deploy/k8s/prometheusrule.py            write it
    python3 deploy/k8s/prometheusrule.py --check    fail if it is not what rules.yml gives

Needs PyYAML (the stack check's venv has it).
"""

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE.parents[1] / "prometheus" / "rules.yml"
OUTPUT = HERE / "base" / "prometheusrule.yaml"


def render() -> str:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "stallscope", "labels": {"app.kubernetes.io/name": "stallscope"}},
        "spec": {"groups": groups},
    }
    header = "# Generated from prometheus/rules.yml by deploy/k8s/prometheusrule.py: edit those, not this.\n"
    return header + yaml.safe_dump(rule, sort_keys=False, width=100)


def main() -> None:
    text = render()
    if sys.argv[1:] == ["--check"]:
        if OUTPUT.read_text() != text:
            sys.exit(f"{OUTPUT} is stale: run python3 deploy/k8s/prometheusrule.py")
        return
    OUTPUT.write_text(text)


if __name__ == "__main__":
    main()
