//! Wiring: the one place that spawns threads of the gateway, each with its name, moves into
//! each only what it needs, keeps every handle, and joins them on shutdown (as ChirpStack's
//! `cmd/root.rs::run` does). `start` runs one configuration: pollers, uploader and its
//! `influx-http` worker, outbox, `api-strings`; `run` is the daemon around it: the signal
//! thread, a generation (`start` plus the watchdog) replaced on a SIGHUP reload, the status
//! page and `update-status`. Shutdown order: the pollers stop first (dropping their senders),
//! then the uploader drains the channel, makes its last flush and exits, and its worker after
//! it.

use crate::batch::fetch::Fetcher;
use crate::batch::outbox::{self, Outbox};
use crate::batch::{OutboxItem, OwnerCommand, OwnerTx};
use crate::clock::Clock;
use crate::config::{Config, ConfigError, ConfigErrors};
use crate::modbus::transport::Transport;
use crate::modbus::transport_for;
use crate::poller::mux::{Bell, Mux};
use crate::poller::Poller;
use crate::status::{lock, Board, Liveness, MachineStatus};
use crate::uploader::buffer::Buffer;
use crate::uploader::journal::{self, JournalOptions};
use crate::uploader::sink::{InfluxSink, Sink};
use crate::uploader::spool::{Spool, SpoolOptions};
pub use crate::uploader::UploaderSettings;
use crate::uploader::{points_channel, Uploader};
use crossbeam_channel::{bounded, select, Receiver, RecvTimeoutError, Sender};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use ureq::tls::Certificate;

/// Capacity of each endpoint's command channel (batch orders, outbox receipts). When full, the
/// sender gives up after a second and offers again later (orders come every poll of the API).
pub(crate) const COMMAND_CHANNEL: usize = 64;
/// Capacity of the pollers -> outbox channel; items not taken are offered again.
pub(crate) const OUTBOX_CHANNEL: usize = 64;

/// Capacity of the poller -> uploader channel, in messages (one message is one poll's lines).
/// When it is full the pollers wait (backpressure) rather than drop points.
pub(crate) const POINTS_CHANNEL: usize = 4096;

/// How long shutdown waits for an HTTP worker (`influx-http`, `outbox-http`) once the thread
/// it serves is gone: it ends as soon as its request does, and a request still hanging then
/// (the uploader already gave up on it after `shutdown_grace`; the outbox never waits for an
/// answer) is not waited for.
pub(crate) const HTTP_WORKER_GRACE: Duration = Duration::from_secs(1);

/// A thread that could not be started: the process exits with a runtime failure.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {cause}")]
pub(crate) struct StartError {
    pub what: &'static str,
    pub cause: String,
}

pub(crate) fn start_error<E: std::fmt::Display>(
    what: &'static str,
) -> impl FnOnce(E) -> StartError {
    move |e| StartError {
        what,
        cause: e.to_string(),
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(f)
}

/// A thread that ends when its `stop` sender is dropped.
struct Stoppable {
    handle: JoinHandle<()>,
    stop: Sender<()>,
    /// Wakes a thread that does not wait on `stop` itself (the status page's `poll(2)`).
    waker: Option<crate::status_http::server::Waker>,
}

impl Stoppable {
    fn join(self) {
        drop(self.stop);
        if let Some(w) = &self.waker {
            w.wake();
        }
        if self.handle.join().is_err() {
            log::error!("a thread panicked");
        }
    }
}

/// An HTTP worker's thread; `gone` disconnects when the thread ends.
struct HttpThread {
    name: &'static str,
    handle: JoinHandle<()>,
    gone: Receiver<()>,
}

pub struct Running {
    pub board: Arc<Board>,
    pub liveness: Arc<Liveness>,
    /// One stop signal per thread (dropped to stop them): a receiver shared by fifty pollers
    /// that wake together made them queue on the channel's lock (futex calls on every poll).
    shutdown: Vec<Sender<()>>,
    pollers: Vec<JoinHandle<()>>,
    /// Rung after the stop signals are dropped: the TCP pollers' loop waits on sockets.
    bells: Vec<Arc<Bell>>,
    /// The outbox and the new-batches thread.
    others: Vec<JoinHandle<()>>,
    uploader: Option<JoinHandle<()>>,
    influx_http: Option<HttpThread>,
    outbox_http: Option<HttpThread>,
}

impl Running {
    /// Stop polling, flush, and wait for every thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shutdown.clear();
        for b in self.bells.drain(..) {
            b.ring();
        }
        for h in self.pollers.drain(..).chain(self.others.drain(..)) {
            if h.join().is_err() {
                log::error!("a thread panicked");
            }
        }
        if let Some(h) = self.uploader.take() {
            if h.join().is_err() {
                log::error!("the uploader thread panicked");
            }
        }
        for w in [self.influx_http.take(), self.outbox_http.take()]
            .into_iter()
            .flatten()
        {
            w.join();
        }
    }
}

