//! Packing: renders the prompt's messages and fits them into the prompt's token limit
//! (`TOKEN_LIMIT_PER_REQUEST` minus the reply's `max_tokens`). What the coach remembers has
//! its own share ([`MEMORY_SHARE_TOKENS`]): the facts that fit it, by kind priority, are
//! kept; then the oldest history is dropped first; when no history fits, the remembered
//! facts go (lowest priority first) before swing and profile detail is shortened. The
//! golfer's message is never cut.

use super::vars::{Detail, HistoryTurn, PromptMessage, PromptRole, PromptVars};
use super::{PromptError, Prompts, CONTEXT, MESSAGE, SYSTEM};
use crate::models::MemoryFact;
use crate::tokens;

/// The share of the prompt the remembered facts may take (about eight short facts): history
/// and the rest of the context keep the remainder.
pub const MEMORY_SHARE_TOKENS: usize = 150;

/// The rendered prompt that fits the token limit, with its size in model tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
    pub messages: Vec<PromptMessage>,
    pub prompt_tokens: usize,
    pub token_limit: usize,
    /// History turns left out to fit.
    pub dropped_turns: usize,
    /// Remembered facts left out to fit (the share, then the whole limit).
    pub dropped_facts: usize,
    pub detail: Detail,
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("the message needs {needed} tokens with the coach's instructions; the limit is {limit}")]
    MessageTooLong { needed: usize, limit: usize },
    #[error(transparent)]
    Prompt(#[from] PromptError),
}

/// A rendered message with its cost in the chat format.
struct Counted {
    message: PromptMessage,
    tokens: usize,
}

impl Counted {
    fn new(role: PromptRole, content: String) -> Self {
        let tokens = tokens::count_message(role.as_str(), &content);
        Self { message: PromptMessage { role, content }, tokens }
    }
}

/// The system and context messages for a context (they change with the detail level).
fn frame(prompts: &Prompts, ctx: &tera::Context) -> Result<[Counted; 2], PromptError> {
    Ok([Counted::new(PromptRole::System, prompts.render_context(SYSTEM, ctx)?), Counted::new(PromptRole::User, prompts.render_context(CONTEXT, ctx)?)])
}

/// The steps that shorten swing and profile detail when nothing else is left to drop.
const SHORTENING: [fn(&mut PromptVars); 6] = [
    |v| v.detail = Detail::Brief,
    |v| v.swings.truncate(1),
    |v| v.detail = Detail::Minimal,
    |v| v.summary = None,
    |v| {
        v.swings.clear();
        v.swing_on_screen = None;
    },
    |v| v.profile = None,
];

/// Renders the prompt and fits it into `token_limit` tokens. A chat request's tokens are the sum
/// of its messages', so each message is rendered and counted at most once: history turns
/// newest first until one does not fit, and only when no turn fits is swing and profile
/// detail shortened.
pub fn pack(prompts: &Prompts, vars: &PromptVars, token_limit: usize) -> Result<Packed, PackError> {
    let mut v = vars.clone();
    v.detail = Detail::Full;
    v.memory = within_share(&vars.memory, MEMORY_SHARE_TOKENS);
    let turn = |turn: &HistoryTurn| -> Result<Counted, PromptError> {
        let content = match turn.role {
            PromptRole::User => prompts.render(MESSAGE, &serde_json::json!({ "message": turn.content }))?,
            _ => turn.content.clone(),
        };
        Ok(Counted::new(turn.role.clone(), content))
    };
    // The message and the full-detail frame are rendered from one context.
    let full_context = Prompts::context(CONTEXT, &v)?;
    let current = Counted::new(PromptRole::User, prompts.render_context(MESSAGE, &full_context)?);
    let assemble = |frame: [Counted; 2], kept: Vec<Counted>, detail: Detail, facts: usize| {
        let prompt_tokens = tokens::REPLY_PRIMING + current.tokens + frame.iter().chain(&kept).map(|c| c.tokens).sum::<usize>();
        let dropped_turns = vars.history.len() - kept.len();
        let mut messages: Vec<PromptMessage> = frame.into_iter().map(|c| c.message).collect();
        messages.extend(kept.into_iter().map(|c| c.message));
        messages.push(current.message.clone());
        Packed { messages, prompt_tokens, token_limit, dropped_turns, dropped_facts: vars.memory.len() - facts, detail }
    };
    let fixed = |frame: &[Counted; 2]| tokens::REPLY_PRIMING + current.tokens + frame[0].tokens + frame[1].tokens;

    // 1. Full detail with the newest history that fits, dropping the oldest turns first:
    //    turns are rendered and counted newest first, only until one does not fit.
    let full = frame(prompts, &full_context)?;
    drop(full_context);
    if let Some(mut room) = token_limit.checked_sub(fixed(&full)) {
        let mut kept = vec![];
        for t in vars.history.iter().rev() {
            let counted = turn(t)?;
            let Some(left) = room.checked_sub(counted.tokens) else { break };
            room = left;
            kept.push(counted);
        }
        kept.reverse();
        return Ok(assemble(full, kept, v.detail, v.memory.len()));
    }
    // 2. No history fits: the remembered facts go, lowest priority first.
    while v.memory.pop().is_some() {
        let f = frame(prompts, &Prompts::context(CONTEXT, &v)?)?;
        if fixed(&f) <= token_limit {
            return Ok(assemble(f, vec![], v.detail, v.memory.len()));
        }
    }
    // 3. Still too long: shorten swing and profile detail, step by step.
    let mut last = 0;
    for step in SHORTENING {
        step(&mut v);
        let f = frame(prompts, &Prompts::context(CONTEXT, &v)?)?;
        last = fixed(&f);
        if last <= token_limit {
            return Ok(assemble(f, vec![], v.detail, 0));
        }
    }
    Err(PackError::MessageTooLong { needed: last, limit: token_limit })
}

