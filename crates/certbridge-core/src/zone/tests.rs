//! Tests of the zone library: records, rendering, serials, read-back, writing, the module.

use super::*;

fn name(s: &str) -> DomainName {
    DomainName::parse(s).unwrap()
}

fn spec() -> ZoneSpec {
    ZoneSpec::new(name("acme.example.net"), vec![name("ns1.example.net.")])
}

fn rec(n: &str, t: &str, v: &str) -> Record {
    Record::parse(n, t, v, None, &name("acme.example.net")).unwrap()
}

/// 2026-03-14 15:09:26 UTC.
fn pi_day() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_773_500_966)
}

#[test]
fn renders_header_soa_ns_and_every_type() {
    let text = render(
        &spec(),
        &[
            rec("@", "TXT", "apex value"),
            rec("www", "A", "192.0.2.1"),
            rec("www", "AAAA", "2001:DB8:0:0::1"),
            rec("alias", "CNAME", "www.acme.example.net"),
            rec("sub", "NS", "ns.other.org."),
            rec("@", "CAA", "0 issue \"letsencrypt.org\""),
        ],
        2026031400,
    )
    .unwrap();
    let expected = "; certbridge zone file for acme.example.net. (rendered by certbridge; local edits are replaced)\n\
$ORIGIN acme.example.net.\n\
$TTL 60\n\
@\t60\tIN\tSOA\tns1.example.net. hostmaster.acme.example.net. 2026031400 3600 600 1209600 60\n\
@\t60\tIN\tNS\tns1.example.net.\n\
@\t60\tIN\tTXT\t\"apex value\"\n\
@\t60\tIN\tCAA\t0 issue \"letsencrypt.org\"\n\
alias\t60\tIN\tCNAME\twww.acme.example.net.\n\
sub\t60\tIN\tNS\tns.other.org.\n\
www\t60\tIN\tA\t192.0.2.1\n\
www\t60\tIN\tAAAA\t2001:db8::1\n";
    assert_eq!(text, expected);
}

#[test]
fn rendering_is_deterministic_and_removes_duplicates() {
    let a = vec![
        rec("b", "TXT", "2"),
        rec("a", "TXT", "1"),
        rec("b", "TXT", "1"),
        rec("a", "TXT", "1"),
        rec("x.a", "TXT", "1"),
    ];
    let mut b = a.clone();
    b.reverse();
    let ra = render_zone(&spec(), &a, 1).unwrap();
    let rb = render_zone(&spec(), &b, 1).unwrap();
    assert_eq!(ra.text, rb.text, "input order must not matter");
    assert_eq!(ra.records, 4);
    assert_eq!(ra.duplicates_removed, 1);
    // Owners in DNS order: a parent before its children, labels compared right to left.
    let owners: Vec<&str> = ra
        .text
        .lines()
        .skip(5)
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(owners, ["a", "x.a", "b", "b"]);
}

#[test]
fn duplicate_of_an_apex_ns_is_merged() {
    let r = render_zone(&spec(), &[rec("@", "NS", "ns1.example.net")], 1).unwrap();
    assert_eq!(r.text.matches("\tNS\t").count(), 1);
    assert_eq!(r.records, 1);
}

