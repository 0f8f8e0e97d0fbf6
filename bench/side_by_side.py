#!/usr/bin/env python3
"""CPU per request of this service and of the LiteLLM proxy, in one run, in front of the same
mock model (run it through bench/side-by-side, which installs LiteLLM and builds what it needs).

Both get the same load: REQUESTS chat requests from CONCURRENCY client threads, each golfer
(an API key for LiteLLM, an X-User-Id for the service) sending a few. Both enforce auth and
limits while they do it:

- this service: the release `coach-api serve` on DynamoDB Local, its shipped limits except the
  hourly ones (raised, as in bench.py, so the load is answered rather than refused);
- LiteLLM: its proxy with one worker, a custom auth hook that admits `golfer-*` keys with a
  per-key rpm limit and budget, and a global daily budget (`litellm_settings.max_budget`).

The figure is the process's own CPU (utime + stime from /proc) over the measured requests,
after a warm-up; DynamoDB Local's CPU is not the service's and is not counted (LiteLLM keeps
no database here). It prints both, and the ratio.

SIDE_BASELINE_BIN names another `coach-api` binary (say, the release build of an older commit):
it is then measured in the same run, on the same DynamoDB Local and mock model, each binary on
tables of its own, in the order this, baseline, baseline, this (so a drift of the machine
during the run weighs on both alike) after a round that warms DynamoDB Local and is not
counted, and the change in CPU per request is printed.
SIDE_LITELLM=0 leaves LiteLLM out.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import bench
from bench import ROOT, BIN, MOCK, cpu_seconds, die, free_port, post_chat, spawn, status_kb, stop, wait_http

REQUESTS = bench.env_int("SIDE_REQUESTS", 600)
CONCURRENCY = bench.env_int("SIDE_CONCURRENCY", 20)
GOLFERS = bench.env_int("SIDE_GOLFERS", 100)
WARMUP = 40
LITELLM = ROOT / ".tools" / "venv-litellm" / "bin" / "litellm"
BASELINE = pathlib.Path(os.environ["SIDE_BASELINE_BIN"]) if os.environ.get("SIDE_BASELINE_BIN") else None
WITH_LITELLM = os.environ.get("SIDE_LITELLM", "1") != "0"

CUSTOM_AUTH = '''
from fastapi import Request
from litellm.proxy._types import ProxyException, UserAPIKeyAuth


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    key = api_key.removeprefix("Bearer ").strip()
    if not key.startswith("golfer-"):
        raise ProxyException(message="unknown key", type="auth_error", param="api_key", code=401)
    # A per-key rpm limit and a $5 budget, checked on every request; the rpm limit is raised
    # so the load is answered, as the service's hourly limits are.
    return UserAPIKeyAuth(api_key=key, user_id=key, rpm_limit=1000, max_budget=5.0)
'''


def litellm_config(model_port: int) -> str:
    return json.dumps({
        "model_list": [{
            "model_name": "gpt-4o",
            "litellm_params": {"model": "openai/gpt-4o", "api_base": f"http://127.0.0.1:{model_port}/v1", "api_key": "sk-bench-not-a-key"},
        }],
        # A master key is required to start; the golfers' keys go through the custom auth hook.
        "general_settings": {"master_key": "sk-bench-" + uuid.uuid4().hex, "custom_auth": "custom_auth.user_api_key_auth", "disable_spend_logs": True},
        "litellm_settings": {"max_budget": 100.0, "budget_duration": "1d", "telemetry": False},
    })


# About the prompt the service builds for a message (system rules, context, the message).
PROMPT = [
    {"role": "system", "content": "You are Coach, a PGA-certified golf instructor who coaches golfers through a mobile app. " * 20},
    {"role": "user", "content": "Coaching context: primary focus tempo and rhythm; recent swing analyses: driver 71/100, out-to-in path. " * 6},
    {"role": "user", "content": "<golfer_message>My drives keep slicing on the range. What should I focus on this week?</golfer_message>"},
]


def post_litellm(port: int, key: str) -> int:
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = json.dumps({"model": "gpt-4o", "messages": PROMPT, "max_tokens": 400})
    c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    r = c.getresponse()
    r.read()
    return r.status


def measure(name: str, pid: int, send) -> dict:
    """Warm up, then REQUESTS requests from CONCURRENCY threads: CPU per request and the rest."""
    for i in range(WARMUP):
        send(i, "warmup")
    statuses: list[int] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        s = send(i, "run")
        with lock:
            statuses.append(s)

    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(one, range(REQUESTS)))
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    ok = sum(1 for s in statuses if s == 200)
    if ok != REQUESTS:
        die(f"{name}: {REQUESTS - ok} of {REQUESTS} requests were not answered with 200 ({sorted(set(statuses))})")
    return {"requests": REQUESTS, "cpu_ms_per_request": (cpu1 - cpu0) * 1000 / REQUESTS,
            "requests_per_second": REQUESTS / (t1 - t0), "peak_rss_mb": status_kb(pid, "VmHWM") / 1024}


def prepare(bin_: pathlib.Path, label: str, base: dict) -> dict:
    """Tables of the binary's own, migrated and seeded by it: the environment to serve with."""
    env = dict(base, DYNAMODB_TABLE_COACHING=f"side-{label}-coaching", DYNAMODB_TABLE_ANALYSES=f"side-{label}-analyses")
    for cmd in (["migrate"], ["seed", "--golfers", str(GOLFERS)]):
        r = subprocess.run([str(bin_), *cmd], env=env, cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            die(f"{bin_} {' '.join(cmd)} failed: {r.stderr}")
    return env


def serve_and_measure(bin_: pathlib.Path, label: str, env: dict, work: pathlib.Path, stamp: str, round_: int) -> dict:
    port = free_port()
    service = spawn([str(bin_), "serve"], dict(env, PORT=str(port)), work / f"serve-{label}-{round_}.out", work / f"serve-{label}-{round_}.err")
    wait_http(port, "/openapi.json")
    print(f"side by side: {label} ({bin_}), {REQUESTS} requests from {CONCURRENCY} threads", file=sys.stderr)
    tag = f"{label}{round_}"
    result = measure(label, service.pid, lambda i, phase: post_chat(port, f"golfer-{(i % GOLFERS) + 1:04d}", f"How do I stop slicing my driver? ({phase} {i})", f"side-{tag}-{phase}-{i:05d}-{stamp[-7:-1]}")[0])
    stop(service)
    return result


def mean(runs: list[dict]) -> dict:
    out = {k: sum(r[k] for r in runs) / len(runs) for k in ("cpu_ms_per_request", "requests_per_second", "peak_rss_mb")}
    return dict(out, requests=sum(r["requests"] for r in runs), runs=runs)


def main() -> None:
    for need in (BIN, MOCK, *((LITELLM,) if WITH_LITELLM else ()), *((BASELINE,) if BASELINE else ())):
        if not need.exists():
            die(f"{need} is missing: run bench/side-by-side, which installs and builds it")
    jar_dir = os.environ.get("DYNAMODB_LOCAL_DIR") or die("DYNAMODB_LOCAL_DIR is not set: run bench/side-by-side")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work = bench.RESULTS / f"{stamp}-side-by-side"
    work.mkdir(parents=True)
    ddb_port, model_port = free_port(), free_port()
    spawn(["java", f"-Djava.library.path={jar_dir}/DynamoDBLocal_lib", "-jar", f"{jar_dir}/DynamoDBLocal.jar",
           "-inMemory", "-sharedDb", "-port", str(ddb_port)], dict(os.environ), None, work / "dynamodb-local.log")
    spawn([str(MOCK), str(model_port), str(bench.MODEL_DELAY_MS)], dict(os.environ))
    wait_http(ddb_port)

    base = dict(
        os.environ,
        DYNAMODB_ENDPOINT=f"http://127.0.0.1:{ddb_port}",
        AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", AWS_REGION="us-east-1",
        AUTH_MODE="local", OPENAI_API_KEY="sk-bench-not-a-key", OPENAI_BASE_URL=f"http://127.0.0.1:{model_port}/v1",
        RATE_LIMIT_PER_HOUR="1000000", IP_RATE_LIMIT_PER_HOUR="1000000", LOG_FORMAT="json", RUST_LOG="info",
        MIMALLOC_ARENA_EAGER_COMMIT="0", MIMALLOC_PURGE_DELAY="0",
    )
    binaries = {"coach-api": BIN, **({"baseline": BASELINE} if BASELINE else {})}
    envs = {label: prepare(bin_, label, base) for label, bin_ in binaries.items()}
    order = ["coach-api", "baseline", "baseline", "coach-api"] if BASELINE else ["coach-api"]
    runs: dict[str, list[dict]] = {label: [] for label in binaries}
    if BASELINE:
        # DynamoDB Local (a JVM) answers the first few thousand calls slower: the first run
        # waited up to twice as long on the store as the last. A round of the baseline, not counted, warms it.
        serve_and_measure(BASELINE, "baseline", envs["baseline"], work, stamp, -1)
    for round_, label in enumerate(order):
        runs[label].append(serve_and_measure(binaries[label], label, envs[label], work, stamp, round_))
    ours = mean(runs["coach-api"])
    baseline = mean(runs["baseline"]) if BASELINE else None

    theirs = None
    if WITH_LITELLM:
        (work / "custom_auth.py").write_text(CUSTOM_AUTH)
        (work / "config.yaml").write_text(litellm_config(model_port))
        lport = free_port()
        proxy = spawn([str(LITELLM), "--config", str(work / "config.yaml"), "--port", str(lport), "--num_workers", "1"],
                      dict(os.environ, PYTHONPATH=str(work), LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False"), work / "litellm.out", work / "litellm.err")
        wait_http(lport, "/health/liveliness", seconds=180)
        print(f"side by side: LiteLLM proxy, {REQUESTS} requests from {CONCURRENCY} threads", file=sys.stderr)
        theirs = measure("litellm", proxy.pid, lambda i, _phase: post_litellm(lport, f"golfer-{(i % GOLFERS) + 1:04d}"))
        stop(proxy)

    result = {"stamp": stamp, "model_delay_ms": bench.MODEL_DELAY_MS, "coach_api": ours, "binary": str(BIN)}
    if baseline:
        result.update(baseline=baseline, baseline_binary=str(BASELINE), change=ours["cpu_ms_per_request"] / baseline["cpu_ms_per_request"] - 1)
    if theirs:
        result.update(litellm=theirs, ratio=theirs["cpu_ms_per_request"] / ours["cpu_ms_per_request"],
                      litellm_version=subprocess.run([str(LITELLM.parent / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                                                     capture_output=True, text=True).stdout.strip())
    (bench.RESULTS / f"{stamp}-side-by-side.json").write_text(json.dumps(result, indent=2))
    print("| | CPU per request | requests/s | peak RSS |\n|---|---|---|---|")
    print(f"| coach-api serve | {ours['cpu_ms_per_request']:.2f} ms | {ours['requests_per_second']:.1f} | {ours['peak_rss_mb']:.1f} MB |")
    if baseline:
        print(f"| baseline: {BASELINE} | {baseline['cpu_ms_per_request']:.2f} ms | {baseline['requests_per_second']:.1f} | {baseline['peak_rss_mb']:.1f} MB |")
    if theirs:
        print(f"| LiteLLM {result['litellm_version']} proxy (1 worker, custom auth, rpm and budget limits) | {theirs['cpu_ms_per_request']:.2f} ms | {theirs['requests_per_second']:.1f} | {theirs['peak_rss_mb']:.1f} MB |")
    if baseline:
        each = ", ".join(f"{r['cpu_ms_per_request']:.2f}" for r in runs["coach-api"])
        each_base = ", ".join(f"{r['cpu_ms_per_request']:.2f}" for r in runs["baseline"])
        print(f"\nCPU per request against the baseline: {result['change'] * 100:+.1f} % (this: {each} ms; baseline: {each_base} ms; {len(order)} runs of {REQUESTS} requests, in the order {', '.join(order)}).")
    if theirs:
        print(f"\nLiteLLM spends {result['ratio']:.1f}× the CPU per request of this service ({REQUESTS} requests, {CONCURRENCY} at a time, mock model at {bench.MODEL_DELAY_MS} ms).")


if __name__ == "__main__":
    try:
        main()
    finally:
        bench.cleanup()
