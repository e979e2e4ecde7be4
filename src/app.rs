//! Wiring: the one function that spawns every thread of the gateway, with its name, moves into
//! each only what it needs, keeps every handle, and joins them on shutdown. Shutdown order:
//! the pollers stop first (dropping their senders), then the uploader drains the channel,
//! makes its last flush and exits.

use crate::clock::Clock;
use crate::config::Config;
use crate::poller::{transport_for, Poller};
use crate::status::{Board, Liveness, MachineStatus};
use crate::uploader::buffer::Buffer;
use crate::uploader::sink::Sink;
use crate::uploader::{Batch, Settings, Uploader};
use crossbeam_channel::{bounded, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Capacity of the poller -> uploader channel, in messages (one message is one poll's lines).
/// When it is full the pollers wait (backpressure) rather than drop points.
pub const POINTS_CHANNEL: usize = 4096;

pub struct Running {
    pub board: Arc<Board>,
    pub liveness: Arc<Liveness>,
    shutdown: Option<Sender<()>>,
    pollers: Vec<JoinHandle<()>>,
    uploader: Option<JoinHandle<()>>,
}

impl Running {
    /// Stop polling, flush, and wait for every thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        drop(self.shutdown.take());
        for h in self.pollers.drain(..) {
            if h.join().is_err() {
                log::error!("a poller thread panicked");
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
) -> std::io::Result<Running> {
    let board = Arc::new(Board {
        machines: config
            .machines
            .iter()
            .map(|_| Arc::new(Mutex::new(MachineStatus::default())))
            .collect(),
        uploader: Default::default(),
    });
    let liveness = Arc::new(Liveness::default());
    let (points_tx, points_rx) = bounded::<Batch>(POINTS_CHANNEL);
    let (shutdown_tx, shutdown_rx) = bounded::<()>(0);

    let uploader = {
        let beat = liveness.register("uploader");
        let up =
            Uploader::new(settings, sink, buffer, board.uploader.clone()).with_clock(clock.clone());
        std::thread::Builder::new()
            .name("uploader".into())
            .spawn(move || up.run(points_rx, beat))?
    };
    let mut pollers = Vec::new();
    for (i, ep) in config.endpoints.iter().enumerate() {
        let poller = Poller::new(
            config,
            i,
            transport_for(ep),
            &board.machines,
            points_tx.clone(),
        )
        .with_clock(clock.clone());
        let beat = liveness.register(&format!("poller {}", ep.name));
        let shutdown = shutdown_rx.clone();
        pollers.push(
            std::thread::Builder::new()
                .name(format!("poll {}", ep.name))
                .spawn(move || poller.run(shutdown, beat))?,
        );
    }
    drop(points_tx);
    Ok(Running {
        board,
        liveness,
        shutdown: Some(shutdown_tx),
        pollers,
        uploader: Some(uploader),
    })
}

/// Uploader settings from the config (or defaults when no InfluxDB is configured).
pub fn uploader_settings(config: &Config) -> Settings {
    let (max, flush) = config
        .influx
        .as_ref()
        .map(|i| (i.max_points_per_write, i.flush_interval))
        .unwrap_or((5000, Duration::from_secs(1)));
    Settings {
        max_points_per_write: max,
        flush_interval: flush,
        rejected_file: Some(config.state_dir.join("rejected.lp")),
        shutdown_grace: Duration::from_secs(5),
        hold_max_points: config.clock.hold_max_points,
    }
}