#[test]
fn injection_and_bad_values_are_refused_naming_the_record() {
    let origin = name("acme.example.net");
    let cases = [
        ("www", "TXT", "a\"b"),
        ("www", "TXT", "a\\b"),
        ("www", "TXT", "line\nbreak"),
        ("www", "TXT", "tab\there"),
        ("www", "TXT", "nul\0"),
        ("www", "A", "192.0.2.1 ; $INCLUDE /etc/passwd"),
        ("www", "A", "192.0.2.1\n$INCLUDE /etc/passwd"),
        ("www", "AAAA", "192.0.2.1"),
        ("www", "CNAME", "x.example.org. ; comment"),
        ("www", "CNAME", "x.example.org ( 1"),
        ("www", "NS", "$INCLUDE"),
        ("www", "CAA", "0 issue \"a\" ; x"),
        ("www", "CAA", "0 issue \"a\"b\""),
        ("www", "CAA", "256 issue \"a\""),
        ("www", "CAA", "0 is-sue \"a\""),
        ("www", "CAA", "0 issue a;b"),
        ("www", "CAA", "0 issue \"a\nb\""),
    ];
    for (n, t, v) in cases {
        let e = Record::parse(n, t, v, None, &origin).unwrap_err();
        assert!(
            matches!(e, ZoneError::BadValue { .. }),
            "{t} {v:?} gave {e:?}"
        );
        assert!(e.to_string().contains("record `www`"), "{e}");
    }
    for bad_name in ["$INCLUDE", "a;b", "a b", "(x", "a..b", "x.*", "-a"] {
        let e = Record::parse(bad_name, "TXT", "v", None, &origin).unwrap_err();
        assert!(matches!(e, ZoneError::BadName { .. }), "{bad_name}: {e:?}");
        assert!(e.to_string().contains(bad_name), "{e}");
    }
    let e = Record::parse("www.other.org.", "TXT", "v", None, &origin).unwrap_err();
    assert!(matches!(e, ZoneError::OutsideOrigin { .. }), "{e:?}");
    assert!(e.to_string().contains("www.other.org."), "{e}");
    let e = Record::parse("www", "MX", "10 mx", None, &origin).unwrap_err();
    assert!(e.to_string().contains("unsupported type `MX`"), "{e}");
    let e = Record::parse("www", "TXT", "v", Some(1 << 31), &origin).unwrap_err();
    assert!(matches!(e, ZoneError::BadTtl { .. }), "{e:?}");
}

#[test]
fn harmless_syntax_inside_quotes_is_kept_verbatim() {
    let v = "v=spf1 ; $INCLUDE /etc/passwd ( ) @ *";
    let text = render(&spec(), &[rec("www", "TXT", v)], 1).unwrap();
    assert!(text.contains(&format!("\"{v}\"")), "{text}");
    let back = parse_rendered(&text).unwrap();
    assert_eq!(back.txt().map(|t| t.1).collect::<Vec<_>>(), [v]);
}

#[test]
fn names_resolve_relative_apex_absolute_and_wildcard() {
    let origin = name("acme.example.net");
    assert_eq!(resolve_owner("@", &origin).unwrap(), origin);
    assert_eq!(
        resolve_owner("_acme-challenge.Web01", &origin)
            .unwrap()
            .as_str(),
        "_acme-challenge.web01.acme.example.net"
    );
    assert_eq!(
        resolve_owner("x.acme.example.net.", &origin)
            .unwrap()
            .as_str(),
        "x.acme.example.net"
    );
    assert_eq!(resolve_owner("acme.example.net.", &origin).unwrap(), origin);
    assert_eq!(
        resolve_owner("*", &origin).unwrap().as_str(),
        "*.acme.example.net"
    );
    assert!(resolve_owner("*.x", &origin).is_ok());
    assert!(resolve_owner("x.*", &origin).is_err());
    assert!(resolve_owner(&"a".repeat(64), &origin).is_err());
    let long = vec!["a".repeat(60); 4].join(".");
    assert!(matches!(
        resolve_owner(&long, &origin),
        Err(ZoneError::BadName {
            source: NameError::TooLong { .. },
            ..
        })
    ));
}

#[test]
fn long_txt_values_split_into_255_byte_strings() {
    let v = "x".repeat(600);
    let text = render(&spec(), &[rec("long", "TXT", &v)], 1).unwrap();
    let line = text.lines().find(|l| l.starts_with("long")).unwrap();
    let data = line.split('\t').nth(4).unwrap();
    assert_eq!(
        data,
        format!(
            "\"{}\" \"{}\" \"{}\"",
            "x".repeat(255),
            "x".repeat(255),
            "x".repeat(90)
        )
    );
    // Never inside a multi-byte character.
    let u = format!("{}é{}", "a".repeat(254), "b".repeat(10));
    let t = TxtValue::parse(&u).unwrap();
    assert_eq!(
        t.chunks(),
        [&"a".repeat(254), &format!("é{}", "b".repeat(10))]
    );
    assert_eq!(TxtValue::parse(&"x".repeat(255)).unwrap().chunks().len(), 1);
    assert_eq!(TxtValue::parse("").unwrap().chunks(), [""]);
    assert!(TxtValue::parse(&"x".repeat(MAX_TXT_BYTES + 1)).is_err());
}

