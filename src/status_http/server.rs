//! The status page's HTTP/1.1 server: a bounded, blocking server on a std `TcpListener`.
//!
//! One thread (the *reader*) accepts connections and reads request heads from all of them at
//! once with `poll(2)`; a fixed pool of *workers* answers complete requests. Nothing here
//! grows with the number of clients:
//! - at most `Limits::open` connections are being read; a new one beyond that evicts the
//!   oldest unfinished one (a real client sends its request at once, an idle one waits);
//! - a request head longer than `Limits::head_max` bytes is refused (431), one not complete
//!   within `Limits::request_deadline` is dropped (slow clients);
//! - at most `Limits::queue` complete requests wait for a worker; beyond that the client gets
//!   503 at once and the connection is closed;
//! - a worker writes an answer within `Limits::write_deadline` or drops the connection;
//! - every connection is closed after its answer (`Connection: close`, no keep-alive).
//!
//! A resource error (no file descriptor, no memory for a socket, a thread that cannot be
//! started) is logged and survived, never a panic: the rest of the gateway does not depend
//! on this page.

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The bounds of the server (see the module comment).
#[derive(Debug, Clone)]
pub struct Limits {
    pub workers: usize,
    pub queue: usize,
    pub open: usize,
    pub head_max: usize,
    pub request_deadline: Duration,
    pub write_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            workers: 2,
            queue: 8,
            open: 64,
            head_max: 8 * 1024,
            request_deadline: Duration::from_secs(10),
            write_deadline: Duration::from_secs(10),
        }
    }
}

