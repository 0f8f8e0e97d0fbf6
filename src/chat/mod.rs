//! The coaching request flow, after the API layer has checked size, media type, schema and
//! identity. A message moves through its steps as a value, one file a step:
//!
//! 1. [`admit`]: one DynamoDB wave, the admission transaction (quotas, worst-case spend,
//!    idempotency claim) beside the coaching-context reads → [`Admitted`] (or the stored
//!    [`Answered`] of an identical request: a replay);
//! 2. [`compose`]: the swing check, the template variables, the prompt packed into the token
//!    limit → [`Composed`]. Steps 1 and 2 are [`prepare`]: everything that can refuse a
//!    message, finished before any response header is sent;
//! 3. [`ask`]: the coach, whole or streamed, then output safety → [`Replied`];
//! 4. [`record`]: one DynamoDB wave, the turn with its settlement → [`Answered`].
//!
//! [`answer`] runs steps 3 and 4 as a `Stream` of [`ChatEvent`]s: the JSON route collects it,
//! the streamed route forwards it. A streamed answer is worked on by whoever reads its events
//! (the response body), with no task of its own; when the reader goes away first (the client
//! hung up), the rest is handed to a task, so the model's bill is settled and the turn stored.
//! The [`Reservation`] admission took settles itself with the turn, or gives itself back.

pub mod admit;
pub mod ask;
pub mod compose;
pub mod record;
pub mod reply;
pub mod reservation;
pub mod stream;

use futures::stream::{BoxStream, StreamExt};
use tokio::time::Instant;

use crate::limits::{IpHash, Refusal};
use crate::metrics::Outcome;
use crate::models::{ChatStreamEvent, CoachingChatRequest, CoachingChatResponse, UserId};
use crate::prompts::{PackError, PromptError};
use crate::state::AppState;
use crate::stats::IoStats;
use crate::store::StoreError;
pub use admit::Admitted;
pub use ask::Replied;
pub use compose::Composed;
pub use reply::Reply;
pub use reservation::Reservation;

/// Who is asking, from where and by when, as the API layer established it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: UserId,
    pub ip: IpHash,
    /// By this instant the answer must be ready to store (the model's last moment); storing
    /// it has `deadline_margin` more. Derived from Lambda's remaining time.
    pub deadline: Instant,
    pub request_id: String,
}

/// A request that passed the schema, with the golfer's message after input sanitizing.
#[derive(Debug, Clone)]
pub struct ChatInput {
    pub request: CoachingChatRequest,
    pub message: String,
}