#[test]
fn dates_are_utc_without_timezone_files() {
    assert_eq!(date_serial(UNIX_EPOCH), Some(1970010100));
    assert_eq!(date_serial(pi_day()), Some(2026031400));
    // Leap day and the last second of a year.
    assert_eq!(
        date_serial(UNIX_EPOCH + Duration::from_secs(951_782_400)),
        Some(2000022900)
    );
    assert_eq!(
        date_serial(UNIX_EPOCH + Duration::from_secs(1_798_761_599)),
        Some(2026123100)
    );
    assert_eq!(date_serial(UNIX_EPOCH - Duration::from_secs(1)), None);
}

#[test]
fn serials_only_go_forward() {
    let now = pi_day();
    assert_eq!(next_serial(None, now), 2026031400);
    assert_eq!(next_serial(Some(2026031300), now), 2026031400);
    assert_eq!(next_serial(Some(2026031400), now), 2026031401);
    assert_eq!(next_serial(Some(2026031499), now), 2026031500);
    assert_eq!(next_serial(Some(7), now), 2026031400);
    // A serial ahead of the date (e.g. unix-time serials) only grows by one.
    assert_eq!(next_serial(Some(4_000_000_000), now), 4_000_000_001);
    assert_eq!(next_serial(Some(u32::MAX), now), 0, "RFC 1982 wrap");
    assert_eq!(next_serial(None, UNIX_EPOCH - Duration::from_secs(5)), 1);
}

#[test]
fn serial_is_found_in_foreign_zone_files() {
    let multi = "$TTL 3600 ; default\n; SOA in a comment 99\n@ IN SOA ns1.x. root.x. (\n  2024010203 ; serial\n  3600 600 86400 60 )\nsoa IN A 192.0.2.1\n";
    assert_eq!(parse_serial(multi), Some(2024010203));
    assert_eq!(
        parse_serial("x. 60 IN TXT \"SOA a b 5\"\nx. 60 in soa a. b. 42 1 2 3 4\n"),
        Some(42)
    );
    assert_eq!(parse_serial("garbage\n"), None);
    assert_eq!(parse_serial(""), None);
    let ours = render(&spec(), &[], 2026031405).unwrap();
    assert_eq!(parse_serial(&ours), Some(2026031405));
}

#[test]
fn apply_writes_then_is_idempotent_then_bumps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zone");
    let mut opts = WriteOptions::new(&path);
    opts.now = pi_day();
    let first = apply(&spec(), &[rec("a", "TXT", "1")], &opts).unwrap();
    assert!(first.changed && first.before.is_none());
    assert_eq!(first.serial, 2026031400);
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    let again = apply(&spec(), &[rec("a", "TXT", "1")], &opts).unwrap();
    assert!(!again.changed);
    assert_eq!(again.serial, 2026031400);
    assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    let bumped = apply(&spec(), &[rec("a", "TXT", "2")], &opts).unwrap();
    assert!(bumped.changed);
    assert_eq!(bumped.serial, 2026031401);
    // The next day the date wins again.
    opts.now = pi_day() + Duration::from_secs(86_400);
    let next_day = apply(&spec(), &[rec("a", "TXT", "3")], &opts).unwrap();
    assert_eq!(next_day.serial, 2026031500);
    assert_eq!(read_serial(&path).unwrap(), Some(2026031500));
}

#[test]
fn apply_never_goes_back_from_a_foreign_file_and_check_mode_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zone");
    fs::write(&path, "@ IN SOA a. b. ( 2030010100 1 2 3 4 )\n").unwrap();
    let mut opts = WriteOptions::new(&path);
    opts.now = pi_day();
    opts.check_mode = true;
    let o = apply(&spec(), &[], &opts).unwrap();
    assert!(o.changed);
    assert_eq!(o.serial, 2030010101);
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "@ IN SOA a. b. ( 2030010100 1 2 3 4 )\n"
    );
    assert!(
        !lock_path(&path).exists(),
        "check mode must not even create the lock"
    );
    opts.check_mode = false;
    assert_eq!(apply(&spec(), &[], &opts).unwrap().serial, 2030010101);
}

