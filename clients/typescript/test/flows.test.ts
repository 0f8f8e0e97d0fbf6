// What ChatScreen and ResultsScreen do, through the generated client, against `coach-api
// serve` on DynamoDB Local with the demo golfers and a mock model (scripts/test starts them).
// Every response is narrowed by its status through the generated types, and its body is
// also checked at run time against the schema the OpenAPI document gives for that status.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { Ajv } from "ajv";

import { coachClient, retryAfterSeconds, streamMessage, type ChatResponse, type ErrorBody } from "../src/client.js";

const baseUrl = process.env.COACH_URL ?? "";
const run = Date.now().toString(36);

type Document = { paths: Record<string, Record<string, { responses: Record<string, { content?: { "application/json"?: { schema: unknown } } }> }>> };
const openapi = JSON.parse(readFileSync(new URL("../../../../infra/generated/openapi.json", import.meta.url), "utf8")) as Document & Record<string, unknown>;
const ajv = new Ajv({ strict: false, allErrors: true });
ajv.addSchema(openapi, "openapi.json");

/** The body matches what the document says `path` answers with `status`. */
function documented(method: string, path: string, status: number, body: unknown): void {
  const response = openapi.paths[path]?.[method]?.responses[String(status)];
  assert.ok(response, `${method.toUpperCase()} ${path} does not document ${status}`);
  const schema = response.content?.["application/json"]?.schema;
  assert.ok(schema, `${method.toUpperCase()} ${path} ${status} has no JSON body`);
  const validate = ajv.compile({ $ref: `openapi.json#/components/schemas/${(schema as { $ref: string }).$ref.split("/").pop()}` });
  assert.ok(validate(body), `${method.toUpperCase()} ${path} ${status}: ${ajv.errorsText(validate.errors)}`);
}

function answered(status: number, data: ChatResponse | undefined, error: ErrorBody | undefined): ChatResponse {
  assert.equal(status, 200, JSON.stringify(error));
  assert.ok(data);
  documented("post", "/api/chat/coaching", 200, data);
  return data;
}

test("ChatScreen: a message, one with the swing on screen, and a retry with the same id", async () => {
  assert.ok(baseUrl, "COACH_URL is not set: scripts/test runs this against coach-api serve");
  const alice = coachClient(baseUrl, { localUserId: "demo-alice" });
  const body = { message: "How do I fix my slice?", clientMessageId: `ts-${run}-0001` };
  const first = await alice.POST("/api/chat/coaching", { body });
  const answer = answered(first.response.status, first.data, first.error);
  assert.equal(typeof answer.message.content, "string");
  assert.equal(answer.stored, true);
  assert.equal(answer.storage, "stored", "in the conversation");
  assert.equal(first.response.headers.get("ratelimit-remaining"), String(answer.quota.requests_remaining_hour));

  const swing = await alice.POST("/api/chat/coaching", {
    body: { message: "And this swing?", swingId: "swing-alice-001", context: { screen: "swing", club: "driver" } },
  });
  assert.equal(answered(swing.response.status, swing.data, swing.error).conversation_id, answer.conversation_id);

  const retry = await alice.POST("/api/chat/coaching", { body });
  assert.deepEqual(answered(retry.response.status, retry.data, retry.error), answer, "the same answer, not a second one");

  const reused = await alice.POST("/api/chat/coaching", { body: { ...body, message: "Something else" } });
  assert.equal(reused.response.status, 422);
  assert.ok(reused.error);
  documented("post", "/api/chat/coaching", 422, reused.error);
  assert.equal(reused.error.fields?.[0]?.field, "/clientMessageId");
});

test("ChatScreen, streamed: the reply as it is written, then the answer; a retry gets it whole", async () => {
  const chloe = { localUserId: "demo-chloe" };
  const body = { message: "What should I work on this week?", clientMessageId: `ts-${run}-stream-0001` };
  const screens: string[] = [];
  const validate = ajv.compile({ $ref: "openapi.json#/components/schemas/ChatStreamEvent" });
  const outcome = await streamMessage(baseUrl, chloe, body, (text, event) => {
    assert.ok(validate(event), ajv.errorsText(validate.errors));
    screens.push(text);
  });
  assert.ok("answer" in outcome, JSON.stringify(outcome));
  documented("post", "/api/chat/coaching", 200, outcome.answer);
  assert.ok(screens.length > 1, `the reply came in pieces: ${screens.length}`);
  assert.equal(screens.at(-1), outcome.answer.message.content, "what was shown last is the answer");

  const retried: string[] = [];
  const again = await streamMessage(baseUrl, chloe, body, (text) => retried.push(text));
  assert.ok("answer" in again);
  assert.deepEqual(again.answer, outcome.answer, "the stored answer, as one done event");
  assert.equal(retried.length, 0);

  const refused = await streamMessage(baseUrl, chloe, { message: "" }, () => assert.fail("nothing is shown"));
  assert.ok("status" in refused && refused.status === 400);
  documented("post", "/api/chat/coaching/stream", 400, refused.error);
});

