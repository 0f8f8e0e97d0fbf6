// A small OpenAI-compatible chat server for one local GGUF model, on node-llama-cpp (CPU only,
// the prebuilt binary: nothing is compiled). Loopback only. It answers what the coach's client
// sends: `GET /v1/models`, `POST /v1/chat/completions` with messages, `max_tokens` or
// `max_completion_tokens`, temperature, seed, frequency and presence penalties,
// `response_format` (json_schema, enforced by a grammar; json_object), and `stream` with
// `stream_options.include_usage`. Usage comes from the model's own tokenizer.
//
//   node server.mjs --model FILE.gguf [--port 0] [--name smollm2-135m-instruct] [--calls FILE]
//                   [--seed N] [--record]
//
// The first line on stdout is `listening http://127.0.0.1:PORT/v1`. With `--calls`, one JSON
// line per answered completion is appended there (tokens, finish reason, time; never text), so
// a test can compare what the service settled with what this server counted. `--seed` samples
// a request that sends no seed with this one (same request, same answer). `--record` keeps the
// last requests for `GET /v1/recorded`, as the project's mock model does (the persona suite's
// checks of what the model was asked), each with the prompt tokens counted here
// (`counted_prompt_tokens`).
import { createServer } from "node:http";
import { appendFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";
import { getLlama, LlamaChat, LlamaLogLevel } from "node-llama-cpp";

const { values: args } = parseArgs({
  options: {
    model: { type: "string" },
    port: { type: "string", default: "0" },
    name: { type: "string", default: "smollm2-135m-instruct" },
    calls: { type: "string" },
    context: { type: "string", default: "2048" },
    threads: { type: "string", default: "2" },
    seed: { type: "string" },
    record: { type: "boolean", default: false },
  },
});
if (!args.model) {
  console.error("usage: node server.mjs --model FILE.gguf [--port N] [--name ID] [--calls FILE]");
  process.exit(2);
}

const CONTEXT_SIZE = Number(args.context);
// llama.cpp's server samples with this repeat penalty unless a request sets its own.
const DEFAULT_REPEAT = { lastTokens: 64, penalty: 1.1 };

const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: args.model });
const context = await model.createContext({ contextSize: CONTEXT_SIZE, threads: Number(args.threads) });
const chat = new LlamaChat({ contextSequence: context.getSequence() });
const grammars = new Map();
const recorded = [];
const RECORD_LAST = 100;

/** An OpenAI-shaped error. */
class ApiError extends Error {
  constructor(status, message, { type = "invalid_request_error", param = null, code = null } = {}) {
    super(message);
    Object.assign(this, { status, type, param, code });
  }
  body() {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

function text(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((p) => (p && p.type === "text" && typeof p.text === "string" ? p.text : "")).join("");
  }
  if (content == null) return "";
  throw new ApiError(400, "message content must be a string or an array of text parts", { param: "messages" });
}

/** OpenAI messages as node-llama-cpp's chat history, ending with the model's turn to answer. */
function history(messages) {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new ApiError(400, "messages must be a non-empty array", { param: "messages" });
  }
  const items = messages.map((m, i) => {
    const role = m && m.role;
    if (role === "system" || role === "developer") return { type: "system", text: text(m.content) };
    if (role === "user") return { type: "user", text: text(m.content) };
    if (role === "assistant") return { type: "model", response: [text(m.content)] };
    throw new ApiError(400, `messages[${i}].role ${JSON.stringify(role)} is not supported`, { param: `messages[${i}].role` });
  });
  return items;
}

function integer(body, name, min, max) {
  const v = body[name];
  if (v == null) return undefined;
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new ApiError(400, `${name} must be an integer from ${min} to ${max}`, { param: name });
  }
  return v;
}

function number(body, name, min, max) {
  const v = body[name];
  if (v == null) return undefined;
  if (typeof v !== "number" || !(v >= min && v <= max)) {
    throw new ApiError(400, `${name} must be a number from ${min} to ${max}`, { param: name });
  }
  return v;
}

async function grammar(format) {
  if (format == null || format.type === "text") return undefined;
  if (format.type === "json_object") return llama.getGrammarFor("json");
  if (format.type !== "json_schema" || !format.json_schema || typeof format.json_schema.schema !== "object") {
    throw new ApiError(400, "response_format must be text, json_object or json_schema with a schema", { param: "response_format" });
  }
  const key = JSON.stringify(format.json_schema.schema);
  if (!grammars.has(key)) {
    try {
      grammars.set(key, await llama.createGrammarForJsonSchema(format.json_schema.schema));
    } catch (e) {
      throw new ApiError(400, `response_format.json_schema.schema is not supported: ${e.message}`, { param: "response_format" });
    }
  }
  return grammars.get(key);
}

