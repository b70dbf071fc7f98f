//! Validating the options into a [`Config`]: every check before any lock, order or write.

use super::*;

/// Strips an OpenDev-style `:port` suffix (used by their cert checks, not for issuance).
pub(super) fn strip_port(name: &str) -> &str {
    // An IPv6 address ends in `:<hex>` too: it has no port to strip.
    if name.parse::<std::net::IpAddr>().is_ok() {
        return name;
    }
    match name.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => name,
    }
}

pub(super) fn invalid(option: &str, detail: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        option: option.into(),
        detail: detail.into(),
    }
}

/// The host name that seeds the renewal jitter (read from the kernel, no NSS).
pub fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Validates everything; `default_timeout` is the module's own default.
pub fn validate(o: CommonOptions, default_timeout: u64) -> Result<Config, ConfigError> {
    if o.certs.is_empty() {
        return Err(ConfigError::NoCerts);
    }
    let default_key_type = match &o.key_type {
        Some(k) => KeyChoice::Set(k.parse::<KeyType>().map_err(|e| invalid("key_type", e))?),
        None => KeyChoice::Keep,
    };
    let default_profile = match &o.profile {
        Some(p) => check_profile("profile", p)?,
        None => None,
    };
    let mut notes = Vec::new();
    let mut certs = Vec::new();
    let mut dirs: BTreeMap<String, String> = BTreeMap::new();
    for (cert, entry) in &o.certs {
        let name = CertName::parse(cert).map_err(ConfigError::CertName)?;
        if cert.eq_ignore_ascii_case(RESERVED) {
            return Err(ConfigError::Reserved { cert: cert.clone() });
        }
        let (challenge, webroot, served_here) = match entry {
            CertEntry::Detailed(d) => (
                d.challenge.as_ref().or(o.challenge.as_ref()),
                d.webroot.as_ref().or(o.webroot.as_ref()),
                !d.webroot_hosts,
            ),
            CertEntry::Names(_) => (o.challenge.as_ref(), o.webroot.as_ref(), true),
        };
        let (raw_names, key_type, profile) = match entry {
            CertEntry::Names(n) => (n.clone(), default_key_type, default_profile.clone()),
            CertEntry::Detailed(d) => (
                d.names.clone(),
                match &d.key_type {
                    Some(k) => KeyChoice::Set(
                        k.parse::<KeyType>()
                            .map_err(|e| invalid(&format!("certs.{cert}.key_type"), e))?,
                    ),
                    None => default_key_type,
                },
                match &d.profile {
                    Some(p) => check_profile(&format!("certs.{cert}.profile"), p)?,
                    None => default_profile.clone(),
                },
            ),
        };
        if raw_names.is_empty() {
            return Err(ConfigError::NoNames { cert: cert.clone() });
        }
        let mut names: Vec<Identifier> = Vec::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut seen_raw: BTreeSet<String> = BTreeSet::new();
        for raw in &raw_names {
            let stripped = strip_port(raw.trim());
            let (id, normalised) =
                Identifier::parse(stripped).map_err(|source| ConfigError::Name {
                    cert: cert.clone(),
                    source,
                })?;
            if normalised {
                notes.push(format!("certs.{cert}: `{raw}` is used as `{id}`"));
            }
            if !seen.insert(id.as_str().to_owned()) {
                // The same name twice with different ports is one name, not an error.
                if stripped != raw.trim() && seen_raw.insert(raw.clone()) {
                    continue;
                }
                return Err(ConfigError::Duplicate {
                    cert: cert.clone(),
                    name: raw.clone(),
                });
            }
            seen_raw.insert(raw.clone());
            names.push(id);
        }
        if names.len() > MAX_NAMES {
            return Err(ConfigError::TooManyNames {
                cert: cert.clone(),
                count: names.len(),
            });
        }
        let challenge = check_challenge(cert, &names, challenge, webroot, served_here)?;
        let dir = names[0].dir_name();
        if let Some(other) = dirs.insert(dir.clone(), cert.clone()) {
            return Err(ConfigError::SameDirectory {
                a: other,
                b: cert.clone(),
                dir,
            });
        }
        certs.push(CertSpec {
            name,
            names,
            key_type,
            profile,
            dir,
            challenge,
        });
    }
    let self_sign = o.self_sign.unwrap_or(false);
    let directory = if self_sign {
        SELF_SIGN_DIRECTORY.to_owned()
    } else {
        let d = o.directory.clone().unwrap_or_else(|| LE_PRODUCTION.into());
        if !d.starts_with("https://") || d.contains(char::is_whitespace) {
            return Err(invalid(
                "directory",
                format!("`{d}` is not an https:// URL"),
            ));
        }
        d
    };
    let cert_root = PathBuf::from(
        o.cert_root
            .clone()
            .unwrap_or_else(|| "/etc/letsencrypt-certs".into()),
    );
    if !cert_root.is_absolute() {
        return Err(invalid(
            "cert_root",
            format!("`{}` is not an absolute path", cert_root.display()),
        ));
    }
    let gid = match &o.group {
        Some(g) if !g.is_empty() => Some(
            certbridge_core::fsutil::lookup_gid(g).map_err(|e| invalid("group", e.to_string()))?,
        ),
        _ => None,
    };
    let store = Store::new(cert_root, gid);
    for spec in &certs {
        check_made_names(&store, spec)?;
    }
    let ca_file = o
        .ca_file
        .as_ref()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    if let Some(p) = &ca_file {
        if !p.is_file() {
            return Err(invalid(
                "ca_file",
                format!("{} is not a readable file", p.display()),
            ));
        }
        // Read it now, as the client will: a file that is no PEM bundle is a configuration
        // error, found before any lock or state change, never a CA failure with backoff.
        if let Err(crate::http::RootsError::BadCaFile { reason, .. }) =
            crate::http::load_roots(Some(p))
        {
            return Err(invalid("ca_file", format!("{}: {reason}", p.display())));
        }
    }
    if let Some(e) = &o.account_email {
        if !e.contains('@') || e.contains(char::is_whitespace) || e.contains(['<', '>', ',']) {
            return Err(invalid(
                "account_email",
                format!("`{e}` is not an e-mail address"),
            ));
        }
    }
    if let Force::Certs(list) = &o.force {
        if let Some(unknown) = list.iter().find(|c| !o.certs.contains_key(*c)) {
            return Err(invalid(
                "force",
                format!("`{unknown}` is not a declared cert"),
            ));
        }
    }
    // Both bounded by the parser (at least 1 s, at most a day / an hour).
    let timeout = o.timeout.unwrap_or(default_timeout);
    let request_timeout = o.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
    // An empty string is "not given" (as for `ca_file`); one without the other is an error,
    // and so is a key that decodes to nothing: the client would refuse it only after the lock.
    let given = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    let eab = match (given(&o.eab_kid), given(&o.eab_hmac_key)) {
        (None, None) => None,
        (Some(kid), Some(key)) => {
            let bytes = crate::client::decode_eab_key(&key).map_err(|_| {
                invalid(
                    "eab_hmac_key",
                    "is not base64url, or decodes to nothing (its value is not shown)",
                )
            })?;
            Some((kid.trim().to_owned(), bytes))
        }
        (Some(_), None) => {
            return Err(invalid(
                "eab_hmac_key",
                "is missing or empty: eab_kid and eab_hmac_key go together",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                "eab_kid",
                "is missing or empty: eab_kid and eab_hmac_key go together",
            ))
        }
    };
    let log_file = match &o.log_file {
        Some(s) if s.is_empty() => None,
        Some(s) => Some(PathBuf::from(s)),
        None => Some(PathBuf::from("/var/log/certbridge/certbridge.log")),
    };
    Ok(Config {
        certs,
        directory,
        staging: o.staging.unwrap_or(false),
        self_sign,
        ca_file,
        account_email: o.account_email.clone(),
        terms_agreed: o.terms_agreed.unwrap_or(true),
        store,
        renew_days: o.renew_days,
        force: o.force.clone(),
        timeout: Duration::from_secs(timeout),
        request_timeout: Duration::from_secs(request_timeout),
        log_file,
        jitter_seed: o.jitter_seed.clone().unwrap_or_else(host_name),
        eab,
        proxy: o.proxy.clone().filter(|p| !p.trim().is_empty()),
        notes,
    })
}

