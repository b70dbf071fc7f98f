//! dns-01 values of orders that are finished (installed) or given up (abandoned, replaced).
//! Each host remembers them in the cert's metadata and acme_request reports them for a day
//! (`acme_txt_retired`), so the next publish removes them from the signing zone whatever
//! their age: ageing (`keep_seconds`) is then only what protects values of orders still in
//! flight, among them those of a concurrent pulse, which no host ever reports as retired.

use crate::store::PendingOrder;
use serde::{Deserialize, Serialize};

/// How long a retired value is reported: long enough for a publish to happen (play 2 runs
/// only in pulses that publish something); after that `keep_seconds` has removed it anyway.
pub const REPORT_SECONDS: i64 = 86_400;

/// One value of a finished order, and when it was retired.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RetiredValue {
    pub record: String,
    pub value: String,
    pub at: i64,
}

/// Remembers `order`'s values as retired at `now`.
pub fn retire(list: &mut Vec<RetiredValue>, order: &PendingOrder, now: i64) {
    for c in order.challenges() {
        if !list.iter().any(|r| r.value == c.value) {
            list.push(RetiredValue {
                record: c.record.clone(),
                value: c.value.clone(),
                at: now,
            });
        }
    }
}

/// Forgets values retired [`REPORT_SECONDS`] ago or earlier.
pub fn prune(list: &mut Vec<RetiredValue>, now: i64) {
    list.retain(|r| now.saturating_sub(r.at) < REPORT_SECONDS);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certinfo::KeyType;
    use crate::store::{CaOrder, ChallengeRecord, OrderAt};

    #[test]
    fn values_are_retired_once_and_forgotten_after_a_day() {
        let order = PendingOrder {
            created_at: 0,
            directory: "https://ca.test/dir".into(),
            names: vec!["a.example.test".into()],
            key_type: KeyType::EcP256,
            staging: false,
            at: OrderAt::Ca(CaOrder {
                url: "https://ca.test/order/1".into(),
                account_url: "https://ca.test/acct/1".into(),
                challenges: vec![ChallengeRecord {
                    name: "a.example.test".into(),
                    record: "_acme-challenge.a.example.test".into(),
                    value: "v".into(),
                }],
                profile: None,
                replaces: None,
                kind: Default::default(),
                http: Vec::new(),
            }),
        };
        let mut list = Vec::new();
        retire(&mut list, &order, 100);
        retire(&mut list, &order, 200);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].at, 100);
        prune(&mut list, 100 + REPORT_SECONDS - 1);
        assert_eq!(list.len(), 1);
        prune(&mut list, 100 + REPORT_SECONDS);
        assert!(list.is_empty());
    }
}
