//! Which proxy a request takes. A proxy value (the `proxy` option or `https_proxy`) is checked
//! here and only then handed to hyper-util's [`Matcher`], which applies NO_PROXY and encodes
//! the credentials; the tunnel itself is hyper-util's `Tunnel` (see `connect.rs`).
//!
//! A proxy URL may carry credentials, so no error about a proxy value ever shows the value: a
//! value that parses is shown as `http://host:port`; one that does not is named by its scheme
//! (when it is a known one) and what is wrong with it, never by any part of the text.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use http::Uri;
use hyper_util::client::proxy::matcher::{Intercept, Matcher};

/// Port of a proxy URL that names none (Squid's).
const DEFAULT_PROXY_PORT: u16 = 3128;

/// Schemes a proxy URL may plausibly have: only these are ever repeated in an error.
const KNOWN_SCHEMES: &[&str] = &["http", "https", "socks4", "socks4a", "socks5", "socks5h"];

/// Why a proxy setting was rejected. Neither field holds any part of the value but its scheme.
#[derive(Debug)]
pub struct BadProxy {
    /// The value as it may be shown: `http://...`, or `...` without a known scheme.
    pub proxy: String,
    /// What is wrong, and where the value came from.
    pub reason: String,
}

/// A checked HTTP CONNECT proxy URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// `http://host:port`: what errors show (never the credentials).
    shown: String,
    /// `http://[user:password@]host:port` with the credentials percent-encoded, for the matcher
    /// only. Never printed.
    url: String,
    has_credentials: bool,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// A parse failure: the scheme to show (if known) and what is wrong.
struct Invalid {
    scheme: Option<&'static str>,
    what: String,
}

impl Proxy {
    /// Parses `[http://][user[:password]@]host[:port][/]` (host: a name, an IPv4 address or
    /// `[IPv6]`; port 3128 when none). Only plain-HTTP proxies (CONNECT tunnels to the HTTPS
    /// server) are supported. `source` names where the value came from, for the error.
    pub fn parse(input: &str, source: &str) -> Result<Proxy, BadProxy> {
        parse(input).map_err(|e| BadProxy {
            proxy: match e.scheme {
                Some(s) => format!("{s}://..."),
                None => "...".into(),
            },
            reason: format!(
                "{} (the value of {source} is not shown: it may hold credentials)",
                e.what
            ),
        })
    }

    pub fn has_credentials(&self) -> bool {
        self.has_credentials
    }
}

fn parse(input: &str) -> Result<Proxy, Invalid> {
    let s = input.trim();
    let (scheme, rest) = match s.split_once("://") {
        Some((scheme, rest)) => {
            let known = KNOWN_SCHEMES
                .iter()
                .copied()
                .find(|k| k.eq_ignore_ascii_case(scheme));
            match known {
                Some("http") => (Some("http"), rest),
                Some(other) => {
                    return Err(Invalid {
                        scheme: Some(other),
                        what: format!(
                            "scheme {other}:// is not supported; use an http:// (CONNECT) proxy"
                        ),
                    })
                }
                None => {
                    return Err(Invalid {
                        scheme: None,
                        what: "its scheme is not supported; use an http:// (CONNECT) proxy".into(),
                    })
                }
            }
        }
        None => (None, s),
    };
    let bad = |what: &str| Invalid {
        scheme,
        what: what.into(),
    };
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("it contains white space or control characters"));
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    if hostport.contains(['/', '?', '#']) {
        return Err(bad("a proxy URL has no path, query or fragment"));
    }
    if hostport.is_empty() {
        return Err(bad("it has no host"));
    }
    let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
        let (addr, after) = inner
            .split_once(']')
            .ok_or_else(|| bad("a [ without its ] (an IPv6 address is written [address]:port)"))?;
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err(bad("what is in [ ] is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| bad("unexpected characters after ]"))?,
            ),
        };
        (format!("[{}]", addr.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        };
        if port.is_some_and(|p| p.contains(':')) {
            return Err(bad(
                "the host is not a name or an IP address (credentials go before an @; an IPv6 \
                 address is written [address]:port)",
            ));
        }
        if !is_host_name(host) && host.parse::<IpAddr>().is_err() {
            return Err(bad("the host is not a name or an IP address"));
        }
        (host.trim_end_matches('.').to_ascii_lowercase(), port)
    };
    let port = match port {
        None => DEFAULT_PROXY_PORT,
        Some(p) => Some(p)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
    };
    let shown = format!("http://{host}:{port}");
    let userinfo = userinfo.filter(|u| !u.is_empty());
    let url = match userinfo {
        Some(u) => format!("http://{}@{host}:{port}", encode_userinfo(u)),
        None => shown.clone(),
    };
    let proxy = Proxy {
        shown,
        url,
        has_credentials: userinfo.is_some(),
    };
    // The matcher must read the value as checked here (it drops what it cannot parse).
    let probe = Matcher::builder().all(proxy.url.as_str()).build();
    let target = Uri::from_static("https://acme.invalid/");
    match probe.intercept(&target) {
        Some(i) if i.uri().to_string() == format!("{}/", proxy.shown) => Ok(proxy),
        _ => Err(bad("it is not a usable proxy URL")),
    }
}