#[test]
fn refused_validation_keeps_the_old_file_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zone");
    fs::write(&path, "old").unwrap();
    let mut opts = WriteOptions::new(&path);
    opts.validate =
        Some(Validator::parse_command("sh -c 'echo refusing \"$1\"; exit 3' sh %s").unwrap());
    let e = apply(&spec(), &[], &opts).unwrap_err();
    let ZoneError::ValidationFailed {
        argv, code, output, ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(*code, Some(3));
    assert!(
        output.starts_with("refusing ") && output.contains(".zone.tmp."),
        "{output}"
    );
    assert_eq!(argv[0], "sh");
    assert!(e.to_string().contains("refusing"));
    assert_eq!(fs::read_to_string(&path).unwrap(), "old");
}

#[test]
fn validators_are_argv_with_the_candidate_as_one_argument() {
    let v = Validator::parse_command("check --file=%s 'two words'").unwrap();
    assert_eq!(v.argv(), ["check", "--file=%s", "two words"]);
    assert!(matches!(
        Validator::parse_command("check 'open"),
        Err(ZoneError::BadValidate(_))
    ));
    assert!(matches!(
        Validator::parse_command("check file"),
        Err(ZoneError::BadValidate(_))
    ));
    assert!(matches!(
        Validator::from_argv(vec![]),
        Err(ZoneError::BadValidate(_))
    ));
    // A path with spaces and shell metacharacters stays one argument, unexpanded.
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("a b;$(touch x)");
    fs::write(&odd, "").unwrap();
    let v = Validator::from_argv(vec!["test".into(), "-f".into(), "%s".into()]).unwrap();
    v.run(&odd).unwrap();
    assert!(!dir.path().join("x").exists());
}

#[test]
fn published_times_round_trip_and_merge_to_the_earliest() {
    let origin = name("acme.example.net");
    let digest = "DRwHgzN8aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-";
    let records = vec![
        Record::txt(name("acme.example.net"), digest)
            .unwrap()
            .with_published(1_700_000_100),
        Record::txt(name("acme.example.net"), digest)
            .unwrap()
            .with_published(1_700_000_000),
        Record::txt(name("h1.example.org.acme.example.net"), &"y".repeat(300)).unwrap(),
        rec("www", "A", "192.0.2.7").with_ttl(300),
        rec("@", "CAA", "128 iodef \"mailto:x@example.org\""),
    ];
    let text = render(&spec(), &records, 9).unwrap();
    assert!(
        text.contains("\t; certbridge published=1700000000\n"),
        "{text}"
    );
    let back = parse_rendered(&text).unwrap();
    assert_eq!(back.origin, origin);
    assert_eq!(back.serial, 9);
    let txt: Vec<_> = back.txt().collect();
    assert_eq!(txt.len(), 2);
    assert_eq!(txt[0], (&origin, digest, Some(1_700_000_000)));
    assert_eq!(txt[1].1, "y".repeat(300));
    assert_eq!(txt[1].2, None);
    // Rendering what was read back gives the same file.
    assert_eq!(render(&spec(), &back.records, 9).unwrap(), text);
    // A comment that is not ours is ignored, never trusted.
    let edited = text.replace("published=1700000000", "published=soon");
    assert_eq!(
        parse_rendered(&edited).unwrap().txt().next().unwrap().2,
        None
    );
    assert!(matches!(
        parse_rendered("@ IN SOA a. b. 1 2 3 4 5\n"),
        Err(ZoneError::NotRendered)
    ));
    let broken = format!("{text}www\t60\tIN\tA\tnot-an-ip\n");
    assert!(
        matches!(
            parse_rendered(&broken),
            Err(ZoneError::Parse { line: 10, .. })
        ),
        "{:?}",
        parse_rendered(&broken)
    );
}

