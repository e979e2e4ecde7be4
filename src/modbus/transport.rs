//! Transports move ADUs: `Transport` is the seam every kind of endpoint implements, so the
//! poller, the decoder and the change logic are shared by all of them. `TcpTransport` speaks
//! Modbus TCP (MBAP framing). Only this module opens sockets or serial ports.
//!
//! A TCP exchange costs two syscalls when the reply is whole: one send, one receive into a
//! buffer big enough for any ADU. The receive timeout is set when the connection opens and
//! again only when a read would overrun the deadline by more than a tenth of the timeout (a
//! read that starts late, a reply in pieces) or ended before it, so the deadline of an
//! exchange holds without a `setsockopt` per read.

use super::codec::{self, FrameError, Framing, Request};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No (complete) reply before the deadline.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The connection failed: refused, reset, closed by the peer, cable pulled.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Bytes arrived that are not a frame (garbage, bad length, bad CRC on the framing level).
    #[error("{0}")]
    Frame(#[from] FrameError),
}

impl TransportError {
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(self, TransportError::Timeout(_))
    }
}

/// Timeouts in a row after which a TCP connection is taken for half-open: one timeout keeps
/// it (a late reply is discarded), two of different requests mean the peer is gone.
pub(crate) const HALF_OPEN_TIMEOUTS: u32 = 2;

/// One Modbus connection. Implementations keep the connection open between exchanges and
/// reopen it on `open` after `close`.
pub trait Transport: Send {
    fn framing(&self) -> Framing;
    /// After how many timeouts in a row (of any unit behind it) the connection is closed and
    /// opened again: a TCP stream whose peer lost power stays half-open and never errors by
    /// itself, whatever framing it carries. `None`: a timeout says nothing about the link.
    fn reconnect_after_timeouts(&self) -> Option<u32>;
    /// Whether a garbled or misdirected reply leaves the connection out of step, so that it is
    /// closed (MBAP: the next bytes may belong to any request).
    fn close_after_bad_reply(&self) -> bool;
    fn is_open(&self) -> bool;
    fn open(&mut self) -> io::Result<()>;
    fn close(&mut self);
    /// Send one request and return the ADU that answers it. Replies that belong to an earlier
    /// request (stale after a timeout) are discarded.
    fn exchange(&mut self, req: &Request) -> Result<Vec<u8>, TransportError>;
    /// The same transport driven by a readiness loop, where it can be (Modbus TCP to an
    /// IP address: no name lookup).
    fn readiness(&mut self) -> Option<&mut dyn Readiness> {
        None
    }
}

/// A transport a readiness loop drives (`poller::mux`: one thread serving many endpoints):
/// it opens without blocking, sends a request, and takes the reply when its socket is
/// readable. The blocking `exchange` still works on it between two requests.
pub trait Readiness {
    /// Start opening the connection; `fd` is then polled for writing, and `connected` says
    /// how it went. Does nothing when it is open.
    fn start_open(&mut self) -> io::Result<()>;
    /// The connection started by `start_open` is writable (or failed): finish it.
    fn connected(&mut self) -> io::Result<()>;
    /// The socket to poll, while connecting or connected.
    fn fd(&self) -> Option<RawFd>;
    /// Send one request, to be answered through `try_reply`.
    fn send(&mut self, req: &Request) -> Result<(), TransportError>;
    /// Read what has arrived without waiting: the ADU answering `req` when it is whole
    /// (stale replies discarded), `None` while it is not.
    fn try_reply(&mut self, req: &Request) -> Result<Option<Vec<u8>>, TransportError>;
    /// The deadline of `req` passed: a partial reply leaves the stream out of step, so the
    /// connection is closed; a clean timeout keeps it (a late reply is discarded by its id).
    fn timed_out(&mut self);
}

/// Modbus TCP: one persistent connection; the MBAP transaction id pairs replies to requests.
pub struct TcpTransport {
    host: String,
    port: u16,
    timeout: Duration,
    stream: Option<TcpStream>,
    /// A connection being opened by a readiness loop (`Readiness::start_open`).
    connecting: Option<TcpStream>,
    /// The receive timeout the socket has now.
    read_timeout: Duration,
    /// Bytes received after the last whole reply (the start of a late one), read first next time.
    pending: Vec<u8>,
}