/// What a handler sees of a request: the head only (the page is read-only, bodies are
/// ignored).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target without its query.
    pub path: String,
    pub authorization: Option<String>,
    pub peer: IpAddr,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub code: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(code: u16, body: &str) -> Response {
        Response {
            code,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The whole answer; `head_only` for HEAD requests.
    fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut o = format!("HTTP/1.1 {} {}\r\n", self.code, reason(self.code));
        for (k, v) in &self.headers {
            // Values are made by this program; a line break would split the head.
            let v: String = v.chars().filter(|c| !c.is_control()).collect();
            o.push_str(&format!("{k}: {v}\r\n"));
        }
        o.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        let mut b = o.into_bytes();
        if !head_only {
            b.extend_from_slice(&self.body);
        }
        b
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

pub(crate) type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// A bound listener, not yet serving.
pub struct Server {
    listener: TcpListener,
    limits: Limits,
    wake: Arc<OwnedFd>,
}

/// Wakes the reader out of `poll(2)` (an eventfd in its set), so that it sees the shutdown
/// at once without waking up periodically to look.
#[derive(Clone)]
pub struct Waker(Arc<OwnedFd>);

impl Waker {
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd this handle keeps open. A
        // failure (the counter full) still leaves the reader woken.
        let _ = unsafe {
            libc::write(
                self.0.as_raw_fd(),
                (&one as *const u64).cast::<libc::c_void>(),
                8,
            )
        };
    }
}

impl Server {
    pub fn bind(addr: SocketAddr, limits: Limits) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        // SAFETY: eventfd returns a new descriptor (or -1), owned from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a valid descriptor nothing else owns.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(Server {
            listener,
            limits,
            wake,
        })
    }

    /// What to wake the reader with after closing its shutdown channel.
    pub fn waker(&self) -> Waker {
        Waker(self.wake.clone())
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` is closed: starts the workers on this thread, then reads.
    /// Workers that cannot be started are logged; with none the page is off.
    pub fn run(self, handler: Handler, shutdown: Receiver<()>) {
        let (jobs_tx, jobs_rx) = bounded::<Job>(self.limits.queue);
        let mut workers = Vec::new();
        for i in 0..self.limits.workers {
            let (rx, handler, deadline) =
                (jobs_rx.clone(), handler.clone(), self.limits.write_deadline);
            match std::thread::Builder::new()
                .name(format!("status-worker-{i}"))
                .spawn(move || worker_loop(rx, handler, deadline))
            {
                Ok(h) => workers.push(h),
                Err(e) => log::error!("status page: cannot start worker {i}: {e}"),
            }
        }
        drop(jobs_rx);
        if workers.is_empty() {
            log::error!("status page: no worker could be started; the page is off");
            return;
        }
        Reader {
            listener: self.listener,
            wake: self.wake,
            limits: self.limits,
            pending: VecDeque::new(),
            jobs: jobs_tx,
            last_accept_error: None,
        }
        .run(&shutdown);
        for h in workers {
            let _ = h.join();
        }
    }
}

/// A complete request and its connection, waiting for a worker.
struct Job {
    stream: TcpStream,
    request: Request,
}

/// A connection whose request head is still arriving.
struct Pending {
    stream: TcpStream,
    peer: IpAddr,
    head: Vec<u8>,
    since: Instant,
}

struct Reader {
    listener: TcpListener,
    /// The eventfd the `Waker` writes to.
    wake: Arc<OwnedFd>,
    limits: Limits,
    /// Oldest first.
    pending: VecDeque<Pending>,
    jobs: Sender<Job>,
    /// When an accept error was last logged (logged at most every 10 s).
    last_accept_error: Option<Instant>,
}

/// What reading from a pending connection gave.
enum Progress {
    More,
    Closed,
    Head(Request),
    Refuse(Response),
}

impl Reader {
    fn run(mut self, shutdown: &Receiver<()>) {
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(self.limits.open + 1);
        loop {
            if matches!(
                shutdown.try_recv(),
                Err(crossbeam_channel::TryRecvError::Disconnected)
            ) {
                return;
            }
            let now = Instant::now();
            let deadline = self.limits.request_deadline;
            self.pending
                .retain(|p| now.duration_since(p.since) < deadline);
            // Idle, it sleeps until a connection or the waker: no periodic wake-up.
            let wait = self.pending.front().map_or(-1, |p| {
                let left = deadline.saturating_sub(now.duration_since(p.since));
                left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int
            });
            fds.clear();
            fds.push(pollfd(self.listener.as_raw_fd()));
            fds.push(pollfd(self.wake.as_raw_fd()));
            fds.extend(self.pending.iter().map(|p| pollfd(p.stream.as_raw_fd())));
            // SAFETY: `fds` is a valid, initialized array of `fds.len()` pollfd structs that
            // outlives the call; every descriptor in it is owned by a live socket.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    log::warn!("status page: poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            // Pending connections, from the back so that removing keeps indices valid.
            for i in (0..self.pending.len()).rev() {
                let ready = fds.get(i + 2).map_or(0, |f| f.revents);
                if ready == 0 {
                    continue;
                }
                let outcome = match self.pending.get_mut(i) {
                    Some(p) => read_head(p, self.limits.head_max),
                    None => continue,
                };
                match outcome {
                    Progress::More => {}
                    Progress::Closed => {
                        self.pending.remove(i);
                    }
                    Progress::Refuse(resp) => {
                        if let Some(p) = self.pending.remove(i) {
                            answer_now(p.stream, &resp);
                        }
                    }
                    Progress::Head(request) => {
                        if let Some(p) = self.pending.remove(i) {
                            self.dispatch(p.stream, request);
                        }
                    }
                }
            }
            if fds.first().is_some_and(|f| f.revents != 0) {
                self.accept_all();
            }
            if fds.get(1).is_some_and(|f| f.revents != 0) {
                let mut count = [0u8; 8];
                // SAFETY: reads at most 8 bytes into a live buffer from the eventfd (which
                // resets it); nonblocking, so it cannot hang.
                let _ = unsafe {
                    libc::read(
                        self.wake.as_raw_fd(),
                        count.as_mut_ptr().cast::<libc::c_void>(),
                        8,
                    )
                };
            }
        }
    }

    /// Accept what is waiting (a bounded number per turn).
    fn accept_all(&mut self) {
        for _ in 0..self.limits.open {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    if self.pending.len() >= self.limits.open {
                        // The oldest unfinished connection makes room.
                        self.pending.pop_front();
                    }
                    self.pending.push_back(Pending {
                        stream,
                        peer: peer.ip(),
                        head: Vec::new(),
                        since: Instant::now(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // Out of descriptors or memory: give up the oldest unfinished connection
                    // and pause briefly, so the listener (still readable) does not spin.
                    if self
                        .last_accept_error
                        .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
                    {
                        log::warn!("status page: cannot accept a connection: {e}");
                        self.last_accept_error = Some(Instant::now());
                    }
                    self.pending.pop_front();
                    std::thread::sleep(Duration::from_millis(50));
                    return;
                }
            }
        }
    }

    fn dispatch(&mut self, stream: TcpStream, request: Request) {
        match self.jobs.try_send(Job { stream, request }) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => answer_now(
                job.stream,
                &Response::text(503, "busy, try again\n").header("Retry-After", "1"),
            ),
        }
    }
}

fn pollfd(fd: libc::c_int) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Read what has arrived on a pending connection.
fn read_head(p: &mut Pending, head_max: usize) -> Progress {
    let mut chunk = [0u8; 2048];
    loop {
        let room = (head_max + 1).saturating_sub(p.head.len()).min(chunk.len());
        let Some(buf) = chunk.get_mut(..room) else {
            return Progress::Closed;
        };
        match p.stream.read(buf) {
            Ok(0) => return Progress::Closed,
            Ok(n) => {
                p.head.extend_from_slice(buf.get(..n).unwrap_or_default());
                if let Some(end) = head_end(&p.head) {
                    return match parse_head(p.head.get(..end).unwrap_or_default(), p.peer) {
                        Some(r) => Progress::Head(r),
                        None => Progress::Refuse(Response::text(400, "bad request\n")),
                    };
                }
                if p.head.len() > head_max {
                    return Progress::Refuse(Response::text(431, "request head too large\n"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::More,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Progress::Closed,
        }
    }
}

/// Where the head ends (the blank line), if it has.
fn head_end(b: &[u8]) -> Option<usize> {
    b.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| b.windows(2).position(|w| w == b"\n\n"))
}

/// The request line and the one header the page needs.
fn parse_head(head: &[u8], peer: IpAddr) -> Option<Request> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let mut first = lines.next()?.split(' ');
    let (method, target, version) = (first.next()?, first.next()?, first.next()?);
    if method.is_empty() || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return None;
    }
    let mut authorization = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value.trim().to_string());
        }
    }
    Some(Request {
        method: method.to_string(),
        path: target.split('?').next().unwrap_or("/").to_string(),
        authorization,
        peer,
    })
}

/// A short answer from the reader thread: one non-blocking write, whatever fits.
fn answer_now(mut stream: TcpStream, resp: &Response) {
    let _ = stream.write(&resp.to_bytes(false));
    close(stream);
}

/// Close after an answer. Unread input would make the kernel reset the connection, which can
/// discard the answer at the client, so what has already arrived is read first (bounded,
/// never waiting).
fn close(mut stream: TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    if stream.set_nonblocking(true).is_ok() {
        let mut sink = [0u8; 4096];
        for _ in 0..16 {
            match stream.read(&mut sink) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }
}

fn worker_loop(jobs: Receiver<Job>, handler: Handler, write_deadline: Duration) {
    for Job { stream, request } in jobs.iter() {
        let resp = handler(&request);
        let bytes = resp.to_bytes(request.method == "HEAD");
        if let Err(e) = write_within(&stream, &bytes, write_deadline) {
            log::debug!("status page: answer to {} not sent: {e}", request.peer);
        }
        close(stream);
    }
}

/// Write all of `bytes` before `limit` has passed, or fail (a client that reads too slowly
/// does not keep a worker).
fn write_within(mut stream: &TcpStream, mut bytes: &[u8], limit: Duration) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    let end = Instant::now() + limit;
    while !bytes.is_empty() {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(limits: Limits) -> (SocketAddr, crossbeam_channel::Sender<()>) {
        let server = Server::bind("127.0.0.1:0".parse().expect("addr"), limits).expect("bind");
        let addr = server.local_addr().expect("addr");
        let (stop, stop_rx) = bounded::<()>(0);
        let handler: Handler = Arc::new(|r: &Request| Response::text(200, &r.path));
        std::thread::spawn(move || server.run(handler, stop_rx));
        (addr, stop)
    }

    #[test]
    fn an_idle_reader_sleeps_until_woken_and_then_sees_the_shutdown() {
        let server =
            Server::bind("127.0.0.1:0".parse().expect("addr"), Limits::default()).expect("bind");
        let addr = server.local_addr().expect("addr");
        let waker = server.waker();
        let (stop, stop_rx) = bounded::<()>(0);
        let handler: Handler = Arc::new(|r: &Request| Response::text(200, &r.path));
        let (done_tx, done) = bounded::<()>(1);
        std::thread::spawn(move || {
            server.run(handler, stop_rx);
            let _ = done_tx.send(());
        });
        assert!(get(addr, b"GET /a HTTP/1.0\r\n\r\n").ends_with("/a"));
        // Idle and not woken, it does not notice the closed channel: no periodic wake-up.
        drop(stop);
        assert!(done.recv_timeout(Duration::from_millis(600)).is_err());
        waker.wake();
        assert!(
            done.recv_timeout(Duration::from_secs(10)).is_ok(),
            "the reader did not stop once woken"
        );
    }

    fn get(addr: SocketAddr, raw: &[u8]) -> String {
        let mut c = TcpStream::connect(addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        c.write_all(raw).expect("write");
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    }

    #[test]
    fn answers_and_closes() {
        let (addr, _stop) = start(Limits::default());
        let out = get(addr, b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("Connection: close\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\n/metrics"), "{out}");
        let out = get(addr, b"HEAD / HTTP/1.0\r\n\r\n");
        assert!(
            out.ends_with("Content-Length: 1\r\nConnection: close\r\n\r\n"),
            "{out}"
        );
        assert!(get(addr, b"nonsense\r\n\r\n").starts_with("HTTP/1.1 400 "));
    }

    #[test]
    fn an_endless_head_is_refused() {
        let (addr, _stop) = start(Limits {
            head_max: 100,
            ..Limits::default()
        });
        let mut raw = b"GET / HTTP/1.1\r\nX: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 200));
        assert!(get(addr, &raw).starts_with("HTTP/1.1 431 "));
    }

    #[test]
    fn idle_connections_are_evicted_and_dropped() {
        let (addr, _stop) = start(Limits {
            open: 4,
            request_deadline: Duration::from_secs(2),
            ..Limits::default()
        });
        let mut idle: Vec<TcpStream> = (0..10)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        // A new client still gets in: the oldest idle ones made room.
        assert!(get(addr, b"GET /x HTTP/1.1\r\n\r\n").ends_with("/x"));
        // Every idle connection is closed, the latest ones after the deadline.
        for c in &mut idle {
            c.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            let mut b = [0u8; 16];
            assert!(matches!(c.read(&mut b), Ok(0)), "idle connection kept");
        }
    }
}
