//! Every key of the single table, and the access patterns they serve.
//!
//! Table `coaching-conversations`: partition key `conversation_id` (S); GSI `user-index`
//! (`user_id` hash, `last_updated` range, projection ALL); TTL attribute `expires_at`.
//!
//! | entity            | `conversation_id`                         | in user-index | TTL  |
//! |-------------------|-------------------------------------------|---------------|------|
//! | turn              | `msg_{user}_{clientMessageId}`            | yes           | none |
//! | claim (in flight) | `msg_{user}_{clientMessageId}`            | no            | 24 h |
//! | profile           | `profile_{user}`                          | no            | none |
//! | golfer quota      | `quota_{user}_{yyyymmdd}`                 | no            | 3 d  |
//! | ip-hour quota     | `ipquota_{sha256(ip)[..16]}_{yyyymmddhh}` | no            | 2 h  |
//! | global budget     | `spendall_{yyyymmdd}`                     | no            | 3 d  |
//! | erase marker      | `erased_{user}`                           | no            | 1 d  |
//! | rating            | `rating_{user}_{clientMessageId}`         | no            | none |
//! | memory            | `memory_{user}`                           | no            | none |
//!
//! A day's conversation (`conv_{user}_{yyyymmdd}`, its id in the API) is not an item: it is
//! the golfer's turns of that day. Each turn is one item written once, so a turn's write
//! cost does not grow with the day (design notes: `store/README.md`). The claim a request
//! takes on its clientMessageId at admission becomes its turn when the turn is written, so
//! the stored turn is also the stored answer; a message without an id gets one of ours.
//!
//! Access patterns: a golfer's newest turns, today's history and the latest themes at once
//! (Query user-index, newest first); a day's turns (Query user-index between the day's
//! bounds); a golfer's everything, for deletion (Query user-index); admission (one
//! transaction of conditional updates on the golfer quota, the ip-hour quota and the
//! claim); the global budget (a conditional update now and then, when a process leases a
//! slice); the profile, the golfer's memory and the swing on screen (BatchGetItem across both tables).
//!
//! User ids match `^[A-Za-z0-9][A-Za-z0-9-]{0,63}$` (schema/common.json), so no id holds an
//! underscore and every key splits unambiguously into prefix, user and period. The global
//! budget key is `spendall_` rather than `spend_all_`: with `spend_all_`, a golfer whose id
//! is `all` would have shared it.
//!
//! Table `golf-coach-analyses` (read-only, owned by the analysis system): partition key
//! `analysis_id`; GSI `user-created-index` (`user_id`, `created_at`).

use chrono::{DateTime, Utc};

use crate::clock::{day_key as day, hour_key as hour};
use crate::limits::IpHash;

use crate::models::{ConversationId, UserId};

pub const PK: &str = "conversation_id";
pub const USER_INDEX: &str = "user-index";
pub const USER_INDEX_PK: &str = "user_id";
pub const USER_INDEX_SK: &str = "last_updated";
pub const TTL_ATTRIBUTE: &str = "expires_at";

pub const ANALYSES_PK: &str = "analysis_id";
pub const ANALYSES_USER_INDEX: &str = "user-created-index";
pub const ANALYSES_USER_INDEX_PK: &str = "user_id";
pub const ANALYSES_USER_INDEX_SK: &str = "created_at";

pub const IP_QUOTA_TTL_SECS: i64 = 2 * 3600;
pub const DAY_TTL_SECS: i64 = 3 * 86_400;
pub const CLAIM_TTL_SECS: i64 = 86_400;

/// The id of a golfer's conversation of `at`'s day (not an item: the day's turns).
pub fn conversation(user: &UserId, at: DateTime<Utc>) -> String {
    format!("conv_{}_{}", user.as_str(), day(at))
}

/// The golfer and the day a conversation id names.
pub fn conversation_parts(id: &ConversationId) -> Option<(&str, DateTime<Utc>)> {
    let user = conversation_owner(id)?;
    let day = id.as_str().rsplit_once('_')?.1;
    let date = crate::clock::parse_day_key(day)?;
    Some((user, date.and_hms_opt(12, 0, 0)?.and_utc()))
}

/// The owner encoded in a conversation id; `None` when it is not one of ours.
pub fn conversation_owner(id: &ConversationId) -> Option<&str> {
    let rest = id.as_str().strip_prefix("conv_")?;
    let (user, _day) = rest.rsplit_once('_')?;
    Some(user)
}

/// When the golfer last deleted their data: a turn asked before then is not written after.
pub fn erased(user: &UserId) -> String {
    format!("erased_{}", user.as_str())
}