impl TcpTransport {
    pub fn new(host: &str, port: u16, timeout: Duration) -> Self {
        TcpTransport {
            host: host.to_string(),
            port,
            timeout,
            stream: None,
            connecting: None,
            read_timeout: timeout,
            pending: Vec::new(),
        }
    }

    /// Receive until `buf` holds at least `want` bytes or `deadline` passes: one read takes
    /// whatever has arrived, up to a whole ADU. On a timeout nothing is lost: `buf` keeps what came.
    fn fill(
        &mut self,
        buf: &mut Vec<u8>,
        want: usize,
        deadline: Instant,
    ) -> Result<(), TransportError> {
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "not connected"))?;
        let mut chunk = [0u8; codec::TCP_MAX_ADU];
        // A read may overrun the deadline by at most `slack`: a timeout further off is set
        // anew. One shorter than the time left is kept (setting it back up on every poll
        // after a late read cost a setsockopt per poll on a busy host); a read it ends early
        // sets it to what is left and reads again.
        let slack = TIMEOUT_SLACK.max(self.timeout / 10);
        let mut early = false;
        while buf.len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(TransportError::Timeout(Duration::ZERO));
            }
            if early || self.read_timeout > left + slack {
                let t = (left + slack / 2).min(self.timeout.max(left));
                stream.set_read_timeout(Some(t))?;
                self.read_timeout = t;
                early = false;
            }
            match stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed by the device",
                    )
                    .into())
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return Err(TransportError::Timeout(Duration::ZERO));
                    }
                    early = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Send `adu` in one write; a failed write closes the connection.
    fn send(&mut self, adu: &[u8]) -> Result<(), TransportError> {
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "not connected"))?;
        if let Err(e) = stream.write_all(adu) {
            self.close();
            return Err(e.into());
        }
        Ok(())
    }

    /// One MBAP frame from `buf` (topped up from the socket); bytes after it stay in `buf`.
    fn next_frame(
        &mut self,
        buf: &mut Vec<u8>,
        deadline: Instant,
    ) -> Result<Vec<u8>, TransportError> {
        self.fill(buf, codec::MBAP_LEN, deadline)?;
        let len = codec::tcp_adu_len(&buf[..codec::MBAP_LEN])?;
        self.fill(buf, len, deadline)?;
        let rest = buf.split_off(len);
        Ok(std::mem::replace(buf, rest))
    }
}

impl TcpTransport {
    /// The address of a host given as an IP address: one a readiness loop can connect to
    /// without a (blocking) name lookup. A name, `localhost` too (it may be ::1 or
    /// 127.0.0.1), is looked up as before, on a thread of the endpoint's own.
    fn literal_addr(&self) -> Option<SocketAddr> {
        let ip = self.host.parse::<IpAddr>().ok()?;
        Some(SocketAddr::new(ip, self.port))
    }

    /// A connection is open: the blocking side's options (for `exchange` between readiness
    /// requests), set once per connection.
    fn opened(&mut self, s: TcpStream) -> io::Result<()> {
        s.set_nodelay(true)?;
        s.set_write_timeout(Some(self.timeout))?;
        s.set_read_timeout(Some(self.timeout))?;
        self.read_timeout = self.timeout;
        self.pending.clear();
        self.stream = Some(s);
        Ok(())
    }

    /// A reply to an earlier request (late, after its timeout): dropped, noted in the debug log.
    fn discarded(&self, adu: &[u8], req: &Request) {
        log::debug!(
            "{}:{}: discarded a stale reply (transaction {:?}, waiting for {})",
            self.host,
            self.port,
            codec::tcp_transaction(adu),
            req.transaction
        );
    }

