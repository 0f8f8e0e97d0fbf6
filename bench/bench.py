#!/usr/bin/env python3
"""The coaching API's benchmark (run it through bench/run, which builds and installs what it needs).

Starts DynamoDB Local, the mock model (fixed delay, fixed usage) and the release `coach-api`,
then measures, each against its own fresh process:

  1. cold start: exec -> first answered chat request for `serve`, and exec -> INIT done ->
     response posted for the Lambda binary under a Lambda Runtime API emulator (below);
  2. the mock model alone under the golfers' connections and think time (the latency floor);
  3. GOLFERS simulated golfers (wrk + bench/golfers.lua) against `serve`: end-to-end latency,
     requests/s, CPU ms per request and peak RSS of the service process, and from the
     service's own EMF lines: handler time, in-process time (handler minus time awaiting
     DynamoDB and the model), DynamoDB calls, sequential waves and consumed capacity;

and writes bench/results/<stamp>.json, .md and -latency.png (and latest.*), printing the table
and a cost projection from the measured figures.
"""

from __future__ import annotations

import http.client
import http.server
import asyncio
import json
import os
import pathlib
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import zipfile
from datetime import datetime, timezone

ROOT = pathlib.Path(__file__).resolve().parent.parent
# BENCH_BUILD=profiling measures the build with symbols (bench/profile); release otherwise.
RELEASE = ROOT / "target" / os.environ.get("BENCH_BUILD", "release")
# BENCH_BIN measures another build of the service (a before, side by side with an after).
BIN = pathlib.Path(os.environ["BENCH_BIN"]) if os.environ.get("BENCH_BIN") else RELEASE / "coach-api"
MOCK = RELEASE / "examples" / "mock-model"
RESULTS = ROOT / "bench" / "results"
EVENT = ROOT / "tests" / "fixtures" / "apigw-rest-chat.json"


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


GOLFERS = env_int("BENCH_GOLFERS", 100)
THINK_MS = env_int("BENCH_THINK_MS", 1000)
SECONDS = env_int("BENCH_SECONDS", 40)
MAX_REQUESTS = env_int("BENCH_MAX_REQUESTS", 2500)
MODEL_DELAY_MS = env_int("BENCH_MODEL_DELAY_MS", 50)
COLD_RUNS = env_int("BENCH_COLD_RUNS", 5)
WRK_THREADS = 2
# Assumptions of the projection (not measured here): say so where they are printed.
MESSAGES_PER_GOLFER_DAY = env_int("BENCH_MESSAGES_PER_GOLFER_DAY", 5)
REAL_MODEL_SECONDS = float(os.environ.get("BENCH_REAL_MODEL_SECONDS", "3.0"))

# us-east-1 list prices (USD), as published in 2025; the model's are the service's own config.
PRICE = {
    "lambda_gb_second_arm64": 0.0000133334,
    "lambda_request": 0.20 / 1e6,
    "apigw_rest_request": 3.50 / 1e6,
    "dynamodb_write_request_unit": 0.625 / 1e6,
    "dynamodb_read_request_unit": 0.125 / 1e6,
    "cloudwatch_logs_gb": 0.50,
}
LAMBDA_MEMORY_GB = 1.0  # infra/lambda-deployment.yaml: MemorySize 1024

CHILDREN: list[subprocess.Popen] = []


