//! What a golfer's conversation is made of: turns. A day's conversation is that day's turn
//! items; each turn carries the coaching themes after it, so the newest turn (of any day)
//! holds the golfer's current themes and a new day starts a new session from them. Theme
//! proposals merge under rules the prompt cannot override. Reading a day assembles its
//! turns: the recent messages, older turns folded into a summary (status `compressed`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::clock::timestamp;
use crate::models::{
    ChatMessage, CoachReplyPayload, CoachingThemes, Conversation, ConversationId, ConversationStatus, Role, StoredResponse, SwingId, TurnItem, TurnItemStatus, UserId,
};

pub const MAX_IMPROVEMENTS: usize = 5;
pub const MAX_REFERENCED_SWINGS: usize = 30;
pub const MAX_FOCUS_CHARS: usize = 120;
/// The folded summary keeps its newest part within this many characters.
pub const MAX_SUMMARY_CHARS: usize = 2000;
/// Characters of each folded message kept in the summary.
const FOLD_SNIPPET_CHARS: usize = 90;

/// What the coach reads of one of a golfer's recent turns before answering: its messages,
/// and (for the newest) its day's conversation, when it was asked, the themes after it and the
/// day's swings. The Query of the recent turns projects these attributes
/// ([`RECENT_TURN_ATTRIBUTES`]) and no more: the rest of a turn (the stored response, the
/// request's hash) is neither sent, parsed nor held while the message is answered.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecentTurn {
    pub conversation: ConversationId,
    pub last_updated: String,
    pub coaching_themes: CoachingThemes,
    pub referenced_swings: Vec<SwingId>,
    pub user_message: ChatMessage,
    pub reply: ChatMessage,
}

/// The attributes of a turn item [`RecentTurn`] holds (a test keeps the two in step).
pub const RECENT_TURN_ATTRIBUTES: [&str; 6] = ["conversation", "last_updated", "coaching_themes", "referenced_swings", "user_message", "reply"];

impl From<&TurnItem> for RecentTurn {
    fn from(t: &TurnItem) -> Self {
        Self {
            conversation: t.conversation.clone(),
            last_updated: t.last_updated.clone(),
            coaching_themes: t.coaching_themes.clone(),
            referenced_swings: t.referenced_swings.clone(),
            user_message: t.user_message.clone(),
            reply: t.reply.clone(),
        }
    }
}

pub fn default_themes() -> CoachingThemes {
    CoachingThemes {
        primary_focus: "Building a repeatable swing".into(),
        secondary_focus: "A consistent pre-shot routine".into(),
        recent_improvements: vec![],
        session_count: 0,
        progress_indicators: BTreeMap::new(),
    }
}

/// A coaching session ends when the golfer has been away this long: a new session is a
/// return after a break, not a UTC midnight crossed in the middle of a conversation (which
/// is the afternoon or evening for golfers in the Americas).
pub const SESSION_GAP: chrono::Duration = chrono::Duration::hours(3);

/// The themes a new turn starts from: those after the newest turn, one more session when
/// that turn was asked more than [`SESSION_GAP`] ago (or the defaults, session 1, for a
/// golfer's first turn).
pub fn themes_before(newest: Option<&RecentTurn>, now: DateTime<Utc>) -> CoachingThemes {
    match newest {
        Some(t) if !is_new_session(t, now) => t.coaching_themes.clone(),
        Some(t) => next_session(t.coaching_themes.clone()),
        None => next_session(default_themes()),
    }
}

/// Whether a turn asked at `now` starts a new session after `newest` (a turn whose time does
/// not read counts as long ago).
fn is_new_session(newest: &RecentTurn, now: DateTime<Utc>) -> bool {
    crate::clock::parse_timestamp(&newest.last_updated).is_none_or(|asked| now.signed_duration_since(asked) > SESSION_GAP)
}

fn next_session(mut themes: CoachingThemes) -> CoachingThemes {
    themes.session_count += 1;
    themes
}

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
}

/// Whose turn it is, in which day's conversation, and when the golfer asked.
#[derive(Debug, Clone)]
pub struct Placement {
    pub user: UserId,
    pub conversation: ConversationId,
    pub now: DateTime<Utc>,
}

