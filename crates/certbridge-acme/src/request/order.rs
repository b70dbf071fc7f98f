//! Ordering: one account for every cert to issue, a stored order resumed when the CA still
//! has it, else a new one; orders no longer needed deactivated; profile limits checked first.

use super::*;

/// Deactivates the pending authorizations of the orders in flight of certs that no longer
/// need issuing, before they are forgotten: left pending they count against the CA's limits
/// until they expire (days at Let's Encrypt), and one naming `replaces` keeps the certificate
/// "already replaced" (RFC 9773), so its real renewal would have to order without. Best
/// effort, only for orders of this directory's account, one account for all; a failure is
/// a warning. Not while backing off: the CA is left alone then (and the order most likely
/// failed anyway).
pub(super) async fn abandon_orders<C: CaConnector>(
    cfg: &Config,
    states: &[CertState<'_>],
    connector: &C,
    log: &EventLog,
    deadline: Instant,
    out: &mut Outcome,
) {
    let abandoned: Vec<(String, String, String)> = states
        .iter()
        .filter(|st| st.decision.action == Action::Ok && st.decision.reason != Reason::Backoff)
        .filter_map(|st| {
            let p = st.meta.pending.as_ref()?;
            let order = p.ca().filter(|_| p.directory == cfg.directory)?;
            Some((
                st.spec.name.as_str().to_owned(),
                order.url.clone(),
                order.account_url.clone(),
            ))
        })
        .collect();
    if abandoned.is_empty() {
        return;
    }
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let account = match connector.open(cfg, deadline).await {
        Ok(a) => a,
        Err(f) => {
            for (name, url, _) in &abandoned {
                out.warnings.push(format!(
                    "cert {name}: the order {url} is no longer needed but cannot be deactivated ({}); it stays pending at the CA until it expires",
                    f
                ));
            }
            return;
        }
    };
    let me = account.account_url();
    for (name, url, owner) in abandoned.into_iter().filter(|(_, _, o)| *o == me) {
        let error = match tokio::time::timeout(left(), account.deactivate_pending(&url)).await {
            Ok(Ok(())) => None,
            Ok(Err(f)) => Some(f.message()),
            Err(_) => Some("no answer before the deadline".to_owned()),
        };
        log.event(
            "order_abandoned",
            json!({"cert": name, "order_url": url, "account": owner, "error": error}),
        );
        if let Some(e) = error {
            out.warnings.push(format!(
                "cert {name}: the order {url} is no longer needed but cannot be deactivated ({e}); it stays pending at the CA until it expires"
            ));
        }
    }
}

/// Why `spec` cannot be ordered at all under the known limits of its profile at this CA
/// (Let's Encrypt's), naming both numbers; None: it can, or the CA's limits are not known.
pub(super) fn over_profile_limit(cfg: &Config, spec: &CertSpec) -> Option<String> {
    if cfg.self_sign {
        return None;
    }
    let asked = spec.profile.as_deref();
    let limits = policy::profile_limits(&cfg.directory, asked)?;
    policy::too_many_names(&limits, spec.names.len(), asked)
}

/// Takes the certs Let's Encrypt would refuse for their number of names out of `to_issue`:
/// each fails at once, without an order and without a backoff (a configuration error, the
/// next run with fixed options should not wait). A kept cert over the limit only warns: its
/// renewal will fail the same way.
pub(super) fn refuse_over_profile_limits(
    cfg: &Config,
    states: &[CertState<'_>],
    to_issue: &mut Vec<usize>,
    log: &EventLog,
    out: &mut Outcome,
) {
    to_issue.retain(|i| {
        let spec = states[*i].spec;
        let Some(message) = over_profile_limit(cfg, spec) else {
            return true;
        };
        log.event(
            "order_refused",
            json!({"cert": spec.name.as_str(), "message": message}),
        );
        let f = CaFailure::local(message);
        out.failures.push((spec.name.as_str().to_owned(), f));
        false
    });
    for st in states.iter().filter(|st| st.decision.action == Action::Ok) {
        if let Some(m) = over_profile_limit(cfg, st.spec) {
            out.warnings.push(format!(
                "cert {}: {m}; it is kept for now, its renewal will fail",
                st.spec.name
            ));
        }
    }
}

/// Takes the certs whose `_acme-challenge` CNAMEs do not lead into the signing zones out of
/// `to_issue`: each fails at once with the records to add, without an order and without a
/// backoff (the next pulse after the fix should not wait). Returns where the others' values go.
pub(super) async fn refuse_bad_cnames(
    cc: &CnameCheck,
    states: &[CertState<'_>],
    to_issue: &mut Vec<usize>,
    log: &EventLog,
    deadline: Instant,
    out: &mut Outcome,
) -> crate::cnamecheck::Owners {
    // http-01 certs have no `_acme-challenge` records to check.
    let certs: Vec<(String, Vec<certbridge_core::names::Identifier>)> = to_issue
        .iter()
        .filter(|i| states[**i].spec.challenge.kind().is_dns())
        .map(|i| {
            let spec = states[*i].spec;
            (spec.name.as_str().to_owned(), spec.names.clone())
        })
        .collect();
    if certs.is_empty() {
        return Default::default();
    }
    // One result per cert of `to_issue`, in its order (retain visits it in order).
    let mut checked = cc.check(&certs, deadline).await.into_iter();
    let mut owners = crate::cnamecheck::Owners::new();
    to_issue.retain(|i| {
        let spec = states[*i].spec;
        if !spec.challenge.kind().is_dns() {
            return true; // not among `certs`: it has no result
        }
        let cert = spec.name.as_str();
        match checked.next() {
            Some(Err(message)) => {
                log.event("order_refused", json!({"cert": cert, "message": message}));
                out.failures
                    .push((cert.to_owned(), CaFailure::local(message)));
                false
            }
            Some(Ok(o)) => {
                owners.extend(o);
                true
            }
            None => true,
        }
    });
    owners
}

/// An http-01 cert whose tokens this host serves itself (no `webroot_hosts`) fails before any
/// order when its webroot is missing, not a directory, a symbolic link, or has a linked
/// `.well-known` / `acme-challenge` (acme_http_publish would refuse to write there).
pub(super) fn refuse_bad_webroots(
    states: &[CertState<'_>],
    to_issue: &mut Vec<usize>,
    log: &EventLog,
    out: &mut Outcome,
) {
    to_issue.retain(|i| {
        let spec = states[*i].spec;
        let crate::config::Challenge::Http01 {
            webroot,
            served_here: true,
        } = &spec.challenge
        else {
            return true;
        };
        let Err(e) = certbridge_core::webroot::check_webroot_dir(webroot) else {
            return true;
        };
        let cert = spec.name.as_str();
        let first = spec.names.first().map(|n| n.as_str()).unwrap_or_default();
        let message =
            format!("`{first}`: {e} (http-01 tokens for this cert are written on this host)");
        log.event("order_refused", json!({"cert": cert, "message": message}));
        out.failures
            .push((cert.to_owned(), CaFailure::local(message)));
        false
    });
}

/// Why a stored order `age` seconds old is too old to resume: the CA has let it expire (its
/// profile's known lifetime), or it is older than `pending_max_age`.
pub(super) fn stale_reason(
    cfg: &Config,
    spec: &CertSpec,
    age: i64,
    pending_max_age: i64,
) -> Option<String> {
    if let Some(l) = policy::profile_limits(&cfg.directory, spec.profile.as_deref()) {
        if age >= l.pending_order_lifetime() {
            return Some(format!(
                "the stored order is {age} s old: Let's Encrypt's `{}` profile keeps pending authorizations {} and orders {}",
                l.profile,
                policy::human_duration(l.pending_authz_lifetime),
                policy::human_duration(l.order_lifetime)
            ));
        }
    }
    (age >= pending_max_age).then(|| {
        format!("the stored order is {age} s old, older than pending_max_age ({pending_max_age} s)")
    })
}

pub(super) fn same_request(
    p: &PendingOrder,
    spec: &CertSpec,
    cfg: &Config,
    key_type: KeyType,
) -> bool {
    p.directory == cfg.directory
        && p.names == spec.sorted_names()
        && p.key_type == key_type
        && p.is_self_sign() == cfg.self_sign
        && (cfg.self_sign || p.profile() == spec.profile.as_deref())
        && (cfg.self_sign || p.kind() == spec.challenge.kind())
}

pub(super) fn new_pending(
    cfg: &Config,
    spec: &CertSpec,
    key_type: KeyType,
    at: OrderAt,
    now: i64,
) -> PendingOrder {
    PendingOrder {
        created_at: now,
        directory: cfg.directory.clone(),
        names: spec.sorted_names(),
        key_type,
        staging: cfg.untrusted_target(),
        at,
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn order_all<C: CaConnector>(
    cfg: &Config,
    states: &mut [CertState<'_>],
    to_issue: &[usize],
    connector: &C,
    log: &EventLog,
    deadline: Instant,
    pending_max_age: i64,
    now: i64,
    out: &mut Outcome,
) {
    let account = match connector.open(cfg, deadline).await {
        Ok(a) => a,
        Err(f) => {
            // Without an account no cert can be ordered: each fails with the same cause.
            log.event(
                "account_failed",
                json!({"problem": f.problem(), "message": f.message()}),
            );
            for i in to_issue {
                let st = &mut states[*i];
                record_failure(&mut st.meta, &f, now);
                out.failures
                    .push((st.spec.name.as_str().to_owned(), f.clone()));
            }
            return;
        }
    };
    let account_url = account.account_url();
    // A profile the CA does not offer is a configuration error: no order, and no backoff (the
    // next run with a fixed `profile` should not wait).
    let mut offered = account.profiles();
    offered.sort();
    let mut to_issue = to_issue.to_vec();
    to_issue.retain(|i| {
        let spec = states[*i].spec;
        let Some(wanted) = spec.profile.as_deref() else {
            return true;
        };
        if offered.iter().any(|p| p == wanted) {
            return true;
        }
        let offers = if offered.is_empty() {
            "it offers no profiles".to_owned()
        } else {
            format!("it offers: {}", offered.join(", "))
        };
        let f = CaFailure::local(format!(
            "profile `{wanted}` is not offered by the CA at {}; {offers}",
            cfg.directory
        ));
        log.event(
            "order_failed",
            json!({"cert": spec.name.as_str(), "message": f.message()}),
        );
        out.failures.push((spec.name.as_str().to_owned(), f));
        false
    });
    let jobs = to_issue.iter().map(|i| {
        let st = &states[*i];
        order_one(
            cfg,
            st.spec,
            key_type_of(st.spec, &st.on_disk),
            st.meta.pending.clone(),
            replaced_cert_id(cfg, st),
            &account,
            &account_url,
            pending_max_age,
            now,
            deadline,
        )
    });
    let results = futures_util::future::join_all(jobs).await;
    for (i, result) in to_issue.iter().zip(results) {
        let st = &mut states[*i];
        let name = st.spec.name.as_str().to_owned();
        match result {
            Ok(Ordered {
                pending,
                created,
                replaces_dropped,
                why_new,
            }) => {
                log.event(
                    if created { "order_created" } else { "order_reused" },
                    json!({"cert": name, "order_url": pending.url(), "values": pending.challenges().len(),
                           "replaces": pending.ca().and_then(|o| o.replaces.as_deref()), "profile": pending.profile(),
                           "replaces_dropped": replaces_dropped, "stored_order_not_reused": why_new}),
                );
                st.order_reason = why_new;
                if let Some(why) = replaces_dropped {
                    out.warnings.push(format!(
                        "cert {name}: the CA refused `replaces` ({why}); ordered without it"
                    ));
                }
                if created {
                    if let Some(old) = &st.meta.pending {
                        // The stored order is replaced: its values are of no use any more.
                        crate::retired::retire(&mut st.meta.retired, old, now);
                    }
                    out.orders_created += 1;
                    // A new order gets a new key.
                    let _ = cfg.store.clear_pending_key(&name);
                }
                for c in pending.challenges() {
                    out.txt.push(TxtRequired {
                        cert: name.clone(),
                        name: c.name.clone(),
                        record: c.record.clone(),
                        value: c.value.clone(),
                        owner: None,
                    });
                }
                out.http.extend(pending.http().iter().map(|h| HttpRequired {
                    cert: name.clone(),
                    name: h.name.clone(),
                    token: h.token.clone(),
                    key_authorization: h.key_authorization.clone(),
                    webroot: h.webroot.clone(),
                }));
                st.meta.pending = Some(pending);
            }
            Err(f) => {
                log.event(
                    "order_failed",
                    json!({"cert": name, "problem": f.problem(), "message": f.message()}),
                );
                record_failure(&mut st.meta, &f, now);
                out.failures.push((name, f));
            }
        }
    }
}

/// What [`order_one`] did.
pub(super) struct Ordered {
    pending: PendingOrder,
    /// A new order (else the stored one is resumed).
    created: bool,
    /// Why the CA's refusal of `replaces` made it order without.
    replaces_dropped: Option<String>,
    /// Why the stored order was not resumed.
    why_new: Option<String>,
}

/// Reuses the stored order when the CA still has it for the same request, else replaces it.
/// A stored order of this account that is not resumed has its pending authorizations
/// deactivated first: they stop counting against the CA's limits, and the order turns
/// invalid, so a `replaces` it carried may be named again (RFC 9773: a certificate with a live
/// replacement order is `alreadyReplaced`).
#[allow(clippy::too_many_arguments)]
pub(super) async fn order_one<A: CaAccount>(
    cfg: &Config,
    spec: &CertSpec,
    key_type: KeyType,
    stored: Option<PendingOrder>,
    replaces: Option<String>,
    account: &A,
    account_url: &str,
    pending_max_age: i64,
    now: i64,
    deadline: Instant,
) -> Result<Ordered, CaFailure> {
    let timeout = |what: &str| {
        CaFailure::local(format!(
            "{what}: no answer from the CA before the deadline ({}s)",
            cfg.timeout.as_secs()
        ))
    };
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut why_new = None;
    if let Some(p) = stored {
        let same = same_request(&p, spec, cfg, key_type);
        match &p.at {
            OrderAt::Ca(order) if order.account_url == account_url && same => {
                let url = &order.url;
                let stale = stale_reason(cfg, spec, now - p.created_at, pending_max_age);
                if stale.is_some() {
                    why_new = stale;
                } else {
                    let state = tokio::time::timeout(left(), account.order_state(url))
                        .await
                        .map_err(|_| timeout("reading the pending order"))?;
                    // A CA that forgot the order (restart) or refuses it means a new order.
                    why_new = Some(match state {
                        Ok(Some(view)) => {
                            let mut ids = view.identifiers.clone();
                            ids.sort();
                            let live = matches!(
                                view.status,
                                OrderStatus::Pending
                                    | OrderStatus::Ready
                                    | OrderStatus::Processing
                                    | OrderStatus::Valid
                            );
                            if live && ids == p.names {
                                let mut reused = p.clone();
                                if let OrderAt::Ca(o) = &mut reused.at {
                                    (o.challenges, o.http) =
                                        of_kind(spec, view.challenges, view.http);
                                }
                                return Ok(Ordered {
                                    pending: reused,
                                    created: false,
                                    replaces_dropped: None,
                                    why_new: None,
                                });
                            }
                            if live {
                                "the CA's stored order is for other names".to_owned()
                            } else {
                                format!("the stored order is {:?}", view.status).to_lowercase()
                            }
                        }
                        Ok(None) => "the CA no longer has the stored order".to_owned(),
                        Err(f) => format!("the stored order cannot be read: {f}"),
                    });
                }
                // Stale: free the CA's pending authorizations before ordering anew (best effort).
                let _ = tokio::time::timeout(left(), account.deactivate_pending(url)).await;
            }
            OrderAt::Ca(order) if order.account_url == account_url => {
                why_new =
                    Some("the stored order is for other names, key type or profile".to_owned());
                let _ = tokio::time::timeout(left(), account.deactivate_pending(&order.url)).await;
            }
            OrderAt::Ca(_) => {
                why_new = Some("the stored order belongs to another account".to_owned());
            }
            OrderAt::SelfSign => {}
        }
    }
    let new_order = |replaces: Option<String>| async move {
        let asked = account.new_order(&spec.names, replaces.as_deref(), spec.profile.as_deref());
        tokio::time::timeout(left(), asked)
            .await
            .map_err(|_| timeout("creating the order"))?
            .map(|created| (created, replaces))
    };
    let (created, replaces, replaces_dropped) = match new_order(replaces.clone()).await {
        // The CA refuses `replaces` (alreadyReplaced, no ARI...): once more without it, a
        // renewal must not fail for it.
        Err(f) if replaces.is_some() && f.refuses_replaces() => {
            let (created, _) = new_order(None).await?;
            (created, None, Some(f.message()))
        }
        other => {
            let (created, sent) = other?;
            (created, sent, None)
        }
    };
    let (challenges, http) = of_kind(spec, created.challenges, created.http);
    Ok(Ordered {
        pending: new_pending(
            cfg,
            spec,
            key_type,
            OrderAt::Ca(CaOrder {
                url: created.url,
                account_url: account_url.to_owned(),
                challenges,
                profile: spec.profile.clone(),
                replaces,
                kind: spec.challenge.kind(),
                http,
            }),
            now,
        ),
        created: true,
        replaces_dropped,
        why_new,
    })
}

/// The challenges of the cert's kind (a CA offers both for a name): dns-01 values, or http-01
/// tokens with the cert's webroot.
fn of_kind(
    spec: &CertSpec,
    txt: Vec<crate::store::ChallengeRecord>,
    http: Vec<crate::ca::HttpToken>,
) -> (
    Vec<crate::store::ChallengeRecord>,
    Vec<crate::store::HttpRecord>,
) {
    match spec.challenge.webroot() {
        None => (txt, Vec::new()),
        Some(webroot) => (
            Vec::new(),
            http.into_iter()
                .map(|t| crate::store::HttpRecord {
                    name: t.name,
                    token: t.token,
                    key_authorization: t.key_authorization,
                    webroot: webroot.to_owned(),
                })
                .collect(),
        ),
    }
}
