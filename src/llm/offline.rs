//! The offline coach: no model configured, so the reply is rendered from
//! `prompts/offline.tera`, and themes move deterministically from the latest swing analysis.

use futures::future::BoxFuture;
use futures::stream::BoxStream;

use super::{Attempts, Coach, CoachEvent, CoachRequest, Draft, LlmError};
use crate::models::CoachReplyPayload;
use crate::prompts::{ReplyVars, OFFLINE};

/// Renders the message's own templates (the base's, or a variant's).
#[derive(Debug, Default)]
pub struct OfflineCoach;

impl OfflineCoach {
    fn answer(&self, req: &CoachRequest<'_>) -> Attempts {
        // Nothing is billed: the offline coach renders a template.
        let draft = req
            .prompts
            .render(OFFLINE, &ReplyVars::from(req.vars))
            .map(|text| Draft { payload: offline_payload(req.vars, text), source: "offline".into() })
            .map_err(|e| LlmError::Offline(e.to_string()));
        Attempts { draft, billed: vec![], replaced_model: false }
    }
}

impl Coach for OfflineCoach {
    fn reply<'a>(&'a self, req: CoachRequest<'a>) -> BoxFuture<'a, Attempts> {
        Box::pin(std::future::ready(self.answer(&req)))
    }

    fn reply_stream<'a>(&'a self, req: CoachRequest<'a>) -> BoxStream<'a, CoachEvent> {
        let answer = self.answer(&req);
        // Rendered at once: streamed as one piece.
        let text = answer.draft.as_ref().ok().map(|d| CoachEvent::Text(d.payload.reply.clone()));
        Box::pin(futures::stream::iter(text.into_iter().chain([CoachEvent::Done(answer)])))
    }
}

/// Theme proposals from the swing data alone. Evidence for a new primary focus is the same
/// main fault in the two newest analyses; a better score than the analysis before is an
/// improvement.
pub fn offline_payload(vars: &crate::prompts::PromptVars, reply: String) -> CoachReplyPayload {
    let latest = vars.latest_swing();
    let primary_focus = match (vars.swings.first(), vars.swings.get(1)) {
        (Some(new), Some(old)) if new.primary_fault.is_some() && new.primary_fault == old.primary_fault => new.primary_fault.clone().filter(|f| *f != vars.themes.primary_focus),
        _ => None,
    };
    let improvement = match (vars.swings.first(), vars.swings.get(1)) {
        (Some(new), Some(old)) if new.overall_score > old.overall_score => Some(format!("{} score up from {} to {}", new.club, old.overall_score, new.overall_score)),
        _ => None,
    };
    CoachReplyPayload {
        reply,
        primary_focus,
        secondary_focus: None,
        improvement,
        swing_reference: latest.map(|s| s.analysis_id.to_string()),
        // The offline coach understands no words: it remembers nothing.
        memory: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn focus_moves_only_on_a_repeated_fault() {
        let mut vars = crate::prompts::pack::tests::example_vars();
        let mut older = vars.swings[0].clone();
        older.overall_score = 60;
        vars.swings.push(older.clone());
        let p = offline_payload(&vars, "r".into());
        assert_eq!(p.primary_focus.as_deref(), Some("an out-to-in swing path"), "same fault twice");
        assert_eq!(p.improvement.as_deref(), Some("driver score up from 60 to 71"));

        vars.swings[1].primary_fault = Some("early extension".into());
        assert_eq!(offline_payload(&vars, "r".into()).primary_focus, None, "one swing is not evidence");
    }
}
