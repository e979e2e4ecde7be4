//! `scan`: find and describe an undocumented Modbus device. Probes unit ids (one short read
//! each: a reply or an exception means present, silence absent), finds the address ranges of
//! each table by reading large blocks and splitting them around exception 02, learns a unit's
//! block limit from exception 03 or silence on long reads, samples what it found and
//! classifies it (`classify`), and prints a report or a config proposal (`propose`).
//!
//! **Invariant:** only read functions (1, 2, 3, 4) are ever sent: this module calls
//! `Client::read` and nothing else. It reuses the gateway's transports, client and codec.

pub(crate) mod classify;
pub(crate) mod propose;
pub(crate) mod target;

use crate::config::RegisterKind;
use crate::modbus::codec::{exception, Reply};
use crate::modbus::serial::{char_time, SerialTransport};
use crate::modbus::transport::{RtuOverTcpTransport, TcpTransport, Transport, TransportError};
use crate::modbus::{Client, ModbusError};
use classify::Samples;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};
pub(crate) use target::Target;

/// Largest read of registers / bits (Modbus Application Protocol v1.1b, 6.1 to 6.4).
const MAX_REGISTERS: u16 = 125;
const MAX_BITS: u16 = 2000;
/// A refused block this small is read address by address (cheaper than halving it further
/// when most of it is absent: a strict device refuses a block with any absent address, so an
/// empty area costs about one request per address either way).
const SINGLES_BELOW: u16 = 16;

#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub target: Target,
    pub units: Vec<u8>,
    pub tables: Vec<RegisterKind>,
    pub max_address: u16,
    /// Most requests per second (0: no limit).
    pub rate: f64,
    pub samples: u32,
    pub interval: Duration,
    pub timeout: Duration,
    /// Most requests spent finding the ranges of one table of one unit.
    pub table_budget: u32,
}

/// What was found in one table of one unit.
#[derive(Debug, Clone, Default)]
pub(crate) struct Table {
    /// Address ranges that answer, `(first, count)`, in order and merged.
    pub ranges: Vec<(u16, u16)>,
    /// The unit answered exception 01: it has no such table.
    pub unsupported: bool,
    /// Things the technician should know (budget exhausted, odd exceptions).
    pub notes: Vec<String>,
    /// Per address, the sampled values (bits as 0/1).
    pub samples: BTreeMap<u16, Samples>,
}

#[derive(Debug, Clone)]
pub(crate) struct UnitReport {
    pub unit: u8,
    /// How the unit answered the probe.
    pub probe: String,
    /// The largest block it answers (registers), learnt from exception 03 or silence.
    pub max_registers: u16,
    pub max_bits: u16,
    pub tables: Vec<(RegisterKind, Table)>,
}

#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub target: Target,
    /// Serial settings that answered (the one given, or the one `baud=auto` found).
    pub serial: Option<crate::config::SerialSettings>,
    pub units: Vec<UnitReport>,
    pub absent: Vec<u8>,
    pub requests: u64,
    pub timeouts: u64,
    pub elapsed: Duration,
    /// Serial only: time the requests and replies took on the wire.
    pub wire: Duration,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ScanError {
    #[error("cannot open {what}: {error}")]
    Open { what: String, error: std::io::Error },
    #[error("no serial settings got a valid answer from units {0}")]
    NoBaud(String),
}

/// Every request goes through here: pacing (`--rate`), counting, wire time.
struct Scanner {
    client: Client,
    gap: Duration,
    last: Option<Instant>,
    char_time: Option<Duration>,
    wire: Duration,
    timeouts: u64,
}

fn reply_bytes(kind: RegisterKind, quantity: u16) -> u32 {
    // address + function + byte count + data + CRC (RTU).
    let data = if kind.is_bit() {
        u32::from(quantity).div_ceil(8)
    } else {
        2 * u32::from(quantity)
    };
    5 + data
}

impl Scanner {
    fn read(
        &mut self,
        unit: u8,
        kind: RegisterKind,
        address: u16,
        quantity: u16,
    ) -> Result<Reply, ModbusError> {
        if let Some(last) = self.last {
            let next = last + self.gap;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        }
        self.last = Some(Instant::now());
        if !self.client.is_open() {
            self.client
                .transport()
                .open()
                .map_err(|e| ModbusError::Transport(e.into()))?;
        }
        let r = self.client.read(unit, kind, address, quantity);
        if let Some(ct) = self.char_time {
            let back = match &r {
                Ok(_) => reply_bytes(kind, quantity),
                Err(ModbusError::Exception(_)) => 5,
                Err(_) => 0,
            };
            self.wire += ct * (8 + back);
        }
        if matches!(&r, Err(ModbusError::Transport(TransportError::Timeout(_)))) {
            self.timeouts += 1;
        }
        r
    }
}

