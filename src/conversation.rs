//! How a conversation item changes with a turn: a new day's conversation carries the themes
//! forward as a new session; messages append; turns beyond the cap fold into the summary
//! (status `compressed`); theme proposals merge under rules the prompt cannot override.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::clock::timestamp;
use crate::models::{
    ChatMessage, CoachReplyPayload, CoachingThemes, ConversationId, ConversationItem, ConversationStatus, SwingId,
    UserId,
};

pub const MAX_IMPROVEMENTS: usize = 5;
pub const MAX_REFERENCED_SWINGS: usize = 30;
pub const MAX_FOCUS_CHARS: usize = 120;
/// The folded summary keeps its newest part within this many characters.
pub const MAX_SUMMARY_CHARS: usize = 2000;
/// Characters of each folded message kept in the summary.
const FOLD_SNIPPET_CHARS: usize = 90;

pub fn default_themes() -> CoachingThemes {
    CoachingThemes {
        primary_focus: "Building a repeatable swing".into(),
        secondary_focus: "A consistent pre-shot routine".into(),
        recent_improvements: vec![],
        session_count: 0,
        progress_indicators: BTreeMap::new(),
    }
}

/// A day's first conversation: themes carried from the latest earlier one, one more session.
pub fn start(
    id: ConversationId,
    user: UserId,
    previous_themes: Option<CoachingThemes>,
    now: DateTime<Utc>,
) -> ConversationItem {
    let mut themes = previous_themes.unwrap_or_else(default_themes);
    themes.session_count += 1;
    ConversationItem {
        conversation_id: id,
        user_id: user,
        last_updated: timestamp(now),
        created_at: timestamp(now),
        recent_messages: vec![],
        coaching_themes: themes,
        referenced_swings: vec![],
        total_tokens_used: 0,
        conversation_status: ConversationStatus::Active,
        summary: None,
        version: Some(0),
        client_message_ids: vec![],
    }
}

/// clientMessageIds kept on a conversation (for deletion of their idempotency records; those
/// records also expire within 24 hours).
pub const MAX_CLIENT_MESSAGE_IDS: usize = 100;

/// One exchange to record.
#[derive(Debug, Clone)]
pub struct Turn<'a> {
    pub user_message: ChatMessage,
    pub reply: ChatMessage,
    pub tokens: u64,
    /// Theme proposals (from the model or the offline coach); `None` for a fallback.
    pub proposal: Option<&'a CoachReplyPayload>,
    /// Swing ids the caller owns (from the context read); only these may be referenced.
    pub own_swings: &'a [SwingId],
    /// The latest swing's score, kept as a progress indicator.
    pub latest_score: Option<i64>,
    pub client_message_id: Option<&'a str>,
}

/// Applies a turn to the conversation's current state.
pub fn apply(mut c: ConversationItem, turn: &Turn<'_>, now: DateTime<Utc>, max_messages: usize) -> ConversationItem {
    c.recent_messages.push(turn.user_message.clone());
    c.recent_messages.push(turn.reply.clone());
    c.total_tokens_used += turn.tokens;
    c.last_updated = timestamp(now);
    c.version = Some(c.version.unwrap_or(0) + 1);
    fold(&mut c, max_messages.max(2));
    for swing in [turn.user_message.swing_reference.as_ref(), turn.reply.swing_reference.as_ref()]
        .into_iter()
        .flatten()
    {
        reference_swing(&mut c, swing, turn.own_swings);
    }
    if let Some(p) = turn.proposal {
        merge_themes(&mut c.coaching_themes, p);
    }
    if let Some(id) = turn.client_message_id {
        if !c.client_message_ids.iter().any(|x| x == id) {
            c.client_message_ids.push(id.to_string());
        }
        if c.client_message_ids.len() > MAX_CLIENT_MESSAGE_IDS {
            let extra = c.client_message_ids.len() - MAX_CLIENT_MESSAGE_IDS;
            c.client_message_ids.drain(..extra);
        }
    }
    if let Some(score) = turn.latest_score {
        c.coaching_themes
            .progress_indicators
            .insert("latest_swing_score".into(), score.clamp(0, 100) as f64);
    }
    c
}

fn reference_swing(c: &mut ConversationItem, swing: &str, own: &[SwingId]) {
    let Some(id) = own.iter().find(|s| s.as_str() == swing) else { return };
    if !c.referenced_swings.contains(id) {
        c.referenced_swings.push(id.clone());
    }
    if c.referenced_swings.len() > MAX_REFERENCED_SWINGS {
        let extra = c.referenced_swings.len() - MAX_REFERENCED_SWINGS;
        c.referenced_swings.drain(..extra);
    }
}

fn clip(s: &str, max: usize) -> String {
    let t = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.chars().count() <= max {
        t
    } else {
        format!("{}…", t.chars().take(max).collect::<String>().trim_end())
    }
}

/// Focus changes only when proposed with content; improvements stay short and distinct.
pub fn merge_themes(t: &mut CoachingThemes, p: &CoachReplyPayload) {
    let proposed = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(|s| clip(s, MAX_FOCUS_CHARS));
    if let Some(f) = proposed(&p.primary_focus) {
        t.primary_focus = f;
    }
    if let Some(f) = proposed(&p.secondary_focus) {
        t.secondary_focus = f;
    }
    if let Some(i) = proposed(&p.improvement) {
        let key = i.to_lowercase();
        t.recent_improvements.retain(|x| x.to_lowercase() != key);
        t.recent_improvements.push(i);
        if t.recent_improvements.len() > MAX_IMPROVEMENTS {
            let extra = t.recent_improvements.len() - MAX_IMPROVEMENTS;
            t.recent_improvements.drain(..extra);
        }
    }
}

