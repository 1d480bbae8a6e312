#!/usr/bin/env bash
# The Kubernetes manifests (deploy/k8s), offline: the PrometheusRule is what
# prometheus/rules.yml gives; base and the kind overlay render with `kubectl kustomize`; the
# core kinds pass kubernetes-validate --strict; ServiceMonitor and PrometheusRule pass the
# operator's CRD schemas strictly, and the Deployment has what the service needs
# (deploy/k8s/validate.py); the rendered rules pass `promtool check rules` and the same
# `promtool test rules` cases as prometheus/rules.yml. Rendered YAML lands in
# target/check-artifacts/k8s/.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/checks/lib.sh
source scripts/checks/lib.sh

venv="${STALLSCOPE_K8S_TOOLS_DIR:-$HOME/.cache/stallscope/k8s}"
skip_unless_installed k8s \
  "$(command -v kubectl >/dev/null || echo "kubectl (apt-get install kubernetes-client)")" \
  "$(command -v promtool >/dev/null || echo "promtool (apt-get install prometheus)")" \
  "$([ -x "$venv/bin/kubernetes-validate" ] || echo "kubernetes-validate (bash deploy/k8s/install-tools.sh)")"

out=$(artifacts_dir k8s)
# The service's default shutdown deadline, which the pods' grace period must exceed.
deadline_ms=$("$(release_binary)" serve --help | python3 -c '
import re, sys
match = re.search(r"--shutdown-deadline-ms .*?\[default: (\d+)\]", sys.stdin.read(), re.S)
print(match.group(1) if match else "")')
[ -n "$deadline_ms" ] || { echo "k8s check: could not read the default --shutdown-deadline-ms" >&2; exit 1; }

"$venv/bin/python" deploy/k8s/prometheusrule.py --check
for target in base overlays/kind; do
  rendered="$out/$(basename "$target").yaml"
  kubectl kustomize "deploy/k8s/$target" >"$rendered" 2>"$out/kustomize.log" \
    || { cat "$out/kustomize.log" >&2; exit 1; }
  # Kubernetes 1.30: the oldest minor its project still supports in late 2026, so the
  # manifests hold on every cluster that is still patched.
  # It cannot know the operator's kinds (validate.py checks those); anything else it says
  # is a failure.
  verdict=$("$venv/bin/kubernetes-validate" --strict --quiet -k 1.30.0 "$rendered" 2>&1) || true
  complaints=$(grep -v "Couldn't find schema for kind \(ServiceMonitor\|PrometheusRule\) " <<<"$verdict" || true)
  if [ -n "$complaints" ]; then
    echo "k8s check: kubernetes-validate refused $target:" >&2
    echo "$complaints" >&2
    exit 1
  fi
  "$venv/bin/python" deploy/k8s/validate.py "$rendered" "$out/rules.yml" "$deadline_ms"
done

promtool check rules "$out/rules.yml" >/dev/null
# The same unit tests as prometheus/rules.yml's, pointed at the rendered rules.
for test in prometheus/tests/*.yml; do
  sed "s#^  - ../rules.yml#  - $out/rules.yml#" "$test" >"$out/$(basename "$test")"
  grep -q "$out/rules.yml" "$out/$(basename "$test")" || { echo "k8s check: $test names no ../rules.yml" >&2; exit 1; }
  promtool test rules "$out/$(basename "$test")" >/dev/null
done
echo "k8s check: base and kind overlay valid; PrometheusRule current, checked and tested"
