//! What a streamed answer shows while the coach writes: the model's reply text goes through
//! output safety as it arrives ([`StreamSafety`]) and out as `delta` events; a `replace` event
//! swaps the text shown when the content filter fires or the coach starts over; at the end
//! the text shown is made to equal the reply as stored ([`reconcile`]).

use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::ChatError;
use crate::llm::ReplyText;
use crate::models::{ChatStreamEvent, StreamDelta, StreamDeltaText, StreamDeltaType, StreamReplace, StreamReplaceType};
use crate::prompts::{PromptVars, Prompts, ReplyVars, FILTERED};
use crate::safety::stream::{reconcile, Reconcile, Step, StreamSafety};

/// Where a streamed answer's events go, and when it starts streaming: just before the coach
/// is asked. A failure before then (a swing that is not the golfer's, a message too long for
/// the budget, the context unreadable) is handed back to be answered as JSON with its status.
/// A closed receiver (the client hung up) is not an error: the answer is still finished,
/// billed and stored.
pub struct EventSender {
    events: UnboundedSender<ChatStreamEvent>,
    start: std::sync::Mutex<Option<oneshot::Sender<Result<(), ChatError>>>>,
}

impl EventSender {
    pub fn new(events: UnboundedSender<ChatStreamEvent>, start: oneshot::Sender<Result<(), ChatError>>) -> Self {
        Self { events, start: std::sync::Mutex::new(Some(start)) }
    }

    pub fn send(&self, event: ChatStreamEvent) {
        let _ = self.events.send(event);
    }

    /// The answer starts streaming: the coach is about to be asked.
    pub fn start(&self) {
        if let Some(start) = self.take_start() {
            let _ = start.send(Ok(()));
        }
    }

    /// A failure: before the stream started it is handed back (`None`); after, it is the
    /// caller's to send as the last event.
    pub fn fail(&self, error: ChatError) -> Option<ChatError> {
        match self.take_start() {
            Some(start) => {
                let _ = start.send(Err(error));
                None
            }
            None => Some(error),
        }
    }

    fn take_start(&self) -> Option<oneshot::Sender<Result<(), ChatError>>> {
        self.start.lock().ok().and_then(|mut s| s.take())
    }
}

pub fn delta(text: &str) -> Option<ChatStreamEvent> {
    let text = StreamDeltaText::try_from(text).ok()?;
    Some(ChatStreamEvent::Delta(StreamDelta { text, type_: StreamDeltaType::Delta }))
}

pub fn replace(text: &str) -> ChatStreamEvent {
    ChatStreamEvent::Replace(StreamReplace { text: text.to_string(), type_: StreamReplaceType::Replace })
}

/// Pieces that arrive within this long of the last one shown are shown together: a model
/// writes a token every 10–20 ms, and 25 updates a second are plenty for a chat bubble
/// (bench: 105 events an answer became 56). The first piece is never held; nor is the end.
const COALESCE: Duration = Duration::from_millis(40);

/// What a streamed answer showed while the coach wrote it.
#[derive(Debug, Default)]
pub struct Shown {
    pub text: String,
    /// When the first event went out.
    pub first_at: Option<Instant>,
}

