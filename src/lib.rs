//! dyeing-gateway: polls dyeing machines over Modbus TCP/RTU, records what changed in
//! InfluxDB, and ties the machines to the plant's batch system. See ARCHITECTURE.md for the
//! data flow and the codemap; `main.rs` is the command line.
//!
//! The public modules are what the binary, the integration tests, the examples and the fuzz
//! targets use; everything else is private or `pub(crate)`, and `unreachable_pub` keeps a
//! `pub` that nothing outside can reach from coming back.

#![warn(unreachable_pub)]

pub mod app;
mod backoff;
pub mod batch;
mod change;
mod check;
pub mod cli;
pub mod clock;
pub mod config;
mod demo;
pub mod durable;
mod http;
mod lineproto;
mod logging;
pub mod modbus;
mod once;
mod plant_api;
pub mod poller;
pub mod registers;
mod scan;
mod secret;
pub mod simulate;
pub mod status;
pub mod status_http;
mod update;
pub mod uploader;
mod watch;
mod watchdog;
