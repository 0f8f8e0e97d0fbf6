// The persona suite, run by `evals/run` against `coach-api serve` (DynamoDB Local, the golfers of
// evals/personas.json). Each case of evals/cases.json sends a golfer's message through the real
// service (admission, context, packing, safety, storing) with promptfoo, then checks:
//
// - asked (with the project's mock model, which records every request): the prompt carries the
//   facts the case names, the golfer's words appear only inside the message delimiter, and the
//   prompt leaves the reply its share of the 1,500-token limit;
// - got: a reply in the response schema, hazards removed, not the fallback, and a cost no
//   higher than the reservation (or, for the golfer at the hour's limit, the refusal);
// - graded (with EVAL_GRADER: a model that grades, on OpenAI or any compatible endpoint): the
//   case's rubric, each item with a threshold.
//
// Prints a summary table and writes it, with promptfoo's results, to EVAL_OUT.

import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import { Ajv } from "ajv";
import promptfoo from "promptfoo";

const env = (name, fallback) => process.env[name] ?? fallback;
const COACH = env("COACH_URL");
const MOCK = env("EVAL_MOCK_URL", "");
const GRADER = env("EVAL_GRADER", "");
const GRADER_BASE = env("EVAL_GRADER_BASE_URL", "");
const MODEL_ROW = env("EVAL_MODEL_ROW", "gpt-6-luna");
const OUT = env("EVAL_OUT", "evals/results/latest");
const LABEL = env("EVAL_LABEL", "base");
// A weak grader (the local 135M model) is reported, never gating: EVAL_GRADE_GATES=0.
const GRADE_GATES = env("EVAL_GRADE_GATES", "1") !== "0";
// "all": every case answered by the model (the mock always answers); "most": a real small
// model may write an unusable answer, so more than half must be the model's, and each
// fallback must say so (degraded, source "fallback").
const MODEL_ANSWERS = env("EVAL_MODEL_ANSWERS", "all");
const TOKEN_LIMIT = 1500;
const MAX_REPLY = 400;

if (!COACH) throw new Error("COACH_URL is not set: run the suite with evals/run");

const root = new URL("..", import.meta.url).pathname;
const read = (path) => JSON.parse(readFileSync(join(root, path), "utf8"));
const { cases } = read("evals/cases.json");
const { golfers } = read("evals/personas.json");
const openapi = read("infra/generated/openapi.json");
const row = read("prompts/models.json").models[MODEL_ROW];
if (!row) throw new Error(`${MODEL_ROW} is not a row of prompts/models.json`);

const ajv = new Ajv({ strict: false, allErrors: true });
ajv.addSchema(openapi, "openapi.json");
const validate = (name) => ajv.compile({ $ref: `openapi.json#/components/schemas/${name}` });
const validResponse = validate("CoachingChatResponse");
const validError = validate("ErrorBody");

// The reservation: two billable calls of the whole prompt share and the whole reply, at the
// row's prices (uncached input at the higher of input and cache writes), in micro-dollars.
const perM = (dollars) => Number(dollars ?? 0);
const uncached = Math.max(perM(row.input_per_mtok), perM(row.cache_write_per_mtok));
const RESERVED = 2 * (Math.ceil((TOKEN_LIMIT - MAX_REPLY) * uncached) + Math.ceil(MAX_REPLY * perM(row.output_per_mtok)));

const DELIMITED = /<golfer_message>([\s\S]*?)<\/golfer_message>/g;
const HAZARD = /(https?:\/\/|www\.|\b[a-z0-9-]+\.(?:example|com|net|org)\/|@[a-z0-9-]+\.[a-z]|<\s*\/?\s*[a-z]+[^>]*>|javascript:)/i;

async function post(persona, body) {
  const started = Date.now();
  const r = await fetch(`${COACH}/api/chat/coaching`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-user-id": persona },
    body: JSON.stringify(body),
  });
  return { status: r.status, retryAfter: r.headers.get("retry-after"), body: await r.json(), latencyMs: Date.now() - started };
}

