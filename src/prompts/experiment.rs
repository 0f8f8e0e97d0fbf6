//! Experiments: a variant of the prompts tried on a share of golfers. `EXPERIMENT=NAME:PERCENT`
//! names the variant (`prompts/variants/NAME/`) and the share; a golfer's place is a keyed hash
//! of their id (the log-hash key), so it stays the same across restarts and instances, and
//! nobody can choose it. `0` or unset is the kill switch: everyone gets the base.

use std::sync::Arc;

use super::{Prompts, Variant};
use crate::models::UserId;

/// The name of the prompts everyone gets without an experiment.
pub const BASE: &str = "base";

/// The experiment a deployment runs: its variant and the share of golfers (basis points).
#[derive(Debug, Clone)]
pub struct Experiment {
    pub variant: Arc<Variant>,
    pub share_bp: u32,
}

/// The templates a golfer's message is answered with, and which they are.
#[derive(Debug, Clone)]
pub struct PromptSet {
    pub prompts: Arc<Prompts>,
    /// `base`, or the variant's name.
    pub variant: String,
    /// The model row the variant calls instead of the deployment's, if any.
    pub model: Option<String>,
}

impl PromptSet {
    pub fn base(prompts: Arc<Prompts>) -> Self {
        Self { prompts, variant: BASE.to_string(), model: None }
    }
}

/// Where `user` falls among 10,000 buckets of `experiment` (keyed: stable per deployment).
pub fn bucket(key: &str, experiment: &str, user: &UserId) -> u32 {
    let hash = crate::safety::log_hash(key, &format!("experiment:{experiment}:{}", user.as_str()));
    u32::from_str_radix(&hash[..8], 16).unwrap_or(0) % 10_000
}

/// The set for `user`: the variant when their bucket falls within the share, else the base.
pub fn assign(base: &Arc<Prompts>, experiment: Option<&Experiment>, key: &str, user: &UserId) -> PromptSet {
    match experiment {
        Some(e) if bucket(key, &e.variant.name, user) < e.share_bp => {
            PromptSet { prompts: Arc::new(e.variant.prompts.clone()), variant: e.variant.name.clone(), model: e.variant.model.clone() }
        }
        _ => PromptSet::base(base.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_thousand_golfers_split_within_a_point_and_a_half_of_the_share() {
        for share_bp in [1_000u32, 2_500, 5_000] {
            let hits = (0..10_000).filter(|i| bucket("deploy-key", "warmer", &UserId::try_from(format!("golfer-{i:05}")).unwrap_or_else(|e| panic!("{e}"))) < share_bp).count();
            let percent = hits as f64 / 100.0;
            assert!((percent - f64::from(share_bp) / 100.0).abs() <= 1.5, "{percent} % for a {share_bp} bp share");
        }
    }

    #[test]
    fn a_golfers_place_is_keyed_and_stable() {
        let user = UserId::try_from("golfer-stable".to_string()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bucket("k", "warmer", &user), bucket("k", "warmer", &user), "the same after a restart");
        let moved = (0..50)
            .filter(|i| {
                bucket("k", "warmer", &UserId::try_from(format!("g-{i}")).unwrap_or_else(|e| panic!("{e}")))
                    != bucket("other-key", "warmer", &UserId::try_from(format!("g-{i}")).unwrap_or_else(|e| panic!("{e}")))
            })
            .count();
        assert!(moved > 40, "another key, another split");
    }
}