/** The request, checked as an OpenAI-compatible server checks it. */
async function parse(body) {
  if (body == null || typeof body !== "object" || Array.isArray(body)) throw new ApiError(400, "the body must be a JSON object");
  if (body.model !== args.name) {
    throw new ApiError(404, `The model \`${body.model}\` does not exist or you do not have access to it.`, { code: "model_not_found", param: "model" });
  }
  // A model without reasoning: the parameter is refused, as OpenAI refuses it for such models.
  if (body.reasoning_effort != null) {
    throw new ApiError(400, "Unsupported parameter: 'reasoning_effort' is not supported with this model.", { code: "unsupported_parameter", param: "reasoning_effort" });
  }
  if (body.n != null && body.n !== 1) throw new ApiError(400, "n must be 1", { param: "n" });
  const maxTokens = integer(body, "max_completion_tokens", 1, CONTEXT_SIZE) ?? integer(body, "max_tokens", 1, CONTEXT_SIZE);
  const items = history(body.messages);
  const promptTokens = chat.chatWrapper
    .generateContextState({ chatHistory: [...items, { type: "model", response: [] }] })
    .contextText.tokenize(model.tokenizer).length;
  const limit = maxTokens ?? 256;
  if (promptTokens + limit > CONTEXT_SIZE) {
    throw new ApiError(400, `This model's maximum context length is ${CONTEXT_SIZE} tokens; the messages have ${promptTokens} and max_tokens asks for ${limit}.`, { code: "context_length_exceeded", param: "messages" });
  }
  const frequency = number(body, "frequency_penalty", -2, 2);
  const presence = number(body, "presence_penalty", -2, 2);
  return {
    items,
    promptTokens,
    maxTokens: limit,
    temperature: number(body, "temperature", 0, 2) ?? 1,
    seed: integer(body, "seed", -(2 ** 31), 2 ** 31 - 1) ?? (args.seed != null ? Number(args.seed) : undefined),
    repeatPenalty: frequency != null || presence != null
      ? { lastTokens: 64, frequencyPenalty: frequency ?? 0, presencePenalty: presence ?? 0 }
      : DEFAULT_REPEAT,
    grammar: await grammar(body.response_format),
    stream: body.stream === true,
    includeUsage: body.stream === true && body.stream_options?.include_usage === true,
  };
}

// One sequence, one answer at a time (two CPU cores): requests wait their turn in order.
let queue = Promise.resolve();
function serialized(work) {
  const run = queue.then(work, work);
  queue = run.catch(() => {});
  return run;
}

async function generate(req, onText, signal) {
  let completionTokens = 0;
  const started = Date.now();
  const result = await chat.generateResponse(req.items, {
    maxTokens: req.maxTokens,
    temperature: req.temperature,
    seed: req.seed,
    repeatPenalty: req.repeatPenalty,
    grammar: req.grammar,
    signal,
    stopOnAbortSignal: true,
    onToken: (tokens) => { completionTokens += tokens.length; },
    onTextChunk: onText,
  });
  const finish = result.metadata.stopReason === "maxTokens" ? "length" : "stop";
  const usage = { prompt_tokens: req.promptTokens, completion_tokens: completionTokens, total_tokens: req.promptTokens + completionTokens };
  if (args.calls) {
    const line = { at: new Date().toISOString(), stream: req.stream, finish_reason: finish, ms: Date.now() - started, ...usage, max_tokens: req.maxTokens };
    appendFileSync(args.calls, JSON.stringify(line) + "\n");
  }
  return { content: result.response, finish, usage };
}

function send(res, status, body) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

async function completions(body, res) {
  const entry = { ...body };
  if (args.record) {
    recorded.push(entry);
    if (recorded.length > RECORD_LAST) recorded.shift();
  }
  const req = await parse(body);
  // What this server counted for the prompt, beside the request as it came.
  entry.counted_prompt_tokens = req.promptTokens;
  const id = `chatcmpl-${randomUUID()}`;
  const created = Math.floor(Date.now() / 1000);
  const base = { id, created, model: args.name, system_fingerprint: "node-llama-cpp-3.21.1" };
  if (!req.stream) {
    const out = await serialized(() => generate(req, undefined, undefined));
    send(res, 200, {
      ...base,
      object: "chat.completion",
      choices: [{ index: 0, message: { role: "assistant", content: out.content, refusal: null }, logprobs: null, finish_reason: out.finish }],
      usage: out.usage,
    });
    return;
  }
  const aborted = new AbortController();
  res.on("close", () => aborted.abort());
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  const chunk = (choices, extra = {}) => res.write(`data: ${JSON.stringify({ ...base, object: "chat.completion.chunk", choices, ...extra })}\n\n`);
  chunk([{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }]);
  const out = await serialized(() =>
    generate(req, (piece) => piece && chunk([{ index: 0, delta: { content: piece }, logprobs: null, finish_reason: null }]), aborted.signal));
  if (res.writableEnded || res.destroyed) return;
  chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: out.finish }]);
  if (req.includeUsage) chunk([], { usage: out.usage });
  res.end("data: [DONE]\n\n");
}

const server = createServer((req, res) => {
  const url = new URL(req.url, "http://localhost");
  if (req.method === "GET" && url.pathname === "/v1/models") {
    send(res, 200, { object: "list", data: [{ id: args.name, object: "model", created: 0, owned_by: "local" }] });
    return;
  }
  if (req.method === "GET" && url.pathname === "/v1/recorded" && args.record) {
    send(res, 200, recorded);
    return;
  }
  if (req.method !== "POST" || url.pathname !== "/v1/chat/completions") {
    send(res, 404, new ApiError(404, `no route ${req.method} ${url.pathname}`).body());
    return;
  }
  const parts = [];
  req.on("data", (p) => parts.push(p));
  req.on("end", async () => {
    try {
      let body;
      try {
        body = JSON.parse(Buffer.concat(parts).toString("utf8"));
      } catch {
        throw new ApiError(400, "the body is not JSON");
      }
      await completions(body, res);
    } catch (e) {
      const err = e instanceof ApiError ? e : new ApiError(500, "the model failed", { type: "server_error" });
      if (!(e instanceof ApiError)) console.error(e);
      if (!res.headersSent) send(res, err.status, err.body());
      else res.end();
    }
  });
});

server.listen(Number(args.port), "127.0.0.1", () => {
  console.log(`listening http://127.0.0.1:${server.address().port}/v1`);
});
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