/** The coach as promptfoo calls it: one message through the service, and what the model was asked. */
const coach = Object.assign(
  async function callApi(_prompt, context) {
    const v = context.vars;
    for (let i = 0; i < (v.before ?? 0); i++) await post(v.persona, { message: `Warm-up question ${i + 1}` });
    const body = { message: v.message, ...(v.swingId ? { swingId: v.swingId } : {}), ...(v.context ? { context: v.context } : {}) };
    const answer = await post(v.persona, body);
    let asked = null;
    if (MOCK) {
      const recorded = await (await fetch(`${MOCK}/v1/recorded`)).json();
      asked = [...recorded].reverse().find((req) => (req.messages ?? []).some((m) => String(m.content).includes(v.message))) ?? null;
    }
    const usage = answer.body.usage ?? {};
    return {
      output: answer.status === 200 ? answer.body.message.content : String(answer.body.message ?? ""),
      metadata: { ...answer, asked },
      tokenUsage: { prompt: usage.prompt_tokens ?? 0, completion: usage.completion_tokens ?? 0, total: usage.total_tokens ?? 0 },
      cost: (usage.cost_micro_usd ?? 0) / 1e6,
    };
  },
  { label: `coach-api (${LABEL})` },
);

const result = (pass, reason) => ({ pass, score: pass ? 1 : 0, reason });
const meta = (context) => context.providerResponse?.metadata ?? {};
const promptText = (asked) => (asked?.messages ?? []).map((m) => String(m.content)).join("\n");

/** Checks of what the model was asked (skipped, and said so, without the recording mock). */
function askedChecks(c) {
  if (c.refused) {
    return [{ metric: "asked", description: "the model is not asked", fn: (m) => result(m.asked === null || !MOCK, "a refused message reaches no model") }];
  }
  const checks = c.asked.map((fact) => ({
    metric: "asked",
    description: `the prompt carries "${fact}"`,
    fn: (m) => result(promptText(m.asked).includes(fact), `"${fact}" ${promptText(m.asked).includes(fact) ? "is" : "is not"} in the prompt`),
  }));
  checks.push({
    metric: "asked",
    description: "the golfer's words only inside the delimiter",
    fn: (m) => {
      const messages = m.asked?.messages ?? [];
      const outside = messages.some((msg) => String(msg.content).replace(DELIMITED, "").includes(c.message));
      const inside = messages.some((msg) => [...String(msg.content).matchAll(DELIMITED)].some((x) => x[1].includes(c.message)));
      return result(inside && !outside, inside ? (outside ? "the message also appears outside the delimiter" : "delimited") : "the message is not inside the delimiter");
    },
  });
  checks.push({
    metric: "asked",
    description: `the prompt leaves the reply ${MAX_REPLY} of ${TOKEN_LIMIT} tokens`,
    fn: (m, out) => {
      // The model server's own count of the last call's prompt where it says it (the local
      // model); else the service's, schema included.
      const prompt = m.asked?.counted_prompt_tokens ?? out.body?.usage?.prompt_tokens ?? Infinity;
      const whose = m.asked?.counted_prompt_tokens != null ? "the model server's count" : "the service's own count, schema included";
      return result(prompt + MAX_REPLY <= TOKEN_LIMIT, `${prompt} prompt tokens (${whose})`);
    },
  });
  return checks;
}

