//! The byte stream under a [`super::link::Link`]: plain TCP, or TLS
//! (`rediss://`) through rustls, driven by hand so that the handshake and
//! every read and write wait only for what is left of the call's deadline
//! (rustls's own `complete_io` would give each socket read the whole
//! timeout).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::link::{io_failure, left, Failure};

/// The CA bundle used when `redis_tls_ca` is not set (Debian's).
pub const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The TLS client setup of every `rediss://` connection: the servers'
/// certificates checked against the CAs in `ca` (a PEM file); with `cert`
/// and `key` (PEM files), a client certificate for servers that ask for
/// one. Err says which file is wrong and why.
pub fn client_config(
    ca: &str,
    cert: Option<&str>,
    key: Option<&str>,
) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let cas = CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("redis_tls_ca {ca}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("redis_tls_ca {ca}: {e}"))?;
    let (added, _) = roots.add_parsable_certificates(cas);
    if added == 0 {
        return Err(format!("redis_tls_ca {ca}: no CA certificate in it"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    let config = match (cert, key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("redis_tls_cert {cert}: {e}"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("redis_tls_cert {cert}: {e}"))?;
            if chain.is_empty() {
                return Err(format!("redis_tls_cert {cert}: no certificate in it"));
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("redis_tls_key {key}: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("redis_tls_cert/redis_tls_key: {e}"))?
        }
        _ => return Err("redis_tls_cert and redis_tls_key go together".into()),
    };
    Ok(Arc::new(config))
}

/// A connection's byte stream.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<(TcpStream, ClientConnection)>),
}

/// A TLS failure: the peer refused us or we refused its certificate.
fn tls_failure(e: rustls::Error) -> Failure {
    Failure::Rejected(format!("TLS: {e}"))
}

impl Transport {
    /// TLS over `sock` with `host`'s name (or address) checked against
    /// its certificate, the handshake done before `deadline`.
    pub fn tls(
        sock: TcpStream,
        config: &Arc<ClientConfig>,
        host: &str,
        deadline: Instant,
    ) -> Result<Transport, Failure> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| Failure::Rejected(format!("TLS: server name {host:?}: {e}")))?;
        let conn = ClientConnection::new(config.clone(), name).map_err(tls_failure)?;
        let mut t = Box::new((sock, conn));
        while t.1.is_handshaking() {
            if t.1.wants_write() {
                write_tls(&mut t, deadline)?;
            } else {
                read_tls(&mut t, deadline)?;
            }
        }
        write_tls(&mut t, deadline)?;
        Ok(Transport::Tls(t))
    }

    pub fn sock(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &t.0,
        }
    }

    /// Writes all of `data` before `deadline`.
    pub fn write_all(&mut self, mut data: &[u8], deadline: Instant) -> Result<(), Failure> {
        match self {
            Transport::Plain(sock) => {
                while !data.is_empty() {
                    sock.set_write_timeout(Some(left(deadline)?))
                        .map_err(io_failure)?;
                    match sock.write(data) {
                        Ok(0) => return Err(Failure::Broken("connection closed".into())),
                        Ok(n) => data = &data[n..],
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(io_failure(e)),
                    }
                }
                Ok(())
            }
            Transport::Tls(t) => {
                t.1.writer().write_all(data).map_err(io_failure)?;
                write_tls(t, deadline)
            }
        }
    }

    /// Reads some bytes into `buf` before `deadline`; 0 when the server
    /// closed the connection.
    pub fn read(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, Failure> {
        match self {
            Transport::Plain(sock) => loop {
                sock.set_read_timeout(Some(left(deadline)?))
                    .map_err(io_failure)?;
                match sock.read(buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    r => return r.map_err(io_failure),
                }
            },
            Transport::Tls(t) => loop {
                match t.1.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if read_tls(t, deadline)? == 0 {
                            return Ok(0);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(io_failure(e)),
                }
            },
        }
    }

    /// True when the server closed the connection or sent data nobody
    /// asked for. TLS records that carry no data (session tickets after
    /// the handshake) are taken in first, without waiting.
    pub fn is_stale(&mut self) -> bool {
        if let Transport::Tls(t) = self {
            if t.0.set_nonblocking(true).is_err() {
                return true;
            }
            let mut stale = false;
            loop {
                match t.1.read_tls(&mut t.0) {
                    Ok(0) => {
                        stale = true;
                        break;
                    }
                    Ok(_) => match t.1.process_new_packets() {
                        Ok(s) if s.plaintext_bytes_to_read() == 0 && !s.peer_has_closed() => {}
                        _ => {
                            stale = true;
                            break;
                        }
                    },
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        stale = true;
                        break;
                    }
                }
            }
            if stale || t.0.set_nonblocking(false).is_err() {
                return true;
            }
        }
        let mut b = [0u8; 1];
        // SAFETY: recv into a 1-byte buffer we own, on our socket's fd;
        // MSG_PEEK leaves the data, MSG_DONTWAIT never blocks.
        let n = unsafe {
            libc::recv(
                self.sock().as_raw_fd(),
                b.as_mut_ptr() as *mut libc::c_void,
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock
    }
}

/// Sends what rustls has to send, before `deadline`.
fn write_tls(t: &mut (TcpStream, ClientConnection), deadline: Instant) -> Result<(), Failure> {
    while t.1.wants_write() {
        t.0.set_write_timeout(Some(left(deadline)?))
            .map_err(io_failure)?;
        match t.1.write_tls(&mut t.0) {
            Ok(0) => return Err(Failure::Broken("connection closed".into())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_failure(e)),
        }
    }
    Ok(())
}

/// Reads one lot of TLS records and processes them, before `deadline`;
/// the bytes read, 0 when the server closed the connection.
fn read_tls(t: &mut (TcpStream, ClientConnection), deadline: Instant) -> Result<usize, Failure> {
    loop {
        t.0.set_read_timeout(Some(left(deadline)?))
            .map_err(io_failure)?;
        match t.1.read_tls(&mut t.0) {
            Ok(0) => {
                return if t.1.is_handshaking() {
                    Err(Failure::Rejected(
                        "TLS: the server closed the connection during the handshake".into(),
                    ))
                } else {
                    Ok(0)
                };
            }
            Ok(n) => {
                if let Err(e) = t.1.process_new_packets() {
                    // Tell the server why, as far as it listens.
                    let _ = write_tls(t, deadline);
                    return Err(tls_failure(e));
                }
                return Ok(n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_failure(e)),
        }
    }
}
