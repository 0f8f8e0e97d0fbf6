//! A request body as the handler receives it: validation answers without panicking, what the
//! schema accepts the generated type accepts, and sanitizing yields a bounded message of
//! visible characters or a typed refusal.
#![no_main]

use coach_api::models::CoachingChatRequest;
use coach_api::{safety, schemas};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(schemas) = schemas::get() else { return };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else { return };
    let violations = schemas::violations(&schemas.chat_request, &value);
    if !violations.is_empty() {
        assert!(violations.iter().all(|v| v.field.is_empty() || v.field.starts_with('/')));
        return;
    }
    let request: CoachingChatRequest = match serde_json::from_value(value.clone()) {
        Ok(r) => r,
        Err(e) => panic!("the schema accepted what the type refuses: {value} ({e})"),
    };
    if let Ok(clean) = safety::clean_input(&request.message) {
        assert!(!clean.is_empty() && clean.chars().count() <= safety::MAX_MESSAGE_CHARS);
        assert!(!clean.chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
        assert!(!safety::holds_delimiter(&clean), "the delimiter survived: {clean:?}");
    }
});