test("the hourly limit: a 429 with Retry-After and what is left", async () => {
  const golfer = coachClient(baseUrl, { localUserId: `ts-limit-${run}` });
  for (let i = 0; i < 15; i++) {
    const r = await golfer.POST("/api/chat/coaching", { body: { message: `Practice question ${i}` } });
    answered(r.response.status, r.data, r.error);
  }
  const over = await golfer.POST("/api/chat/coaching", { body: { message: "One more?" } });
  assert.equal(over.response.status, 429);
  assert.ok(over.error);
  documented("post", "/api/chat/coaching", 429, over.error);
  const refusal: ErrorBody = over.error;
  assert.equal(refusal.code, "rate_limited");
  assert.ok((retryAfterSeconds(over.response, refusal) ?? 0) > 0, "Retry-After says when to try again");
  assert.equal(refusal.quota?.requests_remaining_hour, 0);
  assert.equal(over.response.headers.get("ratelimit-remaining"), "0");
});

test("ResultsScreen: the conversation, the themes and the usage", async () => {
  const ben = coachClient(baseUrl, { localUserId: "demo-ben" });
  const sent = await ben.POST("/api/chat/coaching", { body: { message: "My irons feel thin today." } });
  const answer = answered(sent.response.status, sent.data, sent.error);

  const conversation = await ben.GET("/api/chat/coaching/conversation");
  assert.equal(conversation.response.status, 200, JSON.stringify(conversation.error));
  assert.ok(conversation.data);
  documented("get", "/api/chat/coaching/conversation", 200, conversation.data);
  assert.ok(conversation.data.messages.length >= 2);

  const themes = await ben.GET("/api/chat/coaching/themes");
  assert.ok(themes.data, JSON.stringify(themes.error));
  documented("get", "/api/chat/coaching/themes", 200, themes.data);
  assert.ok(themes.data.coaching_themes.session_count >= 1);

  const usage = await ben.GET("/api/chat/coaching/usage");
  assert.ok(usage.data, JSON.stringify(usage.error));
  documented("get", "/api/chat/coaching/usage", 200, usage.data);
  const quota = usage.data.quota;
  if (quota.hour_resets_at === answer.quota.hour_resets_at) {
    assert.ok(quota.requests_remaining_hour < quota.requests_limit_hour, "the message counts in its hour");
  } else {
    // The hour turned between the message and the read (a run at hh:59:59): a fresh quota.
    assert.equal(quota.requests_remaining_hour, quota.requests_limit_hour);
  }

  const dayBefore = await ben.GET("/api/chat/coaching/conversation", { params: { query: { date: "2001-01-01" } } });
  assert.equal(dayBefore.response.status, 404);
  assert.ok(dayBefore.error);
  documented("get", "/api/chat/coaching/conversation", 404, dayBefore.error);
});

test("deleting the account leaves nothing to read", async () => {
  const golfer = coachClient(baseUrl, { localUserId: `ts-delete-${run}` });
  const sent = await golfer.POST("/api/chat/coaching", { body: { message: "Delete me after this." } });
  answered(sent.response.status, sent.data, sent.error);
  const deleted = await golfer.DELETE("/api/chat/coaching/me");
  assert.ok(deleted.data, JSON.stringify(deleted.error));
  documented("delete", "/api/chat/coaching/me", 200, deleted.data);
  assert.equal(deleted.data.turns_deleted, 1);
  const after = await golfer.GET("/api/chat/coaching/conversation");
  assert.equal(after.response.status, 404);
  assert.equal(after.error?.code, "not_found");
});

test("a message answered while the account is deleted is shown once and said to be discarded", async () => {
  const golfer = coachClient(baseUrl, { localUserId: `ts-erase-${run}` });
  // The mock model answers after 300 ms: the deletion's erase marker is written first.
  const inFlight = golfer.POST("/api/chat/coaching", { body: { message: "One last question before I go.", clientMessageId: `ts-${run}-erase` } });
  await new Promise((resolve) => setTimeout(resolve, 100));
  const deleted = await golfer.DELETE("/api/chat/coaching/me");
  assert.ok(deleted.data, JSON.stringify(deleted.error));
  const sent = await inFlight;
  const answer = answered(sent.response.status, sent.data, sent.error);
  // Not "being saved in the background" (pending): it will never be stored, as the golfer asked.
  assert.equal(answer.storage, "discarded");
  assert.equal(answer.stored, false);
  const after = await golfer.GET("/api/chat/coaching/conversation");
  assert.equal(after.response.status, 404, "nothing of it was kept");
});

