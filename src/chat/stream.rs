//! What a streamed answer shows while the coach writes: the model's reply text goes through
//! output safety as it arrives ([`StreamSafety`]) and out as `delta` events; a `replace` event
//! swaps the text shown when the content filter fires or the coach starts over; at the end
//! the text shown is made to equal the reply as stored ([`reconcile`]).

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::llm::ReplyText;
use crate::models::{ChatStreamEvent, StreamDelta, StreamDeltaText, StreamDeltaType, StreamReplace, StreamReplaceType};
use crate::prompts::{PromptVars, Prompts, ReplyVars, FILTERED};
use crate::safety::stream::{reconcile, Reconcile, Step, StreamSafety};

/// Where a streamed answer's events go. A closed receiver (the client hung up) is not an
/// error: the answer is still finished, billed and stored.
pub type EventSender = UnboundedSender<ChatStreamEvent>;

pub fn delta(text: &str) -> Option<ChatStreamEvent> {
    let text = StreamDeltaText::try_from(text).ok()?;
    Some(ChatStreamEvent::Delta(StreamDelta { text, type_: StreamDeltaType::Delta }))
}

pub fn replace(text: &str) -> ChatStreamEvent {
    ChatStreamEvent::Replace(StreamReplace { text: text.to_string(), type_: StreamReplaceType::Replace })
}

/// Shows the reply's text as it arrives, until the coach is done (the sender is dropped).
/// Returns the text shown.
pub async fn present(mut texts: UnboundedReceiver<ReplyText>, events: &EventSender, prompts: &Prompts, vars: &PromptVars) -> String {
    let mut safety = StreamSafety::new();
    let mut replaced: Option<String> = None;
    while let Some(piece) = texts.recv().await {
        match piece {
            ReplyText::Restart => {
                if !safety.shown().is_empty() || replaced.is_some() {
                    let _ = events.send(replace(""));
                }
                safety = StreamSafety::new();
                replaced = None;
            }
            ReplyText::Text(text) => match safety.push(&text) {
                Step::Hold => {}
                Step::Show(more) => {
                    if let Some(event) = delta(&more) {
                        let _ = events.send(event);
                    }
                }
                Step::Blocked => {
                    let filtered = prompts.render(FILTERED, &ReplyVars::from(vars)).unwrap_or_default();
                    let _ = events.send(replace(&filtered));
                    replaced = Some(filtered);
                }
            },
        }
    }
    replaced.unwrap_or_else(|| safety.shown().to_string())
}

/// Makes the text shown equal the reply as stored: the rest of it, or all of it instead.
pub fn finish(shown: &str, stored: &str, events: &EventSender) {
    let event = match reconcile(shown, stored) {
        Reconcile::Same => None,
        Reconcile::Append(rest) => delta(&rest),
        Reconcile::Replace(text) => Some(replace(&text)),
    };
    if let Some(event) = event {
        let _ = events.send(event);
    }
}