/// Shows the reply's text as it arrives, until the coach is done (the sender is dropped).
pub async fn present(mut texts: UnboundedReceiver<ReplyText>, events: &EventSender, prompts: &Prompts, vars: &PromptVars) -> Shown {
    let mut safety = StreamSafety::new();
    let mut replaced: Option<String> = None;
    let mut shown_at: Option<Instant> = None;
    let mut first_at: Option<Instant> = None;
    while let Some(first) = texts.recv().await {
        let mut batch = vec![first];
        let mut open = true;
        if let Some(at) = shown_at {
            loop {
                match tokio::time::timeout_at(at + COALESCE, texts.recv()).await {
                    Ok(Some(piece)) => batch.push(piece),
                    Ok(None) => {
                        open = false;
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        for piece in merge(batch) {
            if show(piece, &mut safety, &mut replaced, events, prompts, vars) {
                shown_at = Some(Instant::now());
                first_at = first_at.or(shown_at);
            }
        }
        if !open {
            break;
        }
    }
    Shown { text: replaced.unwrap_or_else(|| safety.shown().to_string()), first_at }
}

/// Consecutive texts as one.
fn merge(batch: Vec<ReplyText>) -> Vec<ReplyText> {
    let mut out: Vec<ReplyText> = Vec::with_capacity(batch.len());
    for piece in batch {
        match (out.last_mut(), piece) {
            (Some(ReplyText::Text(so_far)), ReplyText::Text(more)) => so_far.push_str(&more),
            (_, piece) => out.push(piece),
        }
    }
    out
}

/// Shows one piece; `true` when it sent an event. (A closed receiver, the client gone, is
/// not an error: the answer goes on.)
fn show(piece: ReplyText, safety: &mut StreamSafety, replaced: &mut Option<String>, events: &EventSender, prompts: &Prompts, vars: &PromptVars) -> bool {
    let event = match piece {
        ReplyText::Restart => {
            let shown = !safety.shown().is_empty() || replaced.is_some();
            *safety = StreamSafety::new();
            *replaced = None;
            shown.then(|| replace(""))
        }
        ReplyText::Text(text) => match safety.push(&text) {
            Step::Hold => None,
            Step::Show(more) => delta(&more),
            Step::Blocked => {
                let filtered = prompts.render(FILTERED, &ReplyVars::from(vars)).unwrap_or_default();
                let event = replace(&filtered);
                *replaced = Some(filtered);
                Some(event)
            }
        },
    };
    let Some(event) = event else { return false };
    events.send(event);
    true
}

/// Makes the text shown equal the reply as stored: the rest of it, or all of it instead.
pub fn finish(shown: &str, stored: &str, events: &EventSender) {
    let event = match reconcile(shown, stored) {
        Reconcile::Same => None,
        Reconcile::Append(rest) => delta(&rest),
        Reconcile::Replace(text) => Some(replace(&text)),
    };
    if let Some(event) = event {
        events.send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ChatStreamEvent;

    #[tokio::test(start_paused = true)]
    async fn pieces_close_together_are_shown_together_and_the_first_at_once() {
        let prompts = Prompts::embedded().unwrap_or_else(|e| panic!("{e}"));
        let vars = crate::prompts::pack::tests::example_vars();
        let (texts, received) = tokio::sync::mpsc::unbounded_channel();
        let (events, mut out) = tokio::sync::mpsc::unbounded_channel();
        let (start, _) = oneshot::channel();
        let events = EventSender::new(events, start);
        let writer = tokio::spawn(async move {
            for (i, word) in ["Keep ", "your ", "head ", "still ", "through ", "impact, ", "then ", "finish ", "tall. "].iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let _ = texts.send(ReplyText::Text((*word).to_string()));
            }
        });
        let shown = present(received, &events, &prompts, &vars).await.text;
        let _ = writer.await;
        let mut deltas = vec![];
        while let Ok(ChatStreamEvent::Delta(d)) = out.try_recv() {
            deltas.push(d.text.to_string());
        }
        assert_eq!(deltas.first().map(String::as_str), Some("Keep"), "the first word is not held: {deltas:?}");
        assert!(deltas.len() <= 4, "80 ms of words 10 ms apart come in a few events: {deltas:?}");
        assert_eq!(deltas.concat(), shown);
        assert_eq!(shown, "Keep your head still through impact, then finish tall.");
    }

    #[test]
    fn consecutive_texts_merge_but_a_restart_stays_between_them() {
        let t = |s: &str| ReplyText::Text(s.into());
        let merged = merge(vec![t("a "), t("b "), ReplyText::Restart, t("c")]);
        assert_eq!(merged, vec![t("a b "), ReplyText::Restart, t("c")]);
    }
}