/// The turn item for an exchange; `newest` is the golfer's newest turn before it (today's, or
/// an earlier day's).
pub fn next_turn(place: Placement, newest: Option<&RecentTurn>, turn: &Turn<'_>, response: StoredResponse, request_hash: String) -> TurnItem {
    let Placement { user, conversation, now } = place;
    let today = newest.filter(|t| t.conversation == conversation);
    let mut themes = themes_before(newest, now);
    let mut referenced_swings = today.map(|t| t.referenced_swings.clone()).unwrap_or_default();
    for swing in [turn.user_message.swing_reference.as_ref(), turn.reply.swing_reference.as_ref()].into_iter().flatten() {
        reference_swing(&mut referenced_swings, swing, turn.own_swings);
    }
    if let Some(p) = turn.proposal {
        merge_themes(&mut themes, p);
    }
    if let Some(score) = turn.latest_score {
        themes.progress_indicators.insert("latest_swing_score".into(), score.clamp(0, 100) as f64);
    }
    TurnItem {
        // The key is the store's to write (it picks it: the app's id, or one of ours for a fallback).
        conversation_id: None,
        user_id: user,
        last_updated: timestamp(now),
        conversation,
        status: TurnItemStatus::Completed,
        user_message: turn.user_message.clone(),
        reply: turn.reply.clone(),
        coaching_themes: themes,
        referenced_swings,
        tokens: turn.tokens,
        response,
        request_hash,
    }
}

/// A day's conversation from its turns (oldest first): the last `max_messages` messages, the
/// older ones folded into the summary, the themes after the newest turn.
pub fn assemble(id: ConversationId, user: UserId, turns: &[TurnItem], max_messages: usize) -> Option<Conversation> {
    let (first, newest) = (turns.first()?, turns.last()?);
    let (messages, summary) = fold(turns.iter().map(|t| (&t.user_message, &t.reply)), max_messages);
    Some(Conversation {
        conversation_id: id,
        user_id: user,
        last_updated: newest.last_updated.clone(),
        created_at: first.last_updated.clone(),
        recent_messages: messages,
        coaching_themes: newest.coaching_themes.clone(),
        referenced_swings: newest.referenced_swings.clone(),
        total_tokens_used: turns.iter().map(|t| t.tokens).sum(),
        conversation_status: if summary.is_none() { ConversationStatus::Active } else { ConversationStatus::Compressed },
        summary,
    })
}

/// The messages of `turns` (oldest first): the last `max_messages`, and the older ones folded
/// into a summary.
pub fn fold<'a>(exchanges: impl IntoIterator<Item = (&'a ChatMessage, &'a ChatMessage)>, max_messages: usize) -> (Vec<ChatMessage>, Option<String>) {
    let mut messages: Vec<ChatMessage> = exchanges.into_iter().flat_map(|(asked, reply)| [asked.clone(), reply.clone()]).collect();
    let overflow = messages.len().saturating_sub(max_messages.max(2));
    let folded: Vec<ChatMessage> = messages.drain(..overflow).collect();
    (messages, (!folded.is_empty()).then(|| summary(&folded)))
}