test("rating an answer: thumbs down with a reason, replaced by a thumbs up; another golfer's is not found", async () => {
  const golfer = coachClient(baseUrl, { localUserId: `ts-rate-${run}` });
  const clientMessageId = `ts-${run}-rate`;
  const sent = await golfer.POST("/api/chat/coaching", { body: { message: "Was that right about my grip?", clientMessageId } });
  const answer = answered(sent.response.status, sent.data, sent.error);
  assert.equal(answer.variant, "base");
  assert.match(answer.prompt_version, /^[0-9a-f]{12}$/);

  const down = await golfer.POST("/api/chat/coaching/feedback", { body: { clientMessageId, rating: "down", reason: "unclear" } });
  assert.ok(down.data, JSON.stringify(down.error));
  documented("post", "/api/chat/coaching/feedback", 200, down.data);
  assert.equal(down.data.prompt_version, answer.prompt_version, "the rating names the prompt set that wrote the answer");
  const up = await golfer.POST("/api/chat/coaching/feedback", { body: { clientMessageId, rating: "up" } });
  assert.equal(up.data?.rating, "up");

  const stranger = coachClient(baseUrl, { localUserId: `ts-rate-other-${run}` });
  const theirs = await stranger.POST("/api/chat/coaching/feedback", { body: { clientMessageId, rating: "down" } });
  assert.equal(theirs.response.status, 404);
  assert.ok(theirs.error);
  documented("post", "/api/chat/coaching/feedback", 404, theirs.error);
});

test("what the coach remembers: listed, switched off, a fact deleted for good, erased with the account", async () => {
  const golfer = coachClient(baseUrl, { localUserId: `ts-memory-${run}` });
  const told = await golfer.POST("/api/chat/coaching", { body: { message: "My left wrist hurts after range sessions.", clientMessageId: `ts-${run}-mem-1` } });
  answered(told.response.status, told.data, told.error);
  const listed = await golfer.GET("/api/chat/coaching/memory");
  assert.ok(listed.data, JSON.stringify(listed.error));
  documented("get", "/api/chat/coaching/memory", 200, listed.data);
  assert.equal(listed.data.enabled, true);
  assert.equal(listed.data.facts.length, 1);
  const wrist = listed.data.facts[0];
  assert.ok(wrist);
  assert.equal(wrist.kind, "injury");
  assert.equal(wrist.source_message_id, `ts-${run}-mem-1`);

  const off = await golfer.PUT("/api/chat/coaching/memory/settings", { body: { enabled: false } });
  assert.ok(off.data, JSON.stringify(off.error));
  documented("put", "/api/chat/coaching/memory/settings", 200, off.data);
  assert.equal(off.data.enabled, false);
  const whileOff = await golfer.POST("/api/chat/coaching", { body: { message: "My driver is a 10.5 degree with a stiff shaft.", clientMessageId: `ts-${run}-mem-2` } });
  answered(whileOff.response.status, whileOff.data, whileOff.error);
  assert.deepEqual((await golfer.GET("/api/chat/coaching/memory")).data?.facts.map((f) => f.id), [wrist.id], "nothing remembered while off");
  const on = await golfer.PUT("/api/chat/coaching/memory/settings", { body: { enabled: true } });
  assert.equal(on.data?.enabled, true);

  const forgotten = await golfer.DELETE("/api/chat/coaching/memory/{factId}", { params: { path: { factId: wrist.id } } });
  assert.ok(forgotten.data, JSON.stringify(forgotten.error));
  documented("delete", "/api/chat/coaching/memory/{factId}", 200, forgotten.data);
  assert.equal(forgotten.data.facts.length, 0);
  const gone = await golfer.DELETE("/api/chat/coaching/memory/{factId}", { params: { path: { factId: wrist.id } } });
  assert.equal(gone.response.status, 404);
  assert.ok(gone.error);
  documented("delete", "/api/chat/coaching/memory/{factId}", 404, gone.error);
  // Said again, the deleted fact is not remembered again.
  const again = await golfer.POST("/api/chat/coaching", { body: { message: "My left wrist hurts after range sessions.", clientMessageId: `ts-${run}-mem-3` } });
  answered(again.response.status, again.data, again.error);
  assert.equal((await golfer.GET("/api/chat/coaching/memory")).data?.facts.length, 0);

  const goal = await golfer.POST("/api/chat/coaching", { body: { message: "My goal is to break 90 by June.", clientMessageId: `ts-${run}-mem-4` } });
  answered(goal.response.status, goal.data, goal.error);
  const erased = await golfer.DELETE("/api/chat/coaching/me");
  assert.ok(erased.data, JSON.stringify(erased.error));
  documented("delete", "/api/chat/coaching/me", 200, erased.data);
  assert.equal(erased.data.facts_deleted, 1);
  assert.equal((await golfer.GET("/api/chat/coaching/memory")).data?.facts.length, 0);
});