/** Checks of what the golfer got. */
function gotChecks(c) {
  if (c.refused) {
    return [
      { metric: "got", description: "429 with the hour's quota spent", fn: (m) => result(m.status === 429 && m.body.code === "rate_limited" && m.body.quota?.requests_remaining_hour === 0 && Number(m.retryAfter) > 0, `${m.status} ${m.body.code}`) },
      { metric: "got", description: "the refusal in the error schema", fn: (m) => result(validError(m.body), ajv.errorsText(validError.errors)) },
    ];
  }
  return [
    { metric: "got", description: "200 in the response schema", fn: (m) => result(m.status === 200 && validResponse(m.body), `${m.status} ${ajv.errorsText(validResponse.errors)}`) },
    MODEL_ANSWERS === "all"
      ? { metric: "got", description: "the coach answered (not the fallback)", fn: (m) => result(m.body.degraded === false, `degraded: ${m.body.degraded}, source ${m.body.source}`) }
      : { metric: "got", description: "the model's answer, or a fallback that says so", fn: (m) => result(m.body.degraded === (m.body.source === "fallback"), `degraded: ${m.body.degraded}, source ${m.body.source}`) },
    { metric: "got", description: "hazards removed (links, addresses, markup)", fn: (m) => result(!HAZARD.test(m.body.message?.content ?? ""), "the reply as shown") },
    { metric: "got", description: `cost within the reservation (${RESERVED} µ$)`, fn: (m) => result((m.body.usage?.cost_micro_usd ?? Infinity) <= RESERVED, `${m.body.usage?.cost_micro_usd} µ$`) },
  ];
}

// A small grader is held to the grading JSON by the server's grammar and kept short.
const GRADE_FORMAT = {
  type: "json_schema",
  json_schema: {
    name: "grade",
    strict: true,
    schema: {
      type: "object",
      additionalProperties: false,
      required: ["pass", "score", "reason"],
      properties: { pass: { type: "boolean" }, score: { type: "number" }, reason: { type: "string", maxLength: 160 } },
    },
  },
};

function graderProvider() {
  const [, , model] = GRADER.split(":");
  const small = GRADE_GATES ? {} : { max_tokens: 120, temperature: 0, response_format: GRADE_FORMAT };
  return GRADER_BASE ? { id: `openai:chat:${model ?? GRADER}`, config: { apiBaseUrl: GRADER_BASE, apiKey: env("OPENAI_API_KEY", "loopback"), ...small } } : GRADER;
}

function test(c) {
  const checks = [...askedChecks(c), ...gotChecks(c)];
  const assert = checks.map((check) => ({
    type: "javascript",
    metric: check.metric,
    value: (_output, context) => {
      const m = meta(context);
      const r = check.fn(m, m);
      return { ...r, reason: `[${check.metric}] ${check.description}: ${r.reason}` };
    },
  }));
  if (GRADER) {
    for (const item of c.rubric) assert.push({ type: "llm-rubric", metric: "graded", value: item, threshold: 0.7, provider: graderProvider() });
  }
  return { description: c.describe, vars: { persona: c.persona, message: c.message, swingId: c.swingId, context: c.context, before: c.before }, assert };
}

function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] : 0;
}

const personas = new Set(golfers.map((g) => g.user));
for (const c of cases) if (!personas.has(c.persona)) throw new Error(`${c.persona} is not in evals/personas.json`);

const summary = await promptfoo.evaluate(
  { providers: [coach], prompts: ["{{message}}"], tests: cases.map(test), writeLatestResults: true, description: `persona suite (${LABEL})` },
  { maxConcurrency: 1, showProgressBar: false, cache: false },
);
const results = (await summary.toEvaluateSummary?.()) ?? summary;
const rows = results.results;

const count = { asked: [0, 0], got: [0, 0], graded: [0, 0] };
const scores = [];
const lines = [];
for (const r of rows) {
  const parts = r.gradingResult?.componentResults ?? [];
  // promptfoo keeps an assertion's type, not its metric: the deterministic checks name theirs.
  const metricOf = (p) => (p.assertion?.type === "llm-rubric" ? "graded" : (/^\[(\w+)\]/.exec(p.reason ?? "") ?? [])[1]);
  const by = (metric) => parts.filter((p) => metricOf(p) === metric);
  for (const metric of Object.keys(count)) {
    for (const p of by(metric)) {
      count[metric][1] += 1;
      if (p.pass) count[metric][0] += 1;
      if (metric === "graded") scores.push(p.score ?? 0);
    }
  }
  const failed = parts.filter((p) => !p.pass).map((p) => p.reason);
  const m = r.response?.metadata ?? {};
  const gradedOnly = !GRADE_GATES && failed.length > 0 && parts.filter((p) => !p.pass).every((p) => metricOf(p) === "graded");
  lines.push({ case: r.testCase?.description ?? r.vars?.persona, pass: failed.length === 0 || gradedOnly, failed, source: m.status === 200 ? m.body?.source : undefined, tokens: m.body?.usage?.total_tokens ?? 0, cost: m.body?.usage?.cost_micro_usd ?? 0, latency: m.latencyMs ?? 0 });
}