fn reference_swing(referenced: &mut Vec<SwingId>, swing: &str, own: &[SwingId]) {
    let Some(id) = own.iter().find(|s| s.as_str() == swing) else { return };
    if !referenced.contains(id) {
        referenced.push(id.clone());
    }
    if referenced.len() > MAX_REFERENCED_SWINGS {
        let extra = referenced.len() - MAX_REFERENCED_SWINGS;
        referenced.drain(..extra);
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
/// Theme text is model output shown in every later prompt, reply template and GET /themes:
/// it passes the same sanitizing and content filter as replies, and a proposal from which
/// anything had to be removed (markup, a link, an address, a number) is not taken at all.
pub fn merge_themes(t: &mut CoachingThemes, p: &CoachReplyPayload) {
    let safe = |s: &str| {
        let clean = crate::safety::clean_output(s);
        (!clean.blocked && clean.redactions == 0).then_some(clean.text)
    };
    let proposed = |v: &Option<String>| v.as_deref().and_then(safe).map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).map(|s| clip(&s, MAX_FOCUS_CHARS));
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

/// Older messages as a line each, the newest kept within `MAX_SUMMARY_CHARS`.
fn summary(folded: &[ChatMessage]) -> String {
    let mut summary = String::new();
    for m in folded {
        let who = match m.role {
            Role::User => "Golfer",
            Role::Assistant => "Coach",
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
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Quota, Usage};

    fn user() -> UserId {
        UserId::try_from("golfer-1".to_string()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn conv_id(day: &str) -> ConversationId {
        ConversationId::try_from(format!("conv_golfer-1_{day}")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        use chrono::TimeZone;
        Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).single().unwrap_or_default()
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

    fn response() -> StoredResponse {
        let quota = Quota {
            requests_limit_hour: 15,
            requests_remaining_hour: 14,
            hour_resets_at: String::new(),
            spend_limit_micro_usd_day: 5_000_000,
            spend_remaining_micro_usd_day: 5_000_000,
            day_resets_at: String::new(),
        };
        let usage = Usage { prompt_tokens: 10, completion_tokens: 10, total_tokens: 20, token_limit: 1500, cost_micro_usd: 0 };
        StoredResponse { request_id: "r".into(), usage, quota, source: "offline".into(), degraded: false, prompt_version: None, variant: None }
    }

    fn payload(primary: Option<&str>, improvement: Option<&str>, swing: Option<&str>) -> CoachReplyPayload {
        CoachReplyPayload {
            reply: "ok".into(),
            primary_focus: primary.map(Into::into),
            secondary_focus: None,
            improvement: improvement.map(Into::into),
            swing_reference: swing.map(Into::into),
            memory: vec![],
        }
    }

    fn place(conversation: ConversationId, now: DateTime<Utc>) -> Placement {
        Placement { user: user(), conversation, now }
    }

    fn turn<'a>(question: &str, proposal: Option<&'a CoachReplyPayload>, own: &'a [SwingId]) -> Turn<'a> {
        Turn { user_message: msg(Role::User, question), reply: msg(Role::Assistant, "answer"), tokens: 20, proposal, own_swings: own, latest_score: None }
    }

    #[test]
    fn the_recent_turn_projection_names_exactly_the_fields_a_recent_turn_holds() {
        let p = payload(Some("Tempo"), None, None);
        let turn = next_turn(place(conv_id("20261123"), at(23, 9)), None, &turn("hi", Some(&p), &[]), response(), "h".into());
        let serde_json::Value::Object(whole) = serde_json::to_value(&turn).unwrap() else { panic!("a turn is an object") };
        let projected: serde_json::Map<String, serde_json::Value> = whole.into_iter().filter(|(k, _)| RECENT_TURN_ATTRIBUTES.contains(&k.as_str())).collect();
        assert_eq!(projected.len(), RECENT_TURN_ATTRIBUTES.len(), "every projected attribute is a turn's");
        let read: RecentTurn = serde_json::from_value(serde_json::Value::Object(projected)).unwrap();
        assert_eq!(read, RecentTurn::from(&turn));
    }

    #[test]
    fn a_return_after_a_break_is_a_new_session_with_themes_carried() {
        let p = payload(Some("Tempo"), None, None);
        let monday = next_turn(place(conv_id("20261123"), at(23, 9)), None, &turn("hi", Some(&p), &[]), response(), "h".into());
        assert_eq!(monday.coaching_themes.session_count, 1, "a golfer's first turn is session 1");
        let later = next_turn(place(conv_id("20261123"), at(23, 10)), Some(&RecentTurn::from(&monday)), &turn("again", None, &[]), response(), "h".into());
        assert_eq!(later.coaching_themes.session_count, 1, "an hour later is the same session");
        let tuesday = next_turn(place(conv_id("20261124"), at(24, 8)), Some(&RecentTurn::from(&later)), &turn("next day", None, &[]), response(), "h".into());
        assert_eq!(tuesday.coaching_themes.session_count, 2);
        assert_eq!(tuesday.coaching_themes.primary_focus, "Tempo", "carried");
        let evening = next_turn(place(conv_id("20261124"), at(24, 23)), Some(&RecentTurn::from(&tuesday)), &turn("evening", None, &[]), response(), "h".into());
        assert_eq!(evening.coaching_themes.session_count, 3, "back after 15 hours the same day: a new session");
    }

    #[test]
    fn a_midnight_crossed_inside_a_conversation_is_not_a_new_session() {
        let before = at(24, 23) + chrono::Duration::minutes(59) + chrono::Duration::seconds(59);
        let late = next_turn(place(conv_id("20261124"), before), None, &turn("late", None, &[]), response(), "h".into());
        let after = before + chrono::Duration::seconds(6);
        let next = next_turn(place(conv_id("20261125"), after), Some(&RecentTurn::from(&late)), &turn("follow-up", None, &[]), response(), "h".into());
        assert_eq!(next.coaching_themes.session_count, late.coaching_themes.session_count);
        assert_eq!(next.conversation, conv_id("20261125"), "the day's conversation view still changes at midnight");
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
    fn themes_pass_output_safety_and_unsafe_proposals_change_nothing() {
        let mut t = default_themes();
        let evil = "Beta blockers, see http://evil.example or call +1 415 555 0132 <img src=x onerror=alert(1)>";
        merge_themes(&mut t, &CoachReplyPayload { secondary_focus: Some(evil.into()), ..payload(Some("<b>Tempo</b> and <i>rhythm</i>"), Some(evil), None) });
        assert_eq!(t.primary_focus, "Tempo and rhythm", "markup removed");
        assert_eq!(t.secondary_focus, default_themes().secondary_focus, "a proposal with a link and a phone number is not taken");
        assert!(t.recent_improvements.is_empty());
    }

    #[test]
    fn blank_proposals_change_nothing() {
        let mut t = default_themes();
        merge_themes(&mut t, &payload(Some("   "), None, None));
        assert_eq!(t.primary_focus, default_themes().primary_focus);
    }

    #[test]
    fn only_own_swings_are_referenced_and_the_day_keeps_them() {
        let own = [SwingId::try_from("swing-mine".to_string()).unwrap_or_else(|e| panic!("{e}"))];
        let mut t = turn("hi", None, &own);
        t.reply.swing_reference = Some("swing-theirs".into());
        let first = next_turn(place(conv_id("20261125"), at(25, 9)), None, &t, response(), "h".into());
        assert!(first.referenced_swings.is_empty());
        t.reply.swing_reference = Some("swing-mine".into());
        let second = next_turn(place(conv_id("20261125"), at(25, 9)), Some(&RecentTurn::from(&first)), &t, response(), "h".into());
        assert_eq!(second.referenced_swings, own.to_vec());
        t.reply.swing_reference = None;
        let third = next_turn(place(conv_id("20261125"), at(25, 10)), Some(&RecentTurn::from(&second)), &t, response(), "h".into());
        assert_eq!(third.referenced_swings, own.to_vec(), "the day's references carry to its later turns");
    }

    #[test]
    fn a_long_day_assembles_into_recent_messages_and_a_bounded_summary() {
        let mut turns: Vec<TurnItem> = vec![];
        for i in 0..5000 {
            let mut t = turn(&format!("question {i} {}", "x".repeat(900)), None, &[]);
            t.reply.content = format!("answer {i} {}", "y".repeat(1400));
            turns.push(next_turn(place(conv_id("20261125"), at(25, 9)), turns.last().map(RecentTurn::from).as_ref(), &t, response(), "h".into()));
        }
        let day = assemble(conv_id("20261125"), user(), &turns, 20).unwrap_or_else(|| panic!("a day with turns"));
        assert_eq!(day.recent_messages.len(), 20);
        assert!(day.recent_messages[19].content.starts_with("answer 4999"));
        assert_eq!(day.conversation_status, ConversationStatus::Compressed);
        let summary = day.summary.clone().unwrap_or_default();
        assert!(summary.chars().count() <= MAX_SUMMARY_CHARS);
        assert!(summary.contains("answer 4989"), "newest folded turns kept");
        assert_eq!(day.total_tokens_used, 100_000);
        assert!(assemble(conv_id("20261125"), user(), &[], 20).is_none());
    }
}
