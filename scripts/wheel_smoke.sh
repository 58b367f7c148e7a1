#!/usr/bin/env bash
# Wheel smoke test (CI): build the wheel, install it into a fresh venv, and from an empty folder run
# `attnviz render` on a photo (the trained demo maps) and `attnviz serve` (answers /analyze), offline.
# The fresh venv reuses the dependencies of the venv given as $1 (default .venv) through a .pth file, so nothing is
# downloaded; attnviz itself comes only from the wheel (checked).
set -euo pipefail
cd "$(dirname "$0")/.."
DEPS_VENV=$(cd "${1:-.venv}" && pwd)
PY="$DEPS_VENV/bin/python"
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK/serve.pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT

"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" . >/dev/null
WHEEL=$(ls "$WORK"/dist/attnviz-*.whl)
"$PY" - "$WHEEL" <<'PYEOF'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
for need in ("attnviz/models/resnet18-scenes-cbam.safetensors", "attnviz/assets/chelsea_cat.jpg", "attnviz/app/layout.py"):
    assert need in names, f"the wheel lacks {need}"
PYEOF

"$PY" -m venv --system-site-packages "$WORK/venv"  # as the CI venv: packages already on the machine
SITE=$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
DEPS=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$DEPS" > "$SITE/zz_attnviz_deps.pth"  # after the venv's own site-packages: the wheel's attnviz comes first
"$WORK/venv/bin/python" -m pip install -q --no-deps --no-index "$WHEEL"

mkdir "$WORK/empty" && cd "$WORK/empty"
export ATTNVIZ_OFFLINE=1 HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
"$WORK/venv/bin/python" - "$SITE" <<'PYEOF'
import sys, attnviz
assert attnviz.__file__.startswith(sys.argv[1]), f"attnviz imported from {attnviz.__file__}, not the wheel"
print("attnviz from the wheel:", attnviz.__file__)
PYEOF
PHOTO=$("$WORK/venv/bin/python" -c 'from attnviz.sources.demo import example; print(example("chelsea_cat.jpg"))')
"$WORK/venv/bin/attnviz" render "$PHOTO" --attention cbam --out maps --device cpu --workers 0
test "$(ls maps/chelsea_cat/overlays/*.png | wc -l)" -eq 8
grep -q '"weights_source": "demo (resnet18-scenes-cbam.safetensors)"' maps/chelsea_cat/result.json

PORT=$("$WORK/venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$WORK/venv/bin/attnviz" serve --port "$PORT" --device cpu --offline > "$WORK/serve.log" 2>&1 &
echo $! > "$WORK/serve.pid"
"$WORK/venv/bin/python" - "$PORT" "$PHOTO" <<'PYEOF'
import sys, time
from gradio_client import Client, handle_file
url = f"http://127.0.0.1:{sys.argv[1]}/"
for _ in range(240):
    try:
        client = Client(url, verbose=False)
        break
    except Exception:
        time.sleep(0.5)
else:
    raise SystemExit("attnviz serve did not answer")
out = client.predict(handle_file(sys.argv[2]), "cbam", api_name="/analyze")
assert len(out[0]["confidences"]) == 5 and "demo network: 8 categories" in out[1], out[:2]
print("attnviz serve answered /analyze:", out[0]["label"])
PYEOF
echo "wheel smoke test passed"
