//! The Ansible binary-module protocol, written once: read the args file, parse options
//! strictly, reply with exactly one JSON object (also on panic), never echo a secret.
//!
//! A module binary's `main` is one call:
//! ```no_run
//! # use certbridge_core::protocol::{self, Reply, Failure, Invocation};
//! # #[derive(serde::Deserialize)] #[serde(deny_unknown_fields)] struct Opts { path: String }
//! fn main() {
//!     protocol::run("zone_render", &["tsig_secret"], |opts: Opts, inv: &Invocation| {
//!         Ok(Reply::unchanged())
//!     })
//! }
//! ```
//! Ansible ignores the exit code of binary modules, so `failed: true` is what fails a task;
//! we still exit 1 on failure for humans and scripts.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::io::Write;
use std::sync::OnceLock;

/// What Ansible told us about this call (the `_ansible_*` keys).
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    pub module_name: String,
    pub check_mode: bool,
    pub diff: bool,
    pub verbosity: u64,
    /// Task-level `no_log`: results are censored by the controller; we also keep logs terse.
    pub no_log: bool,
}

/// A successful result: `changed`, optional `diff` (only in diff mode), `warnings`, and fields.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub changed: bool,
    pub fields: Map<String, Value>,
    pub warnings: Vec<String>,
    pub diff: Option<Value>,
}

impl Reply {
    pub fn unchanged() -> Self {
        Self::default()
    }
    pub fn changed(changed: bool) -> Self {
        Self {
            changed,
            ..Self::default()
        }
    }
    /// Adds a result field (anything serializable; serialization errors become `null`).
    pub fn with(mut self, key: &str, value: impl serde::Serialize) -> Self {
        self.set(key, value);
        self
    }
    pub fn set(&mut self, key: &str, value: impl serde::Serialize) {
        self.fields.insert(
            key.to_owned(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
    }
    pub fn warn(&mut self, msg: impl Into<String>) {
        self.warnings.push(msg.into());
    }
}

/// A handled failure: `failed: true`, `msg`, plus any fields worth returning (partial results).
#[derive(Debug, Clone)]
pub struct Failure {
    pub msg: String,
    pub changed: bool,
    pub fields: Map<String, Value>,
    pub warnings: Vec<String>,
}

impl Failure {
    pub fn new(msg: impl Into<String>) -> Self {
        Self {
            msg: msg.into(),
            changed: false,
            fields: Map::new(),
            warnings: Vec::new(),
        }
    }
    pub fn with(mut self, key: &str, value: impl serde::Serialize) -> Self {
        self.fields.insert(
            key.to_owned(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }
    /// A failure after part of the work was done (e.g. some certs installed, one failed).
    pub fn from_reply(msg: impl Into<String>, reply: Reply) -> Self {
        Self {
            msg: msg.into(),
            changed: reply.changed,
            fields: reply.fields,
            warnings: reply.warnings,
        }
    }
}

impl<E: std::error::Error> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::new(e.to_string())
    }
}

/// The placeholder Ansible itself uses for `no_log` option values.
pub const REDACTED: &str = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER";

/// Secret values seen in this call's args; every string we print is scrubbed of them.
static SECRETS: OnceLock<Vec<String>> = OnceLock::new();

/// Parsed args, split into Ansible's keys and the user's options.
#[derive(Debug)]
pub struct Args {
    pub invocation: Invocation,
    pub options: Map<String, Value>,
}

/// Errors of the protocol layer itself (reading and parsing the args file, option types).
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("usage: {0} <args.json> (Ansible runs this binary as a module and passes the path of its arguments file)")]
    Usage(String),
    #[error("cannot read the arguments file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the arguments file {path} is not a JSON object: {detail}")]
    Malformed { path: String, detail: String },
    #[error("{0}")]
    Option(String),
}

/// Splits a raw args object into the `_ansible_*` keys and the user's options.
pub fn split_args(raw: Map<String, Value>) -> Args {
    let mut inv = Invocation::default();
    let mut options = Map::new();
    for (k, v) in raw {
        if let Some(key) = k.strip_prefix("_ansible_") {
            match key {
                "check_mode" => inv.check_mode = v.as_bool().unwrap_or(false),
                "diff" => inv.diff = v.as_bool().unwrap_or(false),
                "verbosity" => inv.verbosity = v.as_u64().unwrap_or(0),
                "no_log" => inv.no_log = v.as_bool().unwrap_or(false),
                "module_name" => inv.module_name = v.as_str().unwrap_or_default().to_owned(),
                _ => {} // every other _ansible_* key is accepted and ignored
            }
        } else {
            options.insert(k, v);
        }
    }
    Args {
        invocation: inv,
        options,
    }
}

