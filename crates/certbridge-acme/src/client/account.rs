//! Accounts: the account file per directory URL, registering and looking up an account.

use super::*;

/// What the account file holds (mode 0600: the credentials include the account key).
#[derive(Serialize, Deserialize)]
pub(super) struct AccountFileData {
    directory: String,
    account_url: String,
    email: Option<String>,
    credentials: AccountCredentials,
}

/// The stored account's public facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAccountInfo {
    pub account_url: String,
    pub email: Option<String>,
}

/// Accounts under `<cert_root>/.certbridge/accounts/<sha256 hex of the directory URL>.json`.
#[derive(Clone, Debug)]
pub struct AccountStore {
    dir: PathBuf,
}

/// `mailto:` contact for an email, checked for shape.
pub(super) fn contact_for(email: &str) -> Result<String, AcmeError> {
    let bad = |reason: &str| AcmeError::BadEmail {
        email: email.into(),
        reason: reason.into(),
    };
    let addr = email.strip_prefix("mailto:").unwrap_or(email);
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return Err(bad("not an email address (no @)"));
    };
    if local.is_empty() || domain.is_empty() || !domain.contains('.') {
        return Err(bad("not an email address"));
    }
    if addr
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ',')
    {
        return Err(bad("contains whitespace or a comma"));
    }
    Ok(format!("mailto:{addr}"))
}

impl AccountStore {
    /// The store of a cert root. No disk access.
    pub fn new(cert_root: &Path) -> AccountStore {
        AccountStore {
            dir: cert_root.join(".certbridge").join("accounts"),
        }
    }

    /// The account file of a directory URL (hash of its exact spelling).
    pub fn path_for(&self, directory: &str) -> PathBuf {
        let digest = ring::digest::digest(&ring::digest::SHA256, directory.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}.json"))
    }

