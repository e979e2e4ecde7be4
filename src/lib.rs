//! dyeing-gateway: polls dyeing machines over Modbus TCP/RTU, records what changed in
//! InfluxDB, and ties the machines to the plant's batch system. See ARCHITECTURE.md for the
//! data flow and the codemap; `main.rs` is the command line.

pub mod app;
pub mod backoff;
pub mod batch;
pub mod change;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod durable;
pub mod http;
pub mod lineproto;
pub mod logging;
pub mod modbus;
pub mod once;
pub mod plant_api;
pub mod poller;
pub mod registers;
pub mod scan;
pub mod secret;
pub mod simulate;
pub mod status;
pub mod status_http;
pub mod update;
pub mod uploader;
pub mod watch;
pub mod watchdog;