/// Reads and splits the args file named by `argv[1]`.
pub fn read_args_file(path: &str) -> Result<Args, ArgsError> {
    let text = std::fs::read_to_string(path).map_err(|source| ArgsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let raw: Value = serde_json::from_str(&text).map_err(|e| ArgsError::Malformed {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    match raw {
        Value::Object(map) => Ok(split_args(map)),
        other => Err(ArgsError::Malformed {
            path: path.to_owned(),
            detail: format!("found {}", kind_of(&other)),
        }),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// Collects the string values of every key named in `secret_keys`, at any depth.
pub fn collect_secrets(value: &Value, secret_keys: &[&str], out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if secret_keys.contains(&k.as_str()) {
                    collect_strings(v, out);
                } else {
                    collect_secrets(v, secret_keys, out);
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|v| collect_secrets(v, secret_keys, out)),
        _ => {}
    }
}

fn collect_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) if !s.is_empty() => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// Returns `value` with every key in `secret_keys` (at any depth) replaced by [`REDACTED`].
pub fn redact(value: &Value, secret_keys: &[&str]) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if secret_keys.contains(&k.as_str()) && !v.is_null() {
                        Value::String(REDACTED.into())
                    } else {
                        redact(v, secret_keys)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| redact(v, secret_keys)).collect()),
        other => other.clone(),
    }
}

/// Replaces every occurrence of a registered secret in `text` (defence in depth: a secret must
/// never reach output even if an error message quoted it).
pub fn scrub(text: &str) -> String {
    let mut out = text.to_owned();
    if let Some(secrets) = SECRETS.get() {
        for s in secrets {
            // Very short "secrets" would mangle ordinary text; real ones are long.
            if s.len() >= 4 && out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "********");
            }
        }
    }
    out
}

fn scrub_value(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(scrub(&s)),
        Value::Array(items) => Value::Array(items.into_iter().map(scrub_value).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, scrub_value(v))).collect())
        }
        other => other,
    }
}

/// Registers secret strings (e.g. a TSIG secret read from a file) to scrub from all output.
/// The first registration wins; call it once, from [`run`].
fn register_secrets(secrets: Vec<String>) {
    let _ = SECRETS.set(secrets);
}

/// Deserializes the user's options into `T`, naming the option at fault:
/// unknown options list the valid ones, missing required options are named, type errors
/// give the option's path and the expected type.
pub fn parse_options<T: DeserializeOwned>(options: Map<String, Value>) -> Result<T, ArgsError> {
    let value = Value::Object(options);
    serde_path_to_error::deserialize::<_, T>(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner().to_string();
        ArgsError::Option(describe_option_error(&path, &inner))
    })
}

fn describe_option_error(path: &str, inner: &str) -> String {
    // serde's wording, reworded into Ansible's vocabulary.
    let at = |p: &str| {
        if p.is_empty() || p == "." {
            String::new()
        } else {
            format!(" in `{p}`")
        }
    };
    if let Some(rest) = inner.strip_prefix("unknown field ") {
        // "`foo`, expected one of `a`, `b`" | "`foo`, there are no fields"
        let (name, valid) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let valid = valid.trim_start_matches("one of ").replace('`', "");
        let parent = path.rsplit_once('.').map(|(p, _)| p).unwrap_or("");
        return format!(
            "unsupported option {name}{}; valid options: {valid}",
            at(parent)
        );
    }
    if let Some(rest) = inner.strip_prefix("missing field ") {
        return format!("missing required option {rest}{}", at(path));
    }
    if path.is_empty() || path == "." {
        inner.to_owned()
    } else {
        format!("option `{path}`: {inner}")
    }
}

