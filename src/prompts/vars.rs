//! The variables every template receives (`coach-api prompt schema` prints their schema), the
//! reply templates' variables, and the prompt's messages.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::models::{AppContext, CoachingThemes, GolferProfile, MemoryFact, SwingAnalysis};

/// How much swing and profile detail the context message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Detail {
    /// Goals, every recent swing with its metrics.
    Full,
    /// No goals or metrics.
    Brief,
    /// The latest swing only, no recommendation text.
    Minimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PromptRole {
    System,
    User,
    Assistant,
}

impl PromptRole {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

/// An earlier turn of the golfer's conversation (the newest turns, whatever their UTC day).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryTurn {
    pub role: PromptRole,
    pub content: String,
}

/// The variables every template receives, except `history`, which becomes the conversation's
/// own messages. Every field is always present (absent values are `null`), so templates test
/// with `{% if x %}` and a misspelt name fails loudly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PromptVars {
    /// Today's date, YYYY-MM-DD (UTC).
    pub today: String,
    /// The length the system prompt asks replies to stay under.
    pub reply_word_limit: u32,
    /// The golfer's message, already sanitized. Rendered only inside `message.tera`.
    pub message: String,
    pub profile: Option<GolferProfile>,
    /// What the app says about the screen the golfer is on.
    pub app: AppContext,
    pub themes: CoachingThemes,
    /// Older turns of the golfer's recent conversation folded into prose.
    pub summary: Option<String>,
    /// The swing the app has on screen (only ever the caller's own).
    pub swing_on_screen: Option<SwingAnalysis>,
    /// Recent swing analyses, newest first.
    pub swings: Vec<SwingAnalysis>,
    /// What the coach remembers about the golfer, injuries and goals first (packing keeps
    /// what fits the memory's share of the prompt). Empty while memory is off.
    #[serde(default)]
    pub memory: Vec<MemoryFact>,
    /// The golfer's memory switch: off, the system prompt asks for no memory operations.
    #[serde(default = "on")]
    pub memory_enabled: bool,
    /// The golfer's earlier turns, oldest first, whatever their UTC day. Not a template variable: the turns
    /// become the conversation's own user and assistant messages, so no template can put a
    /// golfer's words into the system or context message (and no render pays for them).
    #[serde(skip_serializing)]
    pub history: Vec<HistoryTurn>,
    /// Set by packing; authors may leave it out of a preview file.
    #[serde(default = "full")]
    pub detail: Detail,
}

fn full() -> Detail {
    Detail::Full
}

fn on() -> bool {
    true
}

impl PromptVars {
    /// The newest swing the coach knows about: the one on screen, else the latest analysis.
    pub fn latest_swing(&self) -> Option<&SwingAnalysis> {
        self.swing_on_screen.as_ref().or_else(|| self.swings.first())
    }
}

/// What the reply templates (offline, fallback, filtered) receive: the prompt variables plus
/// `latest_swing`, the swing on screen or else the newest analysis (null when none).
#[derive(Debug, Serialize)]
pub struct ReplyVars<'a> {
    #[serde(flatten)]
    pub vars: &'a PromptVars,
    pub latest_swing: Option<&'a SwingAnalysis>,
}

impl<'a> From<&'a PromptVars> for ReplyVars<'a> {
    fn from(vars: &'a PromptVars) -> Self {
        Self { vars, latest_swing: vars.latest_swing() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PromptMessage {
    pub role: PromptRole,
    pub content: String,
}