def cleanup(*_args) -> None:
    for p in CHILDREN:
        if p.poll() is None:
            p.kill()
    for p in CHILDREN:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def die(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr)
    cleanup()
    sys.exit(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(args: list[str], env: dict, out: pathlib.Path | None = None, err: pathlib.Path | None = None) -> subprocess.Popen:
    p = subprocess.Popen(
        args,
        env=env,
        stdout=open(out, "wb") if out else subprocess.DEVNULL,
        stderr=open(err, "wb") if err else subprocess.DEVNULL,
        cwd=ROOT,
    )
    CHILDREN.append(p)
    return p


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_http(port: int, path: str = "/", seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.05)
    die(f"nothing answered on port {port} within {seconds} s")


def post_chat(port: int, user: str, message: str, message_id: str, timeout: float = 30) -> tuple[int, dict]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    body = json.dumps({"message": message, "clientMessageId": message_id})
    c.request("POST", "/api/chat/coaching", body, {"Content-Type": "application/json", "X-User-Id": user})
    r = c.getresponse()
    data = r.read()
    try:
        return r.status, json.loads(data)
    except ValueError:
        return r.status, {}


STREAM_REQUESTS = env_int("BENCH_STREAM_REQUESTS", 30)
STREAM_GAP_MS = env_int("BENCH_STREAM_GAP_MS", 20)


def post_stream(port: int, user: str, message_id: str) -> tuple[int, list[tuple[int, dict]]]:
    """POSTs to the streamed route; every event with when it arrived (Unix µs)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = json.dumps({"message": "How do I stop slicing my driver?", "clientMessageId": message_id})
    c.request("POST", "/api/chat/coaching/stream", body, {"Content-Type": "application/json", "X-User-Id": user})
    r = c.getresponse()
    events: list[tuple[int, dict]] = []
    while True:
        line = r.readline()
        if not line:
            break
        if line.startswith(b"data:"):
            events.append((time.time_ns() // 1000, json.loads(line[5:])))
    return r.status, events


def streamed(base: dict, work: pathlib.Path, run_id: str) -> dict:
    """The streamed route against a model that writes its answer a word every STREAM_GAP_MS:
    how long after the model's first piece the golfer sees the first words, how long after its
    last piece the done event comes, and the service's CPU per event (streamed minus buffered
    answers to the same model, sequential requests, divided by the events)."""
    times = work / "stream-model-times.txt"
    model_port, port = free_port(), free_port()
    spawn([str(MOCK), str(model_port), "0", str(STREAM_GAP_MS), str(times)], dict(os.environ))
    wait_http(model_port)
    env = dict(base, PORT=str(port), OPENAI_BASE_URL=f"http://127.0.0.1:{model_port}/v1")
    service = spawn([str(BIN), "serve"], env, work / "stream-serve.out", work / "stream-serve.err")
    wait_http(port, "/openapi.json")
    for i in range(3):
        post_stream(port, "golfer-0001", f"stream-warmup-{i}-{run_id}")
    times.write_text("")
    first_delta, after_last, events_per, deltas_per = [], [], [], []
    perf = record_profile(service.pid, "BENCH_PERF_STREAM")
    cpu0, split0, switches0 = cpu_seconds(service.pid), cpu_split(service.pid), switches(service.pid)
    for i in range(STREAM_REQUESTS):
        status, events = post_stream(port, f"golfer-{(i % 50) + 1:04d}", f"stream-{i:04d}-{run_id}")
        if status != 200 or not events or events[-1][1].get("type") != "done":
            die(f"streamed request {i} failed: {status} {events[-1:] if events else ''}")
        events_per.append(len(events))
        deltas_per.append(sum(1 for _, e in events if e["type"] == "delta"))
        model_first, model_last = (int(x) for x in times.read_text().splitlines()[i].split()[:2])
        first_delta.append((next(t for t, e in events if e["type"] == "delta") - model_first) / 1000)
        after_last.append((events[-1][0] - model_last) / 1000)
    cpu_stream = cpu_seconds(service.pid) - cpu0
    split_stream = [b - a for a, b in zip(split0, cpu_split(service.pid))]
    switches_stream = switches(service.pid) - switches0
    if perf is not None:
        perf.send_signal(signal.SIGINT)
        perf.wait(60)
    pieces = statistics.mean(int(line.split()[2]) for line in times.read_text().splitlines())
    cpu0, split0, switches0 = cpu_seconds(service.pid), cpu_split(service.pid), switches(service.pid)
    for i in range(STREAM_REQUESTS):
        status, _ = post_chat(port, f"golfer-{(i % 50) + 1:04d}", "How do I stop slicing my driver?", f"json-{i:04d}-{run_id}")
        if status != 200:
            die(f"buffered request {i} failed: {status}")
    cpu_json = cpu_seconds(service.pid) - cpu0
    split_json = [b - a for a, b in zip(split0, cpu_split(service.pid))]
    switches_json = switches(service.pid) - switches0
    stop(service)
    per_piece = STREAM_REQUESTS * max(pieces, 1) / 1e6
    events = statistics.mean(events_per)
    return {
        "requests": STREAM_REQUESTS,
        "model_gap_ms": STREAM_GAP_MS,
        "first_delta_after_model_first_ms": {p: pct(first_delta, float(p)) for p in ("50", "95")},
        "done_after_model_last_ms": {p: pct(after_last, float(p)) for p in ("50", "95")},
        "events_per_request": events,
        "deltas_per_request": statistics.mean(deltas_per),
        "cpu_ms_per_request_streamed": cpu_stream * 1000 / STREAM_REQUESTS,
        "cpu_ms_per_request_buffered": cpu_json * 1000 / STREAM_REQUESTS,
        "cpu_us_per_event": (cpu_stream - cpu_json) * 1e6 / STREAM_REQUESTS / max(events, 1),
        "model_pieces_per_request": pieces,
        "cpu_us_per_model_piece": (cpu_stream - cpu_json) * 1e6 / STREAM_REQUESTS / max(pieces, 1),
        "user_us_per_model_piece": (split_stream[0] - split_json[0]) / per_piece,
        "kernel_us_per_model_piece": (split_stream[1] - split_json[1]) / per_piece,
        "switches_per_model_piece": (switches_stream - switches_json) / (per_piece * 1e6),
    }


CONCURRENT_STREAMS = env_int("BENCH_CONCURRENT_STREAMS", 100)


async def stream_client(port: int, user: str, tag: int) -> list[tuple[int, str]]:
    """One streamed answer over a raw HTTP/1.1 connection (asyncio, so a hundred of them share
    one thread without a lock's time slices): each event's type with when it arrived (Unix µs)."""
    body = json.dumps({"message": f"How do I stop slicing my driver? bench-stream-{tag}", "clientMessageId": f"bench-stream-{tag}-{time.time_ns()}"}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /api/chat/coaching/stream HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                 + f"X-User-Id: {user}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        die(f"concurrent stream {tag}: {head.splitlines()[0]!r}")
    events: list[tuple[int, str]] = []
    pending = b""
    while True:
        size = int((await reader.readline()).strip() or b"0", 16)
        if size == 0:
            break
        chunk = await reader.readexactly(size + 2)
        now = time.time_ns() // 1000
        pending += chunk[:-2]
        while b"\n\n" in pending:
            event, pending = pending.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    events.append((now, json.loads(line[5:])["type"]))
    writer.close()
    return events


def concurrent_streams(base: dict, work: pathlib.Path, buffered_ms: float) -> dict:
    """CONCURRENT_STREAMS answers streamed at once by `serve` on one core (taskset), from a
    model writing a word every STREAM_GAP_MS: whether one core keeps up (each answer's first
    delta and done event against the model's own first and last piece), and the CPU per model
    piece (the service's CPU less a buffered answer's, per request, over the pieces)."""
    times = work / "concurrent-model-times.txt"
    model_port, port = free_port(), free_port()
    spawn([str(MOCK), str(model_port), "0", str(STREAM_GAP_MS), str(times)], dict(os.environ))
    wait_http(model_port)
    env = dict(base, PORT=str(port), OPENAI_BASE_URL=f"http://127.0.0.1:{model_port}/v1")
    core = str(os.cpu_count() - 1 if os.cpu_count() else 0)
    service = spawn(["taskset", "-c", core, str(BIN), "serve"], env, work / "concurrent-serve.out", work / "concurrent-serve.err")
    wait_http(port, "/openapi.json")

    async def all_streams() -> list[list[tuple[int, str]]]:
        return await asyncio.gather(*(stream_client(port, f"golfer-{i + 1:04d}", i) for i in range(CONCURRENT_STREAMS)))

    asyncio.run(stream_client(port, "golfer-0001", 100000))
    times.write_text("")
    cpu0, wall0 = cpu_seconds(service.pid), time.monotonic()
    seen = asyncio.run(all_streams())
    cpu, wall = cpu_seconds(service.pid) - cpu0, time.monotonic() - wall0
    stop(service)
    model = {}
    for line in times.read_text().splitlines():
        first, last, pieces, *tag = line.split()
        if tag:
            model[int(tag[0])] = (int(first), int(last), int(pieces))
    if len(model) != CONCURRENT_STREAMS or any(not e or e[-1][1] != "done" for e in seen):
        die(f"concurrent streams: {len(model)} model answers, {sum(1 for e in seen if e and e[-1][1] == 'done')} done events")
    first_delta = [(next(t for t, kind in events if kind == "delta") - model[i][0]) / 1000 for i, events in enumerate(seen)]
    after_last = [(events[-1][0] - model[i][1]) / 1000 for i, events in enumerate(seen)]
    # The most answers streaming at once: from each one's first event to its last.
    spans = sorted([(e[0][0], 1) for e in seen] + [(e[-1][0], -1) for e in seen])
    at_once, most = 0, 0
    for _, step in spans:
        at_once += step
        most = max(most, at_once)
    pieces = sum(p for _, _, p in model.values())
    return {
        "streams": CONCURRENT_STREAMS,
        "most_at_once": most,
        "core": int(core),
        "model_gap_ms": STREAM_GAP_MS,
        "model_pieces": pieces,
        "wall_s": wall,
        "cpu_s": cpu,
        "core_share": cpu / wall,
        "first_delta_after_model_first_ms": {p: pct(first_delta, float(p)) for p in ("50", "95", "99")},
        "done_after_model_last_ms": {p: pct(after_last, float(p)) for p in ("50", "95", "99")},
        "cpu_us_per_model_piece": max(cpu - CONCURRENT_STREAMS * buffered_ms / 1000, 0) * 1e6 / max(pieces, 1),
    }


DAY_MESSAGES = 40


def steady_day(port: int, out: pathlib.Path, run_id: str) -> dict:
    """One golfer's day of DAY_MESSAGES messages of 300 characters (the mock replies with
    about 600): the capacity units each message consumed, from the service's EMF lines.
    Every message of the first half states a goal of about 120 characters, which the mock
    model remembers, so the golfer's memory item holds 20 facts (about 5 KB) by the second
    half; there every fourth message states one more (a fact change, written in the turn's
    transaction) and the others change nothing. DynamoDB Local rounds a transaction's write
    units over its items together, so a change to a small memory item could hide in the
    rounding: the full item makes it show."""
    before = len(emf_lines(out))
    user = f"golfer-day-{run_id[-8:]}"
    phrase = "how do I keep my tempo smooth from the top when I feel rushed and the club gets steep "
    remembers = [i < DAY_MESSAGES // 2 or i % 4 == 0 for i in range(DAY_MESSAGES)]
    for i in range(DAY_MESSAGES):
        goal = f"My goal number {i} is to hit more fairways with a smooth tempo and a relaxed grip on every tee shot this season. "
        opening = goal if remembers[i] else f"Message {i:02d} of my day: "
        message = (opening + phrase * 5)[:300]
        status, body = post_chat(port, user, message, f"day-{run_id}-{i:03d}")
        if status != 200:
            die(f"the day's message {i} got {status}: {body}")
    lines = emf_lines(out)[before:]
    wcu = [float(l.get("DynamoWriteUnits", 0)) for l in lines]
    rcu = [float(l.get("DynamoReadUnits", 0)) for l in lines]
    steady = range(DAY_MESSAGES // 2, len(wcu))
    plain = [wcu[i] for i in steady if not remembers[i]]
    changed = [wcu[i] for i in steady if remembers[i]]
    return {"messages": len(lines), "message_chars": 300,
            "write_units_steady": statistics.mean(plain), "write_units_steady_max": max(plain),
            "write_units_fact_change": statistics.mean(changed), "write_units_fact_change_max": max(changed),
            "read_units_steady": statistics.mean(rcu[DAY_MESSAGES // 2:]), "write_units_first": wcu[0], "write_units_by_message": wcu}


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def json_lines(path: pathlib.Path) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def emf_lines(path: pathlib.Path) -> list[dict]:
    return [l for l in json_lines(path) if "_aws" in l]


def tokenizer_ms(log: pathlib.Path) -> float | None:
    for l in json_lines(log):
        if l.get("message") == "tokenizer ready":
            return float(l.get("ms", 0))
    return None


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # fields[11], fields[12] are utime and stime (stat fields 14 and 15), in clock ticks.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_split(pid: int) -> tuple[float, float]:
    """The process's user and kernel CPU seconds."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / os.sysconf("SC_CLK_TCK"), int(fields[12]) / os.sysconf("SC_CLK_TCK")


def switches(pid: int) -> int:
    """Context switches of all the process's threads so far: each is a thread put to sleep or
    woken, which is where an idle service spends its CPU per streamed piece."""
    total = 0
    for status in pathlib.Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    total += int(line.split()[1])
        except OSError:
            pass  # a thread that ended meanwhile
    return total


def status_kb(pid: int, key: str) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def record_profile(pid: int, setting: str = "BENCH_PERF") -> subprocess.Popen | None:
    """With BENCH_PERF=FILE, perf samples the service's stacks for the measured run (bench/profile);
    with BENCH_PERF_STREAM=FILE, for the sequential streamed answers."""
    target = os.environ.get(setting)
    if not target:
        return None
    cmd = ["perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "--call-graph", "dwarf,16384", "-p", str(pid), "-o", target]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)  # perf attaches before the load starts
    return p


def run_wrk(script: str, url: str, connections: int, seconds: int, args: list[str], stop_when=None) -> dict:
    cmd = ["wrk", "-t", str(WRK_THREADS), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "30s",
           "-s", str(ROOT / "bench" / script), url, "--", *args]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, text=True)
    CHILDREN.append(p)
    if stop_when is not None:
        while p.poll() is None:
            if stop_when():
                p.send_signal(signal.SIGINT)  # wrk stops and reports what it measured so far
                break
            time.sleep(0.1)
    out, _ = p.communicate()
    for line in out.splitlines():
        if line.startswith("WRK_RESULT "):
            return json.loads(line[len("WRK_RESULT "):])
    die(f"wrk printed no result:\n{out}")
    return {}


class Emulator(http.server.ThreadingHTTPServer):
    """The Lambda Runtime API (2018-06-01), enough for one invocation: hands out `event`,
    records when INIT finished (the first /next) and when the response was posted."""

    daemon_threads = True

    def __init__(self, event: bytes):
        self.event = event
        self.given = False
        self.next_at: float | None = None
        self.response_at: float | None = None
        self.response: bytes | None = None
        self.error: bytes | None = None
        self.done = threading.Event()
        super().__init__(("127.0.0.1", 0), EmulatorHandler)


class EmulatorHandler(http.server.BaseHTTPRequestHandler):
    server: Emulator

    def log_message(self, *_args) -> None:
        pass

    def do_GET(self) -> None:
        if not self.path.endswith("/runtime/invocation/next"):
            self.send_error(404)
            return
        if self.server.given:
            self.server.done.wait(60)  # no second invocation: park the long poll until the end
            return
        self.server.given = True
        self.server.next_at = time.perf_counter()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Lambda-Runtime-Aws-Request-Id", "bench-invocation-1")
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 29_000))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:coach-api")
        self.send_header("Lambda-Runtime-Trace-Id", "Root=1-6743a1f2-0b5c3d1e2f3a4b5c6d7e8f90;Sampled=0")
        self.send_header("Content-Length", str(len(self.server.event)))
        self.end_headers()
        self.wfile.write(self.server.event)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.endswith("/response"):
            self.server.response_at = time.perf_counter()
            self.server.response = body
        else:
            self.server.error = body
        self.send_response(202)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
        self.server.done.set()


