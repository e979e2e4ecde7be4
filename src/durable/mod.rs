//! Durable storage on the state directory: `log` is a segmented, checksummed, append-only
//! record log with torn-tail recovery, ordered replay, acknowledgement and a size bound; the
//! InfluxDB spool (`uploader::spool`) and the batch outbox are built on it. `format` numbers
//! what is kept in the state directory, so another version never misreads it.

pub mod format;
pub mod log;

pub use self::log::{Log, LogOptions, Recovery};
