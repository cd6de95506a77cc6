//! The byte stream under a [`super::link::Link`]: plain TCP, or TLS
//! (`rediss://`) through rustls, driven by hand so that the handshake and
//! every read and write wait only for what is left of the call's deadline
//! (rustls's own `complete_io` would give each socket read the whole
//! timeout).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    Plain(Sock),
    Tls(Box<(Sock, ClientConnection)>),
}

/// How far a socket timeout may stray from what is left of the deadline
/// before it is set again: a call may end up to this much past its
/// deadline, and a socket wait that ends this much early is waited again.
/// Setting them at every read and write cost two system calls per call.
const SLACK: Duration = Duration::from_millis(1);

/// A TCP socket. Waits for it end by `poll`, whose timer is precise (a
/// socket timeout, `SO_RCVTIMEO`, runs on the kernel's coarse timer wheel
/// and fires up to about 5 % late: 3.14 s for 3 s). Plain TCP reads and
/// writes never block; under TLS, rustls reads and writes the blocking
/// socket once `poll` says it is ready, with socket timeouts as a
/// backstop, set again only when what is left of a call's deadline is no
/// longer within [`SLACK`] of them (most calls set none).
pub struct Sock {
    pub s: TcpStream,
    read: Option<Duration>,
    write: Option<Duration>,
}

impl Sock {
    pub fn new(s: TcpStream) -> Sock {
        Sock {
            s,
            read: None,
            write: None,
        }
    }

    /// Waits until the socket is ready for `events` (`POLLIN`, `POLLOUT`;
    /// an error or hang-up counts as ready: the read or write that follows
    /// tells), or the deadline passes.
    fn wait(&self, events: libc::c_short, deadline: Instant) -> Result<(), Failure> {
        loop {
            let ms = left(deadline)?
                .as_micros()
                .div_ceil(1000)
                .min(i32::MAX as u128) as i32;
            let mut p = libc::pollfd {
                fd: self.s.as_raw_fd(),
                events,
                revents: 0,
            };
            // SAFETY: one pollfd we own, for our socket's fd.
            match unsafe { libc::poll(&mut p, 1, ms) } {
                n if n > 0 => return Ok(()),
                // Timed out (the deadline decides, above) or interrupted.
                0 => {}
                _ => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(io_failure(e));
                    }
                }
            }
        }
    }

    /// Sets the read (or write) timeout to what is left before
    /// `deadline`, unless it is within [`SLACK`] of that already.
    fn arm(&mut self, write: bool, deadline: Instant) -> Result<(), Failure> {
        let left = left(deadline)?;
        let now = if write {
            &mut self.write
        } else {
            &mut self.read
        };
        if now.is_some_and(|t| t.abs_diff(left) <= SLACK) {
            return Ok(());
        }
        *now = None;
        if write {
            self.s.set_write_timeout(Some(left))
        } else {
            self.s.set_read_timeout(Some(left))
        }
        .map_err(io_failure)?;
        *now = Some(left);
        Ok(())
    }

    /// What a read or write that failed with `e` means: Ok to wait again
    /// when the socket timed out before the deadline (its timeout was
    /// [`SLACK`] short, or set for an earlier wait), Err otherwise.
    fn retry(&mut self, e: std::io::Error, deadline: Instant) -> Result<(), Failure> {
        match e.kind() {
            std::io::ErrorKind::Interrupted => Ok(()),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                if Instant::now() < deadline =>
            {
                (self.read, self.write) = (None, None);
                Ok(())
            }
            _ => Err(io_failure(e)),
        }
    }
}

/// A TLS failure: the peer refused us or we refused its certificate.
fn tls_failure(e: rustls::Error) -> Failure {
    Failure::Rejected(format!("TLS: {e}"))
}

