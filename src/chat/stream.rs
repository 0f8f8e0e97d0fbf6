//! What a streamed answer shows while the coach writes: the coach's text goes through output
//! safety as it arrives ([`StreamSafety`]) and out as `delta` events; a `replace` event swaps
//! the text shown when the content filter fires or the coach starts over; at the end the
//! text shown is made to equal the reply as stored ([`reconcile`]).

use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use super::ChatEvent;
use crate::llm::{Attempts, CoachEvent, LlmError};
use crate::models::{ChatStreamEvent, StreamDelta, StreamDeltaText, StreamDeltaType, StreamReplace, StreamReplaceType};
use crate::prompts::{PromptVars, Prompts, ReplyVars, FILTERED};
use crate::safety::stream::{reconcile, Reconcile, Step, StreamSafety};

/// Where a streamed answer's events go. A closed receiver (the client hung up) is not an
/// error: the answer is still finished, billed and stored.
fn send(events: &UnboundedSender<ChatEvent>, event: ChatStreamEvent) {
    let _ = events.send(ChatEvent::Show(Box::new(event)));
}

pub fn delta(text: &str) -> Option<ChatStreamEvent> {
    let text = StreamDeltaText::try_from(text).ok()?;
    Some(ChatStreamEvent::Delta(StreamDelta { text, type_: StreamDeltaType::Delta }))
}

pub fn replace(text: &str) -> ChatStreamEvent {
    ChatStreamEvent::Replace(StreamReplace { text: text.to_string(), type_: StreamReplaceType::Replace })
}

/// Pieces that arrive within this long of the last one shown are held and shown with the
/// next: a model writes a token every 10–20 ms, and 25 updates a second are plenty for a chat
/// bubble (bench: 111 pieces an answer make 56 events). The first piece is never held; nor is
/// the end; and a held piece waits at most this long for the next one.
const COALESCE: Duration = Duration::from_millis(40);

/// What a streamed answer showed while the coach wrote it.
#[derive(Debug, Default, Clone)]
pub struct Shown {
    pub text: String,
    /// When the first event went out.
    pub first_at: Option<Instant>,
}

/// A piece of the coach's writing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Restart,
}

/// Shows the coach's text as it arrives, until the coach is done; returns its attempts and
/// what was shown.
pub async fn present(mut coach: BoxStream<'_, CoachEvent>, events: &UnboundedSender<ChatEvent>, prompts: &Prompts, vars: &PromptVars) -> (Attempts, Shown) {
    let mut screen = Screen { safety: StreamSafety::new(), replaced: None, shown_at: None, first_at: None };
    let mut done = None;
    // Pieces held back, and since when.
    let (mut held, mut held_since) = (vec![], Instant::now());
    while done.is_none() {
        // A timer only while something is held: with the model writing steadily, the next piece
        // comes first, so the answer is shown as its pieces arrive, with no wake-up of its own.
        let next = match held.is_empty() {
            true => coach.next().await,
            false => match tokio::time::timeout_at(held_since + COALESCE, coach.next()).await {
                Ok(next) => next,
                Err(_) => {
                    screen.show_all(std::mem::take(&mut held), events, prompts, vars);
                    continue;
                }
            },
        };
        let Some(event) = next else { break };
        if held.is_empty() {
            held_since = Instant::now();
        }
        done = take(event, &mut held);
        let due = screen.shown_at.is_none_or(|at| at.elapsed() >= COALESCE);
        if done.is_some() || due {
            screen.show_all(std::mem::take(&mut held), events, prompts, vars);
        }
    }
    screen.show_all(held, events, prompts, vars);
    let attempts = done.unwrap_or(Attempts { draft: Err(LlmError::Transport), billed: vec![], replaced_model: false });
    (attempts, Shown { text: screen.replaced.unwrap_or_else(|| screen.safety.shown().to_string()), first_at: screen.first_at })
}

/// Adds an event's piece to the batch; the attempts when it is the last.
fn take(event: CoachEvent, batch: &mut Vec<Piece>) -> Option<Attempts> {
    match event {
        CoachEvent::Text(text) => batch.push(Piece::Text(text)),
        CoachEvent::Restart => batch.push(Piece::Restart),
        CoachEvent::Done(attempts) => return Some(attempts),
    }
    None
}

