//! `demo`: the gateway against its own simulated machines (`simulate`) and a stand-in for the
//! plant API (`plant_api`), in one process. Every InfluxDB write request goes to stdout
//! (`StdoutSink`), and so does every call the stand-in receives, so the whole batch workflow
//! shows; the serial buses are simulated on pty pairs in a private temporary directory, which
//! is removed at the end.

use crate::app::{self, start_error, Signals, StartError};
use crate::clock::Clock;
use crate::config::{self, Config, ConfigErrors, EndpointKind};
use crate::simulate;
use crate::uploader::buffer::MemoryBuffer;
use crate::uploader::sink::StdoutSink;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The built-in demo configuration: two jet-dyeing HMIs on loopback Modbus TCP and two package
/// machines on a simulated RS-485 bus.
pub(crate) const DEMO_CONFIG: &str = include_str!("demo.json");

/// The built-in configuration, validated.
pub(crate) fn builtin_config() -> Result<Config, ConfigErrors> {
    config::validate_raw(config::parse(DEMO_CONFIG)?)
}

/// Run the demo on `config` until SIGTERM/SIGINT or `duration` seconds, then print a summary
/// per machine on stderr.
pub(crate) fn run(mut config: Config, duration: Option<f64>) -> Result<(), StartError> {
    // Serial buses are simulated on a pty pair linked into a private temporary directory.
    let tmp = std::env::temp_dir().join(format!("dyeing-gateway-demo-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(start_error("cannot create the demo directory"))?;
    for ep in &mut config.endpoints {
        if let EndpointKind::Rtu(s) = &mut ep.kind {
            if !Path::new(&s.path).exists() {
                std::fs::create_dir_all(&tmp)
                    .map_err(start_error("cannot create the demo directory"))?;
                s.path = tmp.join(&ep.name).display().to_string();
            }
        }
    }
    // The plant API stand-in: finish reports, new batches, confirmations, all printed.
    let api =
        crate::plant_api::start().map_err(start_error("cannot start the plant API stand-in"))?;
    let base = format!("http://{}", api.addr);
    config.api.batch_url = Some(format!("{base}/batch/finish"));
    config.api.trigger_url = Some(format!("{base}/trigger"));
    config.api.strings_url = Some(format!("{base}/strings"));
    config.api.strings_conf_url = Some(format!("{base}/strings/confirm"));
    config.api.poll_interval = Duration::from_secs(3);
    config.state_dir = tmp.join("state");
    let sig = Signals::start().map_err(start_error("cannot install signal handlers"))?;
    let sim = simulate::start(&config, Some("127.0.0.1"), 5.0)
        .map_err(start_error("cannot start the simulator"))?;
    // Point the gateway at the ports the simulator actually got.
    for ep in &mut config.endpoints {
        if let (
            EndpointKind::Tcp { host, port } | EndpointKind::RtuOverTcp { host, port },
            Some(addr),
        ) = (&mut ep.kind, sim.addresses.get(&ep.name))
        {
            *host = addr.ip().to_string();
            *port = addr.port();
        }
    }
    eprintln!(
        "demo: {} simulated machines; each InfluxDB write request and each plant API call is printed below (Ctrl-C stops)",
        config.machines.len()
    );
    let mut settings = app::uploader_settings(&config);
    settings.rejected_file = None;
    let running = app::start(
        &config,
        Box::new(StdoutSink { requests: 0 }),
        Box::new(MemoryBuffer::new(100_000)),
        settings,
        // Simulated machines printed to the terminal: no clock synchronization to wait for.
        Arc::new(Clock::new(crate::clock::SyncCheck::Off)),
        // The stand-in plant API is plain HTTP on loopback.
        None,
    )
    .map_err(start_error("cannot start threads"))?;
    let status = app::start_status(
        &config,
        &crate::status_http::Shared::new(running.board.clone()),
    )?;
    sig.wait(duration);
    let board = running.board.clone();
    status.stop();
    running.shutdown();
    drop(sim);
    drop(api);
    let _ = std::fs::remove_dir_all(&tmp);
    for m in board.snapshot().machines {
        eprintln!(
            "{}: online {:?}, {} polls, {} requests, {} points, errors {:?}",
            m.name, m.online, m.polls, m.requests, m.points, m.errors
        );
    }
    Ok(())
}
