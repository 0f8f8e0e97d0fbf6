//! The global daily budget, leased in slices, at the shipped defaults but a small total.

use serde_json::{json, Value};

use crate::helpers::{spawn_shipped_with, TestApp};

const GOLFERS: usize = 60;

/// Rounds one set of golfers sends before the next set takes over (a golfer may send 15 an hour).
const ROUNDS_PER_GOLFER: usize = 14;

fn golfer(round: usize, g: usize) -> String {
    format!("golfer-cap-{}-{g:02}", round / ROUNDS_PER_GOLFER)
}

/// One message from each golfer at once (each from its own address); the statuses.
async fn round(app: &TestApp, round: usize) -> Vec<(u16, Value)> {
    let sends = (0..GOLFERS).map(|g| {
        let client = app.client_from(u8::try_from(2 + g).unwrap());
        let url = format!("{}{}", app.url, coach_api::api::CHAT_PATH);
        async move {
            let body = json!({ "message": format!("Round {round}: what next for my short game?") });
            let r = client.post(url).header("x-user-id", golfer(round, g)).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    });
    futures::future::join_all(sends).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_golfers_never_exceed_the_global_budget_and_use_at_least_95_percent_of_it() {
    // About 170 answers at what the mock model's usage (700 prompt, 120 reply tokens) costs at
    // the shipped default model's prices.
    let budget_micro = 170 * coach_api::limits::cost(&coach_api::limits::Limits::default(), 700, 120);
    let app = spawn_shipped_with(|c| c.limits.spend_total_day_micro = budget_micro as u64).await;
    // Rounds until the budget is spent: two rounds in a row with no answer. Near the end a
    // round answers only what the slice holds beside the worst cases reserved by the round's
    // own requests, so the last few hundredths take many rounds.
    let (mut answered, mut at_capacity, mut quiet_rounds, mut rounds) = (0, 0, 0, 0);
    for r in 0..(2 * ROUNDS_PER_GOLFER) {
        rounds = r + 1;
        let results = round(&app, r).await;
        let ok = results.iter().filter(|(s, _)| *s == 200).count();
        let refused: Vec<&Value> = results.iter().filter(|(s, _)| *s == 503).map(|(_, b)| b).collect();
        assert!(refused.iter().all(|b| b["code"] == "at_capacity"), "{refused:?}");
        assert_eq!(ok + refused.len(), GOLFERS, "only answers and at-capacity refusals");
        answered += ok;
        at_capacity += refused.len();
        quiet_rounds = if ok == 0 { quiet_rounds + 1 } else { 0 };
        if quiet_rounds == 2 {
            break;
        }
    }
    assert_eq!(quiet_rounds, 2, "the budget ran out within {rounds} rounds");
    let mut spent = 0;
    for r in (0..rounds).step_by(ROUNDS_PER_GOLFER) {
        for g in 0..GOLFERS {
            spent += app.day_spend(&golfer(r, g)).await;
        }
    }
    let leased = app.number(&coach_api::store::keys::global_day_spend(chrono::Utc::now()), "leased_micro").await;
    println!(
        "budget: {answered} answered, {at_capacity} at capacity in {rounds} rounds; spent {spent} of {budget_micro} micro-dollars ({:.1} %), leased {leased}",
        spent as f64 * 100.0 / budget_micro as f64
    );
    assert!(spent <= budget_micro, "spent {spent} of {budget_micro}");
    assert!(leased <= budget_micro, "leased {leased} of {budget_micro}");
    assert!(spent * 100 >= budget_micro * 95, "only {spent} of {budget_micro} admitted");
    // What is left unused: less than one request's worst case in the slice, and less than a
    // slice not leased (the design's bound for one process).
    let worst = coach_api::limits::worst_case_cost(&app.config.limits);
    assert!(leased - spent < worst && budget_micro - leased < worst, "stranded: {} in the slice, {} not leased", leased - spent, budget_micro - leased);
    assert!(at_capacity > 0, "the budget ran out");
}