/// Moves the oldest turns beyond `max` into the summary, a line per turn, newest kept.
fn fold(c: &mut ConversationItem, max: usize) {
    if c.recent_messages.len() <= max {
        return;
    }
    let overflow = c.recent_messages.len() - max;
    let folded: Vec<ChatMessage> = c.recent_messages.drain(..overflow).collect();
    let mut summary = c.summary.take().unwrap_or_default();
    for m in folded {
        let who = match m.role {
            crate::models::Role::User => "Golfer",
            crate::models::Role::Assistant => "Coach",
        };
        if !summary.is_empty() {
            summary.push('\n');
        }
        summary.push_str(&format!("{who}: {}", clip(&m.content, FOLD_SNIPPET_CHARS)));
    }
    let len = summary.chars().count();
    if len > MAX_SUMMARY_CHARS {
        let tail: String = summary.chars().skip(len - MAX_SUMMARY_CHARS).collect();
        // Start at a whole line.
        summary = tail.split_once('\n').map_or(tail.clone(), |(_, rest)| rest.to_string());
    }
    c.summary = Some(summary);
    c.conversation_status = ConversationStatus::Compressed;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Role;

    fn user() -> UserId {
        UserId::try_from("golfer-1".to_string()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn conv_id() -> ConversationId {
        ConversationId::try_from("conv_golfer-1_20261125".to_string()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn msg(role: Role, text: &str) -> ChatMessage {
        ChatMessage {
            content: text.into(),
            degraded: None,
            message_id: uuid::Uuid::new_v4().to_string(),
            role,
            swing_reference: None,
            timestamp: timestamp(Utc::now()),
            tokens_used: 10,
        }
    }

    fn payload(primary: Option<&str>, improvement: Option<&str>, swing: Option<&str>) -> CoachReplyPayload {
        CoachReplyPayload {
            reply: "ok".into(),
            primary_focus: primary.map(Into::into),
            secondary_focus: None,
            improvement: improvement.map(Into::into),
            swing_reference: swing.map(Into::into),
        }
    }

    #[test]
    fn a_new_day_is_a_new_session_with_themes_carried() {
        let mut prev = default_themes();
        prev.session_count = 4;
        prev.primary_focus = "Tempo".into();
        let c = start(conv_id(), user(), Some(prev), Utc::now());
        assert_eq!(c.coaching_themes.session_count, 5);
        assert_eq!(c.coaching_themes.primary_focus, "Tempo");
        assert_eq!(start(conv_id(), user(), None, Utc::now()).coaching_themes.session_count, 1);
    }

    #[test]
    fn improvements_stay_short_and_distinct() {
        let mut t = default_themes();
        for i in ["Better tempo", "better tempo", "A", "B", "C", "D", "E"] {
            merge_themes(&mut t, &payload(None, Some(i), None));
        }
        // "better tempo" replaced its twin, then fell off the end when "E" arrived.
        assert_eq!(t.recent_improvements, ["A", "B", "C", "D", "E"]);
        assert_eq!(t.recent_improvements.len(), MAX_IMPROVEMENTS);
    }

    #[test]
    fn blank_proposals_change_nothing() {
        let mut t = default_themes();
        merge_themes(&mut t, &payload(Some("   "), None, None));
        assert_eq!(t.primary_focus, default_themes().primary_focus);
    }

    #[test]
    fn only_own_swings_are_referenced() {
        let own = [SwingId::try_from("swing-mine".to_string()).unwrap_or_else(|e| panic!("{e}"))];
        let c = start(conv_id(), user(), None, Utc::now());
        let mut reply = msg(Role::Assistant, "hi");
        reply.swing_reference = Some("swing-theirs".into());
        let turn = Turn { user_message: msg(Role::User, "hi"), reply: reply.clone(), tokens: 1, proposal: None, own_swings: &own, latest_score: None, client_message_id: None };
        let c = apply(c, &turn, Utc::now(), 20);
        assert!(c.referenced_swings.is_empty());
        reply.swing_reference = Some("swing-mine".into());
        let turn = Turn { reply, ..turn };
        let c = apply(c, &turn, Utc::now(), 20);
        assert_eq!(c.referenced_swings, own.to_vec());
    }

    #[test]
    fn many_turns_fold_into_a_bounded_summary() {
        let mut c = start(conv_id(), user(), None, Utc::now());
        for i in 0..5000 {
            let turn = Turn {
                user_message: msg(Role::User, &format!("question {i} {}", "x".repeat(900))),
                reply: msg(Role::Assistant, &format!("answer {i} {}", "y".repeat(1400))),
                tokens: 20,
                proposal: None,
                own_swings: &[],
                latest_score: None,
                client_message_id: Some("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
            };
            c = apply(c, &turn, Utc::now(), 20);
        }
        assert_eq!(c.recent_messages.len(), 20);
        assert_eq!(c.conversation_status, ConversationStatus::Compressed);
        let summary = c.summary.clone().unwrap_or_default();
        assert!(summary.chars().count() <= MAX_SUMMARY_CHARS);
        assert!(summary.contains("answer 4989"), "newest folded turns kept");
        assert_eq!(c.total_tokens_used, 100_000);
        assert_eq!(c.version, Some(5000));
    }
}
