//! A minimal HTTP CONNECT proxy on loopback that counts its tunnels: it either tunnels to any
//! target with an allowed port, or maps one public `127.0.0.1` port (where nothing listens) to
//! the CA's real port, so a request that does not go through the proxy cannot reach the CA.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

/// Which CONNECT requests are tunnelled, and where to.
#[derive(Clone, Copy, Debug)]
enum Rule {
    /// Any `CONNECT <host>:<port>` with this port, to that target.
    AllowPort(u16),
    /// Only `CONNECT 127.0.0.1:<public>`, to `127.0.0.1:<upstream>`.
    Rewrite { public: u16, upstream: u16 },
}

/// A running proxy (its threads live as long as the test process). Others get
/// `403 Forbidden`, an unreachable target `502 Bad Gateway`.
pub struct ConnectProxy {
    pub port: u16,
    /// Tunnels established so far.
    pub tunnels: Arc<AtomicUsize>,
}

impl ConnectProxy {
    /// Tunnels to any target whose port is `allowed_port`.
    pub fn allowing(allowed_port: u16) -> ConnectProxy {
        Self::start(Rule::AllowPort(allowed_port))
    }

    /// Tunnels `127.0.0.1:<public_port>` to `127.0.0.1:<upstream_port>`, nothing else.
    pub fn rewriting(public_port: u16, upstream_port: u16) -> ConnectProxy {
        Self::start(Rule::Rewrite {
            public: public_port,
            upstream: upstream_port,
        })
    }

    /// `http://127.0.0.1:<port>`, for a `proxy` option or `https_proxy`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Tunnels established so far.
    pub fn tunnel_count(&self) -> usize {
        self.tunnels.load(Ordering::SeqCst)
    }

    fn start(rule: Rule) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let tunnels = Arc::new(AtomicUsize::new(0));
        let count = tunnels.clone();
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let count = count.clone();
                thread::spawn(move || tunnel(client, rule, &count));
            }
        });
        ConnectProxy { port, tunnels }
    }
}

fn tunnel(client: TcpStream, rule: Rule, count: &AtomicUsize) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
            break;
        }
    }
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or_default(), words.next());
    let target = target.unwrap_or_default().to_owned();
    let upstream = match rule {
        Rule::AllowPort(port) if target.ends_with(&format!(":{port}")) => Some(target),
        Rule::Rewrite { public, upstream } if target == format!("127.0.0.1:{public}") => {
            Some(format!("127.0.0.1:{upstream}"))
        }
        _ => None,
    };
    let mut client = client;
    let Some(upstream) = upstream.filter(|_| method == "CONNECT") else {
        let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    let Ok(upstream) = TcpStream::connect(&upstream) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
        return;
    };
    count.fetch_add(1, Ordering::SeqCst);
    let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    let mut upstream = upstream;
    let up = thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut upstream);
        let _ = upstream.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut u2, &mut c2);
    let _ = c2.shutdown(Shutdown::Write);
    let _ = up.join();
}
