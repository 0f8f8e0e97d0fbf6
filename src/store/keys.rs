//! Every key of the single table, and the access patterns they serve.
//!
//! Table `coaching-conversations`: partition key `conversation_id` (S); GSI `user-index`
//! (`user_id` hash, `last_updated` range, projection ALL); TTL attribute `expires_at`.
//!
//! | entity            | `conversation_id`                     | in user-index | TTL  |
//! |-------------------|---------------------------------------|---------------|------|
//! | conversation      | `conv_{user}_{yyyymmdd}`              | yes           | none |
//! | profile           | `profile_{user}`                      | no            | none |
//! | user-hour quota   | `quota_{user}_{yyyymmddhh}`           | no            | 2 h  |
//! | ip-hour quota     | `ipquota_{sha256(ip)[..16]}_{yyyymmddhh}` | no        | 2 h  |
//! | user-day spend    | `spend_{user}_{yyyymmdd}`             | no            | 3 d  |
//! | global-day spend  | `spendall_{yyyymmdd}`                 | no            | 3 d  |
//! | idempotency       | `idem_{user}_{clientMessageId}`       | no            | 24 h |
//!
//! Access patterns: today's conversation (GetItem); the latest earlier conversation of a
//! golfer (Query user-index, `last_updated < today`, newest first, limit 1); a golfer's
//! conversations (Query user-index); quota and spend (conditional UpdateItem in one
//! transaction); the profile (GetItem).
//!
//! User ids match `^[A-Za-z0-9][A-Za-z0-9-]{0,63}$` (schema/common.json), so no id holds an
//! underscore and every key splits unambiguously into prefix, user and period. The global
//! spend key is `spendall_` rather than design.md's `spend_all_`: with `spend_all_`, a golfer
//! whose id is `all` would have shared the global counter.
//!
//! Table `golf-coach-analyses` (read-only, owned by the analysis system): partition key
//! `analysis_id`; GSI `user-created-index` (`user_id`, `created_at`).

use chrono::{DateTime, Utc};

use crate::clock::{day_key as day, hour_key as hour};
use sha2::{Digest, Sha256};

use crate::models::{ClientMessageId, ConversationId, UserId};

pub const PK: &str = "conversation_id";
pub const USER_INDEX: &str = "user-index";
pub const USER_INDEX_PK: &str = "user_id";
pub const USER_INDEX_SK: &str = "last_updated";
pub const TTL_ATTRIBUTE: &str = "expires_at";

pub const ANALYSES_PK: &str = "analysis_id";
pub const ANALYSES_USER_INDEX: &str = "user-created-index";
pub const ANALYSES_USER_INDEX_PK: &str = "user_id";
pub const ANALYSES_USER_INDEX_SK: &str = "created_at";

pub const QUOTA_TTL_SECS: i64 = 2 * 3600;
pub const SPEND_TTL_SECS: i64 = 3 * 86_400;
pub const IDEMPOTENCY_TTL_SECS: i64 = 86_400;

pub fn conversation(user: &UserId, at: DateTime<Utc>) -> String {
    format!("conv_{}_{}", user.as_str(), day(at))
}

/// The owner encoded in a conversation id; `None` when it is not one of ours.
pub fn conversation_owner(id: &ConversationId) -> Option<&str> {
    let rest = id.as_str().strip_prefix("conv_")?;
    let (user, _day) = rest.rsplit_once('_')?;
    Some(user)
}

pub fn profile(user: &UserId) -> String {
    format!("profile_{}", user.as_str())
}

pub fn user_hour_quota(user: &UserId, at: DateTime<Utc>) -> String {
    format!("quota_{}_{}", user.as_str(), hour(at))
}

pub fn ip_hour_quota(ip_hash: &IpHash, at: DateTime<Utc>) -> String {
    format!("ipquota_{}_{}", ip_hash.0, hour(at))
}

pub fn user_day_spend(user: &UserId, at: DateTime<Utc>) -> String {
    format!("spend_{}_{}", user.as_str(), day(at))
}

pub fn global_day_spend(at: DateTime<Utc>) -> String {
    format!("spendall_{}", day(at))
}

pub fn idempotency(user: &UserId, client_message_id: &ClientMessageId) -> String {
    idempotency_raw(user, client_message_id.as_str())
}

/// The same key from an id already stored on a conversation (validated when it arrived).
pub fn idempotency_raw(user: &UserId, client_message_id: &str) -> String {
    format!("idem_{}_{}", user.as_str(), client_message_id)
}

/// A client IP reduced to a 16-hex-digit SHA-256 prefix: counters and logs never hold the IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpHash(String);

impl IpHash {
    pub fn of(ip: &str) -> Self {
        let digest = Sha256::digest(ip.as_bytes());
        Self(hex::encode(&digest[..8]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 7, 30, 0).single().unwrap_or_default()
    }

    fn user(s: &str) -> Option<UserId> {
        UserId::try_from(s.to_string()).ok()
    }

    #[test]
    fn keys_have_the_documented_shapes() {
        let Some(u) = user("golfer-1") else { panic!("valid id refused") };
        assert_eq!(conversation(&u, at()), "conv_golfer-1_20261125");
        assert_eq!(profile(&u), "profile_golfer-1");
        assert_eq!(user_hour_quota(&u, at()), "quota_golfer-1_2026112507");
        assert_eq!(user_day_spend(&u, at()), "spend_golfer-1_20261125");
        assert_eq!(global_day_spend(at()), "spendall_20261125");
        assert_eq!(IpHash::of("203.0.113.9").as_str().len(), 16);
    }

    #[test]
    fn ids_that_would_forge_keys_are_not_user_ids() {
        for forged in [
            "all_20261125",
            "x_2026112507",
            "profile_victim",
            "victim_20261125",
            "",
            "-leading-dash",
            "a b",
            "a#b",
            "ü",
        ] {
            assert!(user(forged).is_none(), "{forged:?} accepted as a user id");
        }
    }

    #[test]
    fn the_owner_of_a_conversation_id_is_the_user_in_it() {
        let id = ConversationId::try_from("conv_golfer-2_20261124".to_string());
        assert_eq!(id.as_ref().ok().and_then(|i| conversation_owner(i)), Some("golfer-2"));
    }

    proptest! {
        // Keys of different entities, users and periods never collide.
        #[test]
        fn keys_never_collide(a in "[A-Za-z0-9][A-Za-z0-9-]{0,20}", b in "[A-Za-z0-9][A-Za-z0-9-]{0,20}", h in 0u32..48) {
            prop_assume!(a != b);
            let (Some(ua), Some(ub)) = (user(&a), user(&b)) else { panic!("generated ids are valid") };
            let t1 = at();
            let t2 = t1 + chrono::Duration::hours(i64::from(h) + 1);
            let mut seen = HashSet::new();
            let mut all = vec![global_day_spend(t1)];
            if day(t1) != day(t2) { all.push(global_day_spend(t2)); }
            for u in [&ua, &ub] {
                all.push(profile(u));
                for t in [t1, t2] {
                    all.push(user_hour_quota(u, t));
                    if day(t1) != day(t2) || t == t1 {
                        all.push(conversation(u, t));
                        all.push(user_day_spend(u, t));
                    }
                }
            }
            for k in all {
                prop_assert!(seen.insert(k.clone()), "duplicate key {}", k);
            }
        }
    }
}
