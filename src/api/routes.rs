//! Every route of the API, once. The router serves this table (`api::router`) and build.rs
//! writes the OpenAPI document's paths from it (build.rs includes this file by path), so the
//! two cannot drift. Plain data only: it compiles in the build script too.

pub const CHAT_PATH: &str = "/api/chat/coaching";
pub const CHAT_STREAM_PATH: &str = "/api/chat/coaching/stream";
pub const FEEDBACK_PATH: &str = "/api/chat/coaching/feedback";
pub const MEMORY_PATH: &str = "/api/chat/coaching/memory";
pub const MEMORY_FACT_PATH: &str = "/api/chat/coaching/memory/{factId}";
pub const MEMORY_SETTINGS_PATH: &str = "/api/chat/coaching/memory/settings";

/// The errors of both chat routes, answered as JSON before anything is streamed.
const CHAT_ERRORS: [(u16, &str); 11] = [
    (400, "The request does not match the schema"),
    (401, "No caller identity"),
    (403, "The request names another golfer"),
    (404, "No such route"),
    (405, "Method not allowed"),
    (409, "The same clientMessageId is being answered"),
    (422, "The clientMessageId was already used for a different message"),
    (413, "Body over 10 KB"),
    (415, "Body is not JSON"),
    (429, "A rate or spend limit was reached"),
    (503, "At capacity or storage unavailable"),
];

/// What a route does; the router maps each to its handler with an exhaustive match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    PostCoachingMessage,
    StreamCoachingMessage,
    GetConversation,
    GetThemes,
    GetUsage,
    DeleteMyData,
    RateAnswer,
    GetMemory,
    ForgetFact,
    SetMemory,
}

/// A query or path parameter (string-valued).
#[derive(Debug)]
pub struct QueryParam {
    pub name: &'static str,
    pub description: &'static str,
    pub format: &'static str,
    pub pattern: &'static str,
}

#[derive(Debug)]
pub struct Route {
    /// Lower-case, as OpenAPI writes it.
    pub method: &'static str,
    pub path: &'static str,
    pub operation: Operation,
    pub operation_id: &'static str,
    pub description: Option<&'static str>,
    /// The request body's component schema.
    pub request_body: Option<&'static str>,
    pub query: &'static [QueryParam],
    /// Parameters in the path (`{name}` in `path`), each required.
    pub path_params: &'static [QueryParam],
    /// The 200 response: its description and component schema.
    pub ok: (&'static str, &'static str),
    /// The 200 response is `text/event-stream`, each event's data one `ok` schema value.
    pub streamed: bool,
    /// Counted against the golfer's quota: RateLimit headers on 200, Retry-After on 429/503.
    pub rate_limited: bool,
    /// Every error status the route can answer, with what it means; bodies are `ErrorBody`.
    pub errors: &'static [(u16, &'static str)],
}

const READ_ERRORS: [(u16, &str); 4] = [(400, "Invalid query"), (401, "No caller identity"), (405, "Method not allowed"), (503, "Storage unavailable")];

