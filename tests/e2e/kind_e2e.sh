#!/usr/bin/env bash
# End to end on kind, through the Helm chart, in one command (from anywhere in the repository):
#
#   bash tests/e2e/kind_e2e.sh
#
# 1. creates a kind cluster (KIND_CLUSTER, default hiphops-e2e; reused if it exists);
# 2. builds the image from the Dockerfile and a stand-in GitHub image, loads both into kind;
# 3. installs charts/hiphops (the CRDs, the operator, the gateway, RBAC, the intake token);
# 4. deploys the stand-in GitHub (tests/e2e/fake_github_runner.py) in its own namespace, and in
#    namespace demo an Integration pointed at it and the merge sensor
#    (examples/manifests/auto-merge.yaml);
# 5. sends a signed pull_request webhook to the gateway (`hiphops send`, through a port-forward)
#    and waits for the SensorRun to complete and the pull request to be merged.
#
# Needs kind, kubectl and a Docker daemon, plus this repository's virtualenv (make test creates
# it). Helm comes from PATH, $HELM, or the project's dev dependencies (tests/chart/helm.py).
# KEEP_CLUSTER=1 keeps the cluster afterwards (to look around: kind export kubeconfig --name ...).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
CLUSTER="${KIND_CLUSTER:-hiphops-e2e}"
IMAGE="hiphops-k8s:e2e"
FAKE_IMAGE="hiphops-fake-github:e2e"
PYTHON_IMAGE="$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
RELEASE_NS="hiphops-system"
DEMO_NS="demo"
FAKE_NS="fake-github"
GITHUB_TOKEN_VALUE="ghp_kind_e2e_$(date +%s)"
WEBHOOK_SECRET="kind-e2e-webhook-$(date +%s)"
DELIVERY="kind-e2e-$(date +%s)"
WORK="$(mktemp -d)"
PORT_FORWARD_PID=""

log() { printf '\n==> %s\n' "$*"; }

for tool in kind kubectl docker; do
  command -v "$tool" >/dev/null || { echo "kind e2e: $tool is not installed" >&2; exit 2; }
done
docker info >/dev/null 2>&1 || { echo "kind e2e: no Docker daemon (docker info failed)" >&2; exit 2; }
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"

# `python -m MODULE ARGS` with the repository root last on sys.path, not first: its operator/
# folder must not shadow the standard library's `operator` (see the Makefile).
pymod() {
  "$PYTHON" -P -c 'import runpy, sys; sys.path.append("."); sys.argv.pop(0); runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)' "$@"
}
HELM="${HELM:-$(pymod tests.chart.helm)}"

diagnose() {
  log "diagnostics"
  kubectl get pods -A -o wide || true
  kubectl -n "$RELEASE_NS" logs deploy/hiphops-operator --tail=200 || true
  kubectl -n "$RELEASE_NS" logs deploy/hiphops-gateway --tail=100 || true
  kubectl -n "$FAKE_NS" logs deploy/fake-github --tail=100 || true
  kubectl -n "$DEMO_NS" get integrations.hiphops.io,sensors.hiphops.io,sensorruns -o yaml || true
  kubectl -n "$DEMO_NS" get events --sort-by=.lastTimestamp || true
}

cleanup() {
  status=$?
  if [ -n "$PORT_FORWARD_PID" ]; then
    kill "$PORT_FORWARD_PID" 2>/dev/null || true
  fi
  if [ "$status" -ne 0 ] && [ -f "$WORK/kubeconfig" ]; then
    diagnose
  fi
  if [ "${KEEP_CLUSTER:-0}" = "1" ]; then
    echo "kept the kind cluster $CLUSTER"
  else
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT

log "kind cluster $CLUSTER"
kind get clusters 2>/dev/null | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 180s
kind get kubeconfig --name "$CLUSTER" >"$WORK/kubeconfig"
export KUBECONFIG="$WORK/kubeconfig"

log "images"
export DOCKER_BUILDKIT=1  # the Dockerfile mounts the builder stage's wheels (RUN --mount)
docker build --tag "$IMAGE" --build-arg VERSION=e2e "$ROOT"
# The stand-in GitHub: the test fake and the OpenAPI slices it checks requests against.
mkdir -p "$WORK/fake/tests/fakes" "$WORK/fake/tests/e2e" "$WORK/fake/tests/fixtures/github-openapi"
cp tests/__init__.py "$WORK/fake/tests/"
cp tests/fakes/__init__.py tests/fakes/github_server.py "$WORK/fake/tests/fakes/"
cp tests/e2e/__init__.py tests/e2e/fake_github_runner.py "$WORK/fake/tests/e2e/"
cp tests/fixtures/github-openapi/operations.json "$WORK/fake/tests/fixtures/github-openapi/"
cat >"$WORK/fake/Dockerfile" <<EOF
FROM $PYTHON_IMAGE
RUN python -m pip install --no-cache-dir "aiohttp>=3.11" "jsonschema>=4.23" "pyjwt[crypto]>=2.8"
COPY tests /app/tests
WORKDIR /app
USER 65532:65532
ENTRYPOINT ["python", "-m", "tests.e2e.fake_github_runner", "serve"]
EOF
docker build --tag "$FAKE_IMAGE" "$WORK/fake"
kind load docker-image "$IMAGE" "$FAKE_IMAGE" --name "$CLUSTER"

log "namespaces and secrets"
for ns in "$RELEASE_NS" "$DEMO_NS" "$FAKE_NS"; do
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -
done
kubectl -n "$FAKE_NS" create secret generic fake-github \
  --from-literal=token="$GITHUB_TOKEN_VALUE" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$DEMO_NS" create secret generic github \
  --from-literal=token="$GITHUB_TOKEN_VALUE" --from-literal=webhook="$WEBHOOK_SECRET" \
  --dry-run=client -o yaml | kubectl apply -f -

log "helm install charts/hiphops"
"$HELM" upgrade --install hiphops charts/hiphops --namespace "$RELEASE_NS" \
  --set image.repository=hiphops-k8s --set image.tag=e2e --set image.pullPolicy=Never \
  --set gateway.replicas=1 \
  --set "tasks.serviceAccount.namespaces={$DEMO_NS}" \
  --wait --timeout 5m

log "stand-in GitHub"
kubectl apply -f - <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: fake-github, namespace: $FAKE_NS}
spec:
  replicas: 1
  selector: {matchLabels: {app: fake-github}}
  template:
    metadata: {labels: {app: fake-github}}
    spec:
      automountServiceAccountToken: false
      securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: fake-github
          image: $FAKE_IMAGE
          imagePullPolicy: Never
          args: ["--port", "8080", "--public-url", "http://fake-github.$FAKE_NS.svc:8080"]
          env:
            - name: FAKE_GITHUB_TOKEN
              valueFrom: {secretKeyRef: {name: fake-github, key: token}}
          ports: [{name: http, containerPort: 8080}]
          readinessProbe: {tcpSocket: {port: http}, periodSeconds: 2}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
