"""Shares of a folded CPU profile (bench/profile): by component, and the top functions.

Component: each sample counts once (see COMPONENTS and INNERMOST); `self` is the function a
sample was taken in.
"""

import re
import sys
from collections import Counter

# (name, pattern on a frame), most specific first: a tokenizer call's allocations count as
# the tokenizer, not the allocator. A sample any frame of which matches counts for the first.
COMPONENTS = [
    ("token counting (tiktoken-rs, fancy-regex)", r"tiktoken|fancy_regex|coach_api::tokens"),
    ("JSON Schema validation (jsonschema)", r"jsonschema"),
    ("prompt rendering (tera)", r"\btera::"),
    ("output safety (sanitize, linkify)", r"coach_api::safety|linkify|ammonia"),
    ("SigV4 signing", r"aws_sigv4|sigv4"),
    ("DynamoDB items (serde_dynamo, SDK (de)serialisers)", r"serde_dynamo|aws_sdk_dynamodb::protocol_serde|aws_sdk_dynamodb::.*::(de|ser)_"),
    ("AWS SDK request pipeline (smithy orchestrator)", r"aws_smithy|aws_sdk_dynamodb|aws_runtime|aws_config"),
    ("model call (async-openai, reqwest)", r"async_openai|reqwest"),
    ("JSON (serde_json)", r"serde_json"),
    ("logging and metrics (tracing)", r"tracing"),
    ("TLS/crypto (ring, rustls)", r"\bring::|rustls|aws_lc"),
]
# The rest: by the innermost frame that names one of these (the service's own code is what
# runs inside axum's handler and matches none of the above).
INNERMOST = [
    ("the service's own code (coach_api, none of the above)", r"coach_api::"),
    ("HTTP serving (hyper, axum)", r"hyper|axum|h2::|tower"),
    ("async runtime (tokio)", r"tokio::"),
]


def component(frames: list[str]) -> str:
    for name, pattern in COMPONENTS:
        if any(re.search(pattern, f) for f in frames):
            return name
    for f in reversed(frames):
        for name, pattern in INNERMOST:
            if re.search(pattern, f):
                return name
    return "other"


def main(path: str) -> None:
    by_component, by_self, total = Counter(), Counter(), 0
    for line in open(path, encoding="utf-8", errors="replace"):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n, frames = int(count), stack.split(";")
        total += n
        by_self[frames[-1]] += n
        by_component[component(frames)] += n
    if not total:
        sys.exit(f"{path}: no samples")
    # perf's cpu-clock samples weigh their period in nanoseconds: the total is CPU time.
    print(f"{total / 1e9:.2f} s of coach-api serve's CPU sampled\n\nby component (each sample once, most specific first):")
    for name, n in by_component.most_common():
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("\nfunctions the samples were taken in (self):")
    for name, n in by_self.most_common(15):
        print(f"  {100 * n / total:5.1f}%  {name[:110]}")


if __name__ == "__main__":
    main(sys.argv[1])