pub const ROUTES: &[Route] = &[
    Route {
        method: "post",
        path: CHAT_PATH,
        operation: Operation::PostCoachingMessage,
        operation_id: "postCoachingMessage",
        description: None,
        request_body: Some("CoachingChatRequest"),
        query: &[],
        path_params: &[],
        ok: ("The coach's reply (possibly degraded)", "CoachingChatResponse"),
        streamed: false,
        rate_limited: true,
        errors: &CHAT_ERRORS,
    },
    Route {
        method: "post",
        path: CHAT_STREAM_PATH,
        operation: Operation::StreamCoachingMessage,
        operation_id: "streamCoachingMessage",
        description: Some(
            "The same message as POST /api/chat/coaching, answered as server-sent events while the coach writes: \
             `delta` events with the reply's text, `replace` when the text shown must be swapped, then one `done` \
             (the JSON route's body) or `error`. Refusals before the coach is asked are the JSON route's errors.",
        ),
        request_body: Some("CoachingChatRequest"),
        query: &[],
        path_params: &[],
        ok: ("Server-sent events; each `data:` line is one ChatStreamEvent", "ChatStreamEvent"),
        streamed: true,
        rate_limited: true,
        errors: &CHAT_ERRORS,
    },
    Route {
        method: "get",
        path: "/api/chat/coaching/conversation",
        operation: Operation::GetConversation,
        operation_id: "getConversation",
        description: Some("Today's conversation (or the given day's), for ChatScreen to restore on open."),
        request_body: None,
        query: &[QueryParam { name: "date", description: "YYYY-MM-DD (UTC); today when absent", format: "date", pattern: "^[0-9]{4}-[0-9]{2}-[0-9]{2}$" }],
        path_params: &[],
        ok: ("The conversation", "ConversationView"),
        streamed: false,
        rate_limited: false,
        errors: &[READ_ERRORS[0], READ_ERRORS[1], READ_ERRORS[2], READ_ERRORS[3], (404, "No conversation that day")],
    },
    Route {
        method: "get",
        path: "/api/chat/coaching/themes",
        operation: Operation::GetThemes,
        operation_id: "getThemes",
        description: Some("Current coaching themes and progress, for ResultsScreen."),
        request_body: None,
        query: &[],
        path_params: &[],
        ok: ("The themes", "ThemesView"),
        streamed: false,
        rate_limited: false,
        errors: &READ_ERRORS,
    },
    Route {
        method: "get",
        path: "/api/chat/coaching/usage",
        operation: Operation::GetUsage,
        operation_id: "getUsage",
        description: Some("Requests left this hour, spend left today, reset times."),
        request_body: None,
        query: &[],
        path_params: &[],
        ok: ("The quota", "UsageView"),
        streamed: false,
        rate_limited: false,
        errors: &READ_ERRORS,
    },
    Route {
        method: "post",
        path: FEEDBACK_PATH,
        operation: Operation::RateAnswer,
        operation_id: "rateAnswer",
        description: Some(
            "A golfer rates one of their own answers (thumbs up or down, with an optional reason), named by its clientMessageId. \
             Rating again replaces the rating; another golfer's answer and an unknown id are both 404. Ratings have their own hourly cap \
             and spend no model budget.",
        ),
        request_body: Some("FeedbackRequest"),
        query: &[],
        path_params: &[],
        ok: ("The rating as stored", "FeedbackReceipt"),
        streamed: false,
        rate_limited: false,
        errors: &[
            (400, "The request does not match the schema"),
            (401, "No caller identity"),
            (404, "No answer of the caller's with that clientMessageId"),
            (405, "Method not allowed"),
            (413, "Body over 10 KB"),
            (415, "Body is not JSON"),
            (429, "Too many ratings this hour"),
            (503, "Storage unavailable"),
        ],
    },
    Route {
        method: "delete",
        path: "/api/chat/coaching/me",
        operation: Operation::DeleteMyData,
        operation_id: "deleteMyData",
        description: Some("Deletes the caller's conversations, profile, stored answers and what the coach remembers; counters expire on their own."),
        request_body: None,
        query: &[],
        path_params: &[],
        ok: ("What was removed", "DeletionReport"),
        streamed: false,
        rate_limited: false,
        errors: &READ_ERRORS,
    },
    Route {
        method: "get",
        path: MEMORY_PATH,
        operation: Operation::GetMemory,
        operation_id: "getMemory",
        description: Some(
            "What the coach remembers about the golfer: facts the coach took from earlier conversations (injuries, equipment, goals, \
             events, courses, preferences, skills), at most 30, and whether memory is on.",
        ),
        request_body: None,
        query: &[],
        path_params: &[],
        ok: ("What the coach remembers", "MemoryView"),
        streamed: false,
        rate_limited: false,
        errors: &READ_ERRORS,
    },
    Route {
        method: "delete",
        path: MEMORY_FACT_PATH,
        operation: Operation::ForgetFact,
        operation_id: "forgetFact",
        description: Some("The golfer deletes one remembered fact: it leaves the coach's context at once and is not remembered again."),
        request_body: None,
        query: &[],
        path_params: &[QueryParam { name: "factId", description: "A fact's id, from GET /api/chat/coaching/memory", format: "", pattern: "^f[0-9a-f]{7}$" }],
        ok: ("What the coach remembers now", "MemoryView"),
        streamed: false,
        rate_limited: false,
        errors: &[READ_ERRORS[0], READ_ERRORS[1], READ_ERRORS[2], READ_ERRORS[3], (404, "No such fact among the caller's")],
    },
    Route {
        method: "put",
        path: MEMORY_SETTINGS_PATH,
        operation: Operation::SetMemory,
        operation_id: "setMemory",
        description: Some(
            "The golfer's memory switch. Off: nothing is remembered and no fact reaches the coach; the facts kept stay listed until \
             deleted (one by one, or with DELETE /api/chat/coaching/me).",
        ),
        request_body: Some("MemorySettings"),
        query: &[],
        path_params: &[],
        ok: ("What the coach remembers, with the switch as set", "MemoryView"),
        streamed: false,
        rate_limited: false,
        errors: &[
            (400, "The request does not match the schema"),
            (401, "No caller identity"),
            (405, "Method not allowed"),
            (413, "Body over 10 KB"),
            (415, "Body is not JSON"),
            (503, "Storage unavailable"),
        ],
    },
];