/// Prints the one JSON object of this call and returns the exit code.
fn emit(mut obj: Map<String, Value>) -> i32 {
    let failed = obj.get("failed").and_then(Value::as_bool).unwrap_or(false);
    obj.entry("changed").or_insert(Value::Bool(false));
    let text = serde_json::to_string(&scrub_value(Value::Object(obj))).unwrap_or_else(|_| {
        r#"{"failed":true,"changed":false,"msg":"could not encode the module result"}"#.into()
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
    if failed {
        1
    } else {
        0
    }
}

/// The JSON object for a failure.
pub fn failure_object(f: Failure) -> Map<String, Value> {
    let mut obj = f.fields;
    obj.insert("failed".into(), Value::Bool(true));
    obj.insert("changed".into(), Value::Bool(f.changed));
    obj.insert("msg".into(), Value::String(f.msg));
    if !f.warnings.is_empty() {
        obj.insert("warnings".into(), Value::from(f.warnings));
    }
    obj
}

/// The JSON object for a success (`diff` only when Ansible asked for it).
pub fn reply_object(r: Reply, inv: &Invocation) -> Map<String, Value> {
    let mut obj = r.fields;
    obj.insert("changed".into(), Value::Bool(r.changed));
    obj.insert("failed".into(), Value::Bool(false));
    if !r.warnings.is_empty() {
        obj.insert("warnings".into(), Value::from(r.warnings));
    }
    if inv.diff {
        if let Some(d) = r.diff {
            obj.insert("diff".into(), d);
        }
    }
    obj
}

/// Runs a module: parses `argv[1]`, calls `body`, prints its reply or failure, exits.
/// `secret_keys` are option names (at any depth) whose values never appear in output;
/// `invocation.module_args` is returned with them replaced by [`REDACTED`].
pub fn run<T, F>(module: &'static str, secret_keys: &'static [&'static str], body: F) -> !
where
    T: DeserializeOwned,
    F: FnOnce(T, &Invocation) -> Result<Reply, Failure>,
{
    install_panic_hook(module);
    let code = match run_inner(module, secret_keys, body) {
        Ok(obj) | Err(obj) => emit(obj),
    };
    std::process::exit(code)
}

fn run_inner<T, F>(
    module: &str,
    secret_keys: &[&str],
    body: F,
) -> Result<Map<String, Value>, Map<String, Value>>
where
    T: DeserializeOwned,
    F: FnOnce(T, &Invocation) -> Result<Reply, Failure>,
{
    let argv: Vec<String> = std::env::args().collect();
    let path = match argv.as_slice() {
        [_, path] => path.clone(),
        _ => {
            return Err(failure_object(Failure::new(
                ArgsError::Usage(module.into()).to_string(),
            )))
        }
    };
    let args = read_args_file(&path).map_err(|e| failure_object(Failure::new(e.to_string())))?;
    let options_value = Value::Object(args.options.clone());
    let mut secrets = Vec::new();
    collect_secrets(&options_value, secret_keys, &mut secrets);
    register_secrets(secrets);
    let invocation = serde_json::json!({ "module_args": redact(&options_value, secret_keys) });
    let opts: T = parse_options(args.options).map_err(|e| {
        let mut obj = failure_object(Failure::new(e.to_string()));
        obj.insert("invocation".into(), invocation.clone());
        obj
    })?;
    let mut obj = match body(opts, &args.invocation) {
        Ok(reply) => reply_object(reply, &args.invocation),
        Err(f) => failure_object(f),
    };
    obj.insert("invocation".into(), invocation);
    if obj.get("failed") == Some(&Value::Bool(true)) {
        Err(obj)
    } else {
        Ok(obj)
    }
}

/// With `panic = "abort"` the hook is our last chance to print the one JSON object.
fn install_panic_hook(module: &'static str) {
    std::panic::set_hook(Box::new(move |info| {
        let msg =
            format!("{module}: internal error (a bug in certbridge, please report it): {info}");
        let _ = emit(failure_object(Failure::new(msg)));
    }));
}

/// Lenient deserializers for what Ansible users write: `"60"` for an integer, `"yes"` for a
/// boolean (AnsibleModule coerces these; binary modules get the raw JSON).
pub mod coerce {
    use serde::de::{self, Deserialize, Deserializer};
    use serde_json::Value;

    pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(b) => Ok(b),
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "yes" | "true" | "on" | "1" | "y" | "t" => Ok(true),
                "no" | "false" | "off" | "0" | "n" | "f" => Ok(false),
                _ => Err(de::Error::custom(format!(
                    "expected a boolean, found \"{s}\""
                ))),
            },
            Value::Number(n) if n.as_u64() == Some(0) || n.as_u64() == Some(1) => {
                Ok(n.as_u64() == Some(1))
            }
            other => Err(de::Error::custom(format!(
                "expected a boolean, found {}",
                super::kind_of(&other)
            ))),
        }
    }

    pub fn opt_boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        boolean(d).map(Some)
    }

    pub fn uint<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n.as_u64().ok_or_else(|| {
                de::Error::custom(format!("expected a non-negative integer, found {n}"))
            }),
            Value::String(s) => s.trim().parse::<u64>().map_err(|_| {
                de::Error::custom(format!("expected a non-negative integer, found \"{s}\""))
            }),
            other => Err(de::Error::custom(format!(
                "expected a non-negative integer, found {}",
                super::kind_of(&other)
            ))),
        }
    }

    pub fn opt_uint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        uint(d).map(Some)
    }

    /// A whole number of seconds in `MIN..=MAX` (an integer or a numeric string). Anything
    /// else (negative, fractional, too large for 64 bits, outside the range) is refused with
    /// the range, so no value can overflow a deadline later.
    pub fn seconds<'de, D, const MIN: u64, const MAX: u64>(d: D) -> Result<u64, D::Error>
    where
        D: Deserializer<'de>,
    {
        super::bounded(&Value::deserialize(d)?, MIN, MAX, "seconds").map_err(de::Error::custom)
    }

    /// [`seconds`], optional: absent or `null` is `None`.
    pub fn opt_seconds<'de, D, const MIN: u64, const MAX: u64>(
        d: D,
    ) -> Result<Option<u64>, D::Error>
    where
        D: Deserializer<'de>,
    {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            v => super::bounded(&v, MIN, MAX, "seconds")
                .map(Some)
                .map_err(de::Error::custom),
        }
    }

    /// A whole number of days in `MIN..=MAX`, optional (see [`seconds`]).
    pub fn opt_days<'de, D, const MIN: u64, const MAX: u64>(d: D) -> Result<Option<u64>, D::Error>
    where
        D: Deserializer<'de>,
    {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            v => super::bounded(&v, MIN, MAX, "days")
                .map(Some)
                .map_err(de::Error::custom),
        }
    }

    /// A file mode (see [`super::parse_mode`]), optional: absent or `null` is `None`.
    pub fn opt_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            v => super::parse_mode(&v).map(Some).map_err(de::Error::custom),
        }
    }
}

