//! Durable storage on the state directory: `log` is a segmented, checksummed, append-only
//! record log with torn-tail recovery, ordered replay, acknowledgement and a size bound; the
//! InfluxDB spool (`uploader::spool`) and the batch outbox are built on it. `format` numbers
//! what is kept in the state directory, so another version never misreads it; `state_dir` names
//! where each thing is kept.

pub(crate) mod format;
pub(crate) mod log;
pub(crate) mod state_dir;

pub use self::log::{Log, LogOptions, Recovery};
pub use self::state_dir::StateDir;
