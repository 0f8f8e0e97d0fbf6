// The app's client for the coaching API: the types come from the OpenAPI document the
// service generates (src/schema.d.ts, by openapi-typescript), requests go through
// openapi-fetch, so a call or a response outside the document does not compile.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

export type ChatRequest = components["schemas"]["CoachingChatRequest"];
export type ChatResponse = components["schemas"]["CoachingChatResponse"];
export type ErrorBody = components["schemas"]["ErrorBody"];
export type Quota = components["schemas"]["UsageView"]["quota"];

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