/// Consecutive texts as one.
fn merge(batch: Vec<Piece>) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::with_capacity(batch.len());
    for piece in batch {
        match (out.last_mut(), piece) {
            (Some(Piece::Text(so_far)), Piece::Text(more)) => so_far.push_str(&more),
            (_, piece) => out.push(piece),
        }
    }
    out
}

/// The screen of a streamed answer: what output safety let through, or what replaced it.
struct Screen {
    safety: StreamSafety,
    replaced: Option<String>,
    shown_at: Option<Instant>,
    first_at: Option<Instant>,
}

impl Screen {
    fn show_all(&mut self, batch: Vec<Piece>, events: &UnboundedSender<ChatEvent>, prompts: &Prompts, vars: &PromptVars) {
        for piece in merge(batch) {
            self.show(piece, events, prompts, vars);
        }
    }

    fn show(&mut self, piece: Piece, events: &UnboundedSender<ChatEvent>, prompts: &Prompts, vars: &PromptVars) {
        if let Some(event) = self.event(piece, prompts, vars) {
            send(events, event);
            self.shown_at = Some(Instant::now());
            self.first_at = self.first_at.or(self.shown_at);
        }
    }

    /// The event one piece makes, if any.
    fn event(&mut self, piece: Piece, prompts: &Prompts, vars: &PromptVars) -> Option<ChatStreamEvent> {
        match piece {
            Piece::Restart => {
                let shown = !self.safety.shown().is_empty() || self.replaced.is_some();
                self.safety = StreamSafety::new();
                self.replaced = None;
                shown.then(|| replace(""))
            }
            Piece::Text(text) => match self.safety.push(&text) {
                Step::Hold => None,
                Step::Show(more) => delta(&more),
                Step::Blocked => {
                    let filtered = prompts.render(FILTERED, &ReplyVars::from(vars)).unwrap_or_default();
                    let event = replace(&filtered);
                    self.replaced = Some(filtered);
                    Some(event)
                }
            },
        }
    }
}

/// Makes the text shown equal the reply as stored: the rest of it, or all of it instead.
pub fn finish(shown: &str, stored: &str, events: &UnboundedSender<ChatEvent>) {
    let event = match reconcile(shown, stored) {
        Reconcile::Same => None,
        Reconcile::Append(rest) => delta(&rest),
        Reconcile::Replace(text) => Some(replace(&text)),
    };
    if let Some(event) = event {
        send(events, event);
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
        let words = ["Keep ", "your ", "head ", "still ", "through ", "impact, ", "then ", "finish ", "tall. "];
        let coach = futures::stream::iter(words.iter().enumerate())
            .then(|(i, word)| async move {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                CoachEvent::Text((*word).to_string())
            })
            .chain(futures::stream::once(async { CoachEvent::Done(Attempts { draft: Err(LlmError::Timeout), billed: vec![], replaced_model: false }) }))
            .boxed();
        let (events, mut out) = tokio::sync::mpsc::unbounded_channel();
        let (_, shown) = present(coach, &events, &prompts, &vars).await;
        let mut deltas = vec![];
        while let Ok(ChatEvent::Show(shown)) = out.try_recv() {
            let ChatStreamEvent::Delta(d) = *shown else { continue };
            deltas.push(d.text.to_string());
        }
        assert_eq!(deltas.first().map(String::as_str), Some("Keep"), "the first word is not held: {deltas:?}");
        assert!(deltas.len() <= 4, "80 ms of words 10 ms apart come in a few events: {deltas:?}");
        assert_eq!(deltas.concat(), shown.text);
        assert_eq!(shown.text, "Keep your head still through impact, then finish tall.");
    }

    #[test]
    fn consecutive_texts_merge_but_a_restart_stays_between_them() {
        let t = |s: &str| Piece::Text(s.into());
        let merged = merge(vec![t("a "), t("b "), Piece::Restart, t("c")]);
        assert_eq!(merged, vec![t("a b "), Piece::Restart, t("c")]);
    }
}