/// What the coach remembers about the golfer (`schema/memory.json`): one item, at most 30
/// facts, read with the profile and written in a turn's transaction only when it changes.
pub fn memory(user: &UserId) -> String {
    format!("memory_{}", user.as_str())
}

pub fn profile(user: &UserId) -> String {
    format!("profile_{}", user.as_str())
}

/// A golfer's requests per hour (attributes `hour_HH`) and spend of `at`'s day, in one item.
pub fn user_quota(user: &UserId, at: DateTime<Utc>) -> String {
    format!("quota_{}_{}", user.as_str(), day(at))
}

pub fn ip_hour_quota(ip_hash: &IpHash, at: DateTime<Utc>) -> String {
    format!("ipquota_{}_{}", ip_hash.as_str(), hour(at))
}

pub fn global_day_spend(at: DateTime<Utc>) -> String {
    format!("spendall_{}", day(at))
}

pub const TURN_PREFIX: &str = "msg_";

/// A golfer's rating of the answer to their message `id` (deleted with the turn).
pub fn rating(user: &UserId, id: &str) -> String {
    format!("rating_{}_{}", user.as_str(), id)
}

/// The message id in one of `user`'s turn keys.
pub fn client_message_id<'a>(user: &UserId, turn_key: &'a str) -> Option<&'a str> {
    turn_key.strip_prefix(TURN_PREFIX)?.strip_prefix(user.as_str())?.strip_prefix('_')
}

/// A turn (and, while it is being answered, the claim on its id): `id` is a validated
/// clientMessageId or one of [`server_message_id`]'s.
pub fn turn(user: &UserId, id: &str) -> String {
    format!("{TURN_PREFIX}{}_{}", user.as_str(), id)
}

/// The id a message without a clientMessageId is stored under: the app's ids match
/// `^[A-Za-z0-9][A-Za-z0-9-]{7,63}$`, and so does this one, in the caller's own key space.
pub fn server_message_id() -> String {
    format!("srv-{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};
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
        assert_eq!(memory(&u), "memory_golfer-1");
        assert_eq!(user_quota(&u, at()), "quota_golfer-1_20261125");
        assert_eq!(turn(&u, "msg-0001-abcd"), "msg_golfer-1_msg-0001-abcd");
        assert!(server_message_id().starts_with("srv-"));
        assert_eq!(global_day_spend(at()), "spendall_20261125");
        assert_eq!(IpHash::keyed("k", "203.0.113.9").as_str().len(), 16);
    }

    #[test]
    fn the_ip_counter_key_is_keyed_so_it_cannot_be_reversed_without_the_key() {
        let ip = "203.0.113.9";
        let unkeyed = hex::encode(&Sha256::digest(ip.as_bytes())[..8]);
        assert_ne!(IpHash::keyed("k1", ip).as_str(), unkeyed);
        assert_ne!(IpHash::keyed("k1", ip), IpHash::keyed("k2", ip), "another key, another hash");
        assert_eq!(IpHash::keyed("k1", ip), IpHash::keyed("k1", ip));
    }

    #[test]
    fn ids_that_would_forge_keys_are_not_user_ids() {
        for forged in ["all_20261125", "x_2026112507", "profile_victim", "victim_20261125", "", "-leading-dash", "a b", "a#b", "ü"] {
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
        fn keys_never_collide(a in "[A-Za-z0-9][A-Za-z0-9-]{0,20}", b in "[A-Za-z0-9][A-Za-z0-9-]{0,20}", h in 0u32..48, m in "[A-Za-z0-9][A-Za-z0-9-]{7,30}") {
            prop_assume!(a != b);
            let (Some(ua), Some(ub)) = (user(&a), user(&b)) else { panic!("generated ids are valid") };
            let t1 = at();
            let t2 = t1 + chrono::Duration::hours(i64::from(h) + 1);
            let mut seen = HashSet::new();
            let mut all = vec![global_day_spend(t1)];
            if day(t1) != day(t2) { all.push(global_day_spend(t2)); }
            for u in [&ua, &ub] {
                all.push(profile(u));
                all.push(memory(u));
                all.push(erased(u));
                all.push(turn(u, &m));
                all.push(rating(u, &m));
                all.push(turn(u, &server_message_id()));
                for t in [t1, t2] {
                    all.push(ip_hour_quota(&IpHash::keyed("k", u.as_str()), t));
                    if day(t1) != day(t2) || t == t1 {
                        all.push(conversation(u, t));
                        all.push(user_quota(u, t));
                    }
                }
            }
            for k in all {
                prop_assert!(seen.insert(k.clone()), "duplicate key {}", k);
            }
        }
    }
}