#[test]
fn zone_level_conflicts_are_refused() {
    let e = render(
        &spec(),
        &[rec("x", "CNAME", "y.org"), rec("x", "TXT", "v")],
        1,
    )
    .unwrap_err();
    assert!(matches!(e, ZoneError::CnameConflict { .. }), "{e:?}");
    let e = render(&spec(), &[rec("@", "CNAME", "y.org")], 1).unwrap_err();
    assert!(matches!(e, ZoneError::CnameConflict { .. }), "{e:?}");
    let e = render(
        &spec(),
        &[rec("x", "TXT", "a").with_ttl(5), rec("x", "TXT", "b")],
        1,
    )
    .unwrap_err();
    assert!(matches!(e, ZoneError::TtlMismatch { .. }), "{e:?}");
    let outside = Record::txt(name("other.org"), "v").unwrap();
    assert!(matches!(
        render(&spec(), &[outside], 1),
        Err(ZoneError::OutsideOrigin { .. })
    ));
    let no_ns = ZoneSpec::new(name("acme.example.net"), vec![]);
    assert!(matches!(
        render(&no_ns, &[], 1),
        Err(ZoneError::NoNameservers)
    ));
}

#[test]
fn soa_names_default_and_accept_mailboxes() {
    assert_eq!(
        parse_rname("hostmaster@example.org").unwrap().as_str(),
        "hostmaster.example.org"
    );
    assert_eq!(
        parse_rname("dns.example.org.").unwrap().as_str(),
        "dns.example.org"
    );
    assert!(parse_rname("first.last@example.org").is_err());
    let mut s = spec();
    s.soa.mname = Some(name("primary.example.net"));
    s.soa.rname = Some(name("dns.example.net"));
    s.soa.minimum = 30;
    let text = render(&s, &[], 5).unwrap();
    assert!(
        text.contains("SOA\tprimary.example.net. dns.example.net. 5 3600 600 1209600 30\n"),
        "{text}"
    );
}

#[test]
fn modes_parse_from_octal_strings_and_integers() {
    assert_eq!(parse_mode(&json!("0644")).unwrap(), 0o644);
    assert_eq!(parse_mode(&json!("640")).unwrap(), 0o640);
    assert_eq!(parse_mode(&json!(420)).unwrap(), 0o644);
    for bad in [
        json!("u=rw"),
        json!("0999"),
        json!("17777"),
        json!(true),
        json!(-1),
        json!(644),
        json!("4755"),
        json!("01777"),
    ] {
        assert!(parse_mode(&bad).is_err(), "{bad}");
    }
}

#[test]
fn options_bound_lock_timeout_and_refuse_setid_modes() {
    let parse = |extra: Value| {
        let mut v = json!({"path": "/tmp/z.zone", "origin": "a.test", "ns": ["ns1.a.test"]});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        let Value::Object(m) = v else { panic!() };
        crate::protocol::parse_options::<ZoneRenderOptions>(m).map_err(|e| e.to_string())
    };
    let e = parse(json!({"lock_timeout": 18446744073709551615u64})).unwrap_err();
    assert!(
        e.starts_with("option `lock_timeout`:") && e.contains("from 0 to 86400"),
        "{e}"
    );
    assert_eq!(
        parse(json!({"lock_timeout": "0"})).unwrap().lock_timeout,
        Some(0)
    );
    let e = parse(json!({"mode": 644})).unwrap_err();
    assert!(
        e.starts_with("option `mode`:") && e.contains("\"0644\""),
        "{e}"
    );
    let e = parse(json!({"mode": "4755"})).unwrap_err();
    assert!(e.contains("set-user-ID"), "{e}");
    assert_eq!(parse(json!({"mode": 420})).unwrap().mode, Some(0o644));
    assert_eq!(parse(json!({"mode": null})).unwrap().mode, None);
}

#[test]
fn diffs_are_capped() {
    let text: String = (0..1500).map(|i| format!("{i}\n")).collect();
    let capped = cap_lines(&text, DIFF_MAX_LINES);
    assert_eq!(capped.lines().count(), 1001);
    assert!(capped.ends_with("[500 more lines not shown]\n"));
    assert_eq!(cap_lines("a\nb\n", 10), "a\nb\n");
}