/// A DNS name: dot-separated labels of letters, digits, `-` and `_` (a final dot allowed).
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `user[:password]` as the URL userinfo the matcher decodes: `%XX` kept, every other byte
/// outside RFC 3986 unreserved and sub-delims (an `@` in a password, say) percent-encoded.
fn encode_userinfo(userinfo: &str) -> String {
    let b = userinfo.as_bytes();
    let mut out = String::with_capacity(b.len());
    for (i, &c) in b.iter().enumerate() {
        let escaped = c == b'%'
            && b.len() > i + 2
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit();
        if escaped || c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// Which proxy (if any) a request takes: an explicit `proxy` option applies to every request;
/// otherwise `https_proxy`/`HTTPS_PROXY` unless `no_proxy`/`NO_PROXY` matches the host.
#[derive(Clone, Debug, Default)]
pub struct ProxyPolicy {
    proxy: Option<(Proxy, Arc<Matcher>)>,
}

impl ProxyPolicy {
    /// `explicit` is the `proxy` option; `env` looks up an environment variable (injectable so
    /// tests need not change the process environment). Lower-case variables win, as in curl.
    pub fn from_settings(
        explicit: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ProxyPolicy, BadProxy> {
        if let Some(value) = explicit {
            let proxy = Proxy::parse(value, "the `proxy` option")?;
            let matcher = Matcher::builder().all(proxy.url.as_str()).build();
            return Ok(ProxyPolicy {
                proxy: Some((proxy, Arc::new(matcher))),
            });
        }
        let pick = |names: &[&'static str]| {
            names
                .iter()
                .find_map(|n| env(n).filter(|v| !v.trim().is_empty()).map(|v| (*n, v)))
        };
        let Some((name, value)) = pick(&["https_proxy", "HTTPS_PROXY"]) else {
            return Ok(ProxyPolicy::default());
        };
        let proxy = Proxy::parse(&value, name)?;
        let no_proxy = pick(&["no_proxy", "NO_PROXY"]).map(|(_, v)| v);
        let matcher = Matcher::builder()
            .https(proxy.url.as_str())
            .no(no_proxy_rules(no_proxy.as_deref().unwrap_or_default()))
            .build();
        Ok(ProxyPolicy {
            proxy: Some((proxy, Arc::new(matcher))),
        })
    }

    /// The proxy for a request to `dst`, if any, with what the tunnel needs.
    pub fn intercept(&self, dst: &Uri) -> Option<(&Proxy, Intercept)> {
        let (proxy, matcher) = self.proxy.as_ref()?;
        // "ca.example." is "ca.example" to NO_PROXY.
        let host = dst.host()?;
        let intercept = match host.strip_suffix('.') {
            Some(bare) => {
                let scheme = dst.scheme_str().unwrap_or("https");
                matcher.intercept(&format!("{scheme}://{bare}/").parse().ok()?)
            }
            None => matcher.intercept(dst),
        }?;
        Some((proxy, intercept))
    }

    pub fn configured(&self) -> Option<&Proxy> {
        self.proxy.as_ref().map(|(p, _)| p)
    }
}

/// NO_PROXY entries in the matcher's (curl's) terms, also accepting what certbridge always
/// has: entries with a port (the port is ignored), `*.domain`, and a final dot.
fn no_proxy_rules(value: &str) -> String {
    value
        .split(',')
        .map(|e| {
            let e = e.trim();
            let e = match e.strip_prefix('[').and_then(|v| v.split_once(']')) {
                Some((v6, _)) => v6,
                // One colon: host:port (an IPv6 address has several).
                None if e.matches(':').count() == 1 => e.split(':').next().unwrap_or(e),
                None => e,
            };
            let e = e.trim_end_matches('.');
            match e.strip_prefix("*.") {
                Some(domain) => format!(".{domain}"),
                None => e.to_owned(),
            }
        })
        .filter(|e| !e.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn uri(host: &str) -> Uri {
        format!("https://{host}/dir").parse().unwrap()
    }

    fn proxied(p: &ProxyPolicy, host: &str) -> Option<String> {
        p.intercept(&uri(host)).map(|(p, _)| p.to_string())
    }

    #[test]
    fn proxy_urls_parse_and_hide_credentials() {
        let p = Proxy::parse("http://user:s%40cret@proxy.example:8080/", "t").unwrap();
        assert_eq!(p.to_string(), "http://proxy.example:8080");
        assert!(!format!("{p:?}").contains("cret"));
        let policy =
            ProxyPolicy::from_settings(Some("http://user:s@cret@Proxy.Example:8080"), &|_| None)
                .unwrap();
        let (shown, intercept) = policy.intercept(&uri("ca.test")).unwrap();
        assert_eq!(shown.to_string(), "http://proxy.example:8080");
        assert_eq!(intercept.uri(), "http://proxy.example:8080/");
        let expected = base64::engine::general_purpose::STANDARD.encode("user:s@cret");
        assert_eq!(
            intercept.basic_auth().unwrap(),
            format!("Basic {expected}").as_str()
        );
        assert!(!format!("{policy:?}").contains("cret"), "{policy:?}");
        // Unencoded special characters in the password reach the proxy as written.
        let secret = "p@ss:w/rd!$&'()*+,;=~%zz%41";
        let policy =
            ProxyPolicy::from_settings(Some(&format!("u:{secret}@proxy:1")), &|_| None).unwrap();
        let (_, intercept) = policy.intercept(&uri("ca.test")).unwrap();
        let expected =
            base64::engine::general_purpose::STANDARD.encode("u:p@ss:w/rd!$&'()*+,;=~%zzA");
        assert_eq!(
            intercept.basic_auth().unwrap(),
            format!("Basic {expected}").as_str()
        );
        for (value, shown) in [
            ("10.0.0.1:3128", "http://10.0.0.1:3128"),
            ("proxy", "http://proxy:3128"),
            ("http://[::1]:81", "http://[::1]:81"),
            ("HTTP://u:p@[::1]", "http://[::1]:3128"),
            ("user:pass@proxy.test:8", "http://proxy.test:8"),
        ] {
            assert_eq!(
                Proxy::parse(value, "t").unwrap().to_string(),
                shown,
                "{value}"
            );
        }
        let e = Proxy::parse("https://u:topsecret@proxy:443", "t").unwrap_err();
        assert!(e.reason.contains("http://"), "{}", e.reason);
        assert_eq!(e.proxy, "https://...");
        for bad in [
            "http://proxy:0",
            "http://proxy:8080/path",
            "http://proxy:65536",
            "http://pro xy:1",
            "http://",
            "ftp://proxy:21",
            "http://[::1",
            "http://[::1]x",
        ] {
            assert!(Proxy::parse(bad, "t").is_err(), "{bad}");
        }
    }

    /// Issue 13 hole 4: a malformed value never shows its userinfo, nor anything that could
    /// be it: only the scheme (when known) and what is wrong.
    #[test]
    fn malformed_proxy_values_never_show_their_text() {
        for value in [
            "http://user:PASSWORD:127.0.0.1:1",
            "http://user:PASSWORD",
            "user:PASSWORD@",
            "user:PASSWORD@proxy:PORT",
            "user:PASSWORD@[proxy]:1",
            "http://[user:PASSWORD]:1",
            "http://user:PASSWORD@proxy:1/path",
            "socks5://user:PASSWORD@proxy:1",
            "PASSWORD://proxy:1",
            "http://user:PASS WORD@proxy:1",
            "http://user:PASSWORD@proxy:99999",
            "http://user:PASSWORD@bad_host!:1",
        ] {
            let e = ProxyPolicy::from_settings(Some(value), &|_| None).unwrap_err();
            let text = format!("{} {} {e:?}", e.proxy, e.reason).to_ascii_lowercase();
            assert!(!text.contains("password"), "{value}: {text}");
            assert!(!text.contains("user"), "{value}: {text}");
            assert!(text.contains("`proxy` option"), "{value}: {text}");
            let env = env_of(&[("HTTPS_PROXY", value)]);
            let e = ProxyPolicy::from_settings(None, &env).unwrap_err();
            let text = format!("{} {}", e.proxy, e.reason).to_ascii_lowercase();
            assert!(!text.contains("password"), "{value}: {text}");
            assert!(text.contains("https_proxy"), "{value}: {text}");
        }
        let e = Proxy::parse("http://user:PASSWORD", "t").unwrap_err();
        assert_eq!(e.proxy, "http://...");
        assert!(
            e.reason.starts_with("the port is not a number"),
            "{}",
            e.reason
        );
        let e = Proxy::parse("http://user:PASSWORD:127.0.0.1:1", "t").unwrap_err();
        assert!(e.reason.contains("before an @"), "{}", e.reason);
        assert_eq!(
            Proxy::parse("PASSWORD://p:1", "t").unwrap_err().proxy,
            "..."
        );
    }

    #[test]
    fn env_proxy_honours_no_proxy() {
        let env = env_of(&[
            ("HTTPS_PROXY", "http://proxy:3128"),
            (
                "NO_PROXY",
                "localhost, .internal.test,example.org:443,10.0.0.0/8,*.wild.test,[::1]:443",
            ),
        ]);
        let p = ProxyPolicy::from_settings(None, &env).unwrap();
        assert!(proxied(&p, "acme-v02.api.letsencrypt.org").is_some());
        for direct in [
            "localhost",
            "ca.internal.test",
            "example.org",
            "www.example.org",
            "www.example.org.",
            "10.1.2.3",
            "a.wild.test",
            "[::1]",
        ] {
            assert!(proxied(&p, direct).is_none(), "{direct}");
        }
        assert!(proxied(&p, "notexample.org").is_some());
        assert!(proxied(&p, "11.1.2.3").is_some());
        assert!(proxied(&p, "[::2]").is_some());
        // Lower-case variables win, as in curl.
        let env = env_of(&[("https_proxy", "http://a:1"), ("HTTPS_PROXY", "http://b:2")]);
        let p = ProxyPolicy::from_settings(None, &env).unwrap();
        assert_eq!(proxied(&p, "x.test").unwrap(), "http://a:1");
        // NO_PROXY=* disables; no variable means no proxy; http_proxy and ALL_PROXY are not
        // read (only HTTPS is spoken to a CA).
        let env = env_of(&[("HTTPS_PROXY", "http://a:1"), ("no_proxy", "*")]);
        assert!(proxied(&ProxyPolicy::from_settings(None, &env).unwrap(), "x.test").is_none());
        let env = env_of(&[("http_proxy", "http://a:1"), ("ALL_PROXY", "http://b:1")]);
        let none = ProxyPolicy::from_settings(None, &env).unwrap();
        assert!(proxied(&none, "x.test").is_none());
        assert!(none.configured().is_none());
        // An explicit option applies to everything, NO_PROXY and https_proxy notwithstanding.
        let env = env_of(&[("NO_PROXY", "*"), ("https_proxy", "http://env:1")]);
        let p = ProxyPolicy::from_settings(Some("http://p:8"), &env).unwrap();
        assert_eq!(proxied(&p, "localhost").unwrap(), "http://p:8");
    }
}
