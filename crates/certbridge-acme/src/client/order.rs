//! Orders: creating, reading, deactivating and finalizing them, and the ARI identifier.

use super::*;

/// One dns-01 value to publish: the CA will look for TXT `value` at `record`
/// (`_acme-challenge.<identifier without *.>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChallenge {
    pub identifier: Identifier,
    pub record: DomainName,
    pub value: TxtDigest,
}

/// What the CA says about an order. Authorizations it already holds valid have no challenge.
#[derive(Clone, Debug)]
pub struct OrderInfo {
    pub url: String,
    pub status: OrderStatus,
    /// Every identifier of the order (from its authorizations, sorted), wildcards as `*.name`.
    pub identifiers: Vec<Identifier>,
    /// The dns-01 values of the pending authorizations, sorted by record, then identifier.
    pub challenges: Vec<PendingChallenge>,
    /// The http-01 tokens of the pending authorizations, sorted by name.
    pub http: Vec<crate::ca::HttpToken>,
    pub profile: Option<String>,
    /// The order's error, if the CA recorded one.
    pub error: Option<ProblemDoc>,
}

/// An account at one CA. Cheap to clone; clones share the connection pool and counters.
#[derive(Clone)]
pub struct AcmeAccount {
    pub(super) account: Account,
    directory: String,
    deadline: Instant,
    pub(super) stats: Arc<HttpStats>,
}

impl fmt::Debug for AcmeAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeAccount")
            .field("url", &self.account.id())
            .field("directory", &self.directory)
            .finish()
    }
}

/// `aki.serial` (base64url) -> the identifier instant-acme sends as `replaces`.
pub(super) fn parse_cert_id(s: &str) -> Result<CertificateIdentifier<'_>, AcmeError> {
    let b64 = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    match s.split_once('.') {
        Some((aki, serial)) if b64(aki) && b64(serial) => Ok(CertificateIdentifier {
            authority_key_identifier: Cow::Borrowed(aki),
            serial: Cow::Borrowed(serial),
        }),
        _ => Err(AcmeError::BadCertificateId {
            reason: format!("{s:?} is not base64url(AKI).base64url(serial)"),
        }),
    }
}

/// The ARI identifier (`base64url(AKI).base64url(serial)`) of a DER certificate, as
/// `new_order`'s `replaces` wants it.
pub fn ari_cert_id(cert_der: &[u8]) -> Result<String, AcmeError> {
    let der = CertificateDer::from(cert_der);
    CertificateIdentifier::try_from(&der)
        .map(|id| id.to_string())
        .map_err(|reason| AcmeError::BadCertificateId { reason })
}

/// What [`read_authorizations`] found.
type Authorizations = (
    Vec<Identifier>,
    Vec<PendingChallenge>,
    Vec<crate::ca::HttpToken>,
);