def cold_start_serve(env: dict, work: pathlib.Path, run: int) -> dict:
    port = free_port()
    out, err = work / f"cold-serve-{run}.out", work / f"cold-serve-{run}.err"
    user = f"golfer-{(run % GOLFERS) + 1:04d}"
    started = time.perf_counter()
    p = spawn([str(BIN), "serve"], dict(env, PORT=str(port)), out, err)
    listening = None
    while time.perf_counter() - started < 30:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                listening = time.perf_counter()
            break
        except OSError:
            time.sleep(0.0005)
    if listening is None:
        die("serve never listened")
    status, body = post_chat(port, user, "How do I fix my slice?", f"cold-serve-{run:04d}-{int(time.time())}")
    answered = time.perf_counter()
    stop(p)
    if status != 200:
        die(f"cold start: first request answered {status}: {body}")
    return {
        "exec_to_listen_ms": (listening - started) * 1000,
        "exec_to_first_answer_ms": (answered - started) * 1000,
        **first_request(out, answered - started),
        "tokenizer_build_ms": tokenizer_ms(err),
    }


def first_request(out: pathlib.Path, exec_to_answer_s: float) -> dict:
    """The first request's split from its EMF line: handler time, the waits on DynamoDB Local
    and the model, and what is left of exec → answer without those waits (the process's own)."""
    first = emf_lines(out)
    if not first:
        return {}
    e = first[0]
    store, model = float(e.get("StoreWaitMs", 0)), float(e.get("ModelWaitMs", 0))
    return {
        "first_request_handler_ms": e.get("ResponseTime"),
        "first_request_store_wait_ms": store,
        "first_request_model_wait_ms": model,
        "first_request_in_process_ms": e.get("InProcessMs"),
        "exec_to_first_answer_less_waits_ms": exec_to_answer_s * 1000 - store - model,
    }