/// The largest power of two below `n` (the next block size to try after a refusal).
fn smaller(n: u16) -> u16 {
    let mut p = 1u16;
    while p * 2 < n {
        p *= 2;
    }
    p
}

fn is_present(r: &Result<Reply, ModbusError>) -> Option<String> {
    match r {
        Ok(_) => Some("answered".into()),
        Err(ModbusError::Exception(e))
            if e.code == exception::GATEWAY_TARGET_FAILED
                || e.code == exception::GATEWAY_PATH_UNAVAILABLE =>
        {
            None
        }
        Err(ModbusError::Exception(e)) => Some(format!("answered with {e}")),
        Err(_) => None,
    }
}

fn merge(mut ranges: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    ranges.sort();
    let mut out: Vec<(u16, u16)> = Vec::new();
    for (a, n) in ranges {
        match out.last_mut() {
            Some((la, ln)) if u32::from(*la) + u32::from(*ln) == u32::from(a) => *ln += n,
            _ => out.push((a, n)),
        }
    }
    out
}

impl Scanner {
    /// The ranges of one table: blocks of the unit's limit over 0..=max_address, each refused
    /// block (02) split in halves down to single addresses; 03 or silence on a long block
    /// lowers the unit's limit and tries again.
    fn ranges(
        &mut self,
        unit: u8,
        kind: RegisterKind,
        max_address: u16,
        limit: &mut u16,
        budget: u32,
    ) -> Table {
        let mut table = Table::default();
        let mut found = Vec::new();
        let mut spent = 0u32;
        let end = u32::from(max_address) + 1;
        let mut stack: Vec<(u32, u16)> = Vec::new();
        let mut next = 0u32;
        while let Some((a, n)) = stack.pop().or_else(|| {
            (next < end).then(|| {
                let n = (u32::from(*limit)).min(end - next) as u16;
                let b = (next, n);
                next += u32::from(n);
                b
            })
        }) {
            if spent >= budget {
                table.notes.push(format!(
                    "stopped after {budget} requests (--max-requests) at address {a}: the ranges after it are not known"
                ));
                break;
            }
            spent += 1;
            let address = a as u16;
            match self.read(unit, kind, address, n) {
                Ok(_) => found.push((address, n)),
                Err(ModbusError::Exception(e)) if e.code == exception::ILLEGAL_FUNCTION => {
                    table.unsupported = true;
                    break;
                }
                Err(ModbusError::Exception(e)) if e.code == exception::ILLEGAL_DATA_ADDRESS => {
                    if n > SINGLES_BELOW {
                        let h = n / 2;
                        stack.push((a + u32::from(h), n - h));
                        stack.push((a, h));
                    } else if n > 1 {
                        stack.extend((0..u32::from(n)).rev().map(|i| (a + i, 1)));
                    }
                }
                Err(ModbusError::Exception(codec_e @ crate::modbus::codec::Exception { .. }))
                    if codec_e.code == exception::ILLEGAL_DATA_VALUE && n > 1 =>
                {
                    self.lower(a, n, limit, &mut stack, &mut table, "exception 03");
                }
                Err(ModbusError::Transport(TransportError::Timeout(_))) if n > 1 => {
                    self.lower(a, n, limit, &mut stack, &mut table, "no answer");
                }
                Err(ModbusError::Exception(e)) => {
                    if e.code != exception::ILLEGAL_DATA_VALUE {
                        table.notes.push(format!("{}+{n}: {e}", address));
                    }
                }
                Err(e) => table.notes.push(format!("{address}+{n}: {e}")),
            }
        }
        table.ranges = merge(found);
        table
    }

    fn lower(
        &mut self,
        a: u32,
        n: u16,
        limit: &mut u16,
        stack: &mut Vec<(u32, u16)>,
        table: &mut Table,
        why: &str,
    ) {
        let new = smaller(n).min(*limit);
        if new < *limit {
            table.notes.push(format!(
                "{why} to a read of {n}: reading at most {new} from now on"
            ));
            *limit = new;
        }
        // Re-queue the block in pieces of the new limit, first piece on top.
        let mut pieces = Vec::new();
        let mut at = a;
        let stop = a + u32::from(n);
        while at < stop {
            let k = (u32::from(new)).min(stop - at) as u16;
            pieces.push((at, k));
            at += u32::from(k);
        }
        stack.extend(pieces.into_iter().rev());
    }

