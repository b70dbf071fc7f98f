//! acme_finalize's http-01 pre-check: before the CA is asked to validate, fetch each token the
//! way the CA will (plain HTTP to the name on port 80 or `http_check_port`, following at most
//! 10 redirects, as Let's Encrypt does) and compare the body with the key authorization. A
//! failed validation costs the CA's failed-validation budget; a failed pre-check costs nothing.

use crate::store::HttpRecord;
use bytes::Bytes;
use hickory_resolver::TokioResolver;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Redirects followed at most (Let's Encrypt's limit).
const MAX_REDIRECTS: usize = 10;
/// Largest body read (a key authorization is under 300 bytes; the CA reads 128 KiB at most).
const MAX_BODY: usize = 128 * 1024;
/// Each fetch's deadline (the CA's own is 10 s per request).
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// How the pre-check reaches the names.
pub struct HttpCheck {
    port: u16,
    resolver: TokioResolver,
    /// The host this runs on (for messages).
    host: String,
}

impl HttpCheck {
    /// `server`: the DNS server to resolve names with (None: the system resolver).
    pub fn new(port: u16, server: Option<SocketAddr>) -> Result<HttpCheck, String> {
        let resolver = match server {
            Some(s) => crate::txtcheck::resolver(s)?,
            None => crate::http::build_resolver()?,
        };
        Ok(HttpCheck {
            port,
            resolver,
            host: crate::config::host_name(),
        })
    }

    /// Checks one cert's tokens; Err: the message naming host, cert, name, URL, what came back
    /// and the likely fix.
    pub async fn check(
        &self,
        cert: &str,
        tokens: &[HttpRecord],
        deadline: Instant,
    ) -> Result<(), String> {
        for t in tokens {
            let host = match t.name.parse::<IpAddr>() {
                Ok(IpAddr::V6(ip)) => format!("[{ip}]"),
                _ => t.name.clone(),
            };
            let url = format!(
                "http://{host}:{}/.well-known/acme-challenge/{}",
                self.port, t.token
            );
            let got = tokio::time::timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.fetch(&url),
            )
            .await
            .unwrap_or_else(|_| Err("no answer before the deadline".into()));
            let problem = match got {
                Ok(Fetched::Body(status, body)) => {
                    let text = String::from_utf8_lossy(&body);
                    if status == 200 && text.trim() == t.key_authorization {
                        continue;
                    }
                    let mut shown: String = text.trim().chars().take(120).collect();
                    if shown.is_empty() {
                        shown = "an empty body".into();
                    } else {
                        shown = format!("{shown:?}");
                    }
                    format!("HTTP {status} with {shown}, not the key authorization")
                }
                // The CA does not check the certificate of an https redirect target; neither
                // is it fetched here (a name that redirects to https is served by a web server
                // the user runs, not by the webroot alone).
                Ok(Fetched::Https(to)) => {
                    let _ = to;
                    continue;
                }
                Err(e) => e,
            };
            return Err(format!(
                "http-01 pre-check failed on host {} for cert {cert}, name {}: {url} gave {problem}; \
                 the CA was not asked to validate. Likely fixes: the load balancer does not route \
                 /.well-known/acme-challenge/ to the webroot host(s); the webroot `{}` is not the \
                 directory served for {} (check `webroot`, `webroot_hosts`); {} does not point at \
                 this host or its load balancer",
                self.host, t.name, t.webroot, t.name, t.name
            ));
        }
        Ok(())
    }

    /// GETs `url`, following http redirects.
    async fn fetch(&self, url: &str) -> Result<Fetched, String> {
        let mut url = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
            match uri.scheme_str() {
                Some("http") => {}
                Some("https") => return Ok(Fetched::Https(url)),
                _ => return Err(format!("a redirect to {url}, which the CA does not follow")),
            }
            let (status, location, body) = tokio::time::timeout(FETCH_TIMEOUT, self.get_once(&uri))
                .await
                .map_err(|_| format!("no answer from {url} within 10 s"))??;
            if (300..400).contains(&status) {
                let Some(loc) = location else {
                    return Ok(Fetched::Body(status, body));
                };
                url = resolve_location(&uri, &loc);
                continue;
            }
            return Ok(Fetched::Body(status, body));
        }
        Err(format!("more than {MAX_REDIRECTS} redirects"))
    }

    async fn get_once(&self, uri: &http::Uri) -> Result<(u16, Option<String>, Bytes), String> {
        let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
        let port = uri.port_u16().unwrap_or(80);
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => self
                .resolver
                .lookup_ip(format!("{host}."))
                .await
                .map_err(|e| format!("{host} does not resolve ({e})"))?
                .iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
        };
        let mut errors = Vec::new();
        let mut tcp = None;
        for a in &addrs {
            match tokio::net::TcpStream::connect(a).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => errors.push(format!("{a}: {e}")),
            }
        }
        let Some(tcp) = tcp else {
            return Err(format!("cannot connect ({})", errors.join("; ")));
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("HTTP error: {e}"))?;
        tokio::spawn(conn);
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let req = http::Request::get(path)
            .header(http::header::HOST, authority)
            .header(http::header::USER_AGENT, crate::http::USER_AGENT)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let rsp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP error: {e}"))?;
        let status = rsp.status().as_u16();
        let location = rsp
            .headers()
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = Limited::new(rsp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        Ok((status, location, body))
    }
}

enum Fetched {
    Body(u16, Bytes),
    /// Redirected to https (not followed further).
    Https(String),
}

/// An absolute Location as is; a path relative to the request's origin.
fn resolve_location(base: &http::Uri, loc: &str) -> String {
    if loc.contains("://") {
        return loc.to_owned();
    }
    let origin = format!(
        "{}://{}",
        base.scheme_str().unwrap_or("http"),
        base.authority().map(|a| a.as_str()).unwrap_or_default()
    );
    if loc.starts_with('/') {
        format!("{origin}{loc}")
    } else {
        let dir = base.path().rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        format!("{origin}{dir}/{loc}")
    }
}