def cold_start_lambda(env: dict, work: pathlib.Path, run: int) -> dict:
    event = json.loads(EVENT.read_text())
    event["requestContext"]["authorizer"]["claims"]["sub"] = f"golfer-{(run % GOLFERS) + 1:04d}"
    body = json.loads(event["body"])
    body.pop("userId", None)
    body["clientMessageId"] = f"cold-lambda-{run:04d}-{int(time.time())}"
    event["body"] = json.dumps(body)
    emu = Emulator(json.dumps(event).encode())
    threading.Thread(target=emu.serve_forever, daemon=True).start()
    out, err = work / f"cold-lambda-{run}.out", work / f"cold-lambda-{run}.err"
    lambda_env = dict(
        env,
        AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{emu.server_address[1]}",
        AWS_LAMBDA_FUNCTION_NAME="coach-api",
        AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="1024",
        AWS_LAMBDA_LOG_GROUP_NAME="/aws/lambda/coach-api",
        AWS_LAMBDA_LOG_STREAM_NAME="bench",
        AUTH_MODE="cognito",
    )
    started = time.perf_counter()
    p = spawn([str(BIN)], lambda_env, out, err)
    emu.done.wait(30)
    peak = status_kb(p.pid, "VmHWM") if p.poll() is None else 0
    stop(p)
    emu.shutdown()
    if emu.response_at is None or emu.next_at is None:
        die(f"the Lambda binary did not answer: error={emu.error!r}")
    response = json.loads(emu.response or b"{}")
    if response.get("statusCode") != 200:
        die(f"the Lambda binary answered {response.get('statusCode')}: {response.get('body')}")
    return {
        "exec_to_init_done_ms": (emu.next_at - started) * 1000,
        "exec_to_response_ms": (emu.response_at - started) * 1000,
        "invocation_ms": (emu.response_at - emu.next_at) * 1000,
        **first_request(out, emu.response_at - started),
        "tokenizer_build_ms": tokenizer_ms(err),
        "peak_rss_kb": peak,
    }


def peak_in_flight(lines: list[dict]) -> int:
    """Most requests inside the handler at once, from each EMF line's end (its timestamp, ms)
    and its ResponseTime."""
    events = []
    for l in lines:
        end = float(l["_aws"]["Timestamp"])
        events += [(end - float(l.get("ResponseTime", 0)), 1), (end, -1)]
    now = peak = 0
    for _, step in sorted(events):
        now += step
        peak = max(peak, now)
    return peak


