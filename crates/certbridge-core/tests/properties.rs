//! Property tests (fuzzing on stable with proptest) of the three edges that take outside data:
//! option parsing, name validation and zone rendering. The default of 256 cases per property
//! keeps CI cheap; long runs set `PROPTEST_CASES` (e.g. `PROPTEST_CASES=100000 cargo test -p
//! certbridge-core --test properties`). A failing case is shrunk, and its seed is saved in
//! `properties.regressions` beside this file, which replays it first on every later run.

use certbridge_core::names::{CertName, DomainName, Identifier, TxtDigest};
use certbridge_core::protocol::{parse_options, split_args};
use certbridge_core::zone::{
    self, parse_rendered, render_zone, Record, ZoneRenderOptions, ZoneSpec,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Arbitrary JSON, up to a few levels deep, with the keys `zone_render` knows mixed in so the
/// parser gets past "unknown option" often.
fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("path".to_string()),
        Just("origin".to_string()),
        Just("ns".to_string()),
        Just("ttl".to_string()),
        Just("soa".to_string()),
        Just("records".to_string()),
        Just("name".to_string()),
        Just("type".to_string()),
        Just("value".to_string()),
        Just("validate".to_string()),
        Just("mode".to_string()),
        Just("_ansible_check_mode".to_string()),
        Just("_ansible_diff".to_string()),
        ".{0,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        "/[a-z/]{0,20}".prop_map(Value::String),
        "[0-7]{1,6}".prop_map(Value::String),
        "[a-z0-9.*_-]{0,30}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Name-like strings: mostly from the DNS alphabet (so many are accepted), plus anything.
fn arb_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9*_-]{0,12}(\\.[a-zA-Z0-9*_-]{0,12}){0,5}\\.?",
        1 => "[a-z]{1,63}(\\.[a-z0-9]{1,63}){1,5}",
        1 => ".{0,80}",
        1 => "\\PC{0,30}",
    ]
}

/// TXT-like values: printable text (with `;`, `$`, parentheses, spaces), long runs that need
/// splitting at 255 bytes, non-ASCII, and anything at all.
fn arb_txt() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[ -~]{0,80}",
        1 => "[ -~]{250,600}",
        1 => "\\PC{0,300}",
        1 => ".{0,40}",
        1 => "[a-zA-Z0-9_-]{43}",
    ]
}

