//! Endpoints: the named ones in `$.endpoints` (TCP, RTU over TCP, a serial bus with its line
//! settings) and the implicit TCP endpoint of a machine that gives `ip_address`, one per
//! `host:port`, shared by the machines that name the same one.

use super::Check;
use crate::config::raw::{RawConfig, RawEndpoint, RawEndpointSettings, RawMachine};
use crate::config::{Endpoint, EndpointKind, Parity, Rs485, SerialSettings};
use std::collections::HashMap;
use std::time::Duration;

/// The endpoints found so far, and their index by name.
#[derive(Default)]
pub(super) struct Endpoints {
    pub list: Vec<Endpoint>,
    by_name: HashMap<String, usize>,
}

/// `$.endpoints`, each at its own path; a name given twice is an error at the second.
pub(super) fn validate_endpoints(c: &mut Check, raw: &RawConfig) -> Endpoints {
    let mut endpoints = Endpoints::default();
    for (i, e) in raw.endpoints.iter().enumerate() {
        let path = format!("$.endpoints[{i}]");
        if let Some(ep) = validate_endpoint(c, &path, e, &raw.defaults) {
            if endpoints
                .by_name
                .insert(ep.name.clone(), endpoints.list.len())
                .is_some()
            {
                c.err(
                    format!("{path}.name"),
                    format!("endpoint `{}` is defined twice", ep.name),
                );
            }
            endpoints.list.push(ep);
        }
    }
    endpoints
}

/// The timing settings of one endpoint (`s`), each falling back to `$.defaults` (`d`).
struct Timing {
    timeout: Duration,
    close_after_poll: bool,
    request_pause: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
}

fn timing(c: &mut Check, path: &str, s: &RawEndpointSettings, d: &RawEndpointSettings) -> Timing {
    let timeout = c.secs(
        &format!("{path}.timeout_s"),
        s.timeout_s.or(d.timeout_s),
        Duration::from_secs(1),
    );
    let request_pause = c.secs0(
        &format!("{path}.request_pause_s"),
        s.request_pause_s.or(d.request_pause_s),
        Duration::ZERO,
    );
    let backoff_initial = c.secs(
        &format!("{path}.backoff_initial_s"),
        s.backoff_initial_s.or(d.backoff_initial_s),
        Duration::from_secs(1),
    );
    let backoff_max = c.secs(
        &format!("{path}.backoff_max_s"),
        s.backoff_max_s.or(d.backoff_max_s),
        Duration::from_secs(60),
    );
    if backoff_max < backoff_initial {
        c.err(
            format!("{path}.backoff_max_s"),
            "must not be smaller than backoff_initial_s",
        );
    }
    Timing {
        timeout,
        close_after_poll: s.close_after_poll.or(d.close_after_poll).unwrap_or(false),
        request_pause,
        backoff_initial,
        backoff_max,
    }
}

fn endpoint(name: String, kind: EndpointKind, t: Timing) -> Endpoint {
    Endpoint {
        name,
        kind,
        timeout: t.timeout,
        close_after_poll: t.close_after_poll,
        request_pause: t.request_pause,
        backoff_initial: t.backoff_initial,
        backoff_max: t.backoff_max,
    }
}

fn validate_endpoint(
    c: &mut Check,
    path: &str,
    e: &RawEndpoint,
    defaults: &RawEndpointSettings,
) -> Option<Endpoint> {
    if e.name.is_empty() {
        c.err(format!("{path}.name"), "must not be empty");
    }
    let s = RawEndpointSettings {
        timeout_s: e.timeout_s,
        close_after_poll: e.close_after_poll,
        request_pause_s: e.request_pause_s,
        backoff_initial_s: e.backoff_initial_s,
        backoff_max_s: e.backoff_max_s,
    };
    let timing = timing(c, path, &s, defaults);
    let host_port = |c: &mut Check| -> Option<(String, u16)> {
        match &e.ip_address {
            Some(h) if !h.is_empty() => Some((h.clone(), e.port.unwrap_or(502))),
            _ => {
                c.err(
                    format!("{path}.ip_address"),
                    "missing (a TCP endpoint needs a host)",
                );
                None
            }
        }
    };
    let kind = match e.transport.as_str() {
        "tcp" => host_port(c).map(|(host, port)| EndpointKind::Tcp { host, port }),
        "rtu_over_tcp" => host_port(c).map(|(host, port)| EndpointKind::RtuOverTcp { host, port }),
        "rtu" => validate_serial(c, path, e).map(EndpointKind::Rtu),
        other => {
            c.err(
                format!("{path}.transport"),
                format!("unknown transport `{other}` (expected tcp, rtu or rtu_over_tcp)"),
            );
            None
        }
    }?;
    Some(endpoint(e.name.clone(), kind, timing))
}