impl Transport {
    /// TLS over `sock` with `host`'s name (or address) checked against
    /// its certificate, the handshake done before `deadline`.
    pub fn tls(
        sock: Sock,
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
            Transport::Plain(s) => &s.s,
            Transport::Tls(t) => &t.0.s,
        }
    }

    /// Writes all of `data` before `deadline`.
    pub fn write_all(&mut self, mut data: &[u8], deadline: Instant) -> Result<(), Failure> {
        match self {
            Transport::Plain(sock) => {
                while !data.is_empty() {
                    left(deadline)?;
                    // SAFETY: send from a live slice on our socket's fd;
                    // MSG_DONTWAIT never blocks, MSG_NOSIGNAL: no SIGPIPE.
                    let n = unsafe {
                        libc::send(
                            sock.s.as_raw_fd(),
                            data.as_ptr() as *const libc::c_void,
                            data.len(),
                            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                        )
                    };
                    match n {
                        0 => return Err(Failure::Broken("connection closed".into())),
                        n if n > 0 => data = &data[n as usize..],
                        _ => match std::io::Error::last_os_error() {
                            e if e.kind() == std::io::ErrorKind::WouldBlock => {
                                sock.wait(libc::POLLOUT, deadline)?
                            }
                            e if e.kind() == std::io::ErrorKind::Interrupted => {}
                            e => return Err(io_failure(e)),
                        },
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
                sock.wait(libc::POLLIN, deadline)?;
                // SAFETY: recv into a live buffer on our socket's fd;
                // MSG_DONTWAIT never blocks (a wake-up without data reads
                // nothing and waits again).
                let n = unsafe {
                    libc::recv(
                        sock.s.as_raw_fd(),
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n >= 0 {
                    return Ok(n as usize);
                }
                match std::io::Error::last_os_error() {
                    e if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) => {}
                    e => return Err(io_failure(e)),
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
            if t.0.s.set_nonblocking(true).is_err() {
                return true;
            }
            let mut stale = false;
            loop {
                match t.1.read_tls(&mut t.0.s) {
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
            if stale || t.0.s.set_nonblocking(false).is_err() {
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
fn write_tls(t: &mut (Sock, ClientConnection), deadline: Instant) -> Result<(), Failure> {
    while t.1.wants_write() {
        t.0.wait(libc::POLLOUT, deadline)?;
        t.0.arm(true, deadline)?;
        match t.1.write_tls(&mut t.0.s) {
            Ok(0) => return Err(Failure::Broken("connection closed".into())),
            Ok(_) => {}
            Err(e) => t.0.retry(e, deadline)?,
        }
    }
    Ok(())
}

/// Reads one lot of TLS records and processes them, before `deadline`;
/// the bytes read, 0 when the server closed the connection.
fn read_tls(t: &mut (Sock, ClientConnection), deadline: Instant) -> Result<usize, Failure> {
    loop {
        t.0.wait(libc::POLLIN, deadline)?;
        t.0.arm(false, deadline)?;
        match t.1.read_tls(&mut t.0.s) {
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
            Err(e) => t.0.retry(e, deadline)?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Failure, Sock, Transport, SLACK};
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    /// Reads on a server that never answers end at their own deadline:
    /// not before it (a timeout left from a shorter call is waited again),
    /// and not much after it (a longer one left from an earlier call is
    /// set again).
    #[test]
    fn each_read_waits_for_its_own_deadline() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let sock = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let _peer = server.accept().unwrap();
        let mut t = Transport::Plain(Sock::new(sock));
        for ms in [300u64, 40, 250, 30, 30] {
            let start = Instant::now();
            let deadline = start + Duration::from_millis(ms);
            let r = t.read(&mut [0u8; 16], deadline);
            let took = start.elapsed();
            assert!(matches!(r, Err(Failure::Timeout)), "{ms} ms: {r:?}");
            assert!(
                took >= Duration::from_millis(ms),
                "{ms} ms: ended after {took:?}"
            );
            // The slack, and room for a busy machine's scheduling.
            assert!(
                took < Duration::from_millis(ms) + SLACK + Duration::from_millis(200),
                "{ms} ms: {took:?}"
            );
        }
    }
}
