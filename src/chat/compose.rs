//! Step 2, the prompt: the swing on screen checked, the template variables built from what
//! admission read (the golfer's newest turns as history, whatever their UTC day), and the
//! prompt packed into the token limit left by the reply and the structured-output schema.

use chrono::{DateTime, Utc};

use super::{Admitted, Caller, ChatError, ChatInput, Reservation};
use crate::conversation;
use crate::conversation::RecentTurn;
use crate::limits::{self, UsageSnapshot};
use crate::llm::table::ModelSpec;
use crate::models::{AppContext, ChatMessage, ConversationId, GolferMemory, Role, SwingId};
use crate::prompts::experiment::PromptSet;
use crate::prompts::{pack, HistoryTurn, PackError, Packed, PromptRole, PromptVars};
use crate::state::AppState;
use crate::store::conversations::CoachingContext;
use crate::store::keys;

/// A message ready for the coach. Of what admission read, only the newest turn and the
/// golfer's swing ids are kept: the rest is let go before the request waits on the model.
pub struct Composed {
    pub reservation: Reservation,
    pub vars: PromptVars,
    pub packed: Packed,
    /// The golfer's newest turn before this one (the themes and the day's swings carry on).
    pub newest: Option<RecentTurn>,
    /// The swings the caller owns, as the context read found them: only these may be referenced.
    pub own_swings: Vec<SwingId>,
    pub conversation: ConversationId,
    pub turn_key: String,
    pub request_hash: String,
    pub now: DateTime<Utc>,
    /// The templates (and model row) the message is answered with.
    pub set: PromptSet,
    /// The model row that answers it, decided at admission.
    pub row: ModelSpec,
    /// What the golfer has used this hour and day, this message's reservation included (read
    /// beside the admission).
    pub usage: UsageSnapshot,
    /// What the coach remembered when the message was admitted (the reply's memory
    /// operations apply to it; its version guards the write).
    pub memory: Option<GolferMemory>,
}

/// Step 2. On an error the reservation is given back.
pub async fn compose(state: &AppState, caller: &Caller, input: &ChatInput, admitted: Admitted) -> Result<Composed, ChatError> {
    let Admitted { reservation, context, usage, turn_key, request_hash, now, set, row } = admitted;
    let parts = (|| {
        let context = context?;
        if input.request.swing_id.is_some() && context.swing_on_screen.is_none() {
            return Err(ChatError::SwingNotFound);
        }
        let conversation = ConversationId::try_from(keys::conversation(&caller.user, now)).map_err(|_| ChatError::Internal("a conversation id out of its pattern"))?;
        let vars = prompt_vars(state, input, &context, now);
        let packed = compose_prompt(state, &set, &row, &vars)?;
        Ok((context, conversation, vars, packed))
    })();
    match parts {
        Err(e) => {
            reservation.release().await;
            Err(e)
        }
        Ok((context, conversation, vars, packed)) => Ok(Composed {
            own_swings: own_swings(&context),
            memory: context.memory,
            newest: context.recent.into_iter().next(),
            reservation,
            vars,
            packed,
            conversation,
            turn_key,
            request_hash,
            now,
            set,
            row,
            usage,
        }),
    }
}

/// What the templates receive for this message: the golfer's newest turns as history,
/// whatever their UTC day (older ones folded into the summary), the themes after the
/// newest turn.
fn prompt_vars(state: &AppState, input: &ChatInput, context: &CoachingContext, now: DateTime<Utc>) -> PromptVars {
    let (recent, summary) = conversation::fold(context.oldest_first().map(|t| (&t.user_message, &t.reply)), state.config.max_recent_messages);
    PromptVars {
        today: crate::clock::date(now),
        reply_word_limit: state.config.reply_word_limit,
        message: input.message.clone(),
        profile: context.profile.clone(),
        app: input.request.context.clone().unwrap_or(AppContext { club: None, handicap: None, locale: None, screen: None }),
        themes: conversation::themes_before(context.newest(), now),
        summary,
        swing_on_screen: context.swing_on_screen.clone(),
        swings: context.swings.clone(),
        memory: context.memory.as_ref().filter(|m| m.enabled).map(|m| crate::memory::ordered(&m.facts)).unwrap_or_default(),
        memory_enabled: context.memory.as_ref().is_none_or(|m| m.enabled),
        history: history(&recent),
        detail: crate::prompts::Detail::Full,
    }
}

/// The prompt within the token limit left by the reply and the structured-output schema, as
/// the model that will be called counts tokens (its row says how its tokenizer compares).
fn compose_prompt(state: &AppState, set: &PromptSet, row: &ModelSpec, vars: &PromptVars) -> Result<Packed, ChatError> {
    let token_limit = row.prompt_token_limit(limits::prompt_token_limit(&state.config.limits));
    pack(&set.prompts, vars, token_limit).map_err(|e| match e {
        PackError::Prompt(p) => ChatError::Prompt(p),
        too_long => ChatError::TooLong(too_long),
    })
}

/// The swings the caller owns, as the context read found them.
fn own_swings(context: &CoachingContext) -> Vec<SwingId> {
    context.swings.iter().chain(context.swing_on_screen.iter()).map(|s| s.analysis_id.clone()).collect()
}

/// The golfer's earlier messages for the prompt (a fallback reply is not something the coach said).
fn history(messages: &[ChatMessage]) -> Vec<HistoryTurn> {
    messages
        .iter()
        .filter(|m| m.degraded != Some(true))
        .map(|m| HistoryTurn {
            role: match m.role {
                Role::User => PromptRole::User,
                Role::Assistant => PromptRole::Assistant,
            },
            content: m.content.clone(),
        })
        .collect()
}
