//! Golfers for local runs and the persona evals (`coach-api seed`, `coach-api seed --golfers-file
//! FILE`): profiles, swing analyses, and earlier conversations whose themes carry into today.
//! The demo golfers are data (`src/seed/demos.json`), loaded the same way as `evals/personas.json`.

use chrono::{DateTime, Duration, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Deserialize;

use crate::clock::timestamp;
use crate::conversation;
use crate::models::{
    ChatMessage, GolferProfile, GolferProfileExperience, GolferProfileHandedness, GolferProfilePlan, Role, StoredResponse, SwingAnalysis, SwingId, TurnItem, TurnItemStatus, Usage,
    UserId,
};
use crate::store::{keys, Store, StoreError};

/// The demo golfers, as data.
const DEMOS: &str = include_str!("demos.json");

fn id<T: TryFrom<String>>(s: &str) -> Result<T, StoreError> {
    T::try_from(s.to_string()).map_err(|_| StoreError::Invalid(format!("seed id {s} is not valid")))
}

/// A file of golfers to load.
#[derive(Debug, Clone, Deserialize)]
pub struct Golfers {
    pub golfers: Vec<Golfer>,
}

/// One golfer to load: a profile, swing analyses (oldest first), and the conversation they
/// had `days_ago` days ago (its themes are what today's starts from).
#[derive(Debug, Clone, Deserialize)]
pub struct Golfer {
    pub user: String,
    pub name: String,
    pub handicap: f64,
    pub experience: GolferProfileExperience,
    pub plan: GolferProfilePlan,
    #[serde(default = "right")]
    pub handedness: GolferProfileHandedness,
    pub goals: Vec<String>,
    pub club: String,
    pub swings: Vec<Swing>,
    /// Primary and secondary focus.
    pub focus: (String, String),
    /// When the earlier conversation was, and the swings before it.
    #[serde(default = "one")]
    pub days_ago: i64,
    #[serde(default = "three")]
    pub session_count: u64,
    /// The earlier exchanges (golfer, coach); one generic exchange when absent.
    #[serde(default)]
    pub history: Vec<(String, String)>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Swing {
    pub score: i64,
    pub fault: String,
    pub advice: String,
}

fn right() -> GolferProfileHandedness {
    GolferProfileHandedness::Right
}

fn one() -> i64 {
    1
}

fn three() -> u64 {
    3
}

/// The demo golfers.
pub fn demos() -> Result<Vec<Golfer>, StoreError> {
    golfers(DEMOS)
}

/// Golfers from a file's JSON.
pub fn golfers(json: &str) -> Result<Vec<Golfer>, StoreError> {
    serde_json::from_str::<Golfers>(json).map(|g| g.golfers).map_err(|e| StoreError::Invalid(format!("golfers: {e}")))
}

/// Writes the demo golfers, `golfers` besides them, and `extra` more built on the demos
/// (`golfer-0001`, …: distinct golfers with the demos' profiles and swings, for load tests);
/// returns how many golfers were loaded. Their swings and turns are dated back from `now`.
pub async fn seed(store: &Store, extra: usize, golfers: &[Golfer], now: DateTime<Utc>) -> Result<usize, StoreError> {
    let demos = demos()?;
    let more: Vec<Golfer> = (1..=extra).map(|i| Golfer { user: format!("golfer-{i:04}"), name: format!("Golfer {i}"), ..demos[i % demos.len()].clone() }).collect();
    let all: Vec<&Golfer> = demos.iter().chain(golfers).chain(&more).collect();
    stream::iter(all.iter().copied()).map(|g| async move { seed_golfer(store, g, now).await }).buffer_unordered(16).try_collect::<Vec<()>>().await?;
    Ok(all.len())
}

async fn seed_golfer(store: &Store, g: &Golfer, now: DateTime<Utc>) -> Result<(), StoreError> {
    let user: UserId = id(&g.user)?;
    seed_profile(store, &user, g).await?;
    seed_swings(store, &user, g, now).await?;
    seed_history(store, &user, g, now).await
}

async fn seed_profile(store: &Store, user: &UserId, g: &Golfer) -> Result<(), StoreError> {
    store
        .put_profile(&GolferProfile {
            conversation_id: None,
            user_id: user.clone(),
            display_name: g.name.clone(),
            handicap: Some(g.handicap),
            handedness: Some(g.handedness),
            experience: Some(g.experience),
            goals: g.goals.clone(),
            plan: Some(g.plan),
        })
        .await
}

async fn seed_swings(store: &Store, user: &UserId, g: &Golfer, now: DateTime<Utc>) -> Result<(), StoreError> {
    let n = g.swings.len() as i64;
    let short = user.as_str().trim_start_matches("demo-").trim_start_matches("persona-");
    for (i, s) in g.swings.iter().enumerate() {
        // Two days apart, the newest on the day of the earlier conversation.
        let at = now - Duration::days(g.days_ago - 1 + 2 * (n - i as i64));
        let swing_id: SwingId = id(&format!("swing-{short}-{:03}", i + 1))?;
        store
            .put_swing(&SwingAnalysis {
                analysis_id: swing_id,
                user_id: user.clone(),
                created_at: timestamp(at),
                club: g.club.clone(),
                overall_score: s.score,
                primary_fault: Some(s.fault.clone()),
                faults: vec![s.fault.clone()],
                strengths: vec!["balanced finish".into()],
                metrics: [("tempo_ratio".to_string(), 2.6 + i as f64 * 0.1), ("club_speed_mph".to_string(), 88.0 + i as f64)].into_iter().collect(),
                recommendation: Some(s.advice.clone()),
            })
            .await?;
    }
    Ok(())
}

/// The earlier conversation, `days_ago` days ago: its themes are what today's starts from.
async fn seed_history(store: &Store, user: &UserId, g: &Golfer, now: DateTime<Utc>) -> Result<(), StoreError> {
    let then = now - Duration::days(g.days_ago);
    let generic = vec![("What should we work on this week?".to_string(), format!("Let's keep building on {}.", g.focus.0.to_lowercase()))];
    let exchanges = if g.history.is_empty() { &generic } else { &g.history };
    let mut themes = conversation::default_themes();
    themes.primary_focus = g.focus.0.clone();
    themes.secondary_focus = g.focus.1.clone();
    themes.session_count = g.session_count;
    for (i, (asked, answered)) in exchanges.iter().enumerate() {
        let at = then + Duration::minutes(i as i64);
        let key = keys::turn(user, &format!("seed-history-{i:03}"));
        store.create_turn(&key, &seed_turn(user, at, (asked, answered), &themes)?).await?;
    }
    Ok(())
}

fn seed_turn(user: &UserId, at: DateTime<Utc>, (asked, answered): (&String, &String), themes: &crate::models::CoachingThemes) -> Result<TurnItem, StoreError> {
    let message = |role, content: String| ChatMessage {
        content,
        degraded: None,
        message_id: format!("seed-{}-{role:?}-{}", user.as_str(), at.timestamp()),
        role,
        swing_reference: None,
        timestamp: timestamp(at),
        tokens_used: 0,
    };
    Ok(TurnItem {
        conversation_id: None,
        user_id: user.clone(),
        last_updated: timestamp(at),
        conversation: id(&keys::conversation(user, at))?,
        status: TurnItemStatus::Completed,
        user_message: message(Role::User, asked.clone()),
        reply: message(Role::Assistant, answered.clone()),
        coaching_themes: themes.clone(),
        referenced_swings: vec![],
        tokens: 0,
        response: StoredResponse {
            request_id: "seed".into(),
            usage: Usage { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, token_limit: 0, cost_micro_usd: 0 },
            quota: crate::limits::quota(&crate::limits::Limits::default(), Default::default(), at),
            source: "offline".into(),
            degraded: false,
            prompt_version: None,
            variant: None,
        },
        request_hash: "seed".into(),
    })
}
