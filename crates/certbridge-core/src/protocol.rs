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