impl HttpThread {
    fn spawn(name: &'static str, f: impl FnOnce() + Send + 'static) -> std::io::Result<Self> {
        let (gone_tx, gone) = bounded::<()>(0);
        let handle = spawn(name, move || {
            let _gone = gone_tx;
            f()
        })?;
        Ok(HttpThread { name, handle, gone })
    }

    /// Wait for it, at most `HTTP_WORKER_GRACE`.
    fn join(self) {
        match self.gone.recv_timeout(HTTP_WORKER_GRACE) {
            Err(RecvTimeoutError::Disconnected) => {
                if self.handle.join().is_err() {
                    log::error!("the {} thread panicked", self.name);
                }
            }
            _ => log::warn!("{}: a request is still open; not waiting for it", self.name),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn start(
    config: &Config,
    sink: Box<dyn Sink>,
    buffer: Box<dyn Buffer>,
    settings: UploaderSettings,
    clock: Arc<Clock>,
    ca: Option<&[ureq::tls::Certificate<'static>]>,
) -> std::io::Result<Running> {
    let board = Arc::new(Board {
        machines: config
            .machines
            .iter()
            .map(|_| Arc::new(Mutex::new(MachineStatus::default())))
            .collect(),
        uploader: Default::default(),
        outbox: Default::default(),
    });
    let liveness = Arc::new(Liveness::default());
    let (points_tx, points_rx) = points_channel(POINTS_CHANNEL);
    let mut shutdown_txs = Vec::new();
    let mut stop_signal = || {
        let (tx, rx) = bounded::<()>(0);
        shutdown_txs.push(tx);
        rx
    };

    let (up, worker) = Uploader::new(
        settings,
        sink,
        buffer,
        board.uploader.clone(),
        clock.clone(),
    );
    let influx_http = HttpThread::spawn("influx-http", move || worker.run())?;
    let uploader = {
        let beat = liveness.register("uploader");
        spawn("uploader", move || up.run(points_rx, beat))?
    };
    // Modbus TCP endpoints that need no name lookup share one thread (`poller::mux`); the
    // others have their own.
    let mut transports: Vec<Box<dyn Transport>> = config
        .endpoints
        .iter()
        .map(|ep| transport_for(&ep.kind, ep.timeout))
        .collect();
    let shared: Vec<bool> = transports
        .iter_mut()
        .map(|t| t.readiness().is_some())
        .collect();
    let bell = if shared.contains(&true) {
        Some(Bell::pair()?)
    } else {
        None
    };
    // The batch workflow: one command channel per endpoint owner, one outbox.
    let batch_on = config
        .machines
        .iter()
        .any(|m| m.finish.is_some() || m.batch_write.is_some());
    let (command_txs, command_rxs): (Vec<_>, Vec<_>) = shared
        .iter()
        .map(|&shared| {
            let (tx, rx) = bounded::<OwnerCommand>(COMMAND_CHANNEL);
            let ring = match (&bell, shared) {
                (Some((bell, _)), true) => {
                    let bell = bell.clone();
                    Some(Arc::new(move || bell.ring()) as Arc<dyn Fn() + Send + Sync>)
                }
                _ => None,
            };
            (OwnerTx::new(tx, ring), rx)
        })
        .unzip();
    let (outbox_tx, outbox_rx) = bounded::<OutboxItem>(OUTBOX_CHANNEL);
    let mut others = Vec::new();
    let mut outbox_http = None;
    if batch_on {
        let mut finish_urls: Vec<String> = Vec::new();
        finish_urls.extend(config.api.batch_url.iter().cloned());
        finish_urls.extend(config.api.trigger_url.iter().cloned());
        let (outbox, post_worker) = Outbox::open(
            outbox::OutboxSettings {
                dir: config.state().outbox(),
                finish_urls,
                confirm_url: config.api.strings_conf_url.clone(),
                finish_body: config.api.finish_body.clone(),
                confirm_body: config.api.confirm_body.clone(),
                timeout: config.api.timeout,
                ca: ca.map(<[_]>::to_vec),
                shadow: config.shadow_mode,
                audit: config.state().audit(),
                clock: clock.clone(),
                clock_wait: outbox::CLOCK_WAIT,
            },
            board.outbox.clone(),
        );
        let replies: Vec<_> = config
            .machines
            .iter()
            .map(|m| command_txs[m.endpoint].clone())
            .collect();
        if let Some(worker) = post_worker {
            outbox_http = Some(HttpThread::spawn("outbox-http", move || worker.run())?);
        }
        let beat = liveness.register("outbox");
        let shutdown = stop_signal();
        others.push(spawn("outbox", move || {
            outbox.run(outbox_rx, replies, shutdown, beat)
        })?);
        let writable = config.machines.iter().any(|m| m.batch_write.is_some());
        if let (Some(url), true) = (config.api.strings_url.clone(), writable) {
            let fetcher = Fetcher::new(config, ca, url, command_txs.clone());
            let beat = liveness.register("api-strings");
            let shutdown = stop_signal();
            others.push(spawn("api-strings", move || fetcher.run(shutdown, beat))?);
        }
    }
    let mut pollers = Vec::new();
    let mut muxed = Vec::new();
    let endpoints = config.endpoints.iter().enumerate();
    for (((i, ep), commands), transport) in endpoints.zip(command_rxs).zip(transports) {
        let mut poller = Poller::new(
            config,
            i,
            transport,
            &board.machines,
            points_tx.clone(),
            clock.clone(),
        );
        if batch_on {
            poller = poller.with_batch(config, commands, outbox_tx.clone());
        }
        if shared[i] {
            muxed.push(poller);
            continue;
        }
        let beat = liveness.register(&format!("poller {}", ep.name));
        let shutdown = stop_signal();
        pollers.push(spawn(&format!("poll {}", ep.name), move || {
            poller.run(shutdown, beat)
        })?);
    }
    let mut bells = Vec::new();
    if let Some((bell, rx)) = bell {
        let n = muxed.len();
        let mux = Mux::new(muxed, rx);
        let beat = liveness.register(&format!("pollers ({n} Modbus TCP endpoints)"));
        let shutdown = stop_signal();
        pollers.push(spawn("poll tcp", move || mux.run(shutdown, beat))?);
        bells.push(bell);
    }
    drop(points_tx);
    drop(outbox_tx);
    Ok(Running {
        others,
        board,
        liveness,
        shutdown: shutdown_txs,
        pollers,
        bells,
        uploader: Some(uploader),
        influx_http: Some(influx_http),
        outbox_http,
    })
}

/// The crash journal of `run`: in the runtime directory (see `uploader::journal::locate`).
/// `demo`, `once` and in-process tests run without one, so they never take back the points
/// of a production gateway.
pub(crate) fn journal_options() -> Option<JournalOptions> {
    journal::locate().map(|dir| JournalOptions {
        dir,
        max_bytes: journal::DEFAULT_MAX_BYTES,
    })
}

/// Uploader settings from the config (or defaults when no InfluxDB is configured).
/// Without a crash journal: `run` adds it (`journal_options`).
pub fn uploader_settings(config: &Config) -> UploaderSettings {
    let (max, flush) = config
        .influx
        .configured()
        .ok()
        .map(|i| (i.max_points_per_write, i.flush_interval))
        .unwrap_or((5000, Duration::from_secs(1)));
    UploaderSettings {
        max_points_per_write: max,
        flush_interval: flush,
        rejected_file: Some(config.state().rejected()),
        shutdown_grace: Duration::from_secs(5),
        hold_max_points: config.clock.hold_max_points,
        hold_max_bytes: config.clock.hold_max_bytes,
        journal: None,
    }
}

/// The signal thread: SIGTERM, SIGINT and SIGHUP arrive on `rx`. Dropping it ends and joins
/// the thread.
pub(crate) struct Signals {
    pub rx: Receiver<i32>,
    handle: signal_hook::iterator::Handle,
    thread: Option<JoinHandle<()>>,
}

impl Signals {
    pub(crate) fn start() -> std::io::Result<Signals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        let handle = signals.handle();
        let (tx, rx) = bounded(4);
        let thread = spawn("signals", move || {
            for s in signals.forever() {
                if tx.send(s).is_err() {
                    break;
                }
            }
        })?;
        Ok(Signals {
            rx,
            handle,
            thread: Some(thread),
        })
    }

    /// Wait for SIGTERM/SIGINT (any signal) or the duration.
    pub(crate) fn wait(&self, duration: Option<f64>) {
        let timeout = duration
            .filter(|d| d.is_finite() && *d >= 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(Duration::MAX);
        select! {
            recv(self.rx) -> s => log::info!("signal {} received: shutting down", s.unwrap_or(0)),
            default(timeout) => log::info!("duration reached: shutting down"),
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

/// The threads of one configuration: the gateway's and the watchdog's.
struct Generation {
    running: Running,
    watchdog: Option<Stoppable>,
}

impl Generation {
    fn stop(self) {
        self.running.shutdown();
        if let Some(w) = self.watchdog {
            w.join();
        }
    }
}

/// The certificates trusted for https://; `None`: Mozilla's roots.
pub type Roots = Option<Vec<Certificate<'static>>>;

/// The certificates trusted for https:// (`None`: Mozilla's roots), read from `tls.ca_file`
/// at start-up, where the HTTP clients are built (validation only checks the name). A file
/// that cannot be read or holds no certificate is a configuration error at its JSON path.
pub fn trusted_roots(config: &Config) -> Result<Roots, ConfigError> {
    config
        .tls_ca_file
        .as_deref()
        .map(crate::http::load_ca)
        .transpose()
        .map_err(|message| ConfigError {
            path: "$.tls.ca_file".into(),
            message,
        })
}

/// What `run` needs beyond a valid config: an InfluxDB to write to, and the trusted roots.
pub(crate) fn runnable(config: &Config) -> Result<Roots, ConfigError> {
    config.influx.configured().map_err(Clone::clone)?;
    trusted_roots(config)
}

/// Start every thread for `config` (which has an InfluxDB), trusting `ca` for https://.
fn start_generation(
    config: &Config,
    ca: Option<&[Certificate<'static>]>,
) -> Result<Generation, String> {
    let influx = config.influx.configured().map_err(|p| p.to_string())?;
    if let Err(e) = std::fs::create_dir_all(&config.state_dir) {
        log::warn!(
            "state directory {} is not usable: {e}",
            config.state_dir.display()
        );
    }
    let sink = InfluxSink::new(influx, ca);
    log::info!(
        "dyeing-gateway {} starting: {} machines on {} endpoints, writing to {}{}",
        env!("CARGO_PKG_VERSION"),
        config.machines.len(),
        config.endpoints.len(),
        Sink::describe(&sink),
        if config.shadow_mode {
            "; SHADOW MODE: nothing is written to machines or posted to the API"
        } else {
            ""
        }
    );
    let spool = Spool::open(SpoolOptions {
        dir: config.state().spool(),
        window: influx.fsync_window,
        max_bytes: influx.spool_max_bytes,
        max_memory: influx.buffer_max_points,
        max_memory_bytes: influx.buffer_max_bytes,
    });
    let clock = Arc::new(Clock::new(config.clock.check.clone()));
    let running = start(
        config,
        Box::new(sink),
        Box::new(spool),
        UploaderSettings {
            journal: journal_options(),
            ..uploader_settings(config)
        },
        clock,
        ca,
    )
    .map_err(|e| format!("cannot start threads: {e}"))?;
    let watchdog = match crate::watchdog::wanted() {
        None => None,
        Some((interval, max_age)) => {
            let (stop, stop_rx) = bounded::<()>(0);
            let liveness = running.liveness.clone();
            let handle = spawn("watchdog", move || {
                crate::watchdog::run(liveness, interval, max_age, stop_rx, crate::watchdog::ping)
            })
            .map_err(|e| format!("cannot start the watchdog thread: {e}"))?;
            Some(Stoppable {
                handle,
                stop,
                waker: None,
            })
        }
    };
    Ok(Generation { running, watchdog })
}

/// The status page's thread, when the config has a page and its port could be taken.
pub(crate) struct StatusPage(Option<Stoppable>);

impl StatusPage {
    /// Stop the page and wait for its thread.
    pub(crate) fn stop(self) {
        if let Some(s) = self.0 {
            s.join();
        }
    }
}

/// Start the status page (if the config has one) on the board in `shared`.
pub(crate) fn start_status(
    config: &Config,
    shared: &crate::status_http::Shared,
) -> Result<StatusPage, StartError> {
    let Some(sp) = &config.status else {
        return Ok(StatusPage(None));
    };
    // The page is secondary: a port in use is logged and the gateway runs without it.
    let server = match crate::status_http::Server::bind(sp.listen, Default::default()) {
        Ok(s) => s,
        Err(e) => {
            log::error!(
                "status page: cannot listen on {}: {e}; running without it",
                sp.listen
            );
            return Ok(StatusPage(None));
        }
    };
    let addr = server
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| sp.listen.to_string());
    log::info!("status page on http://{addr}/ (also /status.json and /metrics)");
    eprintln!("status page: http://{addr}/");
    let (stop, stop_rx) = bounded::<()>(0);
    let waker = Some(server.waker());
    warn_legacy(&sp.auth);
    lock(&shared.login).set_login(sp.auth.clone());
    let shared = shared.clone();
    let handle = spawn("status-http", move || {
        crate::status_http::run(server, shared, stop_rx)
    })
    .map_err(start_error("cannot start the status page"))?;
    Ok(StatusPage(Some(Stoppable {
        handle,
        stop,
        waker,
    })))
}

/// Take the page's login from a reloaded config. The page keeps the address it was started
/// on (`listen`), so a config without a login does not open a page that listens beyond
/// loopback: the old login stays.
fn reload_login(shared: &crate::status_http::Shared, listen: Option<SocketAddr>, new: &Config) {
    let login = new.status.as_ref().and_then(|s| s.auth.clone());
    match listen {
        Some(addr) if login.is_none() && !addr.ip().is_loopback() => log::warn!(
            "status page: the new configuration has no login; {addr} keeps the previous one until a restart"
        ),
        _ => {
            warn_legacy(&login);
            lock(&shared.login).set_login(login);
        }
    }
}

fn warn_legacy(login: &Option<crate::status_http::login::Login>) {
    if login.as_ref().is_some_and(|l| l.hash.is_legacy()) {
        log::warn!(
            "status page: the password hash is the old fast salted SHA-256; make a new one with `dyeing-gateway hash-password` and put it in status.password_hash"
        );
    }
}

/// Start the last good configuration again after a new one failed to start. Threads of the
/// failed attempt may still be ending, so a few tries, a second apart.
fn restart_last_good(
    config: &Config,
    ca: Option<&[Certificate<'static>]>,
) -> Result<Generation, String> {
    let mut tries = 0;
    loop {
        match start_generation(config, ca) {
            Ok(g) => return Ok(g),
            Err(e) if tries >= 4 => return Err(e),
            Err(e) => {
                tries += 1;
                log::warn!("cannot restart the last good configuration yet ({e}); retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// The daemon (`run`): start `config` (which has an InfluxDB; `ca` from `runnable`), the status page and
/// `update-status`, tell systemd it is ready, and run until SIGTERM/SIGINT or `duration`
/// seconds. A SIGHUP reloads through `reload` (`path` is the file named in the log): a config
/// that fails validation or has no InfluxDB is refused, one that fails to start is replaced by
/// the last good one again; the page keeps running and is handed the new board and login.
pub(crate) fn run(
    mut config: Config,
    mut ca: Roots,
    path: &Path,
    reload: &dyn Fn() -> Result<Config, ConfigErrors>,
    duration: Option<f64>,
) -> Result<(), StartError> {
    let sig = Signals::start().map_err(start_error("cannot install signal handlers"))?;
    let mut generation =
        start_generation(&config, ca.as_deref()).map_err(start_error("cannot start"))?;
    let shared = crate::status_http::Shared::new(generation.running.board.clone());
    let status = start_status(&config, &shared)?;
    // Only the page and the log use the slots; the thread is not watched by the watchdog (a
    // hanging `rauc` is killed by the thread itself).
    let update_status = match crate::update::program() {
        None => None,
        Some(program) => {
            let (stop, stop_rx) = bounded::<()>(0);
            let cell = shared.update.clone();
            let handle = spawn("update-status", move || {
                crate::update::run(&program, cell, crate::update::REFRESH, stop_rx)
            })
            .map_err(start_error("cannot start"))?;
            Some(Stoppable {
                handle,
                stop,
                waker: None,
            })
        }
    };
    // The page's address is kept until a restart.
    let listen = status
        .0
        .as_ref()
        .and(config.status.as_ref())
        .map(|sp| sp.listen);
    crate::watchdog::ready(&format!(
        "polling {} machines on {} endpoints",
        config.machines.len(),
        config.endpoints.len()
    ));
    let deadline = duration
        .filter(|d| d.is_finite() && *d >= 0.0)
        .map(|d| Instant::now() + Duration::from_secs_f64(d));
    loop {
        let left = deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        });
        let signal = select! {
            recv(sig.rx) -> s => s.unwrap_or(0),
            default(left) => {
                log::info!("duration reached: shutting down");
                break;
            }
        };
        if signal != signal_hook::consts::SIGHUP {
            log::info!("signal {signal} received: shutting down");
            break;
        }
        // SIGHUP: reload. A config that fails validation is refused; the last good one runs on.
        log::info!("SIGHUP: reloading {}", path.display());
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
        let loaded = reload()
            .map_err(|e| e.to_string().replace('\n', "; "))
            .and_then(|new| match runnable(&new) {
                Ok(new_ca) => Ok((new, new_ca)),
                Err(p) => Err(p.to_string()),
            });
        let refused = match loaded {
            Err(e) => Some(e),
            Ok((new, new_ca)) => {
                generation.stop();
                match start_generation(&new, new_ca.as_deref()) {
                    Ok(g) => {
                        generation = g;
                        *lock(&shared.board) = generation.running.board.clone();
                        reload_login(&shared, listen, &new);
                        log::info!("configuration reloaded: {} machines", new.machines.len());
                        // The last good configuration, for the next reload that fails to start.
                        config = new;
                        ca = new_ca;
                        None
                    }
                    Err(e) => {
                        log::error!("cannot start with the new configuration ({e}); restarting with the last good one");
                        generation = restart_last_good(&config, ca.as_deref())
                            .map_err(start_error("cannot restart"))?;
                        *lock(&shared.board) = generation.running.board.clone();
                        Some(e)
                    }
                }
            }
        };
        {
            let mut r = lock(&shared.reload);
            r.last_reload_ms = Some(crate::clock::wall_ms());
            if let Some(e) = &refused {
                log::error!(
                    "configuration reload refused, still running on the last good one: {e}"
                );
            }
            r.last_error = refused;
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }
    crate::watchdog::stopping();
    generation.stop();
    status.stop();
    if let Some(u) = update_status {
        u.join();
    }
    log::info!("stopped");
    Ok(())
}
