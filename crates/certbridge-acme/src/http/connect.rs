//! The TCP side of the HTTP client: names resolved in-process by hickory-resolver
//! (/etc/hosts, /etc/resolv.conf; a static glibc must never reach NSS), then a direct
//! connection, or hyper-util's CONNECT [`Tunnel`] through the proxy the policy picks.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hickory_resolver::config::ResolverConfig;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use http::Uri;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tower_service::Service;

use super::proxy::ProxyPolicy;

/// Longest wait for one address while other addresses of the host remain to be tried.
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// How much of a proxy's CONNECT answer is kept for the error message (its status line).
const TAP_LIMIT: usize = 256;

/// Why the connector could not open a stream (seen by callers only inside `HttpFailure`).
#[derive(Debug)]
pub enum ConnectFailure {
    Unreachable(String),
    /// `proxy` is the proxy as shown (`http://host:port`, never its credentials).
    Proxy {
        proxy: String,
        reason: String,
    },
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectFailure::Unreachable(r) => f.write_str(r),
            ConnectFailure::Proxy { proxy, reason } => write!(f, "proxy {proxy}: {reason}"),
        }
    }
}

impl StdError for ConnectFailure {}

type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<Stream>, ConnectFailure>> + Send>>;

/// The connector under hyper-rustls: direct, or tunnelled when the proxy policy says so.
#[derive(Clone)]
pub struct Connector {
    direct: Direct,
    proxy: ProxyPolicy,
}

impl Connector {
    pub fn new(proxy: ProxyPolicy) -> Connector {
        Connector {
            direct: Direct {
                resolver: Arc::new(OnceLock::new()),
                tap: None,
            },
            proxy,
        }
    }
}

impl Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = ConnectFailure;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let Some((proxy, intercept)) = self.proxy.intercept(&dst) else {
            return self.direct.call(dst);
        };
        let shown = proxy.to_string();
        let has_credentials = proxy.has_credentials();
        let head = Arc::new(Mutex::new(Vec::new()));
        let through = Direct {
            tap: Some(head.clone()),
            ..self.direct.clone()
        };
        let mut tunnel = Tunnel::new(intercept.uri().clone(), through);
        if let Some(auth) = intercept.basic_auth() {
            tunnel = tunnel.with_auth(auth.clone());
        }
        Box::pin(async move {
            let authority = match dst.port_u16() {
                Some(port) => format!("{}:{port}", dst.host().unwrap_or_default()),
                None => format!("{}:443", dst.host().unwrap_or_default()),
            };
            let opened = match std::future::poll_fn(|cx| tunnel.poll_ready(cx)).await {
                Ok(()) => tunnel.call(dst).await,
                Err(e) => Err(e),
            };
            opened.map_err(|e| ConnectFailure::Proxy {
                proxy: shown,
                reason: tunnel_failure(&e, &authority, &head, has_credentials),
            })
        })
    }
}

/// What went wrong with a CONNECT, from hyper-util's error (whose type is private: only its
/// source and text are reachable) and the proxy's answer as the tap kept it.
fn tunnel_failure(
    err: &(dyn StdError + 'static),
    authority: &str,
    head: &Mutex<Vec<u8>>,
    has_credentials: bool,
) -> String {
    // Reaching the proxy failed: our own connector's message.
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(c) = e.downcast_ref::<ConnectFailure>() {
            return c.to_string();
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return format!("CONNECT to {authority} failed: {io}");
        }
        source = e.source();
    }
    let head = head.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let text = String::from_utf8_lossy(&head);
    let line: String = text
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(120)
        .collect();
    let code = line.split_whitespace().nth(1).unwrap_or_default();
    if head.is_empty() {
        format!("closed the connection during CONNECT to {authority}")
    } else if !line.starts_with("HTTP/") {
        format!(
            "answered CONNECT to {authority} with something other than HTTP (is it an HTTP proxy?)"
        )
    } else if code == "407" && has_credentials {
        format!("refused CONNECT to {authority}: {line} (the proxy does not accept the credentials in its URL)")
    } else if code == "407" {
        format!("refused CONNECT to {authority}: {line} (give the proxy's credentials in its URL: http://name:secret@host:port)")
    } else if !code.starts_with('2') {
        format!("refused CONNECT to {authority}: {line}")
    } else {
        format!("CONNECT to {authority} failed ({line}): {err}")
    }
}

/// A direct TCP connection to the URL's host. With a tap, the first bytes read are kept.
#[derive(Clone)]
struct Direct {
    /// Built on first use (it needs the runtime); an error (e.g. no /etc/resolv.conf) is kept.
    resolver: Arc<OnceLock<Result<TokioResolver, String>>>,
    tap: Option<Arc<Mutex<Vec<u8>>>>,
}

impl Service<Uri> for Direct {
    type Response = TokioIo<Stream>;
    type Error = ConnectFailure;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = dst
                .host()
                .ok_or_else(|| ConnectFailure::Unreachable("URL has no host".into()))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = dst.port_u16().unwrap_or(match dst.scheme_str() {
                Some("http") => 80,
                _ => 443,
            });
            let tcp = this.connect(host, port).await?;
            Ok(TokioIo::new(Stream { tcp, tap: this.tap }))
        })
    }
}