---
apiVersion: v1
kind: Service
metadata: {name: fake-github, namespace: $FAKE_NS}
spec:
  selector: {app: fake-github}
  ports: [{name: http, port: 8080, targetPort: http}]
EOF
kubectl -n "$FAKE_NS" rollout status deploy/fake-github --timeout=180s

log "Integration and the merge sensor in $DEMO_NS"
kubectl apply -f - <<EOF
apiVersion: hiphops.io/v1alpha1
kind: Integration
metadata: {name: github, namespace: $DEMO_NS}
spec:
  type: github
  github:
    apiURL: http://fake-github.$FAKE_NS.svc:8080
    tokenSecretRef: {name: github, key: token}
    webhookSecretRefs: [{name: github, key: webhook}]
EOF
kubectl apply -f examples/manifests/auto-merge.yaml
kubectl -n "$DEMO_NS" wait --for=condition=Ready integration.hiphops.io/github --timeout=180s
kubectl -n "$DEMO_NS" wait --for=condition=Ready sensor.hiphops.io/auto-merge-dependabot --timeout=180s
kubectl -n "$RELEASE_NS" rollout status deploy/hiphops-gateway --timeout=180s

log "signed webhook"
PORT="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
kubectl -n "$RELEASE_NS" port-forward svc/hiphops-gateway "$PORT:80" >"$WORK/port-forward.log" 2>&1 &
PORT_FORWARD_PID=$!
pymod tests.e2e.fake_github_runner payload >"$WORK/payload.json"
export HIPHOPS_E2E_WEBHOOK_SECRET="$WEBHOOK_SECRET"
sent=""
for _ in $(seq 1 30); do
  # 503 while the gateway waits for the operator: the same delivery is simply sent again.
  if pymod hiphops.cli send "$WORK/payload.json" \
      --to "http://127.0.0.1:$PORT/hooks/github/$DEMO_NS/github" \
      --event-type pull_request --delivery "$DELIVERY" \
      --secret-env HIPHOPS_E2E_WEBHOOK_SECRET; then
    sent=1
    break
  fi
  sleep 2
done
[ -n "$sent" ] || { echo "the gateway never accepted the webhook" >&2; exit 1; }

log "waiting for the SensorRun"
state=""
for _ in $(seq 1 90); do
  state="$(kubectl -n "$DEMO_NS" get sensorruns -l hiphops.io/sensor=auto-merge-dependabot \
    -o jsonpath='{.items[0].status.state}' 2>/dev/null || true)"
  case "$state" in COMPLETE | FAILURE) break ;; esac
  sleep 2
done
kubectl -n "$DEMO_NS" get sensorruns
[ "$state" = "COMPLETE" ] || { echo "SensorRun state: ${state:-none}" >&2; exit 1; }
merged="$(kubectl -n "$DEMO_NS" get sensorruns -l hiphops.io/sensor=auto-merge-dependabot \
  -o jsonpath='{.items[0].status.tasks[0].result.merged}')"
[ "$merged" = "true" ] || { echo "the merge task's result says merged=$merged" >&2; exit 1; }
pull="$(kubectl -n "$FAKE_NS" exec deploy/fake-github -- python -c \
  'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:8080/_e2e/pulls/demo-org/backend/55").read().decode())')"
echo "stand-in GitHub: $pull"
case "$pull" in *'"merged": true'*) ;; *) echo "the pull request is not merged" >&2; exit 1 ;; esac

log "kind e2e passed: webhook -> gateway -> operator -> SensorRun COMPLETE -> PR merged"