const rate = ([pass, total]) => (total ? `${pass}/${total} (${((100 * pass) / total).toFixed(0)} %)` : "skipped");
const latencies = lines.map((l) => l.latency);
const table = [
  `# Persona suite: ${LABEL} (model row ${MODEL_ROW})`,
  "",
  "| case | result | tokens | cost (µ$) | latency (ms) |",
  "|---|---|---|---|---|",
  ...lines.map((l) => `| ${l.case} | ${l.pass ? "pass" : `FAIL: ${l.failed.join("; ")}`} | ${l.tokens} | ${l.cost} | ${l.latency} |`),
  "",
  "| figure | value |",
  "|---|---|",
  `| cases | ${lines.length} (${lines.filter((l) => l.pass).length} passed) |`,
  `| asked (deterministic) | ${MOCK ? rate(count.asked) : "skipped: no recording mock model"} |`,
  `| got (deterministic) | ${rate(count.got)} |`,
  `| graded | ${GRADER ? `${rate(count.graded)}, mean score ${(scores.reduce((a, b) => a + b, 0) / Math.max(1, scores.length)).toFixed(2)}${GRADER_BASE ? ` (grader at ${GRADER_BASE})` : ""}` : "skipped: no grader (set OPENAI_API_KEY, or EVAL_GRADER and EVAL_GRADER_BASE_URL)"} |`,
  `| tokens | ${lines.reduce((a, l) => a + l.tokens, 0)} |`,
  `| cost | $${(lines.reduce((a, l) => a + l.cost, 0) / 1e6).toFixed(6)} |`,
  `| latency p50 / p95 | ${percentile(latencies, 50)} / ${percentile(latencies, 95)} ms |`,
].join("\n");

mkdirSync(OUT, { recursive: true });
writeFileSync(join(OUT, "summary.md"), `${table}\n`);
writeFileSync(join(OUT, "summary.json"), JSON.stringify({ label: LABEL, model: MODEL_ROW, lines, count, scores }, null, 2));
writeFileSync(join(OUT, "results.json"), JSON.stringify(results, null, 2));
console.log(table);
const assertions = count.asked[1] + count.got[1];
console.log(`\n${assertions} deterministic assertions over ${lines.length} personas; graded ${GRADER ? "ran" : "skipped"}`);
// A check that did not run is no pass: every case must have been checked.
const unchecked = count.got[1] < lines.length || (MOCK && count.asked[1] < lines.length);
const failedDeterministic = unchecked || lines.some((l) => !l.pass && !GRADER) || count.asked[0] < count.asked[1] || count.got[0] < count.got[1];
const byModel = lines.filter((l) => l.source === MODEL_ROW).length;
const answered = lines.filter((l) => l.source !== undefined).length;
if (MODEL_ANSWERS !== "all") console.log(`answered by the model: ${byModel}/${answered} (the rest the fallback)`);
const tooFewByModel = MODEL_ANSWERS !== "all" && 2 * byModel <= answered;
const failedGraded = GRADER && GRADE_GATES && count.graded[0] < count.graded[1];
if (GRADER && !GRADE_GATES) console.log(`graded by a weak grader, reported only: ${rate(count.graded)}`);
process.exit(failedDeterministic || tooFewByModel || failedGraded ? 1 : 0);
