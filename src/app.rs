//! Wiring: the one function that spawns every thread of the gateway, with its name, moves into
//! each only what it needs, keeps every handle, and joins them on shutdown. Shutdown order:
//! the pollers stop first (dropping their senders), then the uploader drains the channel,
//! makes its last flush and exits.

use crate::batch::fetch::Fetcher;
use crate::batch::outbox::{self, Outbox};
use crate::batch::{Command, OutboxItem};
use crate::clock::Clock;
use crate::config::Config;
use crate::poller::{transport_for, Poller};
use crate::status::{Board, Liveness, MachineStatus};
use crate::uploader::buffer::Buffer;
use crate::uploader::journal::{self, JournalOptions};
use crate::uploader::sink::Sink;
pub use crate::uploader::Settings;
use crate::uploader::{Batch, Uploader};
use crossbeam_channel::{bounded, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Capacity of each endpoint's command channel (batch orders, outbox receipts). When full, the
/// sender gives up after a second and offers again later (orders come every poll of the API).
pub const COMMAND_CHANNEL: usize = 64;
/// Capacity of the pollers -> outbox channel; items not taken are offered again.
pub const OUTBOX_CHANNEL: usize = 64;

/// Capacity of the poller -> uploader channel, in messages (one message is one poll's lines).
/// When it is full the pollers wait (backpressure) rather than drop points.
pub const POINTS_CHANNEL: usize = 4096;

pub struct Running {
    pub board: Arc<Board>,
    pub liveness: Arc<Liveness>,
    shutdown: Option<Sender<()>>,
    pollers: Vec<JoinHandle<()>>,
    /// The outbox and the new-batches thread.
    others: Vec<JoinHandle<()>>,
    uploader: Option<JoinHandle<()>>,
}

impl Running {
    /// Stop polling, flush, and wait for every thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        drop(self.shutdown.take());
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
    settings: Settings,
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
    let (points_tx, points_rx) = bounded::<Batch>(POINTS_CHANNEL);
    let (shutdown_tx, shutdown_rx) = bounded::<()>(0);

    let uploader = {
        let beat = liveness.register("uploader");
        let up = Uploader::new(
            settings,
            sink,
            buffer,
            board.uploader.clone(),
            clock.clone(),
        );
        std::thread::Builder::new()
            .name("uploader".into())
            .spawn(move || up.run(points_rx, beat))?
    };
    // The batch workflow: one command channel per endpoint owner, one outbox.
    let batch_on = config
        .machines
        .iter()
        .any(|m| m.finish.is_some() || m.batch_write.is_some());
    let (command_txs, command_rxs): (Vec<_>, Vec<_>) = config
        .endpoints
        .iter()
        .map(|_| bounded::<Command>(COMMAND_CHANNEL))
        .unzip();
    let (outbox_tx, outbox_rx) = bounded::<OutboxItem>(OUTBOX_CHANNEL);
    let mut others = Vec::new();
    if batch_on {
        let mut finish_urls: Vec<String> = Vec::new();
        finish_urls.extend(config.api.batch_url.iter().cloned());
        finish_urls.extend(config.api.trigger_url.iter().cloned());
        let outbox = Outbox::open(
            outbox::Settings {
                dir: config.state_dir.join("outbox"),
                finish_urls,
                confirm_url: config.api.strings_conf_url.clone(),
                finish_body: config.api.finish_body.clone(),
                confirm_body: config.api.confirm_body.clone(),
                timeout: config.api.timeout,
                ca: ca.map(<[_]>::to_vec),
                shadow: config.shadow_mode,
                audit: config.state_dir.join("audit.jsonl"),
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
        let beat = liveness.register("outbox");
        let shutdown = shutdown_rx.clone();
        others.push(
            std::thread::Builder::new()
                .name("outbox".into())
                .spawn(move || outbox.run(outbox_rx, replies, shutdown, beat))?,
        );
        let writable = config.machines.iter().any(|m| m.batch_write.is_some());
        if let (Some(url), true) = (config.api.strings_url.clone(), writable) {
            let fetcher = Fetcher::new(config, ca, url, command_txs.clone());
            let beat = liveness.register("api-strings");
            let shutdown = shutdown_rx.clone();
            others.push(
                std::thread::Builder::new()
                    .name("api-strings".into())
                    .spawn(move || fetcher.run(shutdown, beat))?,
            );
        }
    }
    let mut pollers = Vec::new();
    for ((i, ep), commands) in config.endpoints.iter().enumerate().zip(command_rxs) {
        let mut poller = Poller::new(
            config,
            i,
            transport_for(ep),
            &board.machines,
            points_tx.clone(),
            clock.clone(),
        );
        if batch_on {
            poller = poller.with_batch(config, commands, outbox_tx.clone());
        }
        let beat = liveness.register(&format!("poller {}", ep.name));
        let shutdown = shutdown_rx.clone();
        pollers.push(
            std::thread::Builder::new()
                .name(format!("poll {}", ep.name))
                .spawn(move || poller.run(shutdown, beat))?,
        );
    }
    drop(points_tx);
    drop(outbox_tx);
    Ok(Running {
        others,
        board,
        liveness,
        shutdown: Some(shutdown_tx),
        pollers,
        uploader: Some(uploader),
    })
}

/// The crash journal of `run`: in the runtime directory (see `uploader::journal::locate`).
/// `demo`, `once` and in-process tests run without one, so they never take back the points
/// of a production gateway.
pub fn journal_options() -> Option<JournalOptions> {
    journal::locate().map(|dir| JournalOptions {
        dir,
        max_bytes: journal::DEFAULT_MAX_BYTES,
    })
}

/// Uploader settings from the config (or defaults when no InfluxDB is configured).
/// Without a crash journal: `run` adds it (`journal_options`).
pub fn uploader_settings(config: &Config) -> Settings {
    let (max, flush) = config
        .influx
        .configured()
        .ok()
        .map(|i| (i.max_points_per_write, i.flush_interval))
        .unwrap_or((5000, Duration::from_secs(1)));
    Settings {
        max_points_per_write: max,
        flush_interval: flush,
        rejected_file: Some(config.state_dir.join("rejected.lp")),
        shutdown_grace: Duration::from_secs(5),
        hold_max_points: config.clock.hold_max_points,
        hold_max_bytes: config.clock.hold_max_bytes,
        journal: None,
    }
}
