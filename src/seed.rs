//! Demo golfers for local runs (`coach-api seed`): profiles, swing analyses, and an earlier
//! conversation whose themes carry into today.

use chrono::{DateTime, Duration, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::conversation;
use crate::clock::timestamp;
use crate::models::{
    ChatMessage, GolferProfile, GolferProfileExperience, GolferProfileHandedness, GolferProfilePlan, Role, StoredResponse, SwingAnalysis, SwingId,
    TurnItem, TurnItemStatus, Usage, UserId,
};
use crate::store::{keys, Store, StoreError};

fn id<T: TryFrom<String>>(s: &str) -> Result<T, StoreError> {
    T::try_from(s.to_string()).map_err(|_| StoreError::Rejected(format!("demo id {s} is not valid")))
}

struct Demo {
    user: &'static str,
    name: &'static str,
    handicap: f64,
    experience: GolferProfileExperience,
    plan: GolferProfilePlan,
    goals: &'static [&'static str],
    club: &'static str,
    /// (score, main fault, recommendation), oldest first.
    swings: &'static [(i64, &'static str, &'static str)],
    focus: (&'static str, &'static str),
}

const DEMOS: [Demo; 3] = [
    Demo {
        user: "demo-alice",
        name: "Alice",
        handicap: 18.4,
        experience: GolferProfileExperience::Intermediate,
        plan: GolferProfilePlan::Free,
        goals: &["Break 90 this season", "Hit more fairways"],
        club: "driver",
        swings: &[
            (64, "an out-to-in swing path", "Start the downswing with the lower body so the club can drop inside."),
            (68, "an out-to-in swing path", "Feel the trail elbow stay closer to your side in the downswing."),
            (71, "an open clubface at impact", "Strengthen the lead hand a little so the face returns square."),
        ],
        focus: ("Tempo and rhythm", "Grip pressure"),
    },
    Demo {
        user: "demo-ben",
        name: "Ben",
        handicap: 28.0,
        experience: GolferProfileExperience::Beginner,
        plan: GolferProfilePlan::Premium,
        goals: &["Make solid contact with irons"],
        club: "7-iron",
        swings: &[
            (52, "early extension", "Keep your hips back through impact, as if sitting on a stool."),
            (55, "early extension", "Practise slow half swings with a chair behind your hips."),
        ],
        focus: ("Solid contact", "Posture at address"),
    },
    Demo {
        user: "demo-chloe",
        name: "Chloe",
        handicap: 4.2,
        experience: GolferProfileExperience::Advanced,
        plan: GolferProfilePlan::Premium,
        goals: &["Control wedge distances"],
        club: "sand wedge",
        swings: &[
            (83, "inconsistent low point", "Pre-set a little more weight on the lead side for wedges."),
            (86, "inconsistent low point", "Use a clock drill: 9, 10 and full swings, note each carry."),
            (88, "deceleration on short swings", "Keep the arms moving through the ball; length controls distance."),
        ],
        focus: ("Wedge distance control", "Low-point control"),
    },
];

/// Writes the demo golfers and `extra` more built on them (`golfer-0001`, …: distinct
/// golfers with the demos' profiles and swings, for load tests); returns how many golfers
/// were loaded.
pub async fn seed(store: &Store, extra: usize) -> Result<usize, StoreError> {
    let now = Utc::now();
    let demos = DEMOS.iter().map(|d| (d.user.to_string(), d.name.to_string(), d));
    let more = (1..=extra).map(|i| (format!("golfer-{i:04}"), format!("Golfer {i}"), &DEMOS[i % DEMOS.len()]));
    stream::iter(demos.chain(more))
        .map(|(user, name, d)| async move { seed_golfer(store, &user, &name, d, now).await })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(DEMOS.len() + extra)
}

async fn seed_golfer(store: &Store, user: &str, name: &str, d: &Demo, now: DateTime<Utc>) -> Result<(), StoreError> {
    let user: UserId = id(user)?;
    seed_profile(store, &user, name, d).await?;
    seed_swings(store, &user, d, now).await?;
    seed_yesterday(store, &user, d, now).await
}

async fn seed_profile(store: &Store, user: &UserId, name: &str, d: &Demo) -> Result<(), StoreError> {
    store
        .put_profile(&GolferProfile {
            user_id: user.clone(),
            display_name: name.into(),
            handicap: Some(d.handicap),
            handedness: Some(GolferProfileHandedness::Right),
            experience: Some(d.experience),
            goals: d.goals.iter().map(|g| g.to_string()).collect(),
            plan: Some(d.plan),
        })
        .await
}

async fn seed_swings(store: &Store, user: &UserId, d: &Demo, now: DateTime<Utc>) -> Result<(), StoreError> {
    let n = d.swings.len() as i64;
    for (i, (score, fault, advice)) in d.swings.iter().enumerate() {
        let at = now - Duration::days(2 * (n - i as i64));
        let swing_id: SwingId = id(&format!("swing-{}-{:03}", user.as_str().trim_start_matches("demo-"), i + 1))?;
        store
            .put_swing(&SwingAnalysis {
                analysis_id: swing_id,
                user_id: user.clone(),
                created_at: timestamp(at),
                club: d.club.into(),
                overall_score: *score,
                primary_fault: Some((*fault).into()),
                faults: vec![(*fault).into()],
                strengths: vec!["balanced finish".into()],
                metrics: [("tempo_ratio".to_string(), 2.6 + i as f64 * 0.1), ("club_speed_mph".to_string(), 88.0 + i as f64)]
                    .into_iter()
                    .collect(),
                recommendation: Some((*advice).into()),
            })
            .await?;
    }
    Ok(())
}

/// Yesterday's conversation, one turn: its themes are what today's starts from.
async fn seed_yesterday(store: &Store, user: &UserId, d: &Demo, now: DateTime<Utc>) -> Result<(), StoreError> {
    let yesterday = now - Duration::days(1);
    let key = keys::turn(user, "seed-yesterday");
    let mut themes = conversation::default_themes();
    themes.primary_focus = d.focus.0.into();
    themes.secondary_focus = d.focus.1.into();
    themes.session_count = 3;
    let message = |role, content: String| ChatMessage {
        content,
        degraded: None,
        message_id: format!("seed-{}-{role:?}", user.as_str()),
        role,
        swing_reference: None,
        timestamp: timestamp(yesterday),
        tokens_used: 0,
    };
    let turn = TurnItem {
        user_id: user.clone(),
        last_updated: timestamp(yesterday),
        conversation: id(&keys::conversation(user, yesterday))?,
        status: TurnItemStatus::Completed,
        user_message: message(Role::User, "What should we work on this week?".into()),
        reply: message(Role::Assistant, format!("Let's keep building on {}.", d.focus.0.to_lowercase())),
        coaching_themes: themes,
        referenced_swings: vec![],
        tokens: 0,
        response: StoredResponse {
            request_id: "seed".into(),
            usage: Usage { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, token_limit: 0, cost_micro_usd: 0 },
            quota: crate::limits::quota(&crate::limits::Limits::default(), Default::default(), yesterday),
            source: "offline".into(),
            degraded: false,
            prompt_version: None,
            variant: None,
        },
        request_hash: "seed".into(),
    };
    store.create_turn(&key, &turn).await?;
    Ok(())
}
