//! Step 3, the coach: the model (or the offline coach) within the request's deadline and its
//! reservation; then output safety makes the [`Reply`]. Asked whole, or streamed: the reply's
//! text goes through output safety as it is written and out as events.

use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use super::stream::{self, Shown};
use super::{Caller, ChatError, ChatEvent, Composed, Reply};
use crate::llm::{Attempts, CoachRequest};
use crate::prompts::{PromptMessage, PromptRole, SHORTER};
use crate::safety;
use crate::state::AppState;
use crate::store::deadline;

/// A message the coach answered: the reply after output safety and, streamed, when its first
/// words went out.
pub struct Replied {
    pub composed: Composed,
    pub reply: Reply,
    pub first_delta_at: Option<Instant>,
}

/// What every call of one message is asked with, besides the prompt.
struct Asking {
    shorter: PromptMessage,
    safety_identifier: String,
}

impl Asking {
    fn new(state: &AppState, caller: &Caller, composed: &Composed) -> Result<Self, ChatError> {
        let shorter = PromptMessage { role: PromptRole::System, content: composed.set.prompts.render(SHORTER, &composed.vars)? };
        // The golfer's keyed hash goes with each call as OpenAI's `safety_identifier`.
        Ok(Self { shorter, safety_identifier: safety::log_hash(state.log_key(), caller.user.as_str()) })
    }

    fn request<'a>(&'a self, state: &'a AppState, caller: &Caller, composed: &'a Composed) -> CoachRequest<'a> {
        CoachRequest {
            messages: &composed.packed.messages,
            prompt_tokens: composed.packed.prompt_tokens,
            max_tokens: state.config.limits.max_reply_tokens,
            deadline: caller.deadline,
            vars: &composed.vars,
            shorter: &self.shorter,
            safety_identifier: &self.safety_identifier,
            reserved_micro: composed.reservation.reserved_micro(),
            prompts: &composed.set.prompts,
            model: &composed.row,
        }
    }
}

/// Step 3, the answer whole.
pub async fn ask_whole(state: &AppState, caller: &Caller, mut composed: Composed) -> Result<Replied, ChatError> {
    let asking = match Asking::new(state, caller, &composed) {
        Ok(a) => a,
        Err(e) => return Err(give_back(composed, e).await),
    };
    composed.reservation.billable();
    let started = Instant::now();
    let request = asking.request(state, caller, &composed);
    let attempts = deadline::scope(caller.deadline, state.coach.reply(request)).await;
    crate::stats::model_wait(started.elapsed());
    replied(composed, attempts, Shown::default())
}

/// Step 3, the answer as the coach writes it: `delta` and `replace` events on `events`, and
/// at the end the text shown made equal to the reply as it will be stored.
pub async fn ask_streamed(state: &AppState, caller: &Caller, mut composed: Composed, events: &UnboundedSender<ChatEvent>) -> Result<Replied, ChatError> {
    let asking = match Asking::new(state, caller, &composed) {
        Ok(a) => a,
        Err(e) => return Err(give_back(composed, e).await),
    };
    composed.reservation.billable();
    let started = Instant::now();
    let request = asking.request(state, caller, &composed);
    let presented = stream::present(state.coach.reply_stream(request), events, &composed.set.prompts, &composed.vars);
    let (attempts, shown) = deadline::scope(caller.deadline, presented).await;
    crate::stats::model_wait(started.elapsed());
    let replied = replied(composed, attempts, shown.clone())?;
    // What is stored is what the golfer is finally shown.
    stream::finish(&shown.text, &replied.reply.text, events);
    Ok(replied)
}

/// The reply after output safety, or (a reply template that does not render) the error; the
/// model was asked, so the reservation, dropped, keeps the worst case charged.
fn replied(composed: Composed, attempts: Attempts, shown: Shown) -> Result<Replied, ChatError> {
    match Reply::from_coach(&composed.set.prompts, attempts, &composed.vars, &composed.row.name) {
        Ok(reply) => Ok(Replied { composed, reply, first_delta_at: shown.first_at }),
        Err(e) => Err(e.into()),
    }
}

/// The model was not asked: everything the message reserved is given back.
async fn give_back(composed: Composed, error: ChatError) -> ChatError {
    composed.reservation.release().await;
    error
}