/// Every directory and file the store makes for `spec` (with the temporary names made beside
/// them): the cert directory `<cert_root>/<dir>`, its service files (`<dir>.key`, `<dir>.cer`,
/// ...) and links, the same files in a generation directory, and under `.certbridge/` the
/// cert's metadata `<cert>.json` and its order's key. Checked against the file-name and path
/// limits before any lock, order or write: a name too long would otherwise fail only at
/// install, after the CA issued, leaving a partial generation behind.
pub(super) fn check_made_names(store: &Store, spec: &CertSpec) -> Result<(), ConfigError> {
    let cert = spec.name.as_str();
    let made = |dir_name: &str| -> Vec<(PathBuf, String)> {
        let cert_dir = store.cert_dir(dir_name);
        // The longest generation directory name `next_generation` can produce.
        let gen_dir = cert_dir.join(format!("gen-{}", u64::MAX));
        // The service files first: `<dir>.key` is what a long first name breaks first.
        let mut out = Vec::new();
        for d in [&cert_dir, &gen_dir] {
            for (name, _) in crate::store::service_files(dir_name) {
                out.push((d.clone(), name));
            }
        }
        for name in ["current", "previous"] {
            out.push((cert_dir.clone(), name.to_owned()));
        }
        out.push((cert_dir.clone(), format!("gen-{}", u64::MAX)));
        out.push((store.root.clone(), dir_name.to_owned()));
        out
    };
    let check = |dir_name: &str| -> Result<(), NameError> {
        made(dir_name)
            .iter()
            .try_for_each(|(parent, name)| certbridge_core::names::check_made_file(parent, name))
    };
    if let Err(source) = check(&spec.dir) {
        // The longest first name that would fit, for the hint.
        let fits = (1..spec.dir.len())
            .rev()
            .find(|n| check(&"a".repeat(*n)).is_ok());
        let or_root = match source {
            NameError::PathTooLong { .. } => " (or shorten `cert_root`)",
            _ => "",
        };
        let hint = match fits {
            Some(n) => format!(
                "the first name (without `*.`) names the directory and its `<dir>.key` and \
                 `<dir>.cer` files: put a name of at most {n} octets first{or_root}"
            ),
            None => "shorten `cert_root`".into(),
        };
        return Err(ConfigError::MadeName {
            cert: cert.into(),
            source,
            hint,
        });
    }
    for path in [store.meta_path(cert), store.pending_key_path(cert)] {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            continue;
        };
        certbridge_core::names::check_made_file(parent, &name.to_string_lossy()).map_err(
            |source| ConfigError::MadeName {
                cert: cert.into(),
                source,
                hint: "shorten `cert_root` or the cert name".into(),
            },
        )?;
    }
    Ok(())
}

