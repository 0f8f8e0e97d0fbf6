// The app's client for the coaching API: the types come from the OpenAPI document the
// service generates (src/schema.d.ts, by openapi-typescript), requests go through
// openapi-fetch, so a call or a response outside the document does not compile.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

export type ChatRequest = components["schemas"]["CoachingChatRequest"];
export type ChatResponse = components["schemas"]["CoachingChatResponse"];
export type ErrorBody = components["schemas"]["ErrorBody"];
export type FeedbackRequest = components["schemas"]["FeedbackRequest"];
export type FeedbackReceipt = components["schemas"]["FeedbackReceipt"];
export type Quota = components["schemas"]["UsageView"]["quota"];
export type MemoryView = components["schemas"]["MemoryView"];
export type MemoryFact = MemoryView["facts"][number];

/** Who the app is: a Cognito ID token in the app, the local header in `AUTH_MODE=local`. */
export type Caller = { idToken: string } | { localUserId: string };

export function coachClient(baseUrl: string, caller: Caller) {
  const headers: Record<string, string> =
    "idToken" in caller ? { Authorization: caller.idToken } : { "X-User-Id": caller.localUserId };
  return createClient<paths>({ baseUrl, headers });
}

/** The seconds to wait before sending again, from a refusal's Retry-After (the header wins). */
export function retryAfterSeconds(response: Response, body: ErrorBody): number | undefined {
  const header = response.headers.get("retry-after");
  const fromHeader = header === null ? undefined : Number.parseInt(header, 10);
  return Number.isFinite(fromHeader) ? fromHeader : body.retry_after_seconds;
}

export type StreamEvent = components["schemas"]["ChatStreamEvent"];

/** How a streamed message ended: the JSON route's answer, or an error (before the stream began, or as its last event). */
export type StreamOutcome = { answer: ChatResponse } | { status: number; error: ErrorBody };

/**
 * Sends `body` to POST /api/chat/coaching/stream and calls `show` with the whole text to show
 * after every `delta` or `replace` event; resolves when the stream ends. A refusal before the
 * stream began is the JSON route's error. The text last shown equals `answer.message.content`.
 * Needs a `fetch` whose response body is a stream (Node 18+, browsers, `expo/fetch`).
 */
export async function streamMessage(
  baseUrl: string,
  caller: Caller,
  body: ChatRequest,
  show: (text: string, event: StreamEvent) => void,
  fetchImpl: typeof fetch = fetch,
): Promise<StreamOutcome> {
  const auth: Record<string, string> =
    "idToken" in caller ? { Authorization: caller.idToken } : { "X-User-Id": caller.localUserId };
  const response = await fetchImpl(`${baseUrl}/api/chat/coaching/stream`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream", ...auth },
    body: JSON.stringify(body),
  });
  if (response.status !== 200 || response.body === null) {
    return { status: response.status, error: (await response.json()) as ErrorBody };
  }
  const reader = response.body.getReader();
  const utf8 = new TextDecoder();
  let buffer = "";
  let shown = "";
  let outcome: StreamOutcome | undefined;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += utf8.decode(value, { stream: true });
    for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("");
      if (data === "") continue; // a keep-alive comment
      const event = JSON.parse(data) as StreamEvent;
      if (event.type === "delta") show((shown += event.text), event);
      else if (event.type === "replace") show((shown = event.text), event);
      else if (event.type === "done") outcome = { answer: event.response };
      else outcome = { status: event.status, error: event.error };
    }
  }
  if (outcome === undefined) throw new Error("the stream ended without a done or error event");
  return outcome;
}