    /// One round of samples of every range found, in blocks within the limit.
    fn sample(&mut self, unit: u8, kind: RegisterKind, limit: u16, table: &mut Table) {
        for &(first, count) in &table.ranges.clone() {
            let mut at = u32::from(first);
            let stop = at + u32::from(count);
            while at < stop {
                let n = (u32::from(limit)).min(stop - at) as u16;
                let values: Vec<Option<u16>> = match self.read(unit, kind, at as u16, n) {
                    Ok(Reply::Words(w)) => w.into_iter().map(Some).take(n.into()).collect(),
                    Ok(Reply::Bits(b)) => b
                        .into_iter()
                        .map(|x| Some(u16::from(x)))
                        .take(n.into())
                        .collect(),
                    _ => vec![None; n.into()],
                };
                for (i, v) in values.into_iter().enumerate() {
                    table
                        .samples
                        .entry(at as u16 + i as u16)
                        .or_default()
                        .push(v);
                }
                at += u32::from(n);
            }
        }
    }
}

fn transport(
    target: &Target,
    serial: Option<&crate::config::SerialSettings>,
    timeout: Duration,
) -> Box<dyn Transport> {
    match (target, serial) {
        (Target::Tcp { host, port }, _) => Box::new(TcpTransport::new(host, *port, timeout)),
        (Target::RtuOverTcp { host, port }, _) => {
            Box::new(RtuOverTcpTransport::new(host, *port, timeout))
        }
        (Target::Rtu { .. }, Some(s)) => Box::new(SerialTransport::new(s.clone(), timeout)),
        (Target::Rtu { candidates }, None) => Box::new(SerialTransport::new(
            candidates
                .first()
                .cloned()
                .unwrap_or_else(|| crate::config::SerialSettings {
                    path: String::new(),
                    baudrate: 9600,
                    parity: crate::config::Parity::None,
                    data_bits: 8,
                    stop_bits: 1,
                    rs485: None,
                }),
            timeout,
        )),
    }
}

fn scanner(
    opts: &Options,
    serial: Option<&crate::config::SerialSettings>,
) -> Result<Scanner, ScanError> {
    let mut t = transport(&opts.target, serial, opts.timeout);
    t.open().map_err(|error| ScanError::Open {
        what: describe(&opts.target, serial),
        error,
    })?;
    Ok(Scanner {
        client: Client::new(t),
        gap: if opts.rate > 0.0 {
            Duration::from_secs_f64(1.0 / opts.rate)
        } else {
            Duration::ZERO
        },
        last: None,
        char_time: serial.map(char_time),
        wire: Duration::ZERO,
        timeouts: 0,
    })
}

pub(crate) fn describe(target: &Target, serial: Option<&crate::config::SerialSettings>) -> String {
    match (target, serial) {
        (Target::Tcp { host, port }, _) => format!("tcp://{host}:{port}"),
        (Target::RtuOverTcp { host, port }, _) => format!("rtu-over-tcp://{host}:{port}"),
        (_, Some(s)) => format!(
            "rtu://{}?baud={}&parity={}&data={}&stop={}",
            s.path,
            s.baudrate,
            match s.parity {
                crate::config::Parity::None => "N",
                crate::config::Parity::Even => "E",
                crate::config::Parity::Odd => "O",
            },
            s.data_bits,
            s.stop_bits
        ),
        (Target::Rtu { candidates }, None) => format!(
            "rtu://{}?baud=auto",
            candidates.first().map(|c| c.path.as_str()).unwrap_or("")
        ),
    }
}

