//! The state directory's layout, named in one place: every file and directory the gateway
//! keeps there (`format` says how each is versioned).
//!
//! ```text
//! <state_dir>/
//!   spool/            points InfluxDB has not taken within the fsync window (`durable::Log`)
//!   outbox/           finish reports and confirmations until the plant API took them
//!   finish/<m>.json   a machine's finish detector (last process code, open batch)
//!   batch/<m>.json    a machine's batch writer (last batch written, its phase)
//!   audit.jsonl       every write to a machine and every report, one JSON line each
//!   rejected.lp       lines InfluxDB refused, capped
//! ```
//!
//! `<m>` is the machine's name with anything but ASCII letters, digits, `-` and `_` replaced
//! by `_` (`machine_file`); validation refuses two machines whose names map to the same file.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn spool(&self) -> PathBuf {
        self.root.join("spool")
    }

    pub fn outbox(&self) -> PathBuf {
        self.root.join("outbox")
    }

    pub fn audit(&self) -> PathBuf {
        self.root.join("audit.jsonl")
    }

    pub fn rejected(&self) -> PathBuf {
        self.root.join("rejected.lp")
    }

    /// The finish detector's state of the machine named `machine`.
    pub fn finish_state(&self, machine: &str) -> PathBuf {
        self.root
            .join("finish")
            .join(format!("{}.json", machine_file(machine)))
    }

    /// The batch writer's state of the machine named `machine`.
    pub fn batch_state(&self, machine: &str) -> PathBuf {
        self.root
            .join("batch")
            .join(format!("{}.json", machine_file(machine)))
    }
}

/// The file name (without `.json`) of a machine's state files.
pub(crate) fn machine_file(machine: &str) -> String {
    machine
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_s_state_files_are_named_after_it_with_unsafe_characters_replaced() {
        let d = StateDir::new("/data/state");
        assert_eq!(
            d.finish_state("JET 01/a"),
            Path::new("/data/state/finish/JET_01_a.json")
        );
        assert_eq!(
            d.batch_state("JET-01_b"),
            Path::new("/data/state/batch/JET-01_b.json")
        );
        assert_eq!(d.spool(), Path::new("/data/state/spool"));
        assert_eq!(d.outbox(), Path::new("/data/state/outbox"));
        assert_eq!(d.audit(), Path::new("/data/state/audit.jsonl"));
        assert_eq!(d.rejected(), Path::new("/data/state/rejected.lp"));
    }
}