impl Direct {
    fn resolver(&self) -> Result<&TokioResolver, ConnectFailure> {
        self.resolver
            .get_or_init(build_resolver)
            .as_ref()
            .map_err(|e| ConnectFailure::Unreachable(e.clone()))
    }

    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectFailure> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let lookup = self
            .resolver()?
            .lookup_ip(host)
            .await
            .map_err(|e| ConnectFailure::Unreachable(format!("cannot resolve {host}: {e}")))?;
        let addrs: Vec<SocketAddr> = lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        if addrs.is_empty() {
            return Err(ConnectFailure::Unreachable(format!(
                "{host} has no address"
            )));
        }
        Ok(addrs)
    }

    async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, ConnectFailure> {
        let addrs = self.resolve(host, port).await?;
        let mut errors = Vec::new();
        let last = addrs.len().saturating_sub(1);
        for (index, addr) in addrs.into_iter().enumerate() {
            // An address that swallows SYNs (e.g. unrouted IPv6) must not use up the request's
            // whole deadline while others remain; the last one gets what is left.
            let attempt = TcpStream::connect(addr);
            let result = if index < last {
                match tokio::time::timeout(CONNECT_ATTEMPT_TIMEOUT, attempt).await {
                    Ok(r) => r,
                    Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
                }
            } else {
                attempt.await
            };
            match result {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
        Err(ConnectFailure::Unreachable(format!(
            "cannot connect to {}",
            errors.join("; ")
        )))
    }
}

/// The system resolver configuration (/etc/resolv.conf), or hosts-file-only resolution when
/// there is none (names from /etc/hosts and IP literals still work).
pub(crate) fn build_resolver() -> Result<TokioResolver, String> {
    match TokioResolver::builder_tokio().and_then(|b| b.build()) {
        Ok(r) => Ok(r),
        Err(system) => {
            let config = ResolverConfig::from_parts(None, Vec::new(), Vec::new());
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
                .build()
                .map_err(|e| format!("no usable resolver ({system}; {e})"))
        }
    }
}

/// A TCP stream. Through a proxy it keeps a copy of the first bytes read (the proxy's CONNECT
/// answer, up to its status line): hyper-util's `Tunnel` reports a refusal without the
/// proxy's status, and "403 Forbidden" or "407" is what a user needs to know.
pub struct Stream {
    tcp: TcpStream,
    tap: Option<Arc<Mutex<Vec<u8>>>>,
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(tap)) = (&polled, &this.tap) {
            let read = &buf.filled()[before..];
            let mut head = tap.lock().unwrap_or_else(|e| e.into_inner());
            let room = TAP_LIMIT.saturating_sub(head.len());
            head.extend_from_slice(&read[..read.len().min(room)]);
            if read.is_empty() || head.contains(&b'\n') || head.len() >= TAP_LIMIT {
                drop(head);
                this.tap = None;
            }
        }
        polled
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        self.tcp.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};

    /// A one-shot proxy answering `answer` to the first request; returns its URL and the
    /// request head it got.
    fn fake_proxy(answer: &'static [u8]) -> (String, std::thread::JoinHandle<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::thread::spawn(move || {
            let (mut client, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(client.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            client.write_all(answer).unwrap();
            head
        });
        (format!("127.0.0.1:{port}"), seen)
    }

    async fn through(proxy: &str) -> Result<TokioIo<Stream>, ConnectFailure> {
        let policy = ProxyPolicy::from_settings(Some(proxy), &|_| None).unwrap();
        Connector::new(policy)
            .call(Uri::from_static("https://ca.test:14000/dir"))
            .await
    }

    fn refusal(r: Result<TokioIo<Stream>, ConnectFailure>) -> (String, String) {
        match r {
            Err(ConnectFailure::Proxy { proxy, reason }) => (proxy, reason),
            Err(other) => panic!("not a proxy failure: {other}"),
            Ok(_) => panic!("tunnel opened"),
        }
    }

    #[tokio::test]
    async fn tunnel_refusals_name_the_proxy_and_its_answer() {
        let (addr, seen) = fake_proxy(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
        let (proxy, reason) = refusal(through(&format!("http://u:secret@{addr}")).await);
        assert_eq!(proxy, format!("http://{addr}"));
        assert_eq!(
            reason,
            "refused CONNECT to ca.test:14000: HTTP/1.1 403 Forbidden"
        );
        let head = seen.join().unwrap();
        assert!(
            head.starts_with("CONNECT ca.test:14000 HTTP/1.1\r\n"),
            "{head}"
        );
        // base64("u:secret")
        assert!(head.contains("dTpzZWNyZXQ="), "{head}");

        let (addr, _) = fake_proxy(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n");
        let (_, reason) = refusal(through(&addr).await);
        assert!(
            reason.contains("407") && reason.contains("give the proxy's credentials"),
            "{reason}"
        );
        let (addr, _) = fake_proxy(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n");
        let (_, reason) = refusal(through(&format!("u:wrong@{addr}")).await);
        assert!(
            reason.contains("does not accept the credentials"),
            "{reason}"
        );
        assert!(!reason.contains("wrong"), "{reason}");

        let (addr, _) = fake_proxy(b"SSH-2.0-OpenSSH_9.2\r\n");
        let (_, reason) = refusal(through(&addr).await);
        assert!(reason.contains("other than HTTP"), "{reason}");
        let (addr, _) = fake_proxy(b"");
        let (_, reason) = refusal(through(&addr).await);
        assert!(reason.contains("closed the connection"), "{reason}");

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let (proxy, reason) = refusal(through(&format!("http://{addr}")).await);
        assert_eq!(proxy, format!("http://{addr}"));
        assert!(
            reason.starts_with(&format!("cannot connect to {addr}")),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn an_open_tunnel_stops_keeping_what_it_reads() {
        let (addr, _) = fake_proxy(b"HTTP/1.1 200 Connection established\r\n\r\n");
        let stream = through(&addr).await.expect("tunnel");
        assert!(stream.inner().tap.is_none());
    }
}
