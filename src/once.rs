//! `once`: poll every machine once and print the line protocol that would be written (for
//! commissioning). Each endpoint gets a poller of its own on this thread, one after the other;
//! nothing is sent to InfluxDB and nothing is written to a machine.

use crate::clock::Clock;
use crate::config::Config;
use crate::modbus::transport_for;
use crate::poller::Poller;
use crate::status::{lock, MachineStatus};
use crate::uploader::points_channel;
use std::sync::{Arc, Mutex};

/// Poll every machine of `config` once, print the lines on stdout and every machine that did
/// not answer on stderr; true when all answered.
pub(crate) fn run(config: &Config) -> bool {
    let statuses: Vec<_> = config
        .machines
        .iter()
        .map(|_| Arc::new(Mutex::new(Default::default())))
        .collect();
    let (tx, _rx) = points_channel(1);
    let mut all_online = true;
    let clock = Arc::new(Clock::new(config.clock.check.clone()));
    for (ei, ep) in config.endpoints.iter().enumerate() {
        let mut poller = Poller::new(
            config,
            ei,
            transport_for(&ep.kind, ep.timeout),
            &statuses,
            tx.clone(),
            clock.clone(),
        );
        for line in poller.poll_all_once() {
            println!("{line}");
        }
    }
    for st in &statuses {
        let st: MachineStatus = lock(st).clone();
        if st.online != Some(true) {
            all_online = false;
            eprintln!(
                "machine {} did not answer: {}",
                st.name,
                st.last_error.unwrap_or_default()
            );
        }
    }
    all_online
}