    /// Take what has arrived into `buf` without waiting, until it holds `want` bytes:
    /// `false` when the socket has no more for now.
    fn fill_now(&mut self, buf: &mut Vec<u8>, want: usize) -> Result<bool, TransportError> {
        let fd = self
            .stream
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "not connected"))?
            .as_raw_fd();
        let mut chunk = [0u8; codec::TCP_MAX_ADU];
        while buf.len() < want {
            // SAFETY: `fd` is the open socket `self.stream` owns; `chunk` is a writable buffer
            // of the length given.
            let n = unsafe {
                libc::recv(
                    fd,
                    chunk.as_mut_ptr().cast(),
                    chunk.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            match n {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed by the device",
                    )
                    .into())
                }
                n if n > 0 => buf.extend_from_slice(&chunk[..n as usize]),
                _ => {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::WouldBlock => return Ok(false),
                        io::ErrorKind::Interrupted => {}
                        _ => return Err(e.into()),
                    }
                }
            }
        }
        Ok(true)
    }
}

impl Readiness for TcpTransport {
    fn start_open(&mut self) -> io::Result<()> {
        if self.stream.is_some() {
            return Ok(());
        }
        self.connecting = None;
        let addr = self
            .literal_addr()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP address"))?;
        self.connecting = Some(connect_nonblocking(addr)?);
        Ok(())
    }

    fn connected(&mut self) -> io::Result<()> {
        let s = self
            .connecting
            .take()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "not connecting"))?;
        if let Some(e) = s.take_error()? {
            return Err(e);
        }
        // Not connected yet (polled too early): the peer address is unknown.
        s.peer_addr()?;
        s.set_nonblocking(false)?;
        self.opened(s)
    }

    fn fd(&self) -> Option<RawFd> {
        self.stream
            .as_ref()
            .or(self.connecting.as_ref())
            .map(|s| s.as_raw_fd())
    }

    fn send(&mut self, req: &Request) -> Result<(), TransportError> {
        TcpTransport::send(self, &req.adu)
    }

    fn try_reply(&mut self, req: &Request) -> Result<Option<Vec<u8>>, TransportError> {
        let mut buf = std::mem::take(&mut self.pending);
        loop {
            let framed = self.fill_now(&mut buf, codec::MBAP_LEN).and_then(|whole| {
                if !whole {
                    return Ok(None);
                }
                let len = codec::tcp_adu_len(&buf[..codec::MBAP_LEN])?;
                if !self.fill_now(&mut buf, len)? {
                    return Ok(None);
                }
                let rest = buf.split_off(len);
                Ok(Some(std::mem::replace(&mut buf, rest)))
            });
            match framed {
                Ok(None) => {
                    self.pending = buf;
                    return Ok(None);
                }
                Ok(Some(adu)) if codec::tcp_transaction(&adu) == Some(req.transaction) => {
                    self.pending = buf;
                    return Ok(Some(adu));
                }
                Ok(Some(adu)) => self.discarded(&adu, req),
                Err(e) => {
                    self.close();
                    return Err(e);
                }
            }
        }
    }

    fn timed_out(&mut self) {
        if !self.pending.is_empty() {
            self.close();
        }
    }
}

