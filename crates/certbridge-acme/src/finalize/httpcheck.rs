//! acme_finalize's http-01 pre-check: before the CA is asked to validate, fetch each token the
//! way the CA will (plain HTTP to the name on port 80 or `http_check_port`, following at most
//! 10 redirects to http or https, as Let's Encrypt does, https without checking the certificate)
//! and compare the body with the key authorization. A failed validation costs the CA's
//! failed-validation budget; a failed pre-check costs nothing.

use crate::store::HttpRecord;
use bytes::Bytes;
use hickory_resolver::TokioResolver;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct as Dss, SignatureScheme};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
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
    /// TLS for https redirect targets: any certificate, as the CA's validator.
    tls: tokio_rustls::TlsConnector,
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
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        Ok(HttpCheck {
            port,
            resolver,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
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
                Ok((status, body)) => {
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

    /// GETs `url`, following redirects to http and https.
    async fn fetch(&self, url: &str) -> Result<(u16, Bytes), String> {
        let mut url = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
            match uri.scheme_str() {
                Some("http" | "https") => {}
                _ => return Err(format!("a redirect to {url}, which the CA does not follow")),
            }
            let (status, location, body) = tokio::time::timeout(FETCH_TIMEOUT, self.get_once(&uri))
                .await
                .map_err(|_| format!("no answer from {url} within 10 s"))??;
            if (300..400).contains(&status) {
                let Some(loc) = location else {
                    return Ok((status, body));
                };
                url = resolve_location(&uri, &loc);
                continue;
            }
            return Ok((status, body));
        }
        Err(format!("more than {MAX_REDIRECTS} redirects"))
    }

    async fn get_once(&self, uri: &http::Uri) -> Result<(u16, Option<String>, Bytes), String> {
        let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
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
        if !https {
            return get_over(TokioIo::new(tcp), uri, host).await;
        }
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{host} is not a TLS server name ({e})"))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake failed ({e})"))?;
        get_over(TokioIo::new(tls), uri, host).await
    }
}

/// One GET over an open connection: status, Location, body (at most [`MAX_BODY`]).
async fn get_over<IO>(
    io: IO,
    uri: &http::Uri,
    host: &str,
) -> Result<(u16, Option<String>, Bytes), String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
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

type Signature = Result<HandshakeSignatureValid, rustls::Error>;

/// Accepts any server certificate, as the CA's validator does for https redirect targets; the
/// handshake signatures are still verified against the certificate presented.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &Dss) -> Signature {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &Dss) -> Signature {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Answers every connection on `listener` with `response` after reading the request head;
    /// over TLS (a self-signed certificate no client trusts) when `tls` is set.
    async fn serve(
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        response: String,
    ) {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (tls, response) = (tls.clone(), response.clone());
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(tcp).await {
                            answer(s, &response).await;
                        }
                    }
                    None => answer(tcp, &response).await,
                }
            });
        }
    }

    async fn answer<S: AsyncReadExt + AsyncWriteExt + Unpin>(mut s: S, response: &str) {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = s.write_all(response.as_bytes()).await;
        let _ = s.shutdown().await;
    }

    fn body(text: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        )
    }

    fn redirect(to: &str) -> String {
        format!("HTTP/1.1 301 Moved\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    }

    /// A TLS server on 127.0.0.1 answering `response`; its port.
    async fn tls_server(response: String) -> u16 {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key.into())
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        tokio::spawn(serve(listener, Some(acceptor), response));
        port
    }

    /// A plain HTTP server on 127.0.0.1 answering `response`; its port.
    async fn http_server(response: String) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(serve(listener, None, response));
        port
    }

    async fn check_via(http_port: u16) -> Result<(), String> {
        // The name is an address: the resolver (a closed port) is never asked.
        let check = HttpCheck::new(http_port, Some("127.0.0.1:9".parse().unwrap())).unwrap();
        let token = HttpRecord {
            name: "127.0.0.1".into(),
            token: "tok".into(),
            key_authorization: "tok.thumb".into(),
            webroot: "/srv/www".into(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        check.check("web", &[token], deadline).await
    }

    /// A redirect to https is followed like the CA does (its certificate not checked) and the
    /// https body decides: the key authorization passes, another body or no TLS server fails.
    #[tokio::test]
    async fn https_redirect_targets_are_fetched_without_checking_the_certificate() {
        let path = "/.well-known/acme-challenge/tok";
        let good = tls_server(body("tok.thumb\n")).await;
        let to_good = http_server(redirect(&format!("https://127.0.0.1:{good}{path}"))).await;
        assert_eq!(check_via(to_good).await, Ok(()));

        let wrong = tls_server(body("something else")).await;
        let to_wrong = http_server(redirect(&format!("https://127.0.0.1:{wrong}{path}"))).await;
        let err = check_via(to_wrong).await.unwrap_err();
        assert!(err.contains("HTTP 200 with \"something else\""), "{err}");

        // Nothing listens there any more (the port of a dropped listener).
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let to_closed = http_server(redirect(&format!("https://127.0.0.1:{closed}{path}"))).await;
        let err = check_via(to_closed).await.unwrap_err();
        assert!(err.contains("cannot connect"), "{err}");

        // A plain HTTP server where https is expected (it answers without waiting for a
        // request): the handshake fails, named as such.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let _ = tcp.write_all(body("tok.thumb").as_bytes()).await;
            }
        });
        let to_plain = http_server(redirect(&format!("https://127.0.0.1:{plain}{path}"))).await;
        let err = check_via(to_plain).await.unwrap_err();
        assert!(err.contains("TLS handshake failed"), "{err}");
    }
}