    fn read(&self, directory: &str) -> Result<Option<AccountFileData>, AcmeError> {
        let path = self.path_for(directory);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(AcmeError::AccountFile {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        let data: AccountFileData =
            serde_json::from_str(&text).map_err(|e| AcmeError::AccountFile {
                path: path.clone(),
                // Only the position: serde_json's message can quote content, i.e. the key.
                reason: format!(
                    "not a certbridge account file (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            })?;
        if data.directory != directory {
            return Err(AcmeError::AccountFile {
                path,
                reason: format!("belongs to directory {:?}", data.directory),
            });
        }
        Ok(Some(data))
    }

    fn write(&self, data: &AccountFileData) -> Result<(), AcmeError> {
        let path = self.path_for(&data.directory);
        let fail = |e: io::Error| AcmeError::AccountFile {
            path: path.clone(),
            reason: e.to_string(),
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(fail)?;
        let json = serde_json::to_vec_pretty(data).map_err(|e| AcmeError::AccountFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let attrs = FileAttrs {
            mode: Some(0o600),
            ..FileAttrs::default()
        };
        atomic_write(&path, &json, &attrs, None).map_err(fail)
    }

    /// The stored account's URL and email, without any network access.
    pub fn stored(&self, directory: &str) -> Result<Option<StoredAccountInfo>, AcmeError> {
        Ok(self.read(directory)?.map(|d| StoredAccountInfo {
            account_url: d.account_url,
            email: d.email,
        }))
    }

    /// Opens the stored account for `cfg.directory` (checking the CA still knows it) or
    /// registers a new one and stores it. A changed `email` updates the contact at the CA and
    /// in the file; `None` leaves a stored contact alone. `eab` is (key id, raw HMAC key).
    pub async fn open_or_create(
        &self,
        cfg: &ClientConfig,
        email: Option<&str>,
        terms_agreed: bool,
        eab: Option<(&str, &[u8])>,
    ) -> Result<AcmeAccount, AcmeError> {
        self.open_or_create_with(cfg, || cfg.http_client(), email, terms_agreed, eab)
            .await
    }

    /// [`AccountStore::open_or_create`] over an HTTP client the caller may share with its other
    /// requests (one client, one connection pool per run); `http` is called after the
    /// account options and file are checked.
    pub(crate) async fn open_or_create_with(
        &self,
        cfg: &ClientConfig,
        http: impl FnOnce() -> Result<AcmeHttpClient, AcmeError>,
        email: Option<&str>,
        terms_agreed: bool,
        eab: Option<(&str, &[u8])>,
    ) -> Result<AcmeAccount, AcmeError> {
        cfg.validate()?;
        let contact = email.map(contact_for).transpose()?;
        if let Some((kid, key)) = eab {
            if kid.trim().is_empty() {
                return Err(AcmeError::BadEab {
                    reason: "eab_kid is empty".into(),
                });
            }
            if key.is_empty() {
                return Err(AcmeError::BadEab {
                    reason: "eab_hmac_key is empty".into(),
                });
            }
        }
        let stored = self.read(&cfg.directory)?;
        let http = http()?;
        let stats = http.stats();

        if let Some(data) = stored {
            if let Some(mut account) = existing(cfg, &http, &data).await? {
                let wanted = email.map(|e| e.strip_prefix("mailto:").unwrap_or(e).to_owned());
                if wanted.is_some() && wanted != data.email {
                    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
                    attempt(
                        &stats,
                        "update the account contact",
                        cfg.deadline,
                        async || Ok(account.account.update_contacts(&contacts).await?),
                    )
                    .await?;
                    self.write(&AccountFileData {
                        email: wanted,
                        ..data
                    })?;
                }
                account.stats = stats;
                return Ok(account);
            }
        }

        // No file, or the CA forgot the account (e.g. a restarted test CA): register.
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let new_account = NewAccount {
            contact: &contacts,
            terms_of_service_agreed: terms_agreed,
            only_return_existing: false,
        };
        let eab_key = eab.map(|(kid, key)| ExternalAccountKey::new(kid.to_owned(), key));
        let (account, credentials) = attempt(
            &stats,
            "register an ACME account",
            cfg.deadline,
            async || {
                let builder = Account::builder_with_http(Box::new(http.clone()));
                Ok(builder
                    .create(&new_account, cfg.directory.clone(), eab_key.as_ref())
                    .await?)
            },
        )
        .await?;
        let data = AccountFileData {
            directory: cfg.directory.clone(),
            account_url: account.id().to_owned(),
            email: email.map(|e| e.strip_prefix("mailto:").unwrap_or(e).to_owned()),
            credentials,
        };
        self.write(&data)?;
        Ok(AcmeAccount::wrap(account, cfg, stats))
    }

    /// Opens the stored account without registering or writing anything: `Ok(None)` when there
    /// is no account file or the CA no longer knows the account.
    pub async fn load_only(&self, cfg: &ClientConfig) -> Result<Option<AcmeAccount>, AcmeError> {
        cfg.validate()?;
        let Some(data) = self.read(&cfg.directory)? else {
            return Ok(None);
        };
        let http = cfg.http_client()?;
        existing(cfg, &http, &data).await
    }
}

/// Looks the stored account up at the CA (newAccount with onlyReturnExisting): `None` if the
/// CA does not know its key.
pub(super) async fn existing(
    cfg: &ClientConfig,
    http: &AcmeHttpClient,
    data: &AccountFileData,
) -> Result<Option<AcmeAccount>, AcmeError> {
    let stats = http.stats();
    let pkcs8 = data.credentials.private_key().secret_pkcs8_der().to_vec();
    let found = attempt(
        &stats,
        "look up the ACME account",
        cfg.deadline,
        async || {
            let key = Key::from_pkcs8_der(PrivatePkcs8KeyDer::from(pkcs8.clone()))?;
            let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.clone()));
            let builder = Account::builder_with_http(Box::new(http.clone()));
            Ok(builder.from_key((key, der), cfg.directory.clone()).await?)
        },
    )
    .await;
    match found {
        Ok((account, _)) => Ok(Some(AcmeAccount::wrap(account, cfg, stats))),
        Err(AcmeError::Problem { problem, .. }) if problem.is("accountDoesNotExist") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Decodes the `eab_hmac_key` option (base64url, padding optional, as CAs hand it out). The
/// error never shows the key.
pub fn decode_eab_key(encoded: &str) -> Result<Vec<u8>, AcmeError> {
    use base64::Engine;
    let trimmed = encoded.trim().trim_end_matches('=');
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .map_err(|_| AcmeError::BadEab {
            reason: "eab_hmac_key is not base64url".into(),
        })?;
    if key.is_empty() {
        return Err(AcmeError::BadEab {
            reason: "eab_hmac_key is empty".into(),
        });
    }
    Ok(key)
}
