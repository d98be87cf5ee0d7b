#!/usr/bin/env bash
# Installs the Debian packages the polyglot test needs (a real non-Node gRPC client in Python):
# python3-grpcio and python3-protobuf, for Debian's /usr/bin/python3 (the python3 first on PATH
# may be a different interpreter without them). Idempotent: does nothing when they already import.
set -euo pipefail

PYTHON=/usr/bin/python3
PACKAGES=(python3-grpcio python3-protobuf)

if [[ -x "$PYTHON" ]] && "$PYTHON" -c 'import grpc, google.protobuf' >/dev/null 2>&1; then
  echo "install-test-deps: grpc and google.protobuf already import under $PYTHON; nothing to do."
  exit 0
fi

if [[ "$(id -u)" -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "install-test-deps: missing Debian packages for $PYTHON: ${PACKAGES[*]}" >&2
  echo "install-test-deps: not root and sudo is unavailable; install them as root:" >&2
  echo "  apt-get update && apt-get install -y ${PACKAGES[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update
"${SUDO[@]}" apt-get install -y --no-install-recommends "${PACKAGES[@]}"

if ! "$PYTHON" -c 'import grpc, google.protobuf' >/dev/null 2>&1; then
  echo "install-test-deps: installed ${PACKAGES[*]} but '$PYTHON -c \"import grpc, google.protobuf\"' still fails" >&2
  exit 1
fi
"$PYTHON" -c 'import grpc, google.protobuf; print("install-test-deps: grpcio", grpc.__version__, "protobuf", google.protobuf.__version__)'