/// Run the whole scan. Progress goes to the log; the result is returned for the report.
pub(crate) fn run(opts: &Options) -> Result<Report, ScanError> {
    let started = Instant::now();
    let mut requests = 0u64;
    let mut timeouts = 0u64;
    let mut wire = Duration::ZERO;
    // Serial: find the settings that answer (one candidate unless baud=auto).
    let serial = match &opts.target {
        Target::Rtu { candidates } if candidates.len() > 1 => {
            let mut chosen = None;
            'found: for c in candidates {
                let mut s = scanner(opts, Some(c))?;
                for &u in &opts.units {
                    let r = s.read(u, RegisterKind::Holding, 0, 1);
                    if is_present(&r).is_some() {
                        log::info!("{} answered (unit {u})", describe(&opts.target, Some(c)));
                        chosen = Some(c.clone());
                    }
                    if chosen.is_some() {
                        requests += s.client.requests;
                        timeouts += s.timeouts;
                        wire += s.wire;
                        break 'found;
                    }
                }
                requests += s.client.requests;
                timeouts += s.timeouts;
                wire += s.wire;
            }
            Some(chosen.ok_or_else(|| ScanError::NoBaud(format!("{:?}", opts.units)))?)
        }
        Target::Rtu { candidates } => candidates.first().cloned(),
        _ => None,
    };
    let mut s = scanner(opts, serial.as_ref())?;
    let mut present = Vec::new();
    let mut absent = Vec::new();
    for &u in &opts.units {
        let r = s.read(u, RegisterKind::Holding, 0, 1);
        match is_present(&r) {
            Some(how) => {
                log::info!("unit {u}: present ({how})");
                present.push((u, how));
            }
            None => {
                log::debug!("unit {u}: absent");
                absent.push(u);
            }
        }
    }
    let mut units = Vec::new();
    for (u, probe) in present {
        let mut max_registers = MAX_REGISTERS;
        let mut max_bits = MAX_BITS;
        let mut tables = Vec::new();
        for &kind in &opts.tables {
            let limit = if kind.is_bit() {
                &mut max_bits
            } else {
                &mut max_registers
            };
            let t = s.ranges(u, kind, opts.max_address, limit, opts.table_budget);
            log::info!("unit {u}: {} ranges {:?}", kind.as_str(), t.ranges);
            tables.push((kind, t));
        }
        units.push(UnitReport {
            unit: u,
            probe,
            max_registers,
            max_bits,
            tables,
        });
    }
    for round in 0..opts.samples {
        if round > 0 {
            std::thread::sleep(opts.interval);
        }
        for ur in &mut units {
            for (kind, t) in &mut ur.tables {
                let limit = if kind.is_bit() {
                    ur.max_bits
                } else {
                    ur.max_registers
                };
                s.sample(ur.unit, *kind, limit, t);
            }
        }
    }
    s.client.transport().close();
    Ok(Report {
        target: opts.target.clone(),
        serial,
        units,
        absent,
        requests: requests + s.client.requests,
        timeouts: timeouts + s.timeouts,
        elapsed: started.elapsed(),
        wire: wire + s.wire,
        timeout: opts.timeout,
    })
}

/// Name of a register in reports and proposals: `hr_0010`, `ir_0003`, `co_0100`, `di_0007`.
pub(crate) fn register_name(kind: RegisterKind, address: u16) -> String {
    let prefix = match kind {
        RegisterKind::Holding => "hr",
        RegisterKind::Input => "ir",
        RegisterKind::Coil => "co",
        RegisterKind::DiscreteInput => "di",
    };
    format!("{prefix}_{address:04}")
}

/// The fields of a table: classified runs of registers, or bits one by one.
pub(crate) fn table_fields(kind: RegisterKind, t: &Table) -> Vec<classify::Field> {
    let mut out = Vec::new();
    for &(first, count) in &t.ranges {
        let area: BTreeMap<u16, Samples> = (0..count)
            .filter_map(|i| {
                let a = first + i;
                t.samples.get(&a).map(|s| (a, s.clone()))
            })
            .collect();
        if kind.is_bit() {
            out.extend(area.iter().map(|(&a, s)| classify::Field {
                address: a,
                words: 1,
                class: classify::single(s),
            }));
        } else {
            out.extend(classify::fields(&area));
        }
    }
    out
}