/// The allowed range of every duration option of the four modules, in one place (the module
/// docs quote them). Each bound keeps `Instant::now() + value` and `days * 86400` far from
/// overflowing, and is far beyond any sensible setting.
pub mod limits {
    /// One day: the most any whole-call deadline or wait may be (`timeout` of every module,
    /// acme_finalize's `dns_check_timeout`, zone_render's `lock_timeout`).
    pub const DAY: u64 = 86_400;
    /// One hour: the most `request_timeout` (one HTTP request to the CA) may be.
    pub const HOUR: u64 = 3_600;
    /// 365 days: the most an age or interval may be (`pending_max_age`, `ari_interval`,
    /// acme_txt_publish's `keep_seconds`).
    pub const YEAR: u64 = 365 * DAY;
    /// Ten years, in days: the most `renew_days` may be (values of half a certificate's
    /// lifetime or more are ignored with a warning anyway).
    pub const RENEW_DAYS: u64 = 3_650;
}

/// "86400 (1 day)": a bound in seconds, with a human reading when it is whole days or hours.
fn human(n: u64, unit: &str) -> String {
    if unit != "seconds" || n < 3600 {
        return n.to_string();
    }
    let (count, what) = if n.is_multiple_of(86_400) {
        (n / 86_400, "day")
    } else if n.is_multiple_of(3600) {
        (n / 3600, "hour")
    } else {
        return n.to_string();
    };
    let s = if count == 1 { "" } else { "s" };
    format!("{n} ({count} {what}{s})")
}

/// Checks an integer option (a number or a numeric string) against `min..=max`; the error
/// states the range and the unit. Serde's path names the option.
pub fn bounded(v: &Value, min: u64, max: u64, unit: &str) -> Result<u64, String> {
    let range = format!(
        "expected a whole number of {unit} from {min} to {}",
        human(max, unit)
    );
    let n = match v {
        Value::Number(n) => n.as_u64().ok_or_else(|| format!("{range}, found {n}"))?,
        Value::String(s) => {
            let t = s.trim();
            match t.parse::<u64>() {
                Ok(n) => n,
                // All digits, but more than 64 bits hold: out of range rather than malformed.
                Err(_) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => {
                    return Err(format!("{range}, found {t}"))
                }
                Err(_) => return Err(format!("{range}, found \"{s}\"")),
            }
        }
        other => return Err(format!("{range}, found {}", kind_of(other))),
    };
    if n < min || n > max {
        return Err(format!("{range}, found {n}"));
    }
    Ok(n)
}