/// A TCP connection to `addr` started without waiting (non-blocking `connect(2)`): poll the
/// stream for writing, then read its error.
fn connect_nonblocking(addr: SocketAddr) -> io::Result<TcpStream> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain socket(2); the descriptor is checked and then owned by the `TcpStream`.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket nothing else owns.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let rc = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sin` is a valid sockaddr_in of the length given.
            unsafe {
                libc::connect(
                    fd,
                    (&sin as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: `sin6` is a valid sockaddr_in6 of the length given.
            unsafe {
                libc::connect(
                    fd,
                    (&sin6 as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(stream)
}

impl TcpTransport {
    /// One RTU ADU, read as it arrives: address and function code first, then as many bytes
    /// as that function's reply carries (Modbus over serial line v1.02, 2.5.1). `deadline`
    /// bounds the first bytes; `inter_byte` per missing byte bounds the rest, so a frame cut
    /// short ends early. Bytes after the ADU are dropped.
    fn rtu_frame(
        &mut self,
        deadline: Instant,
        inter_byte: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        let mut adu = Vec::new();
        self.fill(&mut adu, 1, deadline)?;
        loop {
            let want = if adu.len() < 2 {
                2
            } else {
                match codec::rtu_adu_len(&adu)? {
                    Some(n) if n <= adu.len() => {
                        adu.truncate(n);
                        return Ok(adu);
                    }
                    Some(n) => n,
                    None => adu.len() + 1,
                }
            };
            let gaps = inter_byte.max(Duration::from_millis(1)) * (want - adu.len()) as u32;
            self.fill(&mut adu, want, (Instant::now() + gaps).max(deadline))?;
        }
    }
}

/// How far past its deadline a TCP read may wait before its timeout is set again, at least
/// (a tenth of the endpoint's timeout when that is more).
const TIMEOUT_SLACK: Duration = Duration::from_millis(5);

/// Read exactly `buf.len()` bytes before `deadline`. On a timeout, says how many bytes came.
pub(crate) fn read_full<R: Read + ?Sized>(
    r: &mut R,
    buf: &mut [u8],
    deadline: Instant,
    set_timeout: &mut dyn FnMut(&mut R, Duration) -> io::Result<()>,
) -> Result<(), (usize, TransportError)> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err((got, TransportError::Timeout(Duration::ZERO)));
        }
        set_timeout(r, left).map_err(|e| (got, e.into()))?;
        match r.read(&mut buf[got..]) {
            Ok(0) => {
                return Err((
                    got,
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed by the device",
                    )
                    .into(),
                ))
            }
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err((got, TransportError::Timeout(Duration::ZERO)))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((got, e.into())),
        }
    }
    Ok(())
}

impl Transport for TcpTransport {
    fn framing(&self) -> Framing {
        Framing::Tcp
    }

    fn reconnect_after_timeouts(&self) -> Option<u32> {
        Some(HALF_OPEN_TIMEOUTS)
    }

    fn close_after_bad_reply(&self) -> bool {
        true
    }

    fn is_open(&self) -> bool {
        self.stream.is_some()
    }

    fn open(&mut self) -> io::Result<()> {
        if self.stream.is_some() {
            return Ok(());
        }
        let mut last = io::Error::new(io::ErrorKind::NotFound, "host name did not resolve");
        for addr in (self.host.as_str(), self.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(s) => return self.opened(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn close(&mut self) {
        if let Some(s) = self.stream.take() {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.connecting = None;
        self.pending.clear();
    }

    fn readiness(&mut self) -> Option<&mut dyn Readiness> {
        self.literal_addr()?;
        Some(self)
    }

    fn exchange(&mut self, req: &Request) -> Result<Vec<u8>, TransportError> {
        let timeout = self.timeout;
        let deadline = Instant::now() + timeout;
        self.send(&req.adu)?;
        let mut buf = std::mem::take(&mut self.pending);
        loop {
            match self.next_frame(&mut buf, deadline) {
                Ok(adu) if codec::tcp_transaction(&adu) == Some(req.transaction) => {
                    self.pending = buf;
                    return Ok(adu);
                }
                Ok(adu) => self.discarded(&adu, req),
                Err(e) => {
                    // A partial frame leaves the stream out of step, and an I/O error or a
                    // garbage header means the connection cannot be trusted: start afresh.
                    // A clean timeout (nothing read) keeps it: a late reply is discarded by
                    // its transaction id.
                    if !buf.is_empty() || !e.is_timeout() {
                        self.close();
                    }
                    return Err(match e {
                        TransportError::Timeout(_) => TransportError::Timeout(timeout),
                        other => other,
                    });
                }
            }
        }
    }
}

/// Read one RTU ADU: address and function code first, then as many bytes as that function's
/// reply carries (Modbus over serial line v1.02, 2.5.1). `deadline` bounds the first byte;
/// `inter_byte` bounds each later gap, so a frame cut short ends early instead of hanging.
pub(crate) fn read_rtu_adu<R: Read + ?Sized>(
    r: &mut R,
    deadline: Instant,
    inter_byte: Duration,
    set_timeout: &mut dyn FnMut(&mut R, Duration) -> io::Result<()>,
) -> Result<Vec<u8>, (usize, TransportError)> {
    let mut adu = vec![0u8; 2];
    read_full(r, &mut adu[..1], deadline, set_timeout)?;
    let mut more = |r: &mut R, adu: &mut Vec<u8>, upto: usize| {
        let from = adu.len();
        adu.resize(upto, 0);
        let d = Instant::now() + inter_byte.max(Duration::from_millis(1)) * (upto - from) as u32;
        read_full(r, &mut adu[from..], d.max(deadline), set_timeout).map_err(|(n, e)| (from + n, e))
    };
    adu.truncate(1);
    more(r, &mut adu, 2)?;
    loop {
        match codec::rtu_adu_len(&adu) {
            Ok(Some(n)) if n <= adu.len() => return Ok(adu),
            Ok(Some(n)) => more(r, &mut adu, n)?,
            Ok(None) => {
                let n = adu.len() + 1;
                more(r, &mut adu, n)?
            }
            Err(e) => return Err((adu.len(), e.into())),
        }
    }
}

/// Modbus RTU frames carried over a TCP connection (serial device servers on RS-485 bridges).
/// No transaction id: one request at a time, and stray input is discarded before each request.
pub(crate) struct RtuOverTcpTransport {
    inner: TcpTransport,
}

impl RtuOverTcpTransport {
    pub(crate) fn new(host: &str, port: u16, timeout: Duration) -> Self {
        RtuOverTcpTransport {
            inner: TcpTransport::new(host, port, timeout),
        }
    }
}

impl Transport for RtuOverTcpTransport {
    fn framing(&self) -> Framing {
        Framing::Rtu
    }
    fn reconnect_after_timeouts(&self) -> Option<u32> {
        Some(HALF_OPEN_TIMEOUTS)
    }
    /// Stray input is discarded before each request, so the next exchange starts clean.
    fn close_after_bad_reply(&self) -> bool {
        false
    }
    fn is_open(&self) -> bool {
        self.inner.is_open()
    }
    fn open(&mut self) -> io::Result<()> {
        self.inner.open()
    }
    fn close(&mut self) {
        self.inner.close()
    }
    fn exchange(&mut self, req: &Request) -> Result<Vec<u8>, TransportError> {
        let timeout = self.inner.timeout;
        // Discard whatever a late reply left behind.
        let stream = self
            .inner
            .stream
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "not connected"))?;
        discard_input(stream);
        self.inner.pending.clear();
        self.inner.send(&req.adu)?;
        let deadline = Instant::now() + timeout;
        match self.inner.rtu_frame(deadline, Duration::from_millis(50)) {
            Ok(adu) => Ok(adu),
            Err(TransportError::Timeout(_)) => Err(TransportError::Timeout(timeout)),
            Err(e) => {
                if matches!(e, TransportError::Io(_)) {
                    self.inner.close();
                }
                Err(e)
            }
        }
    }
}

/// Read and drop what has arrived on `stream`, without waiting: a single `recv` when nothing has.
fn discard_input(stream: &TcpStream) {
    let mut junk = [0u8; 256];
    loop {
        // SAFETY: `recv` writes at most `junk.len()` bytes into `junk`, which outlives the call;
        // the descriptor belongs to `stream`, borrowed for the call.
        let n = unsafe {
            libc::recv(
                stream.as_raw_fd(),
                junk.as_mut_ptr().cast(),
                junk.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RegisterKind;
    use std::net::TcpListener;
    use std::thread;

    const TIMEOUT: Duration = Duration::from_millis(300);

    fn tcp_reply(transaction: u16, value: u16) -> Vec<u8> {
        let [t0, t1] = transaction.to_be_bytes();
        let [v0, v1] = value.to_be_bytes();
        vec![t0, t1, 0, 0, 0, 5, 1, 3, 2, v0, v1]
    }

    fn rtu_reply(value: u16) -> Vec<u8> {
        let [v0, v1] = value.to_be_bytes();
        let mut adu = vec![1, 3, 2, v0, v1];
        let crc = codec::crc16(&adu);
        adu.extend_from_slice(&crc.to_le_bytes());
        adu
    }

    /// A device on a loopback port that reads `request_len` bytes per request and answers each
    /// with its step: byte pieces written with a pause before each.
    fn device(
        request_len: usize,
        steps: Vec<Vec<(u64, Vec<u8>)>>,
    ) -> (u16, thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let handle = thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            for pieces in steps {
                let mut req = vec![0u8; request_len];
                if s.read_exact(&mut req).is_err() {
                    return;
                }
                for (pause_ms, bytes) in pieces {
                    thread::sleep(Duration::from_millis(pause_ms));
                    if s.write_all(&bytes).is_err() {
                        return;
                    }
                }
            }
            // Hold the connection until the client is done with it.
            let _ = s.read(&mut [0u8; 1]);
        });
        (port, handle)
    }

    fn read_req(framing: Framing, transaction: u16) -> Request {
        codec::read(framing, transaction, 1, RegisterKind::Holding, 0, 1).expect("request")
    }

    #[test]
    fn tcp_replies_in_pieces_late_or_together_keep_their_timeouts() {
        let mut both = tcp_reply(1, 10);
        both.extend(tcp_reply(2, 20));
        let reply3 = tcp_reply(3, 30);
        let (port, device) = device(
            12,
            vec![
                vec![],
                vec![(0, both)],
                vec![(0, reply3[..4].to_vec()), (50, reply3[4..].to_vec())],
                vec![(0, tcp_reply(4, 40)[..5].to_vec())],
            ],
        );
        let mut t = TcpTransport::new("127.0.0.1", port, TIMEOUT);
        t.open().expect("open");
        // No answer: a timeout after about TIMEOUT, the connection kept.
        let started = Instant::now();
        let e = t
            .exchange(&read_req(Framing::Tcp, 1))
            .expect_err("no reply");
        assert!(e.is_timeout(), "{e}");
        assert!(started.elapsed() >= TIMEOUT && started.elapsed() < TIMEOUT * 2);
        assert!(t.is_open());
        // The late reply and the awaited one in one segment: the late one is discarded.
        let adu = t.exchange(&read_req(Framing::Tcp, 2)).expect("reply 2");
        assert_eq!(adu, tcp_reply(2, 20));
        // A reply in two pieces is assembled.
        let adu = t.exchange(&read_req(Framing::Tcp, 3)).expect("reply 3");
        assert_eq!(adu, reply3);
        // A reply cut short: a timeout at the same deadline, and the connection is closed.
        let started = Instant::now();
        let e = t
            .exchange(&read_req(Framing::Tcp, 4))
            .expect_err("cut short");
        assert!(e.is_timeout(), "{e}");
        assert!(started.elapsed() >= TIMEOUT && started.elapsed() < TIMEOUT * 2);
        assert!(!t.is_open());
        drop(t);
        device.join().expect("device");
    }

    #[test]
    fn a_read_timeout_kept_shorter_than_the_time_left_does_not_end_the_exchange_early() {
        // As after a read that started late: the socket's timeout is well below the
        // endpoint's. A reply that comes after it, but before the deadline, is still read.
        let (port, device) = device(12, vec![vec![(120, tcp_reply(1, 10))]]);
        let mut t = TcpTransport::new("127.0.0.1", port, TIMEOUT);
        t.open().expect("open");
        let short = Duration::from_millis(20);
        if let Some(s) = t.stream.as_ref() {
            s.set_read_timeout(Some(short)).expect("setsockopt");
        }
        t.read_timeout = short;
        let adu = t.exchange(&read_req(Framing::Tcp, 1)).expect("reply 1");
        assert_eq!(adu, tcp_reply(1, 10));
        // Set to what was left when the short one ended the read, never above the timeout.
        assert!(
            t.read_timeout > short && t.read_timeout <= TIMEOUT,
            "{:?}",
            t.read_timeout
        );
        drop(t);
        device.join().expect("device");
    }

    #[test]
    fn rtu_over_tcp_drops_stale_input_and_assembles_a_reply_in_pieces() {
        let reply = rtu_reply(7);
        let (port, device) = device(
            8,
            vec![
                // A reply after the timeout: stale by the next request.
                vec![(TIMEOUT.as_millis() as u64 + 100, rtu_reply(1))],
                vec![(0, reply[..1].to_vec()), (20, reply[1..].to_vec())],
            ],
        );
        let mut t = RtuOverTcpTransport::new("127.0.0.1", port, TIMEOUT);
        t.open().expect("open");
        let e = t.exchange(&read_req(Framing::Rtu, 0)).expect_err("late");
        assert!(e.is_timeout(), "{e}");
        thread::sleep(Duration::from_millis(200));
        let adu = t.exchange(&read_req(Framing::Rtu, 0)).expect("reply");
        assert_eq!(adu, reply);
        drop(t);
        device.join().expect("device");
    }
}
