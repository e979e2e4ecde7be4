//! Transports move ADUs: `Transport` is the seam every kind of endpoint implements, so the
//! poller, the decoder and the change logic are shared by all of them. `TcpTransport` speaks
//! Modbus TCP (MBAP framing). Only this module opens sockets or serial ports.

use super::codec::{self, FrameError, Framing, Request};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
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
    pub fn is_timeout(&self) -> bool {
        matches!(self, TransportError::Timeout(_))
    }
}

/// Timeouts in a row after which a TCP connection is taken for half-open: one timeout keeps
/// it (a late reply is discarded), two of different requests mean the peer is gone.
pub const HALF_OPEN_TIMEOUTS: u32 = 2;

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
}

/// Modbus TCP: one persistent connection; the MBAP transaction id pairs replies to requests.
pub struct TcpTransport {
    host: String,
    port: u16,
    timeout: Duration,
    stream: Option<TcpStream>,
}

impl TcpTransport {
    pub fn new(host: &str, port: u16, timeout: Duration) -> Self {
        TcpTransport {
            host: host.to_string(),
            port,
            timeout,
            stream: None,
        }
    }
}

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
                Ok(s) => {
                    s.set_nodelay(true)?;
                    s.set_write_timeout(Some(self.timeout))?;
                    self.stream = Some(s);
                    return Ok(());
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn close(&mut self) {
        if let Some(s) = self.stream.take() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn exchange(&mut self, req: &Request) -> Result<Vec<u8>, TransportError> {
        let timeout = self.timeout;
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "not connected"))?;
        let deadline = Instant::now() + timeout;
        if let Err(e) = stream.write_all(&req.adu) {
            self.close();
            return Err(e.into());
        }
        let mut set = |s: &mut TcpStream, d: Duration| s.set_read_timeout(Some(d));
        loop {
            let mut header = [0u8; codec::MBAP_LEN];
            let result = read_full(stream, &mut header, deadline, &mut set).and_then(|()| {
                let len = codec::tcp_adu_len(&header).map_err(|e| (codec::MBAP_LEN, e.into()))?;
                let mut adu = vec![0u8; len];
                adu[..codec::MBAP_LEN].copy_from_slice(&header);
                read_full(stream, &mut adu[codec::MBAP_LEN..], deadline, &mut set)
                    .map_err(|(n, e)| (codec::MBAP_LEN + n, e))?;
                Ok(adu)
            });
            match result {
                Ok(adu) if codec::tcp_transaction(&adu) == Some(req.transaction) => return Ok(adu),
                Ok(adu) => {
                    log::debug!(
                        "{}:{}: discarded a stale reply (transaction {:?}, waiting for {})",
                        self.host,
                        self.port,
                        codec::tcp_transaction(&adu),
                        req.transaction
                    );
                }
                Err((got, e)) => {
                    // A partial frame leaves the stream out of step, and an I/O error or a
                    // garbage header means the connection cannot be trusted: start afresh.
                    // A clean timeout (nothing read) keeps it: a late reply is discarded by
                    // its transaction id.
                    if got > 0 || !e.is_timeout() {
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
pub struct RtuOverTcpTransport {
    inner: TcpTransport,
}

impl RtuOverTcpTransport {
    pub fn new(host: &str, port: u16, timeout: Duration) -> Self {
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
        let stream = self
            .inner
            .stream
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "not connected"))?;
        // Discard whatever a late reply left behind.
        stream.set_nonblocking(true)?;
        let mut junk = [0u8; 256];
        while let Ok(n) = stream.read(&mut junk) {
            if n == 0 {
                break;
            }
        }
        stream.set_nonblocking(false)?;
        if let Err(e) = stream.write_all(&req.adu) {
            self.inner.close();
            return Err(e.into());
        }
        let mut set = |s: &mut TcpStream, d: Duration| s.set_read_timeout(Some(d));
        let deadline = Instant::now() + timeout;
        match read_rtu_adu(stream, deadline, Duration::from_millis(50), &mut set) {
            Ok(adu) => Ok(adu),
            Err((_, TransportError::Timeout(_))) => Err(TransportError::Timeout(timeout)),
            Err((_, e)) => {
                if matches!(e, TransportError::Io(_)) {
                    self.inner.close();
                }
                Err(e)
            }
        }
    }
}