/// Why a message was not answered with a coaching reply.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("conversation belongs to someone else")]
    ForeignConversation,
    #[error("swing not found for this golfer")]
    SwingNotFound,
    #[error("the same clientMessageId is being answered")]
    InProgress,
    #[error("the clientMessageId was used for a different message")]
    IdReused,
    #[error("limit {} reached", .refusal.counter.label())]
    Limited { refusal: Box<Refusal>, message: String },
    #[error(transparent)]
    TooLong(PackError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Prompt(#[from] PromptError),
    /// A value of ours that does not hold what it must (a bug on our side).
    #[error("internal: {0}")]
    Internal(&'static str),
}

/// An answered message: the response body, whether it is the stored answer to an identical
/// message, and what it contributes to metrics and logs.
#[derive(Debug)]
pub struct Answered {
    pub response: Box<CoachingChatResponse>,
    /// The stored answer to an earlier identical message.
    pub replay: bool,
    pub outcome: Outcome,
}

/// What steps 1 and 2 found: a message ready for the coach, or the stored answer.
pub enum Prepared {
    Composed(Box<Composed>),
    Replay(Box<Answered>),
}

/// How the golfer receives the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Whole, when it is done (the model is asked for a whole answer).
    Whole,
    /// As the coach writes it (the model streams).
    Streamed,
}

/// What an answer's stream carries.
#[derive(Debug)]
pub enum ChatEvent {
    /// Text to show: a `delta` or a `replace` (streamed answers only).
    Show(Box<ChatStreamEvent>),
    /// The last event: the answer.
    Done(Box<Answered>),
    /// The last event: the answer failed after it started (a fault on our side).
    Failed(ChatError),
}

/// Steps 1 and 2: everything that can refuse a message, before anything is sent back.
pub async fn prepare(state: &AppState, caller: &Caller, input: &ChatInput) -> Result<Prepared, ChatError> {
    let admitted = match admit::admit(state, caller, input).await? {
        admit::Admission::Replay(answered) => return Ok(Prepared::Replay(answered)),
        admit::Admission::Admitted(admitted) => admitted,
    };
    let composed = compose::compose(state, caller, input, *admitted).await?;
    Ok(Prepared::Composed(Box::new(composed)))
}

/// How an answer ended, for whoever observes it: set by the answer's own work, so it is known
/// even when nobody listens to the events any more (the client hung up).
#[derive(Debug, Clone)]
pub struct Ended {
    pub outcome: Outcome,
    /// The I/O of the answer's own task (a streamed answer's; none for a whole one).
    pub io: IoStats,
    /// It failed after it started (a fault on our side).
    pub failed: bool,
}

/// A composed message being answered: its events, ending in `Done` or `Failed`, and how it
/// ended.
pub struct Answering {
    pub events: BoxStream<'static, ChatEvent>,
    pub ended: tokio::sync::watch::Receiver<Option<Ended>>,
}

/// Steps 3 and 4 for a composed message. A streamed answer is finished, billed and stored
/// whoever stops listening ([`InPlace`]).
pub fn answering(state: AppState, caller: Caller, input: ChatInput, composed: Composed, delivery: Delivery) -> Answering {
    let (end, ended) = tokio::sync::watch::channel(None);
    let events = match delivery {
        Delivery::Whole => futures::stream::once(async move {
            let replied = ask::ask_whole(&state, &caller, composed).await;
            finished(record::record(&state, &caller, &input, replied).await, IoStats::default(), &end)
        })
        .boxed(),
        Delivery::Streamed => {
            let (events, shown) = tokio::sync::mpsc::unbounded_channel();
            let work = async move {
                let work = async {
                    let replied = ask::ask_streamed(&state, &caller, composed, &events).await;
                    record::record(&state, &caller, &input, replied).await
                };
                let (result, io) = crate::stats::scope(work).await;
                finished(result, io, &end)
            };
            InPlace { work: Some(Box::pin(work)), shown, last: None }.boxed()
        }
    };
    Answering { events, ended }
}

/// A streamed answer's events, worked on in the task that reads them: each model piece goes
/// from the provider's socket to the golfer's without waking another task. The work sends
/// what it shows on `shown` (only while it is polled here, so the queue is read right after)
/// and ends with the last event. Dropped before the work is done (the client hung up), it
/// hands the work to a task of its own, which finishes, bills and stores the answer.
struct InPlace {
    work: Option<futures::future::BoxFuture<'static, ChatEvent>>,
    shown: tokio::sync::mpsc::UnboundedReceiver<ChatEvent>,
    last: Option<ChatEvent>,
}

impl futures::Stream for InPlace {
    type Item = ChatEvent;

    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<ChatEvent>> {
        let this = &mut *self;
        if let Ok(event) = this.shown.try_recv() {
            return std::task::Poll::Ready(Some(event));
        }
        if let Some(work) = this.work.as_mut() {
            if let std::task::Poll::Ready(last) = work.as_mut().poll(cx) {
                this.work = None;
                this.last = Some(last);
            }
        }
        match this.shown.try_recv() {
            Ok(event) => std::task::Poll::Ready(Some(event)),
            Err(_) if this.work.is_none() => std::task::Poll::Ready(this.last.take()),
            // The work is waiting and will wake this task.
            Err(_) => std::task::Poll::Pending,
        }
    }
}

impl Drop for InPlace {
    fn drop(&mut self) {
        if let (Some(work), Ok(runtime)) = (self.work.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(work);
        }
    }
}

fn finished(result: Result<Answered, ChatError>, io: IoStats, end: &tokio::sync::watch::Sender<Option<Ended>>) -> ChatEvent {
    let (outcome, failed) = match &result {
        Ok(answered) => (answered.outcome.clone(), false),
        Err(_) => (Outcome::of(crate::metrics::OutcomeKind::Error), true),
    };
    end.send_replace(Some(Ended { outcome, io, failed }));
    match result {
        Ok(answered) => ChatEvent::Done(Box::new(answered)),
        Err(e) => ChatEvent::Failed(e),
    }
}

/// A message answered whole (the JSON route): prepared, then its answer's one event.
pub async fn whole_answer(state: &AppState, caller: &Caller, input: &ChatInput) -> Result<Answered, ChatError> {
    let composed = match prepare(state, caller, input).await? {
        Prepared::Replay(answered) => return Ok(*answered),
        Prepared::Composed(composed) => composed,
    };
    let mut events = answering(state.clone(), caller.clone(), input.clone(), *composed, Delivery::Whole).events;
    while let Some(event) = events.next().await {
        match event {
            ChatEvent::Show(_) => {}
            ChatEvent::Done(answered) => return Ok(*answered),
            ChatEvent::Failed(e) => return Err(e),
        }
    }
    Err(ChatError::Internal("an answer's stream ended without its answer"))
}