/// The facts, in priority order, that fit `share` tokens (each counted as its line of the
/// context message, about; the prompt as a whole is counted exactly).
fn within_share(facts: &[MemoryFact], share: usize) -> Vec<MemoryFact> {
    let mut left = share;
    facts
        .iter()
        .take_while(|f| {
            let cost = tokens::count(f.text.as_str()) + FACT_LINE_TOKENS;
            left.checked_sub(cost).map(|l| left = l).is_some()
        })
        .cloned()
        .collect()
}

/// A fact's line around its text: `- [f1a2b3c4] injury: `.
const FACT_LINE_TOKENS: usize = 10;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::models::GolferProfile;
    use crate::prompts::vars::ReplyVars;

    pub(crate) fn example_vars() -> PromptVars {
        let text = include_str!("../../prompts/example-context.json");
        match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => panic!("prompts/example-context.json does not match PromptVars: {e}"),
        }
    }

    fn prompts() -> Prompts {
        match Prompts::embedded() {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn every_template_renders_the_example_context() -> Result<(), PromptError> {
        let p = prompts();
        let vars = example_vars();
        for t in [SYSTEM, CONTEXT, MESSAGE] {
            let out = p.render(t, &vars)?;
            assert!(!out.trim().is_empty(), "{t} rendered empty");
        }
        for t in [crate::prompts::OFFLINE, crate::prompts::FALLBACK, crate::prompts::FILTERED, crate::prompts::REFUSAL] {
            let out = p.render(t, &ReplyVars::from(&vars))?;
            assert!(out.contains("Tempo and rhythm"), "{t} names the theme: {out}");
        }
        let shorter = p.render(crate::prompts::SHORTER, &vars)?;
        assert!(shorter.contains(&format!("at most {} words", vars.reply_word_limit / 2)), "{shorter}");
        let offline = p.render(crate::prompts::OFFLINE, &ReplyVars::from(&vars))?;
        assert!(offline.contains("71/100"), "offline names the latest swing: {offline}");
        let limit = serde_json::json!({"limit": "user_hour", "limit_value": 15, "reset_phrase": "at 08:00 UTC", "premium": false});
        assert!(p.render(crate::prompts::LIMIT, &limit)?.contains("15"));
        Ok(())
    }

    #[test]
    fn history_is_not_a_template_variable() -> Result<(), tera::Error> {
        // Earlier turns reach the model only as their own user and assistant messages.
        let vars = example_vars();
        assert!(!vars.history.is_empty(), "the example has history");
        let ctx = tera::Context::from_serialize(&vars)?;
        assert!(ctx.get("history").is_none());
        assert!(ctx.get("themes").is_some());
        Ok(())
    }

    #[test]
    fn every_template_renders_a_sparse_context() -> Result<(), PromptError> {
        // Optional fields absent, as stored items and typify's serialization leave them.
        let mut vars = example_vars();
        let sparse: GolferProfile = serde_json::from_value(serde_json::json!({ "user_id": "demo-x", "display_name": "X" })).map_err(|e| PromptError::Load(e.to_string()))?;
        vars.profile = Some(sparse);
        vars.swings = vec![serde_json::from_value(serde_json::json!({
            "analysis_id": "s-1", "user_id": "demo-x", "created_at": "2026-11-20T10:00:00.000Z", "club": "putter", "overall_score": 50
        }))
        .map_err(|e| PromptError::Load(e.to_string()))?];
        vars.themes.recent_improvements.clear();
        vars.history.clear();
        let p = prompts();
        for t in [SYSTEM, CONTEXT, MESSAGE] {
            p.render(t, &vars)?;
        }
        for t in [crate::prompts::OFFLINE, crate::prompts::FALLBACK, crate::prompts::FILTERED] {
            p.render(t, &ReplyVars::from(&vars))?;
        }
        vars.profile = None;
        vars.swings.clear();
        p.render(CONTEXT, &vars)?;
        p.render(crate::prompts::OFFLINE, &ReplyVars::from(&vars))?;
        Ok(())
    }

    #[test]
    fn context_names_the_latest_swing_and_themes() -> Result<(), PromptError> {
        let out = prompts().render(CONTEXT, &example_vars())?;
        assert!(out.contains("out-to-in swing path"), "{out}");
        assert!(out.contains("Tempo and rhythm"), "{out}");
        Ok(())
    }

    #[test]
    fn golfer_template_syntax_is_data_not_code() -> Result<(), PromptError> {
        let mut vars = example_vars();
        vars.message = "{{ themes.primary_focus }} {% for x in swings %}X{% endfor %}".into();
        let out = prompts().render(MESSAGE, &vars)?;
        assert!(out.contains("{{ themes.primary_focus }}"));
        assert!(!out.contains("Tempo and rhythm"));
        Ok(())
    }

    #[test]
    fn an_undefined_variable_is_an_error() {
        let r = prompts().render(SYSTEM, &serde_json::json!({ "today": "2026-11-25" }));
        assert!(matches!(r, Err(PromptError::Render { .. })), "{r:?}");
    }

    #[test]
    fn the_golfers_message_never_enters_the_system_message() -> Result<(), PackError> {
        let mut vars = example_vars();
        vars.message = "UNIQUE-MARKER-7731".into();
        let packed = pack(&prompts(), &vars, 900)?;
        assert!(!packed.messages[0].content.contains("UNIQUE-MARKER-7731"));
        let last = packed.messages.last().map(|m| m.content.clone()).unwrap_or_default();
        assert!(last.contains("UNIQUE-MARKER-7731"));
        Ok(())
    }

    #[test]
    fn packing_drops_oldest_history_first() -> Result<(), PackError> {
        let mut vars = example_vars();
        vars.history = (0..60)
            .map(|i| HistoryTurn {
                role: if i % 2 == 0 { PromptRole::User } else { PromptRole::Assistant },
                content: format!("turn {i}: let's talk about bunker play and tempo drills at length"),
            })
            .collect();
        let packed = pack(&prompts(), &vars, 900)?;
        assert!(packed.prompt_tokens <= 1050);
        assert!(packed.dropped_turns > 0);
        let all = packed.messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n");
        assert!(all.contains("turn 59:"), "newest turn kept");
        assert!(!all.contains("turn 0:"), "oldest turn dropped");
        assert_eq!(packed.detail, Detail::Full, "detail is kept while history can go");
        Ok(())
    }

    pub(crate) fn fact(id: &str, kind: &str, text: &str) -> MemoryFact {
        let value = serde_json::json!({ "id": id, "kind": kind, "text": text, "source_message_id": "msg-0001-abcd",
            "created_at": "2026-11-20T10:00:00.000Z", "updated_at": "2026-11-20T10:00:00.000Z" });
        match serde_json::from_value(value) {
            Ok(f) => f,
            Err(e) => panic!("a fact out of its schema: {e}"),
        }
    }

    fn all_text(packed: &Packed) -> String {
        packed.messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn facts_reach_the_context_message_never_the_system_message() -> Result<(), PackError> {
        let mut vars = example_vars();
        vars.memory = vec![fact("f0000001", "injury", "UNIQUE-FACT-5521 left wrist sore")];
        let packed = pack(&prompts(), &vars, 2000)?;
        assert!(!packed.messages[0].content.contains("UNIQUE-FACT-5521"));
        assert!(packed.messages[1].content.contains("[f0000001] injury: UNIQUE-FACT-5521"), "{}", packed.messages[1].content);
        Ok(())
    }

    #[test]
    fn facts_go_lowest_priority_first_before_any_swing_or_profile_detail() -> Result<(), PackError> {
        let mut vars = example_vars();
        vars.history.clear();
        let injury = fact("f0000001", "injury", "Left wrist gets sore after long range sessions");
        let preference = fact("f0000002", "preference", "Likes short drills with clear numbers and no jargon");
        vars.memory = vec![injury.clone()];
        let injury_only = pack(&prompts(), &vars, 2000)?.prompt_tokens;
        vars.memory = vec![injury, preference];
        assert!(pack(&prompts(), &vars, 2000)?.prompt_tokens > injury_only);
        let packed = pack(&prompts(), &vars, injury_only)?;
        let text = all_text(&packed);
        assert!(text.contains("Left wrist"), "the injury is kept: {text}");
        assert!(!text.contains("short drills"), "the preference went first");
        assert_eq!((packed.detail, packed.dropped_facts), (Detail::Full, 1), "no detail was shortened while a fact could go");
        assert!(packed.prompt_tokens <= injury_only);
        Ok(())
    }

    #[test]
    fn thirty_long_facts_and_a_long_message_stay_within_the_limit() -> Result<(), PackError> {
        let kinds = ["injury", "goal", "event", "equipment", "skill", "course", "preference"];
        let mut vars = example_vars();
        let facts: Vec<MemoryFact> = (0..30)
            .map(|i| {
                fact(
                    &format!("f{i:07x}"),
                    kinds[i % kinds.len()],
                    &format!("fact {i} {}", "about the golfer's game and body, in detail ".repeat(4)).chars().take(160).collect::<String>(),
                )
            })
            .collect();
        vars.memory = crate::memory::ordered(&facts);
        vars.message = "Here is everything about my round today. ".repeat(23);
        let limit = 1500 - 400 - crate::llm::response_format_tokens();
        let packed = pack(&prompts(), &vars, limit)?;
        let counted = tokens::count_chat(packed.messages.iter().map(|m| (m.role.as_str(), m.content.as_str())));
        assert_eq!(counted, packed.prompt_tokens);
        assert!(counted <= limit, "{counted} > {limit}");
        assert!(packed.dropped_facts > 0 && packed.dropped_facts < 30, "{} facts dropped", packed.dropped_facts);
        let text = all_text(&packed);
        let kept: Vec<&MemoryFact> = vars.memory.iter().filter(|f| text.contains(f.id.as_str())).collect();
        assert_eq!(kept.len(), 30 - packed.dropped_facts);
        assert!(kept.iter().zip(vars.memory.iter()).all(|(k, f)| k.id == f.id), "the highest-priority facts are the ones kept");
        assert!(text.contains(vars.message.trim()), "the message is never cut");
        Ok(())
    }

    #[test]
    fn a_message_that_cannot_fit_is_refused_not_cut() {
        let mut vars = example_vars();
        vars.message = "golf ".repeat(1000);
        let r = pack(&prompts(), &vars, 400);
        assert!(matches!(r, Err(PackError::MessageTooLong { .. })), "{r:?}");
    }

    mod token_limit {
        use super::super::*;
        use super::{example_vars, prompts};
        use proptest::prelude::*;

        fn turn() -> impl Strategy<Value = HistoryTurn> {
            (any::<bool>(), "[ -~]{0,600}").prop_map(|(user, content)| HistoryTurn { role: if user { PromptRole::User } else { PromptRole::Assistant }, content })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

            // Prompt + max_tokens never exceeds the per-request limit, counted by the model's
            // tokenizer, and the count is of exactly the messages that would be sent.
            #[test]
            fn packed_prompts_fit_the_token_limit(
                history in proptest::collection::vec(turn(), 0..60),
                message in "[ -~\u{00e0}-\u{00ff}\u{4e00}-\u{4e50}]{1,1000}",
                swings in 0usize..4,
                summary in proptest::option::of("[ -~]{0,2000}"),
                goals in proptest::collection::vec("[ -~]{0,200}", 0..5),
                facts in proptest::collection::vec(("[a-g]", "[ -~]{1,160}"), 0..31),
            ) {
                let mut vars = example_vars();
                vars.history = history;
                vars.message = message.clone();
                vars.summary = summary;
                let swing = vars.swings[0].clone();
                vars.swings = vec![swing; swings];
                if let Some(p) = vars.profile.as_mut() { p.goals = goals; }
                let kinds = ["injury", "goal", "event", "equipment", "skill", "course", "preference"];
                let facts: Vec<_> = facts.iter().enumerate().map(|(i, (k, text))| {
                    let kind = kinds[usize::from(k.as_bytes()[0] - b'a')];
                    super::fact(&format!("f{i:07x}"), kind, text)
                }).collect();
                vars.memory = crate::memory::ordered(&facts);
                let limit = 1500usize;
                let max_tokens = 400usize;
                let token_limit = limit - max_tokens - crate::llm::response_format_tokens();
                match pack(&prompts(), &vars, token_limit) {
                    Ok(packed) => {
                        let counted = tokens::count_chat(packed.messages.iter().map(|m| (m.role.as_str(), m.content.as_str())));
                        prop_assert_eq!(counted, packed.prompt_tokens);
                        prop_assert!(counted + max_tokens + crate::llm::response_format_tokens() <= limit);
                        let last = &packed.messages[packed.messages.len() - 1].content;
                        prop_assert!(last.contains(message.trim()), "the message is never cut");
                    }
                    Err(PackError::MessageTooLong { needed, limit: b }) => {
                        prop_assert!(needed > b);
                        // Any message up to 350 tokens (1,000 characters of ordinary text is ~250) fits.
                        prop_assert!(tokens::count(&message) > 350, "refused a {}-token message", tokens::count(&message));
                    }
                    Err(e) => prop_assert!(false, "{}", e),
                }
            }
        }
    }
}
