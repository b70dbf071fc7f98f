//! certbridge-acme: the host side of the fleet rate budget - which certs wait for admission.
//!
//! The controller plans the CA's rate limits for the whole fleet (the `letsencrypt_pulse`
//! round). So that nothing is ordered before it has planned, a pulse that plans passes
//! `admit`: certs whose order would count against the limits wait ("held", no order) unless
//! named there. The planner learns from `new_cert_at` when this host last ordered a new one.

use crate::policy::Reason;

/// Whether an order for this decision counts against Let's Encrypt's per-registered-domain and
/// new-orders limits: a name set this host holds no certificate of from this CA. Renewals of
/// the same names (due, ARI window, forced, key or profile change) are exempt there.
pub fn counts_against_limits(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::Missing | Reason::NamesChanged | Reason::DirectoryChanged | Reason::SelfSigned
    )
}

/// Whether a cert to issue waits for the controller: the pulse plans (`admit` is given), the
/// order would count against the limits, none is in flight (one in flight was admitted when it
/// was made), and the cert is not admitted.
pub fn held(admit: Option<&[String]>, cert: &str, reason: Reason, order_in_flight: bool) -> bool {
    admit.is_some_and(|admitted| {
        counts_against_limits(reason) && !order_in_flight && !admitted.iter().any(|a| a == cert)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_certs_without_an_order_wait_and_only_when_the_pulse_plans() {
        let admit = ["web".to_owned()];
        assert!(held(Some(&[]), "web", Reason::Missing, false));
        assert!(!held(Some(&admit), "web", Reason::Missing, false));
        assert!(held(Some(&admit), "mail", Reason::NamesChanged, false));
        assert!(!held(Some(&[]), "web", Reason::Missing, true));
        assert!(!held(Some(&[]), "web", Reason::Due, false));
        assert!(!held(Some(&[]), "web", Reason::AriWindow, false));
        assert!(!held(None, "web", Reason::Missing, false));
    }
}