/// Reads the order's authorizations: every identifier, and the dns-01 value and http-01 token
/// each pending one offers (a challenge missing for the cert's kind fails at finalize).
pub(super) async fn read_authorizations(order: &mut Order) -> Result<Authorizations, OpError> {
    let mut identifiers = Vec::new();
    let mut challenges = Vec::new();
    let mut http = Vec::new();
    let mut authzs = order.authorizations();
    while let Some(authz) = authzs.next().await {
        let mut authz = authz?;
        let shown = authz.identifier().to_string();
        let identifier = Identifier::parse(&shown)
            .map_err(|e| AcmeError::Protocol {
                what: "read the order's authorizations".into(),
                reason: format!("the CA returned identifier {shown:?}: {e}"),
            })?
            .0;
        let pending = authz.status == AuthorizationStatus::Pending;
        let offered = |t: ChallengeType| authz.challenges.iter().find(|c| c.r#type == t);
        let http_token = offered(ChallengeType::Http01).map(|c| c.token.clone());
        let has_dns = offered(ChallengeType::Dns01).is_some();
        // One handle per authorization (instant-acme's borrow): both key authorizations share
        // the account thumbprint after the token.
        let first = if has_dns {
            ChallengeType::Dns01
        } else {
            ChallengeType::Http01
        };
        let key_authorization = match authz.challenge(first) {
            Some(c) if pending => Some(c.key_authorization()),
            _ => None,
        };
        if let Some(ka) = key_authorization {
            if let (Some(token), Some((_, thumbprint))) = (http_token, ka.as_str().split_once('.'))
            {
                http.push(crate::ca::HttpToken {
                    name: identifier.as_str().to_owned(),
                    key_authorization: format!("{token}.{thumbprint}"),
                    token,
                });
            }
            if has_dns {
                let value = TxtDigest::parse(&ka.dns_value()).map_err(|e| AcmeError::Protocol {
                    what: "compute the dns-01 value".into(),
                    reason: e.to_string(),
                })?;
                challenges.push(PendingChallenge {
                    record: identifier.challenge_record(),
                    identifier: identifier.clone(),
                    value,
                });
            }
        }
        identifiers.push(identifier);
    }
    // CAs list authorizations in any order (Pebble: a different one per fetch): sort, so the
    // same order always reads the same.
    identifiers.sort();
    challenges.sort_by(|a, b| (&a.record, &a.identifier).cmp(&(&b.record, &b.identifier)));
    http.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((identifiers, challenges, http))
}

impl AcmeAccount {
    pub(super) fn wrap(account: Account, cfg: &ClientConfig, stats: Arc<HttpStats>) -> AcmeAccount {
        AcmeAccount {
            account,
            directory: cfg.directory.clone(),
            deadline: cfg.deadline,
            stats,
        }
    }

    /// The account URL (the `kid` of every request).
    pub fn url(&self) -> &str {
        self.account.id()
    }

    /// Requests retried so far because the CA rejected their nonce (all clones together).
    pub fn retries(&self) -> u64 {
        self.stats.bad_nonces()
    }

    /// HTTP requests made so far (all clones together).
    pub fn requests(&self) -> u64 {
        self.stats.requests()
    }

    /// Profiles the CA offers (directory `meta.profiles`): (name, description).
    pub fn profiles(&self) -> Vec<(String, String)> {
        self.account
            .profiles()
            .map(|p| (p.name.to_owned(), p.description.to_owned()))
            .collect()
    }

    /// Creates an order and returns the dns-01 values still to publish. `replaces` is the ARI
    /// id of the certificate being renewed (see [`ari_cert_id`]); a CA without ARI gives
    /// `Unsupported`.
    pub async fn new_order(
        &self,
        identifiers: &[Identifier],
        replaces: Option<&str>,
        profile: Option<&str>,
    ) -> Result<OrderInfo, AcmeError> {
        let ids: Vec<instant_acme::Identifier> = identifiers
            .iter()
            .map(|i| match i.ip() {
                Some(ip) => instant_acme::Identifier::Ip(ip),
                None => instant_acme::Identifier::Dns(i.as_str().to_owned()),
            })
            .collect();
        let mut request = NewOrder::new(&ids);
        if let Some(r) = replaces {
            request = request.replaces(parse_cert_id(r)?);
        }
        if let Some(p) = profile {
            request = request.profile(p);
        }
        let mut order = attempt(&self.stats, "create an order", self.deadline, async || {
            Ok(self.account.new_order(&request).await?)
        })
        .await?;
        let what = format!("read the authorizations of order {}", order.url());
        let (identifiers, challenges, http) =
            attempt(&self.stats, &what, self.deadline, async || {
                read_authorizations(&mut order).await
            })
            .await?;
        let state = order.state();
        Ok(OrderInfo {
            status: state.status,
            profile: state.profile.clone(),
            error: state.error.as_ref().map(ProblemDoc::from_acme),
            url: order.url().to_owned(),
            identifiers,
            challenges,
            http,
        })
    }

    /// Fetches an order by URL (POST-as-GET).
    async fn fetch_order(&self, url: &str, deadline: Instant) -> Result<Option<Order>, AcmeError> {
        let what = format!("fetch order {url}");
        let fetched = attempt(&self.stats, &what, deadline, async || {
            Ok(self.account.order(url.to_owned()).await?)
        })
        .await;
        match fetched {
            Ok(order) => Ok(Some(order)),
            Err(AcmeError::Problem { problem, .. }) if problem.means_unknown() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The order's current state and pending values; `None` when the CA no longer knows it (404,
    /// or malformed / unauthorized after a CA restart) or reports a state outside RFC 8555
    /// (Pebble's `deactivated`): either way it cannot be used any more.
    pub async fn order_state(&self, url: &str) -> Result<Option<OrderInfo>, AcmeError> {
        let mut order = match self.fetch_order(url, self.deadline).await {
            Ok(Some(order)) => order,
            Ok(None) | Err(AcmeError::UnexpectedAnswer { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let what = format!("read the authorizations of order {url}");
        let read = attempt(&self.stats, &what, self.deadline, async || {
            read_authorizations(&mut order).await
        })
        .await;
        let (identifiers, challenges, http) = match read {
            Ok(r) => r,
            Err(AcmeError::Problem { problem, .. }) if problem.means_unknown() => return Ok(None),
            Err(e) => return Err(e),
        };
        let state = order.state();
        Ok(Some(OrderInfo {
            url: url.to_owned(),
            status: state.status,
            profile: state.profile.clone(),
            error: state.error.as_ref().map(ProblemDoc::from_acme),
            identifiers,
            challenges,
            http,
        }))
    }

    /// Deactivates the order's pending authorizations (before abandoning it for a new one), so
    /// they do not count against the CA's pending-authorization limit. Returns how many.
    pub async fn deactivate_pending_authorizations(&self, url: &str) -> Result<usize, AcmeError> {
        let Some(mut order) = self.fetch_order(url, self.deadline).await? else {
            return Ok(0);
        };
        let mut done: HashSet<String> = HashSet::new();
        let what = format!("deactivate the authorizations of order {url}");
        attempt(&self.stats, &what, self.deadline, async || {
            let mut authzs = order.authorizations();
            while let Some(authz) = authzs.next().await {
                let mut authz = authz?;
                if authz.status == AuthorizationStatus::Pending && !done.contains(authz.url()) {
                    let authz_url = authz.url().to_owned();
                    authz.deactivate().await?;
                    done.insert(authz_url);
                }
            }
            Ok(())
        })
        .await?;
        Ok(done.len())
    }

    /// Completes an order created by [`AcmeAccount::new_order`] (possibly in another process):
    /// resumes it by URL, tells the CA the pending dns-01 values are published, waits for
    /// validation honouring Retry-After, finalizes with `csr_der` (persist its key first), waits
    /// for issuance and returns the PEM chain, leaf first. Stops at `deadline` (or the config's,
    /// whichever is earlier).
    pub async fn finalize(
        &self,
        order_url: &str,
        csr_der: &[u8],
        deadline: Instant,
        kind: crate::ca::ChallengeKind,
    ) -> Result<String, AcmeError> {
        let deadline = deadline.min(self.deadline);
        let Some(mut order) = self.fetch_order(order_url, deadline).await? else {
            return Err(AcmeError::OrderGone {
                url: order_url.to_owned(),
            });
        };
        let mut readied: HashSet<String> = HashSet::new();
        // Pending -> Ready -> Processing -> Valid; each arm moves the order on or returns.
        for _ in 0..8 {
            match order.state().status {
                OrderStatus::Pending => {
                    let what = format!("mark the challenges of order {order_url} ready");
                    attempt(&self.stats, &what, deadline, async || {
                        set_challenges_ready(&mut order, &mut readied, kind).await
                    })
                    .await?;
                    let what = format!("wait for the CA to validate order {order_url}");
                    let polled = attempt(&self.stats, &what, deadline, async || {
                        Ok(order.poll_ready(&poll_policy(deadline)).await?)
                    })
                    .await;
                    match polled {
                        Ok(_) => {}
                        // The order carries an error: report it with each challenge's error.
                        Err(AcmeError::Problem { .. }) => {
                            return Err(self.invalid_order(&mut order, deadline).await)
                        }
                        Err(e) => return Err(e),
                    }
                }
                OrderStatus::Ready => {
                    let what = format!("finalize order {order_url}");
                    attempt(&self.stats, &what, deadline, async || {
                        Ok(order.finalize_csr(csr_der).await?)
                    })
                    .await?;
                }
                // A CA that issues at once answers the finalize with a valid order: download
                // without the poll's first wait.
                OrderStatus::Valid => {
                    let what = format!("download the certificate of order {order_url}");
                    return attempt(&self.stats, &what, deadline, async || {
                        order
                            .certificate()
                            .await?
                            .ok_or(OpError::from(AcmeError::Protocol {
                                what: what.clone(),
                                reason: "the valid order has no certificate URL".into(),
                            }))
                    })
                    .await;
                }
                OrderStatus::Processing => {
                    let what = format!("download the certificate of order {order_url}");
                    return attempt(&self.stats, &what, deadline, async || {
                        Ok(order.poll_certificate(&poll_policy(deadline)).await?)
                    })
                    .await;
                }
                OrderStatus::Invalid => return Err(self.invalid_order(&mut order, deadline).await),
            }
        }
        Err(AcmeError::Protocol {
            what: format!("finalize order {order_url}"),
            reason: format!("the order stays {:?}", order.state().status).to_lowercase(),
        })
    }

    /// The error of an invalid order: the order's problem plus each failed challenge's error.
    async fn invalid_order(&self, order: &mut Order, deadline: Instant) -> AcmeError {
        let url = order.url().to_owned();
        let mut problem = order
            .state()
            .error
            .as_ref()
            .map(ProblemDoc::from_acme)
            .unwrap_or_default();
        let what = format!("read why order {url} failed");
        let subs = attempt(&self.stats, &what, deadline, async || {
            let mut subs = Vec::new();
            let mut authzs = order.authorizations();
            while let Some(authz) = authzs.next().await {
                let mut authz = authz?;
                authz.refresh().await?;
                let identifier = authz.identifier().to_string();
                for challenge in &authz.challenges {
                    if let Some(err) = &challenge.error {
                        subs.push(SubProblemDoc {
                            identifier: Some(identifier.clone()),
                            kind: err.r#type.clone(),
                            detail: err.detail.clone(),
                        });
                    }
                }
            }
            Ok(subs)
        })
        .await
        .unwrap_or_default();
        for sub in subs {
            if !problem.subproblems.contains(&sub) {
                problem.subproblems.push(sub);
            }
        }
        if problem.detail.is_none() && problem.subproblems.is_empty() {
            problem.detail = Some("the CA gave no reason".into());
        }
        AcmeError::OrderInvalid { url, problem }
    }
}

/// Polling: start at 20 ms (a CA that validates or issues within a few round trips is not
/// kept waiting), double each time (about 2.5 s after 7 polls, capped by the deadline).
/// A CA's Retry-After takes precedence; one past the deadline makes instant-acme fail at once,
/// with the time.
pub(super) fn poll_policy(deadline: Instant) -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(20))
        .backoff(2.0)
        .timeout(deadline.saturating_duration_since(Instant::now()))
}

/// POSTs `{}` to each pending authorization's `kind` challenge once (`readied` survives
/// retries).
pub(super) async fn set_challenges_ready(
    order: &mut Order,
    readied: &mut HashSet<String>,
    kind: crate::ca::ChallengeKind,
) -> Result<(), OpError> {
    let wanted = match kind {
        crate::ca::ChallengeKind::Dns01 => ChallengeType::Dns01,
        crate::ca::ChallengeKind::Http01 => ChallengeType::Http01,
    };
    let mut authzs = order.authorizations();
    while let Some(authz) = authzs.next().await {
        let mut authz = authz?;
        if authz.status != AuthorizationStatus::Pending {
            continue;
        }
        let shown = authz.identifier().to_string();
        let mut challenge = authz
            .challenge(wanted.clone())
            .ok_or(AcmeError::NoChallenge {
                identifier: shown,
                kind: kind.as_str(),
            })?;
        if readied.contains(&challenge.url) {
            continue;
        }
        let challenge_url = challenge.url.clone();
        challenge.set_ready().await?;
        readied.insert(challenge_url);
    }
    Ok(())
}