/// A profile name as CAs spell them (`tlsserver`, `shortlived`); empty means the default.
pub(super) fn check_profile(option: &str, p: &str) -> Result<Option<String>, ConfigError> {
    let p = p.trim();
    if p.is_empty() {
        return Ok(None);
    }
    let ok = p.len() <= 64
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err(invalid(
            option,
            format!("`{p}` is not a profile name (letters, digits, `-`, `_`, `.`)"),
        ));
    }
    Ok(Some(p.to_owned()))
}

/// The cert's challenge, refused when the CA could not validate a name by it (wildcards need
/// dns-01, IP addresses http-01) or when http-01 has no absolute webroot.
pub(super) fn check_challenge(
    cert: &str,
    names: &[Identifier],
    challenge: Option<&String>,
    webroot: Option<&String>,
    served_here: bool,
) -> Result<Challenge, ConfigError> {
    let option = format!("certs.{cert}");
    let first = names.first().map(|n| n.as_str()).unwrap_or_default();
    let challenge = match challenge.map(|c| c.trim()) {
        None | Some("") | Some("dns-01") => Challenge::Dns01,
        Some("http-01") => {
            let webroot = webroot.map(|w| w.trim()).filter(|w| !w.is_empty());
            let Some(webroot) = webroot else {
                return Err(invalid(
                    &option,
                    format!("`{first}`: challenge http-01 needs `webroot` (the directory under which .well-known/acme-challenge/ is served)"),
                ));
            };
            certbridge_core::webroot::check_webroot_path(webroot)
                .map_err(|e| invalid(&option, format!("`{first}`: {e}")))?;
            Challenge::Http01 {
                webroot: webroot.to_owned(),
                served_here,
            }
        }
        Some(other) => {
            return Err(invalid(
                &format!("{option}.challenge"),
                format!("`{other}` is not a challenge: dns-01 or http-01"),
            ))
        }
    };
    for n in names {
        if n.is_wildcard() && challenge != Challenge::Dns01 {
            return Err(invalid(
                &option,
                format!("`{n}` is a wildcard, which the CA validates by dns-01 only: put it in a dns-01 cert"),
            ));
        }
        if n.ip().is_some() && challenge == Challenge::Dns01 {
            return Err(invalid(
                &option,
                format!("`{n}` is an IP address, which the CA validates by http-01 only (RFC 8738): set `challenge: http-01` and a `webroot`"),
            ));
        }
    }
    Ok(challenge)
}