def median_of(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def zip_size() -> tuple[int, str]:
    """The deployable zip: cargo lambda's when it was built (infra/build-lambda), otherwise the
    release binary zipped as `bootstrap` the same way."""
    built = ROOT / "target" / "lambda" / "coach-api" / "bootstrap.zip"
    if built.exists():
        return built.stat().st_size, str(built.relative_to(ROOT))
    zpath = RESULTS / "bootstrap.zip"
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.write(BIN, "bootstrap")
    return zpath.stat().st_size, "target/release/coach-api zipped as bootstrap"


def plot(path: pathlib.Path, service: dict, model: dict, handler: list[float], in_process: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5))
    ps = [1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9]
    x = [1 / (1 - p / 100) for p in ps]
    a.plot(x, [service["latency_us"]["percentiles"][str(p)] / 1000 for p in ps], "o-", label="end to end (wrk → serve)")
    a.plot(x, [pct(handler, p) for p in ps], "s-", label="handler (service's own ResponseTime)")
    a.plot(x, [model["latency_us"]["percentiles"][str(p)] / 1000 for p in ps], "^-", label=f"mock model alone ({MODEL_DELAY_MS} ms)")
    a.set_xscale("log")
    a.set_yscale("log")
    labelled = [50, 75, 90, 95, 99, 99.9]
    a.set_xticks([1 / (1 - p / 100) for p in labelled])
    a.set_xticklabels([f"p{p:g}" for p in labelled])
    a.minorticks_off()
    a.set_ylabel("latency (ms, log scale)")
    a.set_title(f"Latency by percentile, {GOLFERS} golfers")
    a.grid(True, which="both", alpha=0.3)
    a.legend()
    b.hist(in_process, bins=60, color="tab:green")
    for p, style in ((50, "--"), (99, ":")):
        b.axvline(pct(in_process, p), color="black", linestyle=style, label=f"p{p} {pct(in_process, p):.3f} ms")
    b.set_xlabel("in-process time per request (ms): handler minus awaiting DynamoDB and the model")
    b.set_ylabel("requests")
    b.set_title("Where the service itself spends time")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    for need in (BIN, MOCK):
        if not need.exists():
            die(f"{need} is missing: run bench/run, which builds it")
    jar_dir = os.environ.get("DYNAMODB_LOCAL_DIR") or die("DYNAMODB_LOCAL_DIR is not set: run bench/run")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work = RESULTS / f"{stamp}-work"
    work.mkdir()

    ddb_port, model_port, model0_port = free_port(), free_port(), free_port()
    spawn(["java", f"-Djava.library.path={jar_dir}/DynamoDBLocal_lib", "-jar", f"{jar_dir}/DynamoDBLocal.jar",
           "-inMemory", "-sharedDb", "-port", str(ddb_port)], dict(os.environ), None, work / "dynamodb-local.log")
    spawn([str(MOCK), str(model_port), str(MODEL_DELAY_MS)], dict(os.environ))
    spawn([str(MOCK), str(model0_port), "0"], dict(os.environ))
    wait_http(ddb_port)
    base = dict(
        os.environ,
        DYNAMODB_ENDPOINT=f"http://127.0.0.1:{ddb_port}",
        AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", AWS_REGION="us-east-1",
        AUTH_MODE="local",
        OPENAI_API_KEY="sk-bench-not-a-key",
        OPENAI_BASE_URL=f"http://127.0.0.1:{model_port}/v1",
        # Limits raised so nothing is refused for quota (the golfers send more than 15 an hour);
        # every wait is the service's shipped default (one request deadline, 3 s for admission).
        RATE_LIMIT_PER_HOUR="1000000", IP_RATE_LIMIT_PER_HOUR="1000000",
        COST_LIMIT_PER_USER="100000", COST_LIMIT_TOTAL="10000000",
        LOG_FORMAT="json", RUST_LOG="info",
        # As infra/lambda-deployment.yaml sets them: mimalloc commits memory as it is used
        # and returns it at once (its defaults doubled the Lambda's peak RSS). Set in the
        # environment, they are taken from there (to measure another setting).
        MIMALLOC_ARENA_EAGER_COMMIT=os.environ.get("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
        MIMALLOC_PURGE_DELAY=os.environ.get("MIMALLOC_PURGE_DELAY", "0"),
    )
    for cmd in (["migrate"], ["seed", "--golfers", str(GOLFERS)]):
        r = subprocess.run([str(BIN), *cmd], env=base, cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            die(f"coach-api {' '.join(cmd)} failed: {r.stderr}")

    print(f"bench: cold starts ({COLD_RUNS} each, model answering at once)", file=sys.stderr)
    cold_env = dict(base, OPENAI_BASE_URL=f"http://127.0.0.1:{model0_port}/v1")
    serve_cold = [cold_start_serve(cold_env, work, i) for i in range(COLD_RUNS)]
    lambda_cold = [cold_start_lambda(cold_env, work, i) for i in range(COLD_RUNS)]

    print(f"bench: the mock model alone, {GOLFERS} connections", file=sys.stderr)
    model = run_wrk("model.lua", f"http://127.0.0.1:{model_port}/v1/chat/completions", GOLFERS, min(SECONDS, 15), [str(THINK_MS)])

    print(f"bench: {GOLFERS} golfers against coach-api serve (≤ {MAX_REQUESTS} requests, ≤ {SECONDS} s)", file=sys.stderr)
    port = free_port()
    out, err = work / "serve.out", work / "serve.err"
    service = spawn([str(BIN), "serve"], dict(base, PORT=str(port)), out, err)
    wait_http(port, "/openapi.json")
    for i in range(20):  # warm-up: connections, the tokenizer, the JIT of DynamoDB Local
        post_chat(port, f"golfer-{(i % GOLFERS) + 1:04d}", "Warming up before the measured run.", f"warmup-{i:04d}-{stamp}".replace("T", "").replace("Z", ""))
    baseline = len(emf_lines(out))
    warm_rss_kb = status_kb(service.pid, "VmRSS")
    perf = record_profile(service.pid)
    cpu0, t0 = cpu_seconds(service.pid), time.perf_counter()
    kernel0, switches0 = cpu_split(service.pid)[1], switches(service.pid)
    run_id = stamp.replace("T", "").replace("Z", "")
    load = run_wrk(
        "golfers.lua", f"http://127.0.0.1:{port}", GOLFERS, SECONDS,
        [str(GOLFERS), str(THINK_MS), run_id, str(WRK_THREADS)],
        stop_when=lambda: sum(1 for _ in open(out, "rb")) - baseline >= MAX_REQUESTS,
    )
    # Let requests still in flight when wrk stopped finish, then read the process's totals.
    settled = -1
    while True:
        time.sleep(0.5)
        now = len(emf_lines(out))
        if now == settled:
            break
        settled = now
    cpu1 = cpu_seconds(service.pid)
    kernel1, switches1 = cpu_split(service.pid)[1], switches(service.pid)
    peak_rss_kb = status_kb(service.pid, "VmHWM")
    if perf is not None:
        perf.send_signal(signal.SIGINT)
        perf.wait(60)
    load_end = len(emf_lines(out))
    print(f"bench: one golfer's {DAY_MESSAGES}-message day (300-character messages), for write units at steady state", file=sys.stderr)
    day = steady_day(port, out, run_id)
    stop(service)
    print(f"bench: the streamed route, {STREAM_REQUESTS} answers written a word every {STREAM_GAP_MS} ms", file=sys.stderr)
    stream = streamed(base, work, run_id)
    print(f"bench: {CONCURRENT_STREAMS} streamed answers at once, serve on one core", file=sys.stderr)
    stream["concurrent"] = concurrent_streams(base, work, stream["cpu_ms_per_request_buffered"])
    lines = emf_lines(out)[baseline:load_end]
    log_bytes = out.stat().st_size + err.stat().st_size
    n = len(lines)
    if n == 0:
        die("the service emitted no EMF lines")

    def field(name: str) -> list[float]:
        return [float(l.get(name, 0)) for l in lines]

    handler, in_process = field("ResponseTime"), field("InProcessMs")
    store_wait, model_wait = field("StoreWaitMs"), field("ModelWaitMs")
    calls, waves = field("DynamoCalls"), field("DynamoWaves")
    rcu, wcu = field("DynamoReadUnits"), field("DynamoWriteUnits")
    outcomes: dict[str, int] = {}
    for l in lines:
        outcomes[l.get("Outcome", "?")] = outcomes.get(l.get("Outcome", "?"), 0) + 1
    e2e = {p: load["latency_us"]["percentiles"][p] / 1000 for p in ("50", "95", "99")}
    floor = {p: model["latency_us"]["percentiles"][p] / 1000 for p in ("50", "95", "99")}
    rps = load["requests"] / (load["duration_us"] / 1e6)
    cpu_ms = (cpu1 - cpu0) * 1000 / n
    zip_bytes, zip_what = zip_size()
    binary_bytes = BIN.stat().st_size

    # Cost per 1,000 coaching requests, from what was measured.
    per_request = {
        "model": statistics.mean(field("CostPerDay")),
        "dynamodb": statistics.mean(rcu) * PRICE["dynamodb_read_request_unit"] + statistics.mean(wcu) * PRICE["dynamodb_write_request_unit"],
        "lambda_measured": statistics.mean(handler) / 1000 * LAMBDA_MEMORY_GB * PRICE["lambda_gb_second_arm64"] + PRICE["lambda_request"],
        "lambda_with_real_model": (statistics.mean(handler) / 1000 - MODEL_DELAY_MS / 1000 + REAL_MODEL_SECONDS) * LAMBDA_MEMORY_GB * PRICE["lambda_gb_second_arm64"] + PRICE["lambda_request"],
        "api_gateway": PRICE["apigw_rest_request"],
        "logs": log_bytes / max(1, n + 20) / 1e9 * PRICE["cloudwatch_logs_gb"],
    }
    total = per_request["model"] + per_request["dynamodb"] + per_request["lambda_with_real_model"] + per_request["api_gateway"] + per_request["logs"]
    projection = []
    for golfers in (1_000, 10_000, 100_000):
        requests = golfers * MESSAGES_PER_GOLFER_DAY
        projection.append({"golfers": golfers, "requests_per_day": requests, "dollars_per_day": requests * total,
                           "model_dollars_per_day": requests * per_request["model"]})
    cap = 100.0 / per_request["model"] if per_request["model"] > 0 else None

    result = {
        "stamp": stamp,
        "machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
        "setup": {"golfers": GOLFERS, "think_ms": THINK_MS, "model_delay_ms": MODEL_DELAY_MS, "wrk_threads": WRK_THREADS,
                  "max_requests": MAX_REQUESTS, "max_seconds": SECONDS},
        "load": load, "model_alone": model,
        "requests_measured": n, "outcomes": outcomes,
        "requests_per_second": rps,
        "latency_ms": {
            "end_to_end": e2e, "model_alone": floor,
            "service_added": {p: e2e[p] - floor[p] for p in e2e},
            "handler": {p: pct(handler, float(p)) for p in ("50", "95", "99")},
            "in_process": {p: pct(in_process, float(p)) for p in ("50", "95", "99")},
            "awaiting_dynamodb": {p: pct(store_wait, float(p)) for p in ("50", "95", "99")},
            "awaiting_model": {p: pct(model_wait, float(p)) for p in ("50", "95", "99")},
        },
        "cpu_ms_per_request": cpu_ms,
        "kernel_ms_per_request": (kernel1 - kernel0) * 1000 / n,
        "switches_per_request": (switches1 - switches0) / n,
        "peak_rss_mb": peak_rss_kb / 1024,
        "rss_after_warmup_mb": warm_rss_kb / 1024,
        "peak_in_flight": peak_in_flight(lines),
        "dynamodb": {"calls_per_request": statistics.mean(calls), "waves_per_request": statistics.mean(waves),
                     "waves_max": max(waves), "read_units_per_request": statistics.mean(rcu), "write_units_per_request": statistics.mean(wcu)},
        "tokens_per_request": statistics.mean(field("TokensUsed")),
        "steady_day": day,
        "cold_start": {
            "serve": {"runs": serve_cold, "median_exec_to_listen_ms": median_of(serve_cold, "exec_to_listen_ms"),
                      "median_exec_to_first_answer_ms": median_of(serve_cold, "exec_to_first_answer_ms"),
                      "median_first_request_handler_ms": median_of(serve_cold, "first_request_handler_ms"),
                      "median_first_request_store_wait_ms": median_of(serve_cold, "first_request_store_wait_ms"),
                      "median_first_request_in_process_ms": median_of(serve_cold, "first_request_in_process_ms"),
                      "median_exec_to_first_answer_less_waits_ms": median_of(serve_cold, "exec_to_first_answer_less_waits_ms"),
                      "median_tokenizer_build_ms": median_of(serve_cold, "tokenizer_build_ms")},
            "lambda": {"runs": lambda_cold, "median_exec_to_init_done_ms": median_of(lambda_cold, "exec_to_init_done_ms"),
                       "median_exec_to_response_ms": median_of(lambda_cold, "exec_to_response_ms"),
                       "median_invocation_ms": median_of(lambda_cold, "invocation_ms"),
                       "median_first_request_store_wait_ms": median_of(lambda_cold, "first_request_store_wait_ms"),
                       "median_first_request_in_process_ms": median_of(lambda_cold, "first_request_in_process_ms"),
                       "median_exec_to_response_less_waits_ms": median_of(lambda_cold, "exec_to_first_answer_less_waits_ms"),
                       "median_tokenizer_build_ms": median_of(lambda_cold, "tokenizer_build_ms"),
                       "median_peak_rss_mb": (median_of(lambda_cold, "peak_rss_kb") or 0) / 1024},
        },
        "artifact": {"binary_mb": binary_bytes / 1e6, "zip_mb": zip_bytes / 1e6, "zip_source": zip_what},
        "cost": {"assumptions": {"messages_per_golfer_day": MESSAGES_PER_GOLFER_DAY, "real_model_seconds": REAL_MODEL_SECONDS,
                                 "lambda_memory_gb": LAMBDA_MEMORY_GB, "prices": PRICE},
                 "per_request": per_request, "per_1000_requests": total * 1000, "projection": projection,
                 "global_cap_requests_per_day": cap},
    }
    result["stream"] = stream
    (RESULTS / f"{stamp}.json").write_text(json.dumps(result, indent=2))
    md = markdown(result)
    (RESULTS / f"{stamp}.md").write_text(md)
    png = RESULTS / f"{stamp}-latency.png"
    plot(png, load, model, handler, in_process)
    for suffix, src in ((".json", RESULTS / f"{stamp}.json"), (".md", RESULTS / f"{stamp}.md"), ("-latency.png", png)):
        (RESULTS / f"latest{suffix}").write_bytes(src.read_bytes())
    print(md)
    print(f"bench: results in {RESULTS.relative_to(ROOT)}/{stamp}.{{json,md}} and {png.name}", file=sys.stderr)
    cleanup()


def markdown(r: dict) -> str:
    L = r["latency_ms"]
    c = r["cold_start"]
    d = r["dynamodb"]
    a = r["artifact"]
    cost = r["cost"]

    def row3(name: str, v: dict, note: str = "") -> str:
        return f"| {name} | {v['50']:.2f} | {v['95']:.2f} | {v['99']:.2f} | {note} |"

    def target(ok: bool) -> str:
        return "met" if ok else "**missed**"

    lines = [
        f"# Benchmark {r['stamp']}",
        "",
        f"{r['setup']['golfers']} golfers, think time {r['setup']['think_ms']} ms ±50 %, mock model {r['setup']['model_delay_ms']} ms, "
        f"{r['requests_measured']} requests measured, {r['machine']['cpus']} CPUs (DynamoDB Local, wrk and the mock share them).",
        "",
        "| latency (ms) | p50 | p95 | p99 | |",
        "|---|---|---|---|---|",
        row3("end to end (wrk)", L["end_to_end"]),
        row3("mock model alone (wrk)", L["model_alone"], "the floor"),
        row3("service-added (end to end − model, per percentile)", L["service_added"], "mostly DynamoDB Local's queue"),
        row3("handler (service's ResponseTime)", L["handler"]),
        row3("awaiting DynamoDB", L["awaiting_dynamodb"], "DynamoDB Local"),
        row3("awaiting the model", L["awaiting_model"]),
        row3("in process (handler − awaits)", L["in_process"]),
        "",
        "| figure | measured | target | |",
        "|---|---|---|---|",
        f"| CPU per request (service process) | {r['cpu_ms_per_request']:.3f} ms | < 0.5 ms | {target(r['cpu_ms_per_request'] < 0.5)} |",
        f"| of it in the kernel; context switches per request | {r['kernel_ms_per_request']:.3f} ms; {r['switches_per_request']:.1f} | | |",
        f"| in-process time p99 | {L['in_process']['99']:.3f} ms | < 1 ms | {target(L['in_process']['99'] < 1)} |",
        f"| sequential DynamoDB waves per request | {d['waves_per_request']:.2f} (max {d['waves_max']:.0f}) | 2 | {target(d['waves_per_request'] <= 2.0)} |",
        f"| DynamoDB calls per request | {d['calls_per_request']:.2f} | | |",
        f"| cold start, serve: exec → first answer (median) | {c['serve']['median_exec_to_first_answer_ms']:.1f} ms | < 30 ms | {target(c['serve']['median_exec_to_first_answer_ms'] < 30)} |",
        f"| cold start, Lambda: exec → response (median) | {c['lambda']['median_exec_to_response_ms']:.1f} ms | < 30 ms | {target(c['lambda']['median_exec_to_response_ms'] < 30)} |",
        f"| the same less awaiting DynamoDB Local and the model: serve / Lambda | {c['serve']['median_exec_to_first_answer_less_waits_ms'] or 0:.1f} / {c['lambda']['median_exec_to_response_less_waits_ms'] or 0:.1f} ms | | the process's own share |",
        f"| peak RSS, serve under load | {r['peak_rss_mb']:.1f} MB | < 40 MB | {target(r['peak_rss_mb'] < 40)} |",
        f"| RSS after warm-up; requests in flight at the peak | {r['rss_after_warmup_mb']:.1f} MB; {r['peak_in_flight']} "
        f"(≈ {(r['peak_rss_mb'] - r['rss_after_warmup_mb']) * 1024 / max(r['peak_in_flight'], 1):.0f} KB each) | | DynamoDB Local's queue holds them |",
        f"| peak RSS, Lambda after one invocation | {c['lambda']['median_peak_rss_mb']:.1f} MB | < 40 MB | {target(c['lambda']['median_peak_rss_mb'] < 40)} |",
        f"| release zip ({a['zip_source']}) | {a['zip_mb']:.1f} MB | < 15 MB | {target(a['zip_mb'] < 15)} |",
        f"| requests/s | {r['requests_per_second']:.1f} | | |",
        f"| write units per message at steady state (messages 21–40 of a 40-message day that change no fact, 300-character messages, ~600-character replies) | "
        f"{r['steady_day']['write_units_steady']:.1f} (max {r['steady_day']['write_units_steady_max']:.1f}; the day's first {r['steady_day']['write_units_first']:.1f}) | ≤ 16 | {target(r['steady_day']['write_units_steady_max'] <= 16)} |",
        f"| write units per message that changes what the coach remembers (a new fact, in the turn's transaction) | "
        f"{r['steady_day']['write_units_fact_change']:.1f} (max {r['steady_day']['write_units_fact_change_max']:.1f}) | | |",
        f"| read units per message at steady state | {r['steady_day']['read_units_steady']:.1f} | | |",
        f"| errors | wrk {sum(r['load']['errors'].values())}, non-200 {r['load']['not_ok']}; outcomes {r['outcomes']} | 0 | |",
        "",
        "Cold start, medians of the runs: "
        f"serve listens after {c['serve']['median_exec_to_listen_ms']:.1f} ms; its first request takes {c['serve']['median_first_request_handler_ms'] or 0:.1f} ms in the handler, "
        f"{c['serve']['median_first_request_store_wait_ms'] or 0:.1f} ms of it awaiting DynamoDB Local and {c['serve']['median_first_request_in_process_ms'] or 0:.2f} ms in process "
        f"(the tokenizer's warm-up, compiling its pattern beside start-up, takes {c['serve']['median_tokenizer_build_ms'] or 0:.1f} ms). "
        f"Lambda: INIT done after {c['lambda']['median_exec_to_init_done_ms']:.1f} ms, of which the tokenizer {c['lambda']['median_tokenizer_build_ms'] or 0:.1f} ms; "
        f"the first invocation then takes {c['lambda']['median_invocation_ms']:.1f} ms, "
        f"{c['lambda']['median_first_request_store_wait_ms'] or 0:.1f} ms of it awaiting DynamoDB Local and {c['lambda']['median_first_request_in_process_ms'] or 0:.2f} ms in process.",
        "",
        f"DynamoDB consumed per request: {d['read_units_per_request']:.2f} read units, {d['write_units_per_request']:.2f} write units. "
        f"Tokens per request: {r['tokens_per_request']:.0f} (the mock reports fixed usage).",
        "",
        "## Cost projection",
        "",
        f"Per request: model ${cost['per_request']['model']:.5f}, DynamoDB ${cost['per_request']['dynamodb']:.7f}, "
        f"Lambda ${cost['per_request']['lambda_with_real_model']:.7f} (with a {cost['assumptions']['real_model_seconds']} s model; "
        f"${cost['per_request']['lambda_measured']:.7f} at the measured duration), API Gateway ${cost['per_request']['api_gateway']:.7f}, "
        f"logs ${cost['per_request']['logs']:.8f}: **${cost['per_1000_requests']:.2f} per 1,000 coaching requests**.",
        "",
        f"| golfers | requests/day ({cost['assumptions']['messages_per_golfer_day']} each) | $/day | of which the model |",
        "|---|---|---|---|",
    ]
    for p in cost["projection"]:
        lines.append(f"| {p['golfers']:,} | {p['requests_per_day']:,} | {p['dollars_per_day']:,.2f} | {p['model_dollars_per_day']:,.2f} |")
    if cost["global_cap_requests_per_day"]:
        lines += ["", f"COST_LIMIT_TOTAL ($100/day) admits about {cost['global_cap_requests_per_day']:,.0f} model-answered requests a day at this cost; "
                      "past that, golfers get the at-capacity answer."]
    st = r.get("stream")
    if st:
        lines += [
            "",
            "## Streamed route",
            "",
            f"{st['requests']} sequential answers from a model writing a word every {st['model_gap_ms']} ms "
            f"({st['deltas_per_request']:.0f} deltas, {st['events_per_request']:.0f} events per answer).",
            "",
            "| figure | p50 | p95 |",
            "|---|---|---|",
            f"| first delta at the client after the model's first piece (ms) | {st['first_delta_after_model_first_ms']['50']:.1f} | {st['first_delta_after_model_first_ms']['95']:.1f} |",
            f"| done event after the model's last piece (ms; settling and storing the turn) | {st['done_after_model_last_ms']['50']:.1f} | {st['done_after_model_last_ms']['95']:.1f} |",
            "",
            f"Service CPU per answer: {st['cpu_ms_per_request_streamed']:.2f} ms streamed, {st['cpu_ms_per_request_buffered']:.2f} ms buffered: "
            f"**{st['cpu_us_per_event']:.0f} µs per event** of overhead, {st['cpu_us_per_model_piece']:.0f} µs per model piece "
            f"({st['model_pieces_per_request']:.0f} pieces an answer): {st['user_us_per_model_piece']:.0f} µs of it in the process, "
            f"{st['kernel_us_per_model_piece']:.0f} µs in the kernel, with {st['switches_per_model_piece']:.1f} context switches a piece.",
        ]
        cc = st.get("concurrent")
        if cc:
            lines += [
                "",
                f"{cc['streams']} answers streamed at once ({cc['most_at_once']} at the most), `serve` pinned to core {cc['core']}: "
                f"{cc['model_pieces']} model pieces in {cc['wall_s']:.1f} s, the service busy {cc['core_share'] * 100:.0f} % of the core; "
                f"**{cc['cpu_us_per_model_piece']:.0f} µs CPU per model piece** (less a buffered answer's CPU per request).",
                "",
                "| figure | p50 | p95 | p99 |",
                "|---|---|---|---|",
                "| first delta after the model's first piece (ms) | " + " | ".join(f"{cc['first_delta_after_model_first_ms'][p]:.1f}" for p in ("50", "95", "99")) + " |",
                "| done event after the model's last piece (ms) | " + " | ".join(f"{cc['done_after_model_last_ms'][p]:.1f}" for p in ("50", "95", "99")) + " |",
            ]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: (cleanup(), sys.exit(1)))
    try:
        main()
    finally:
        cleanup()