/// Set-user-ID, set-group-ID and sticky bits.
const SPECIAL_BITS: u32 = 0o7000;

/// Parses a file mode the way Ansible's `file` module reads `mode`, and refuses what no file
/// of ours may have. The one parser of every `mode` option (zone_render, acme_txt_publish's
/// zonefile zones).
///
/// - A string is octal: `"0644"`, `"644"`, `"0o644"`.
/// - A number is taken as the already-converted value, as Ansible takes it: YAML's unquoted
///   `0644` arrives as 420 and means 0644. A number without the leading zero (`644`) is
///   decimal to YAML and to Ansible alike (644 = 0o1204, sticky and odd bits); every number
///   above 0o777 (511) is refused, and when its digits read as an octal mode the message
///   suggests the quoted string (`"0644"`). Numbers up to 511 cannot be told from converted
///   ones and are taken as given (an unquoted `400` is 0o620, as with Ansible).
/// - Set-user-ID, set-group-ID and sticky bits (04000, 02000, 01000) are refused: zone, key
///   and certificate files are data, never programs or shared directories.
/// - Symbolic modes (`u=rw,g=r`) are not supported.
pub fn parse_mode(v: &Value) -> Result<u32, String> {
    const SPECIAL: &str = "set-user-ID, set-group-ID and sticky bits (04000, 02000, 01000) \
                           are refused: the file is data, not a program or a directory";
    match v {
        Value::Number(n) => {
            let Some(m) = n.as_u64() else {
                return Err(format!(
                    "{n} is not a file mode: give an octal string like \"0644\""
                ));
            };
            if m <= 0o777 {
                return Ok(m as u32);
            }
            let digits = m.to_string();
            match u32::from_str_radix(&digits, 8) {
                // `mode: 644` unquoted: what was meant is almost surely 0644.
                Ok(octal) if octal <= 0o777 => Err(format!(
                    "{m} is a decimal number (mode 0o{m:o}, as Ansible reads a number): \
                     quote the octal mode, \"0{digits}\""
                )),
                _ if m <= 0o7777 => Err(format!("{m} is mode 0o{m:o}: {SPECIAL}")),
                _ => Err(format!(
                    "{m} is not a file mode: give an octal string like \"0644\""
                )),
            }
        }
        Value::String(s) => {
            let t = s.trim();
            let digits = t.strip_prefix("0o").unwrap_or(t);
            if digits.is_empty()
                || digits.len() > 5
                || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
            {
                return Err(format!(
                    "`{s}` is not an octal mode like \"0644\" (symbolic modes are not supported)"
                ));
            }
            let m = u32::from_str_radix(digits, 8).map_err(|e| e.to_string())?;
            if m > 0o7777 {
                return Err(format!("`{s}` is above 07777"));
            }
            if m & SPECIAL_BITS != 0 {
                return Err(format!("`{s}`: {SPECIAL}"));
            }
            Ok(m)
        }
        other => Err(format!(
            "expected an octal string like \"0644\", found {}",
            kind_of(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Opts {
        path: String,
        #[serde(default, deserialize_with = "coerce::opt_uint")]
        ttl: Option<u64>,
        #[serde(default)]
        zones: Vec<Zone>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Zone {
        origin: String,
    }

    fn parse(v: Value) -> Result<Opts, String> {
        let Value::Object(m) = v else { panic!() };
        parse_options::<Opts>(split_args(m).options).map_err(|e| e.to_string())
    }

    #[test]
    fn unknown_option_is_named_with_valid_ones() {
        let e = parse(json!({"path": "x", "colour": 1})).unwrap_err();
        assert!(e.contains("unsupported option `colour`"), "{e}");
        assert!(e.contains("path, ttl, zones"), "{e}");
    }

    #[test]
    fn nested_unknown_option_names_its_parent() {
        let e = parse(json!({"path": "x", "zones": [{"origin": "a", "bad": 1}]})).unwrap_err();
        assert!(e.contains("unsupported option `bad` in `zones[0]`"), "{e}");
    }

    #[test]
    fn missing_required_option_is_named() {
        let e = parse(json!({"ttl": 5})).unwrap_err();
        assert_eq!(e, "missing required option `path`");
    }

    #[test]
    fn wrong_type_names_option_and_expected_type() {
        let e = parse(json!({"path": "x", "ttl": "soon"})).unwrap_err();
        assert!(e.starts_with("option `ttl`:"), "{e}");
        assert!(e.contains("non-negative integer"), "{e}");
        let e = parse(json!({"path": ["x"]})).unwrap_err();
        assert!(
            e.starts_with("option `path`:") && e.contains("expected a string"),
            "{e}"
        );
    }

    #[test]
    fn ansible_keys_are_split_off() {
        let Value::Object(m) = json!({"path": "x", "_ansible_check_mode": true, "_ansible_diff": true, "_ansible_new_thing": 1})
        else {
            panic!()
        };
        let a = split_args(m);
        assert!(a.invocation.check_mode && a.invocation.diff);
        assert_eq!(a.options.len(), 1);
    }

    #[test]
    fn strings_coerce_like_ansible() {
        let o = parse(json!({"path": "x", "ttl": "60"})).unwrap();
        assert_eq!(o.ttl, Some(60));
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Durations {
        #[serde(
            default,
            deserialize_with = "coerce::opt_seconds::<_, 1, { limits::DAY }>"
        )]
        timeout: Option<u64>,
        #[serde(
            default,
            deserialize_with = "coerce::opt_days::<_, 0, { limits::RENEW_DAYS }>"
        )]
        days: Option<u64>,
    }

    fn durations(v: Value) -> Result<Durations, String> {
        let Value::Object(m) = v else { panic!() };
        parse_options::<Durations>(m).map_err(|e| e.to_string())
    }

    #[test]
    fn durations_are_bounded_naming_option_and_range() {
        let d = durations(json!({"timeout": "60", "days": 30})).unwrap();
        assert_eq!((d.timeout, d.days), (Some(60), Some(30)));
        let d = durations(json!({"timeout": null})).unwrap();
        assert_eq!(d.timeout, None);
        let range = "expected a whole number of seconds from 1 to 86400 (1 day)";
        for bad in [
            json!(18446744073709551615u64),
            json!("18446744073709551615"),
            json!("99999999999999999999999"),
            json!(1e30),
            json!(0),
            json!(86401),
            json!(-1),
            json!(1.5),
            json!("soon"),
            json!([60]),
        ] {
            let e = durations(json!({ "timeout": bad })).unwrap_err();
            assert!(
                e.starts_with("option `timeout`: ") && e.contains(range),
                "{bad}: {e}"
            );
        }
        let e = durations(json!({"days": 3651})).unwrap_err();
        assert!(
            e.contains("option `days`: expected a whole number of days from 0 to 3650, found 3651"),
            "{e}"
        );
    }

    #[test]
    fn modes_read_like_ansible_and_refuse_special_bits() {
        for (v, want) in [
            (json!("0644"), 0o644),
            (json!("644"), 0o644),
            (json!(" 0o600 "), 0o600),
            (json!("0"), 0),
            (json!(420), 0o644),
            (json!(384), 0o600),
            (json!(0), 0),
        ] {
            assert_eq!(parse_mode(&v), Ok(want), "{v}");
        }
        for (v, want) in [
            (json!(644), "quote the octal mode, \"0644\""),
            (json!(600), "\"0600\""),
            (json!(2468), "mode 0o4644: set-user-ID"),
            (json!("4755"), "set-user-ID"),
            (json!("2750"), "set-group-ID"),
            (json!("1777"), "sticky"),
            (json!("17777"), "above 07777"),
            (json!("u=rw,g=r"), "symbolic modes are not supported"),
            (json!("0999"), "not an octal mode"),
            (json!(-1), "not a file mode"),
            (json!(99999), "not a file mode"),
            (json!(true), "found a boolean"),
        ] {
            let e = parse_mode(&v).unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn redaction_and_collection_work_at_any_depth() {
        let v = json!({"zones": [{"tsig_secret": "c2VjcmV0c2VjcmV0", "origin": "a"}]});
        let r = redact(&v, &["tsig_secret"]);
        assert_eq!(r["zones"][0]["tsig_secret"], REDACTED);
        assert_eq!(r["zones"][0]["origin"], "a");
        let mut s = Vec::new();
        collect_secrets(&v, &["tsig_secret"], &mut s);
        assert_eq!(s, vec!["c2VjcmV0c2VjcmV0".to_string()]);
    }
}