/// The report for people.
pub(crate) fn human(r: &Report) -> String {
    use classify::Class;
    let mut o = String::new();
    let _ = writeln!(o, "scan of {}", describe(&r.target, r.serial.as_ref()));
    let _ = writeln!(
        o,
        "units present: {}",
        if r.units.is_empty() {
            "none".to_string()
        } else {
            r.units
                .iter()
                .map(|u| u.unit.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    for u in &r.units {
        let _ = writeln!(
            o,
            "\nunit {} ({}); reads at most {} registers and {} bits per request",
            u.unit, u.probe, u.max_registers, u.max_bits
        );
        for (kind, t) in &u.tables {
            if t.unsupported {
                let _ = writeln!(o, "  {}: not supported (exception 01)", kind.as_str());
                continue;
            }
            let ranges: Vec<String> = t
                .ranges
                .iter()
                .map(|&(a, n)| {
                    if n == 1 {
                        format!("{a}")
                    } else {
                        format!("{a}-{}", u32::from(a) + u32::from(n) - 1)
                    }
                })
                .collect();
            let _ = writeln!(
                o,
                "  {}: {}",
                kind.as_str(),
                if ranges.is_empty() {
                    "nothing answers".to_string()
                } else {
                    ranges.join(", ")
                }
            );
            for n in &t.notes {
                let _ = writeln!(o, "    note: {n}");
            }
            for f in table_fields(*kind, t) {
                let raw: Vec<String> = (0..f.words)
                    .map(|i| {
                        t.samples
                            .get(&(f.address + i))
                            .and_then(|s| s.iter().rev().flatten().next())
                            .map(|w| format!("{w:04x}"))
                            .unwrap_or_else(|| "----".into())
                    })
                    .collect();
                let what = match &f.class {
                    Class::Constant(v) => format!("constant {v}"),
                    Class::Counter => "counter (increasing)".to_string(),
                    Class::Changing => "changing".to_string(),
                    Class::Unread => "not readable".to_string(),
                    Class::Text {
                        registers,
                        order,
                        text,
                    } => format!(
                        "text, {registers} registers, {}: {text:?}",
                        match order {
                            classify::TextOrder::HighFirst => "high byte first",
                            classify::TextOrder::LowFirst => "low byte first",
                        }
                    ),
                    Class::Float { order, value } => format!(
                        "float32 {}: {value}",
                        match order {
                            classify::WordOrder::Abcd => "ABCD",
                            classify::WordOrder::Cdab => "CDAB",
                        }
                    ),
                };
                let _ = writeln!(
                    o,
                    "    {:<8} {:<20} {what}",
                    register_name(*kind, f.address),
                    raw.join(" ")
                );
            }
        }
    }
    if !r.absent.is_empty() {
        let _ = writeln!(o, "\nunits silent: {}", compact(&r.absent));
    }
    let _ = writeln!(
        o,
        "\n{} requests ({} timed out) in {:.2} s{}",
        r.requests,
        r.timeouts,
        r.elapsed.as_secs_f64(),
        if r.serial.is_some() {
            format!(
                "; on the wire {:.2} s, {} absent units x {} ms timeout = bound {:.2} s",
                r.wire.as_secs_f64(),
                r.absent.len(),
                r.timeout.as_millis(),
                (r.wire + r.timeout * r.absent.len() as u32).as_secs_f64()
            )
        } else {
            String::new()
        }
    );
    o
}

/// `1-5, 9, 200-247`.
fn compact(units: &[u8]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < units.len() {
        let mut j = i;
        while j + 1 < units.len() && units[j + 1] == units[j].wrapping_add(1) {
            j += 1;
        }
        parts.push(if i == j {
            units[i].to_string()
        } else {
            format!("{}-{}", units[i], units[j])
        });
        i = j + 1;
    }
    parts.join(", ")
}

/// `--units 1-10,20,255`.
pub(crate) fn parse_units(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("bad unit id list `{part}` (expected e.g. 1-247 or 1,2,255)");
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (
                a.parse::<u8>().map_err(|_| bad())?,
                b.parse::<u8>().map_err(|_| bad())?,
            ),
            None => {
                let a = part.parse::<u8>().map_err(|_| bad())?;
                (a, a)
            }
        };
        if a > b {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err("no unit ids given".into());
    }
    Ok(out)
}

/// `--tables holding,input`.
pub(crate) fn parse_tables(text: &str) -> Result<Vec<RegisterKind>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p {
            "holding" => Ok(RegisterKind::Holding),
            "input" => Ok(RegisterKind::Input),
            "coil" => Ok(RegisterKind::Coil),
            "discrete_input" => Ok(RegisterKind::DiscreteInput),
            other => Err(format!(
                "unknown table `{other}` (holding, input, coil, discrete_input)"
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_print() {
        assert_eq!(parse_units("1-3,255,2"), Ok(vec![1, 2, 3, 255]));
        assert!(parse_units("3-1").is_err());
        assert!(parse_units("300").is_err());
        assert_eq!(compact(&[1, 2, 3, 7, 9, 10]), "1-3, 7, 9-10");
        assert_eq!(smaller(125), 64);
        assert_eq!(smaller(64), 32);
        assert_eq!(smaller(2), 1);
        assert_eq!(
            merge(vec![(10, 5), (0, 10), (20, 1)]),
            vec![(0, 15), (20, 1)]
        );
        assert!(parse_tables("holding,coil").is_ok());
        assert!(parse_tables("holdings").is_err());
    }
}