fn zone_spec() -> ZoneSpec {
    ZoneSpec::new(
        DomainName::parse("acme.example.test").unwrap(),
        vec![DomainName::parse("ns1.acme.example.test").unwrap()],
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES overrides this default for long runs.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        failure_persistence: Some(Box::new(prop::test_runner::FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    /// Any JSON object is either parsed into options or refused with a message; never a panic.
    #[test]
    fn option_parsing_never_panics(v in arb_json()) {
        let map = match v {
            Value::Object(m) => m,
            other => {
                let mut m = Map::new();
                m.insert("records".into(), other);
                m
            }
        };
        let args = split_args(map);
        match parse_options::<ZoneRenderOptions>(args.options) {
            Ok(opts) => {
                // Accepted options go on to the edge checks, which must not panic either.
                let _ = opts.into_request(true);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// Name parsing never panics; accepted names are canonical (re-parse to themselves,
    /// lower-case, no trailing dot, at most 253 octets).
    #[test]
    fn names_parse_canonically(s in arb_name()) {
        if let Ok((id, _)) = Identifier::parse(&s) {
            let again = Identifier::parse(id.as_str());
            prop_assert_eq!(again, Ok((id.clone(), false)));
            prop_assert!(id.as_str().len() <= 253 && !id.as_str().ends_with('.'));
            prop_assert!(!id.as_str().contains('_'));
            prop_assert!(id.as_str().contains('.'));
            prop_assert!(!id.base().contains('*'));
            prop_assert_eq!(id.as_str(), id.as_str().to_ascii_lowercase());
        }
        if let Ok(d) = DomainName::parse(&s) {
            prop_assert_eq!(DomainName::parse(d.as_str()), Ok(d.clone()));
            prop_assert_eq!(DomainName::parse(&d.fqdn()), Ok(d.clone()));
            prop_assert!(d.as_str().len() <= 253);
            prop_assert!(d.as_str().split('.').all(|l| !l.is_empty() && l.len() <= 63));
        }
        if let Ok(c) = CertName::parse(&s) {
            prop_assert_eq!(CertName::parse(c.as_str()), Ok(c.clone()));
            prop_assert!(!c.as_str().contains('/'));
            prop_assert!(!c.as_str().starts_with('.'));
            prop_assert!(!c.as_str().is_empty() && c.as_str() != "..");
        }
        if let Ok(t) = TxtDigest::parse(&s) {
            prop_assert_eq!(TxtDigest::parse(t.as_str()), Ok(t.clone()));
        }
    }

    /// Cert names from the whole of Unicode: an accepted one is always one safe path component.
    #[test]
    fn cert_names_are_single_safe_components(s in "\\PC{0,20}|[./a-z]{0,6}") {
        if let Ok(c) = CertName::parse(&s) {
            let p = std::path::Path::new(c.as_str());
            prop_assert_eq!(p.components().count(), 1);
            prop_assert!(matches!(p.components().next(), Some(std::path::Component::Normal(_))));
            prop_assert!(!c.as_str().starts_with('.'));
        }
    }

    /// Accepted records render to a zone that parses back to the same records, re-renders to the
    /// same bytes, and has exactly one line per record: no value can add a line or a directive.
    #[test]
    fn rendered_zones_round_trip(
        txt in prop::collection::vec((arb_name(), arb_txt()), 0..12),
        addrs in prop::collection::vec(("[a-z]{1,8}", any::<[u8; 4]>()), 0..4),
        serial in any::<u32>(),
    ) {
        let spec = zone_spec();
        let mut records = Vec::new();
        for (name, value) in &txt {
            if let Ok(r) = Record::parse(name, "TXT", value, None, &spec.origin) {
                prop_assert_eq!(r.txt_value(), Some(value.as_str()));
                records.push(r);
            }
        }
        for (name, ip) in &addrs {
            let ip = std::net::Ipv4Addr::from(*ip).to_string();
            records.push(Record::parse(name, "A", &ip, None, &spec.origin).unwrap());
        }
        let Ok(rendered) = render_zone(&spec, &records, serial) else {
            // Only conflicts between records (e.g. a CNAME next to data) may be refused.
            return Ok(());
        };
        // Header, $ORIGIN, $TTL, SOA, the apex NS, then one line per distinct record.
        prop_assert_eq!(rendered.text.lines().count(), 4 + spec.ns.len() + rendered.records);
        prop_assert!(rendered.text.lines().skip(1).all(|l| !l.starts_with('$') || l.starts_with("$ORIGIN ") || l.starts_with("$TTL ")));
        prop_assert_eq!(rendered.text.matches("$INCLUDE").count(),
            records.iter().filter_map(|r| r.txt_value()).map(|v| v.matches("$INCLUDE").count()).sum::<usize>());
        let parsed = parse_rendered(&rendered.text).map_err(|e| TestCaseError::fail(format!("{e}\n{}", rendered.text)))?;
        prop_assert_eq!(parsed.serial, serial);
        prop_assert_eq!(&parsed.origin, &spec.origin);
        // Every accepted TXT value comes back exactly, at its owner.
        for r in &records {
            if let Some(v) = r.txt_value() {
                prop_assert!(parsed.txt().any(|(o, pv, _)| o == &r.owner && pv == v), "lost {:?} at {}", v, r.owner);
            }
        }
        let again = render_zone(&spec, &parsed.records, serial).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&again.text, &rendered.text);
        // Deterministic: the same records in reverse order give the same bytes.
        let mut reversed = records.clone();
        reversed.reverse();
        prop_assert_eq!(zone::render(&spec, &reversed, serial).unwrap(), rendered.text);
    }
}
