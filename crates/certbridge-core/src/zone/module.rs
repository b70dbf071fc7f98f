//! The zone_render module: its options and the module entry point.

use super::*;

pub(super) fn nullable_uint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => coerce::uint(v).map(Some).map_err(serde::de::Error::custom),
    }
}

pub(super) fn string_like<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(serde::de::Error::custom("expected a string")),
    }
}

pub(super) fn validate_option<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    use serde::de::Error;
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Validator::parse_command(&s)
            .map(|v| Some(v.argv))
            .map_err(|e| D::Error::custom(e.to_string())),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(D::Error::custom(
                    "expected a command string or a list of strings",
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(D::Error::custom(
            "expected a command string or a list of strings",
        )),
    }
}

/// Parses a file mode with the modules' one mode parser ([`crate::protocol::parse_mode`]:
/// octal strings, numbers as Ansible takes them, no set-id or sticky bits).
pub fn parse_mode(v: &Value) -> Result<u32, ZoneError> {
    crate::protocol::parse_mode(v).map_err(ZoneError::BadMode)
}

/// The `soa` option.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoaOptions {
    #[serde(default)]
    pub mname: Option<DomainName>,
    #[serde(default)]
    pub rname: Option<String>,
    #[serde(default, deserialize_with = "nullable_uint")]
    pub refresh: Option<u64>,
    #[serde(default, deserialize_with = "nullable_uint")]
    pub retry: Option<u64>,
    #[serde(default, deserialize_with = "nullable_uint")]
    pub expire: Option<u64>,
    #[serde(default, deserialize_with = "nullable_uint")]
    pub minimum: Option<u64>,
}

/// One entry of the `records` option.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordOptions {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    #[serde(deserialize_with = "string_like")]
    pub value: String,
    #[serde(default, deserialize_with = "nullable_uint")]
    pub ttl: Option<u64>,
}

/// The `zone_render` module's options (see `modules/zone_render.yml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneRenderOptions {
    pub path: PathBuf,
    pub origin: DomainName,
    pub ns: Vec<DomainName>,
    #[serde(default, deserialize_with = "nullable_uint")]
    pub ttl: Option<u64>,
    #[serde(default)]
    pub soa: Option<SoaOptions>,
    #[serde(default)]
    pub records: Option<Vec<RecordOptions>>,
    #[serde(default, deserialize_with = "validate_option")]
    pub validate: Option<Vec<String>>,
    #[serde(default, deserialize_with = "coerce::opt_mode")]
    pub mode: Option<u32>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    /// Seconds to wait for the zone's lock (0 to one day).
    #[serde(default, deserialize_with = "coerce::opt_seconds::<_, 0, DAY>")]
    pub lock_timeout: Option<u64>,
    #[serde(default, deserialize_with = "coerce::opt_boolean")]
    pub follow_symlink: Option<bool>,
}

impl ZoneRenderOptions {
    /// Turns the options into a zone, records and write options; every input error is found
    /// here, before the zone file is touched.
    pub fn into_request(
        self,
        check_mode: bool,
    ) -> Result<(ZoneSpec, Vec<Record>, WriteOptions), ZoneError> {
        if !self.path.is_absolute() {
            return Err(ZoneError::RelativePath(self.path));
        }
        // The zone file, its lock and its temp file are made beside it: fit them now.
        if let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) {
            crate::names::check_made_file(dir, &name.to_string_lossy()).map_err(|source| {
                ZoneError::BadName {
                    what: "path".into(),
                    source,
                }
            })?;
        }
        let mut spec = ZoneSpec::new(self.origin, self.ns);
        if let Some(ttl) = self.ttl {
            spec.ttl = check_ttl(|| "ttl".into(), ttl)?;
        }
        if let Some(soa) = self.soa {
            spec.soa.mname = soa.mname;
            spec.soa.rname = soa.rname.as_deref().map(parse_rname).transpose()?;
            for (what, given, field) in [
                ("soa.refresh", soa.refresh, &mut spec.soa.refresh),
                ("soa.retry", soa.retry, &mut spec.soa.retry),
                ("soa.expire", soa.expire, &mut spec.soa.expire),
                ("soa.minimum", soa.minimum, &mut spec.soa.minimum),
            ] {
                if let Some(v) = given {
                    *field = check_ttl(|| what.into(), v)?;
                }
            }
        }
        spec.soa_names()?;
        let records = self
            .records
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(index, r)| {
                Record::parse(&r.name, &r.rtype, &r.value, r.ttl, &spec.origin).map_err(|e| {
                    ZoneError::InRecord {
                        index,
                        source: Box::new(e),
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let validate = self.validate.map(Validator::from_argv).transpose()?;
        let uid = self
            .owner
            .map(|name| {
                fsutil::lookup_uid(&name).map_err(|source| ZoneError::UnknownAccount {
                    what: "owner",
                    name,
                    source,
                })
            })
            .transpose()?;
        let gid = self
            .group
            .map(|name| {
                fsutil::lookup_gid(&name).map_err(|source| ZoneError::UnknownAccount {
                    what: "group",
                    name,
                    source,
                })
            })
            .transpose()?;
        let mut write = WriteOptions::new(self.path);
        write.validate = validate;
        write.attrs = FileAttrs {
            mode: self.mode,
            uid,
            gid,
        };
        write.check_mode = check_mode;
        if let Some(t) = self.lock_timeout {
            write.lock_timeout = Some(Duration::from_secs(t));
        }
        write.follow_symlink = self.follow_symlink.unwrap_or(false);
        Ok((spec, records, write))
    }
}

/// The `zone_render` module: options in, Ansible reply out.
pub fn zone_render(opts: ZoneRenderOptions, inv: &Invocation) -> Result<Reply, Failure> {
    let (spec, records, write) = opts.into_request(inv.check_mode)?;
    let path = write.path.display().to_string();
    let outcome = match apply(&spec, &records, &write) {
        Ok(o) => o,
        Err(ZoneError::ValidationFailed {
            argv,
            status,
            code,
            output,
        }) => {
            let err = ZoneError::ValidationFailed {
                argv: argv.clone(),
                status,
                code,
                output: output.clone(),
            };
            return Err(Failure::new(err.to_string())
                .with("path", &path)
                .with("validate_argv", argv)
                .with("validate_rc", code)
                .with("validate_output", output));
        }
        Err(e) => return Err(Failure::new(e.to_string()).with("path", &path)),
    };
    let mut reply = Reply::changed(outcome.changed)
        .with("serial", outcome.serial)
        .with("path", &path)
        .with("records", outcome.records);
    if outcome.duplicates_removed > 0 {
        reply.warn(format!(
            "{} duplicate record(s) removed",
            outcome.duplicates_removed
        ));
    }
    if inv.diff {
        reply.diff = Some(outcome.diff(&path));
    }
    Ok(reply)
}