fn validate_serial(c: &mut Check, path: &str, e: &RawEndpoint) -> Option<SerialSettings> {
    let Some(port) = e.serial_port.clone().filter(|p| !p.is_empty()) else {
        c.err(
            format!("{path}.serial_port"),
            "missing (an RTU endpoint needs a serial port path)",
        );
        return None;
    };
    let baudrate = e.baudrate.unwrap_or(9600);
    if !(300..=4_000_000).contains(&baudrate) {
        c.err(
            format!("{path}.baudrate"),
            format!("{baudrate} is not a usable baud rate"),
        );
    }
    let parity = match e.parity.as_deref().unwrap_or("none") {
        "none" | "N" | "n" => Parity::None,
        "even" | "E" | "e" => Parity::Even,
        "odd" | "O" | "o" => Parity::Odd,
        other => {
            c.err(
                format!("{path}.parity"),
                format!("unknown parity `{other}` (expected none, even or odd)"),
            );
            Parity::None
        }
    };
    let data_bits = e.data_bits.unwrap_or(8);
    if !(5..=8).contains(&data_bits) {
        c.err(format!("{path}.data_bits"), "must be 5, 6, 7 or 8");
    }
    let stop_bits = e.stop_bits.unwrap_or(1);
    if !(1..=2).contains(&stop_bits) {
        c.err(format!("{path}.stop_bits"), "must be 1 or 2");
    }
    let rs485 = e.rs485.as_ref().map(|r| Rs485 {
        rts_on_send: r.rts_on_send.unwrap_or(true),
        rts_after_send: r.rts_after_send.unwrap_or(false),
        delay_before_send_ms: r.delay_before_send_ms.unwrap_or(0),
        delay_after_send_ms: r.delay_after_send_ms.unwrap_or(0),
        rx_during_tx: r.rx_during_tx.unwrap_or(false),
    });
    Some(SerialSettings {
        path: port,
        baudrate,
        parity,
        data_bits,
        stop_bits,
        rs485,
    })
}

impl Endpoints {
    /// The endpoint of machine `m` (at `path`), as an index into `list`: a named one, or an
    /// implicit TCP endpoint per `ip_address:port`, added on first use.
    pub(super) fn for_machine(
        &mut self,
        c: &mut Check,
        path: &str,
        m: &RawMachine,
        defaults: &RawEndpointSettings,
    ) -> Option<usize> {
        match (&m.endpoint, &m.ip_address) {
            (Some(_), Some(_)) => {
                c.err(
                    format!("{path}.endpoint"),
                    "give either `endpoint` or `ip_address`, not both",
                );
                None
            }
            (Some(name), None) => self.named(c, path, m, name),
            (None, Some(host)) if host.is_empty() => {
                c.err(format!("{path}.ip_address"), "must not be empty");
                None
            }
            (None, Some(host)) => self.implicit(c, path, m, host, defaults),
            (None, None) => {
                c.err(
                    path,
                    "a machine needs `ip_address` (Modbus TCP) or `endpoint` (a named endpoint such as an RS-485 bus)",
                );
                None
            }
        }
    }

    /// A named endpoint; the connection settings are its own, not the machine's.
    fn named(&self, c: &mut Check, path: &str, m: &RawMachine, name: &str) -> Option<usize> {
        for (field, set) in [
            ("port", m.port.is_some()),
            ("transport", m.transport.is_some()),
            ("timeout_s", m.timeout_s.is_some()),
            ("close_after_poll", m.close_after_poll.is_some()),
            ("request_pause_s", m.request_pause_s.is_some()),
        ] {
            if set {
                c.err(
                    format!("{path}.{field}"),
                    format!("belongs to the endpoint `{name}`, not to a machine on it"),
                );
            }
        }
        let found = self.by_name.get(name).copied();
        if found.is_none() {
            c.err(
                format!("{path}.endpoint"),
                format!("unknown endpoint `{name}`"),
            );
        }
        found
    }

    /// The implicit endpoint `host:port`; machines sharing one must agree on its settings.
    fn implicit(
        &mut self,
        c: &mut Check,
        path: &str,
        m: &RawMachine,
        host: &str,
        defaults: &RawEndpointSettings,
    ) -> Option<usize> {
        let port = m.port.unwrap_or(502);
        let name = format!("{host}:{port}");
        let host = host.to_string();
        let kind = match m.transport.as_deref().unwrap_or("tcp") {
            "tcp" => EndpointKind::Tcp { host, port },
            "rtu_over_tcp" => EndpointKind::RtuOverTcp { host, port },
            other => {
                c.err(
                    format!("{path}.transport"),
                    format!("unknown transport `{other}` for a machine with ip_address (expected tcp or rtu_over_tcp)"),
                );
                return None;
            }
        };
        let s = RawEndpointSettings {
            timeout_s: m.timeout_s,
            close_after_poll: m.close_after_poll,
            request_pause_s: m.request_pause_s,
            backoff_initial_s: None,
            backoff_max_s: None,
        };
        let timing = timing(c, path, &s, defaults);
        let ep = endpoint(name, kind, timing);
        match self.by_name.get(&ep.name) {
            Some(&i) => {
                if self.list[i] != ep {
                    c.err(
                        path,
                        format!(
                            "machines sharing {} must use the same transport and connection settings",
                            ep.name
                        ),
                    );
                }
                Some(i)
            }
            None => {
                self.by_name.insert(ep.name.clone(), self.list.len());
                self.list.push(ep);
                Some(self.list.len() - 1)
            }
        }
    }

    /// Endpoints no machine uses are dropped (no thread is started for them); the machines'
    /// indices are moved to match.
    pub(super) fn keep_used(self, machines: &mut [crate::config::Machine]) -> Vec<Endpoint> {
        let mut remap = vec![usize::MAX; self.list.len()];
        let mut kept = Vec::new();
        for (i, ep) in self.list.into_iter().enumerate() {
            if machines.iter().any(|m| m.endpoint == i) {
                remap[i] = kept.len();
                kept.push(ep);
            } else {
                log::warn!("endpoint `{}` has no machines and is not opened", ep.name);
            }
        }
        for m in machines {
            m.endpoint = remap[m.endpoint];
        }
        kept
    }
}
