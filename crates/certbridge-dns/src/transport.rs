//! Talking to one DNS server: plain queries (UDP, then TCP when the answer is truncated),
//! TSIG-signed zone transfers and updates (TCP). Messages, TSIG and record data come from
//! hickory-proto; this module only moves the bytes and keeps every step inside a deadline.

use crate::error::DnsError;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{Name, Record, RecordType, TSigner};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout_at, Instant};

/// First UDP retransmission interval; doubled up to [`UDP_RETRY_MAX`]. Loopback answers in
/// well under a millisecond, a remote server in tens of milliseconds.
const UDP_RETRY_FIRST: Duration = Duration::from_millis(250);
const UDP_RETRY_MAX: Duration = Duration::from_secs(2);
/// TSIG fudge: the clock skew we accept and ask the server to accept (BIND's default).
const TSIG_FUDGE: u16 = 300;

/// A TSIG key: its name, algorithm and secret. The secret never appears in any message.
#[derive(Clone)]
pub struct TsigKey {
    signer: TSigner,
    name: String,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// TSIG algorithms the signer implements, in BIND's spelling.
pub const TSIG_ALGORITHMS: &[&str] = &["hmac-sha256", "hmac-sha384", "hmac-sha512"];

impl TsigKey {
    /// `algorithm` in BIND's spelling (`hmac-sha256`), `secret` base64 as in a BIND key clause.
    /// Errors name the offending option, never the secret.
    pub fn new(name: &str, algorithm: &str, secret: &str) -> Result<TsigKey, String> {
        let alg = match algorithm.trim().to_ascii_lowercase().as_str() {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => {
                return Err(format!(
                    "tsig_algorithm `{other}` is not supported; use one of {}",
                    TSIG_ALGORITHMS.join(", ")
                ))
            }
        };
        let cleaned: String = secret
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let key = data_encoding::BASE64
            .decode(cleaned.as_bytes())
            .map_err(|_| {
                "tsig_secret is not base64 (copy the `secret` of the BIND key clause)".to_string()
            })?;
        if key.is_empty() {
            return Err("tsig_secret is empty".into());
        }
        let key_name = Name::from_ascii(name.trim())
            .map_err(|e| format!("tsig_name `{name}` is not a DNS name: {e}"))?;
        let signer = TSigner::new(key, alg, key_name, TSIG_FUDGE)
            .map_err(|e| format!("tsig key `{name}`: {e}"))?;
        Ok(TsigKey {
            signer,
            name: name.trim().trim_end_matches('.').to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Encodes a message, refusing one the encoder had to cut short (it silently drops records
/// beyond the 64 KiB limit).
fn encode(msg: &Message, what: &str) -> Result<Vec<u8>, DnsError> {
    let err = |detail: String| DnsError::Encode {
        what: what.into(),
        detail,
    };
    let bytes = msg.to_vec().map_err(|e| err(e.to_string()))?;
    let back = Message::from_vec(&bytes).map_err(|e| err(e.to_string()))?;
    if back.answers.len() != msg.answers.len()
        || back.authorities.len() != msg.authorities.len()
        || back.additionals.len() != msg.additionals.len()
    {
        return Err(err(format!(
            "it does not fit one DNS message ({} bytes)",
            bytes.len()
        )));
    }
    Ok(bytes)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn describe(name: &Name, rtype: RecordType) -> String {
    format!("{rtype} {name}")
}

/// A plain query. `recurse` sets RD (for a resolver); answers are not TSIG-signed.
pub async fn query(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
    recurse: bool,
    deadline: Instant,
) -> Result<Message, DnsError> {
    let what = describe(name, rtype);
    let mut msg = Message::query();
    msg.add_query(Query::query(name.clone(), rtype));
    msg.metadata.recursion_desired = recurse;
    let bytes = msg.to_vec().map_err(|e| DnsError::Encode {
        what: what.clone(),
        detail: e.to_string(),
    })?;
    let id = msg.metadata.id;
    let answer = udp_exchange(server, &bytes, id, &what, deadline).await?;
    let answer = decode(server, &what, &answer)?;
    check_reply(server, &what, &msg, &answer)?;
    if !answer.metadata.truncation {
        return Ok(answer);
    }
    // Truncated: the full answer only fits a TCP message.
    let mut stream = tcp_connect(server, &what, deadline).await?;
    tcp_send(&mut stream, server, &what, &bytes, deadline).await?;
    let raw = tcp_recv(&mut stream, server, &what, deadline).await?;
    let answer = decode(server, &what, &raw)?;
    check_reply(server, &what, &msg, &answer)?;
    Ok(answer)
}

fn decode(server: SocketAddr, what: &str, raw: &[u8]) -> Result<Message, DnsError> {
    Message::from_vec(raw).map_err(|e| DnsError::Malformed {
        server,
        what: what.into(),
        detail: e.to_string(),
    })
}

fn check_reply(
    server: SocketAddr,
    what: &str,
    sent: &Message,
    got: &Message,
) -> Result<(), DnsError> {
    if got.metadata.message_type != MessageType::Response || got.queries != sent.queries {
        return Err(DnsError::Malformed {
            server,
            what: what.into(),
            detail: "the answer does not match the question".into(),
        });
    }
    Ok(())
}

/// One UDP exchange: resends with a growing interval until an answer with our id arrives or
/// the deadline passes.
async fn udp_exchange(
    server: SocketAddr,
    bytes: &[u8],
    id: u16,
    what: &str,
    deadline: Instant,
) -> Result<Vec<u8>, DnsError> {
    let unreachable = |e: std::io::Error| DnsError::Unreachable {
        server,
        what: what.into(),
        detail: e.to_string(),
    };
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(bind).await.map_err(unreachable)?;
    socket.connect(server).await.map_err(unreachable)?;
    let mut interval = UDP_RETRY_FIRST;
    let mut buf = vec![0u8; 65535];
    loop {
        if Instant::now() >= deadline {
            return Err(DnsError::Timeout {
                server,
                what: what.into(),
            });
        }
        socket.send(bytes).await.map_err(unreachable)?;
        let resend_at = (Instant::now() + interval).min(deadline);
        loop {
            match timeout_at(resend_at, socket.recv(&mut buf)).await {
                Err(_) => break, // resend
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(unreachable(e))
                }
                Ok(Err(e)) => return Err(unreachable(e)),
                Ok(Ok(n)) => {
                    // Ignore stray datagrams (a late answer to an earlier id cannot happen on
                    // a fresh socket, but a spoofed one could).
                    if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                        return Ok(buf[..n].to_vec());
                    }
                }
            }
        }
        interval = (interval * 2).min(UDP_RETRY_MAX);
    }
}

async fn tcp_connect(
    server: SocketAddr,
    what: &str,
    deadline: Instant,
) -> Result<TcpStream, DnsError> {
    match timeout_at(deadline, TcpStream::connect(server)).await {
        Err(_) => Err(DnsError::Timeout {
            server,
            what: what.into(),
        }),
        Ok(Err(e)) => Err(DnsError::Unreachable {
            server,
            what: what.into(),
            detail: e.to_string(),
        }),
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
    }
}

/// Sends one message over TCP (RFC 1035 4.2.2: a two-octet length, then the message).
async fn tcp_send(
    stream: &mut TcpStream,
    server: SocketAddr,
    what: &str,
    bytes: &[u8],
    deadline: Instant,
) -> Result<(), DnsError> {
    let len = u16::try_from(bytes.len()).map_err(|_| DnsError::Encode {
        what: what.into(),
        detail: format!(
            "the message is {} bytes, more than a DNS message can hold",
            bytes.len()
        ),
    })?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    match timeout_at(deadline, stream.write_all(&framed)).await {
        Err(_) => Err(DnsError::Timeout {
            server,
            what: what.into(),
        }),
        Ok(Err(e)) => Err(DnsError::Unreachable {
            server,
            what: what.into(),
            detail: e.to_string(),
        }),
        Ok(Ok(())) => Ok(()),
    }
}

/// Reads one length-prefixed message from a TCP stream.
async fn tcp_recv(
    stream: &mut TcpStream,
    server: SocketAddr,
    what: &str,
    deadline: Instant,
) -> Result<Vec<u8>, DnsError> {
    let read = async {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    match timeout_at(deadline, read).await {
        Err(_) => Err(DnsError::Timeout {
            server,
            what: what.into(),
        }),
        Ok(Err(e)) => Err(DnsError::Unreachable {
            server,
            what: what.into(),
            detail: format!("the connection broke: {e}"),
        }),
        Ok(Ok(buf)) => Ok(buf),
    }
}

/// Checks an answer to a TSIG-signed request: a refused key is reported as such (those
/// answers are unsigned), anything else must verify.
fn check_signed(
    server: SocketAddr,
    what: &str,
    key: &TsigKey,
    raw: &[u8],
    verifier: &mut hickory_proto::rr::TSigVerifier,
) -> Result<Message, DnsError> {
    let unverified = decode(server, what, raw)?;
    if let Some(sig) = unverified.signature.as_deref() {
        if let Some(err) = sig.data.error {
            return Err(DnsError::TsigRejected {
                server,
                key: key.name.clone(),
                what: what.into(),
                error: tsig_error_name(err),
            });
        }
    }
    if unverified.metadata.response_code == ResponseCode::NotAuth {
        return Err(DnsError::TsigRejected {
            server,
            key: key.name.clone(),
            what: what.into(),
            error: "NOTAUTH".into(),
        });
    }
    if unverified.signature.is_none() {
        // Unsigned refusals (e.g. REFUSED from a server without the key) carry their rcode.
        if unverified.metadata.response_code != ResponseCode::NoError {
            return Err(rcode_error(server, what, &unverified));
        }
    }
    let verified = verifier.verify(raw).map_err(|e| DnsError::TsigVerify {
        server,
        key: key.name.clone(),
        what: what.into(),
        detail: e.to_string(),
    })?;
    Ok(verified.into_message())
}

fn tsig_error_name(err: hickory_proto::rr::rdata::tsig::TsigError) -> String {
    use hickory_proto::rr::rdata::tsig::TsigError as E;
    match err {
        E::BadSig => "BADSIG: the secret does not match".into(),
        // Knot also answers BADKEY when its ACL does not grant this key the action (BIND
        // answers REFUSED there), so a known key can get it too.
        E::BadKey => "BADKEY: the server does not know this key name or algorithm, or does not allow this key to do this".into(),
        E::BadTime => "BADTIME: the clocks differ by more than the fudge".into(),
        E::BadTrunc => "BADTRUNC".into(),
        E::Unknown(code) => format!("TSIG error {code}"),
    }
}

fn rcode_error(server: SocketAddr, what: &str, msg: &Message) -> DnsError {
    DnsError::Rcode {
        server,
        what: what.into(),
        rcode: msg.metadata.response_code.to_string().to_uppercase(),
    }
}

/// Reads a whole zone with a TSIG-signed AXFR over TCP; returns every record in order
/// (the SOA first and last, as transferred).
pub async fn axfr(
    server: SocketAddr,
    zone: &Name,
    key: &TsigKey,
    deadline: Instant,
) -> Result<Vec<Record>, DnsError> {
    // Only the `rfc2136` method reads zones this way: its errors name method, zone and server.
    let what = format!("the rfc2136 method's AXFR of zone {zone}");
    let mut msg = hickory_proto::op::update_message::zone_transfer(zone.clone(), None);
    let mut verifier = sign(&mut msg, key, &what)?;
    let bytes = msg.to_vec().map_err(|e| DnsError::Encode {
        what: what.clone(),
        detail: e.to_string(),
    })?;
    let mut stream = tcp_connect(server, &what, deadline).await?;
    tcp_send(&mut stream, server, &what, &bytes, deadline).await?;
    let mut records = Vec::new();
    let mut soa_seen = 0usize;
    loop {
        let raw = tcp_recv(&mut stream, server, &what, deadline).await?;
        let answer = check_signed(server, &what, key, &raw, &mut verifier)?;
        if answer.metadata.id != msg.metadata.id {
            continue;
        }
        if answer.metadata.response_code != ResponseCode::NoError {
            return Err(rcode_error(server, &what, &answer));
        }
        if records.is_empty()
            && answer.answers.first().map(Record::record_type) != Some(RecordType::SOA)
        {
            return Err(DnsError::Malformed {
                server,
                what,
                detail: "the transfer does not start with the zone's SOA".into(),
            });
        }
        for rec in answer.answers {
            if rec.record_type() == RecordType::SOA {
                soa_seen += 1;
            }
            records.push(rec);
        }
        if soa_seen >= 2 {
            return Ok(records);
        }
    }
}

fn sign(
    msg: &mut Message,
    key: &TsigKey,
    what: &str,
) -> Result<hickory_proto::rr::TSigVerifier, DnsError> {
    msg.finalize(&key.signer, now_unix())
        .map_err(|e| DnsError::Encode {
            what: what.into(),
            detail: format!("TSIG signing failed: {e}"),
        })?
        .ok_or_else(|| DnsError::Encode {
            what: what.into(),
            detail: "TSIG signing gave no verifier".into(),
        })
}

/// Sends one TSIG-signed UPDATE over TCP and checks its answer.
pub async fn update(
    server: SocketAddr,
    mut msg: Message,
    key: &TsigKey,
    deadline: Instant,
) -> Result<(), DnsError> {
    let zone = msg
        .queries
        .first()
        .map(|q| q.name().to_string())
        .unwrap_or_default();
    let what = format!("the rfc2136 method's UPDATE of zone {zone}");
    debug_assert_eq!(msg.metadata.op_code, OpCode::Update);
    let mut verifier = sign(&mut msg, key, &what)?;
    let bytes = encode(&msg, &what)?;
    let mut stream = tcp_connect(server, &what, deadline).await?;
    tcp_send(&mut stream, server, &what, &bytes, deadline).await?;
    loop {
        let raw = tcp_recv(&mut stream, server, &what, deadline).await?;
        let answer = check_signed(server, &what, key, &raw, &mut verifier)?;
        if answer.metadata.id != msg.metadata.id {
            continue;
        }
        if answer.metadata.response_code != ResponseCode::NoError {
            return Err(rcode_error(server, &what, &answer));
        }
        return Ok(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsig_keys_parse_and_refuse_without_echoing_the_secret() {
        let k = TsigKey::new("key.example.", "hmac-sha256", "c2VjcmV0c2VjcmV0c2VjcmV0").unwrap();
        assert_eq!(k.name(), "key.example");
        assert!(!format!("{k:?}").contains("c2Vj"));
        let e = TsigKey::new("k", "hmac-md5", "c2VjcmV0").unwrap_err();
        assert!(e.contains("hmac-md5") && e.contains("hmac-sha256"), "{e}");
        let e = TsigKey::new("k", "hmac-sha256", "not base64!!").unwrap_err();
        assert!(
            e.contains("tsig_secret") && !e.contains("not base64!!"),
            "{e}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn query_to_a_silent_server_times_out_at_the_deadline() {
        // A bound UDP socket that never answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let start = Instant::now();
        let name = Name::from_ascii("example.test.").unwrap();
        let err = query(
            addr,
            &name,
            RecordType::TXT,
            false,
            start + Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, DnsError::Timeout { .. }), "{err}");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_millis(600),
            "{took:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn query_to_a_closed_port_is_unreachable() {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // The socket is dropped: nothing listens there now.
        let name = Name::from_ascii("example.test.").unwrap();
        let err = query(
            port,
            &name,
            RecordType::TXT,
            false,
            Instant::now() + Duration::from_secs(2),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, DnsError::Unreachable { .. }), "{err}");
    }
}
