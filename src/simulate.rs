//! Simulated dyeing machines, served over Modbus TCP, RTU over TCP, or RTU on a serial path,
//! for commissioning without hardware, the `demo` command, tests and benchmarks. The register
//! map comes from the config: each register gets a plausible signal chosen by its name
//! (temperature ramps, level, pH, status, a process code that runs through running codes and
//! holds the finish code, batch name, operator, shift, a reset counter). The batch-input area
//! and handshake are writable; a register named `sequence` counts requests; the simulated HMI takes a new batch 2 s after the handshake is
//! set and clears it. A serial endpoint whose path does not exist is served on a new pty pair
//! whose slave end is linked at that path.

use crate::config::{Config, DataType, EndpointKind, Machine, RegisterKind};
use crate::registers::{self, Value};
use crate::status::lock;
use rmodbus::server::storage::ModbusStorageFull;
use rmodbus::server::ModbusFrame;
use rmodbus::ModbusProto;
use serialport::SerialPort;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Process codes the simulated machine runs through before finishing.
const RUNNING_CODES: [i64; 4] = [101, 102, 201, 202];

pub struct SimMachine {
    machine: Machine,
    storage: Box<ModbusStorageFull>,
    batch_no: u32,
    handshake_since: Option<Instant>,
    /// Seconds per running step, finish hold and idle (scaled down for the demo).
    step_s: f64,
    /// Values pinned by a test or benchmark, by register index (they win over the signal).
    overrides: BTreeMap<usize, f64>,
    /// Requests answered, for benchmarks.
    pub requests: u64,
    /// Batch names written by the gateway and taken by the simulated HMI, by the cycle they
    /// run in (the next one after they were taken).
    batch_names: BTreeMap<u32, String>,
}

/// The machines behind one endpoint, by unit id.
pub type Bus = Arc<Mutex<BTreeMap<u8, SimMachine>>>;

impl SimMachine {
    pub fn new(machine: Machine, step_s: f64) -> Self {
        let mut m = SimMachine {
            machine,
            storage: Box::new(ModbusStorageFull::new()),
            batch_no: 1,
            handshake_since: None,
            step_s,
            overrides: BTreeMap::new(),
            requests: 0,
            batch_names: BTreeMap::new(),
        };
        m.update(0.0);
        m
    }

    /// Pin a numeric register to `value` (benchmarks use it to time a change end to end).
    pub fn set_override(&mut self, name: &str, value: f64) {
        if let Some(r) = self.machine.registers.iter().position(|r| r.name == name) {
            self.overrides.insert(r, value);
            self.set(r, value, None);
        }
    }

    fn set(&mut self, r: usize, value: f64, text: Option<String>) {
        let reg = &self.machine.registers[r];
        let raw = match (&text, reg.data_type) {
            (Some(t), _) => Value::Str(t.clone()),
            (None, DataType::Float32 | DataType::Float64) => {
                Value::Float((value - reg.offset.unwrap_or(0.0)) / reg.scale.unwrap_or(1.0))
            }
            (None, _) => Value::Int(
                ((value - reg.offset.unwrap_or(0.0)) / reg.scale.unwrap_or(1.0)).round() as i64,
            ),
        };
        let a = usize::from(reg.address);
        match reg.kind {
            RegisterKind::Coil | RegisterKind::DiscreteInput => {
                let bits = if reg.kind == RegisterKind::Coil {
                    &mut self.storage.coils[..]
                } else {
                    &mut self.storage.discretes[..]
                };
                if let Some(b) = bits.get_mut(a) {
                    *b = value != 0.0;
                }
            }
            RegisterKind::Holding | RegisterKind::Input => {
                let words = registers::encode_words(reg, &raw);
                let area = if reg.kind == RegisterKind::Holding {
                    &mut self.storage.holdings[..]
                } else {
                    &mut self.storage.inputs[..]
                };
                if let DataType::Bit(bit) = reg.data_type {
                    if let Some(w) = area.get_mut(a) {
                        *w = (*w & !(1 << bit)) | (u16::from(value != 0.0) << bit);
                    }
                    return;
                }
                for (i, w) in words.into_iter().enumerate() {
                    if let Some(slot) = area.get_mut(a + i) {
                        *slot = w;
                    }
                }
            }
        }
    }

    /// Advance the simulated process to `t` seconds since start.
    pub(crate) fn update(&mut self, t: f64) {
        let finish_code = self.machine.finish.as_ref().map_or(305, |f| f.finish_code);
        let step = self.step_s;
        let cycle = step * (RUNNING_CODES.len() as f64 + 2.0);
        let n = (t / cycle).floor();
        let phase = t - n * cycle;
        let idx = (phase / step).floor() as usize;
        let (process, running) = if idx < RUNNING_CODES.len() {
            (RUNNING_CODES[idx] as f64, true)
        } else if idx == RUNNING_CODES.len() {
            (finish_code as f64, false)
        } else {
            (0.0, false)
        };
        self.batch_no = n as u32 + 1;
        let progress = (phase / (step * RUNNING_CODES.len() as f64)).min(1.0);
        let seed = f64::from(self.machine.unit_id);
        let wobble = (t / 7.0 + seed).sin();
        let process_reg = self.machine.finish.as_ref().map(|f| f.register);
        for r in 0..self.machine.registers.len() {
            let reg = &self.machine.registers[r];
            let name = reg.name.to_ascii_lowercase();
            let is_string = matches!(reg.data_type, DataType::Str { .. });
            if name == "sequence" {
                continue;
            }
            let (value, text) = if let Some(v) = self.overrides.get(&r) {
                (*v, None)
            } else if Some(r) == process_reg || name.contains("process") {
                (process, None)
            } else if is_string && name.contains("batch") {
                let planned = self.batch_names.get(&self.batch_no).cloned();
                (
                    0.0,
                    Some(planned.unwrap_or_else(|| format!("BATCH{:04}", self.batch_no))),
                )
            } else if is_string && (name.contains("operator") || name.contains("nik")) {
                (0.0, Some(format!("NIK{:05}", 10000 + (self.batch_no % 7))))
            } else if is_string {
                (0.0, Some(format!("{}-{}", reg.name, self.batch_no)))
            } else if name.starts_with("param") {
                // Recipe parameters: constant, as most of an HMI's registers are.
                (f64::from(self.machine.unit_id) + r as f64, None)
            } else if name.contains("temp") {
                (30.0 + 100.0 * progress + wobble * 0.5, None)
            } else if name.contains("level") {
                (if running { 60.0 + 10.0 * wobble } else { 5.0 }, None)
            } else if name.contains("ph") {
                (6.8 + 0.3 * wobble, None)
            } else if name.contains("status") || name.contains("running") {
                (f64::from(u8::from(running)), None)
            } else if name.contains("shift") {
                (1.0 + (self.batch_no % 3) as f64, None)
            } else if name.contains("reset") || name.contains("counter") || name.contains("hours") {
                // Counts up during each batch and is reset when the next one starts.
                ((phase * 10.0).floor(), None)
            } else {
                (50.0 + 10.0 * wobble, None)
            };
            self.set(r, value, text);
        }
        // The simulated HMI takes a new batch 2 s after the handshake was set.
        if let Some(bw) = &self.machine.batch_write {
            let hs = usize::from(bw.handshake_address);
            let set = self.storage.holdings.get(hs).is_some_and(|&v| v == 1);
            match (set, self.handshake_since) {
                (true, None) => self.handshake_since = Some(Instant::now()),
                (true, Some(since)) if since.elapsed() >= Duration::from_secs(2) => {
                    self.storage.holdings[hs] = 0;
                    self.handshake_since = None;
                    let a = usize::from(bw.address);
                    let words = &self.storage.holdings[a..a + usize::from(bw.registers)];
                    let name = registers::decode_string(words, bw.string_order);
                    if !name.is_empty() {
                        self.batch_names.insert(self.batch_no + 1, name);
                    }
                }
                (false, _) => self.handshake_since = None,
                _ => {}
            }
        }
    }

    /// Answer one request PDU-bearing ADU, or `None` if no reply is due.
    fn answer(&mut self, unit: u8, adu: &[u8], proto: ModbusProto) -> Option<Vec<u8>> {
        self.requests += 1;
        // A register named `sequence` counts the requests that reach this machine, so tests
        // can tell exactly which polls' points arrived (every poll changes it).
        if let Some(r) = self
            .machine
            .registers
            .iter()
            .position(|r| r.name == "sequence")
        {
            self.set(r, self.requests as f64, None);
        }
        let mut response = Vec::new();
        let mut frame = ModbusFrame::new(unit, adu, proto, &mut response);
        frame.parse().ok()?;
        if frame.processing_required {
            let result = if frame.readonly {
                frame.process_read(&*self.storage)
            } else {
                frame.process_write(&mut *self.storage)
            };
            result.ok()?;
        }
        if frame.response_required {
            frame.finalize_response().ok()?;
            Some(response)
        } else {
            None
        }
    }
}

/// Answer a request for the bus: the unit id selects the machine.
pub fn answer(bus: &Bus, adu: &[u8], proto: ModbusProto) -> Option<Vec<u8>> {
    let at = if proto == ModbusProto::TcpUdp { 6 } else { 0 };
    let unit = *adu.get(at)?;
    let mut machines = lock(bus);
    match machines.get_mut(&unit) {
        Some(m) => m.answer(unit, adu, proto),
        None if proto == ModbusProto::TcpUdp && adu.len() > 7 => {
            // Gateway semantics: 0x0B, the target device failed to respond.
            let mut r = adu[..8].to_vec();
            r[4..6].copy_from_slice(&3u16.to_be_bytes());
            r[7] |= 0x80;
            r.push(0x0B);
            Some(r)
        }
        None => None,
    }
}

/// Answer every complete request frame at the front of `buf`; garbage empties it. Returns
/// false when `send` fails (the connection is gone).
fn answer_frames(
    buf: &mut Vec<u8>,
    bus: &Bus,
    proto: ModbusProto,
    mut send: impl FnMut(&[u8]) -> bool,
) -> bool {
    loop {
        let len = match rmodbus::guess_request_frame_len(buf, proto) {
            Ok(l) => usize::from(l),
            Err(rmodbus::ErrorKind::OOB) => return true,
            Err(_) => {
                buf.clear();
                return true;
            }
        };
        if buf.len() < len {
            return true;
        }
        let adu: Vec<u8> = buf.drain(..len).collect();
        if let Some(reply) = answer(bus, &adu, proto) {
            if !send(&reply) {
                return false;
            }
        }
    }
}

fn serve_tcp_conn(mut s: TcpStream, bus: Bus, proto: ModbusProto, stop: Arc<AtomicBool>) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = s.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return,
        }
        if !answer_frames(&mut buf, &bus, proto, |reply| s.write_all(reply).is_ok()) {
            return;
        }
    }
}

/// A running simulator: its threads stop when it is dropped or `stop` is called.
pub struct Simulator {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Address each TCP endpoint is served on, by endpoint name.
    pub addresses: BTreeMap<String, std::net::SocketAddr>,
    /// The simulated machines, one bus per endpoint in config order.
    pub buses: Vec<Bus>,
    /// Symlinks made for serial endpoints served on a pty, removed on stop.
    links: Vec<PathBuf>,
    /// The pty slave ends, kept open while the simulator runs.
    _ptys: Vec<serialport::TTYPort>,
}

impl Simulator {
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for l in self.links.drain(..) {
            let _ = std::fs::remove_file(l);
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serve every endpoint of `config`. TCP endpoints listen on `bind_host` (or their own
/// address) at their port (`0` picks a free one); serial endpoints are opened at their path.
pub fn start(config: &Config, bind_host: Option<&str>, step_s: f64) -> std::io::Result<Simulator> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let mut addresses = BTreeMap::new();
    let mut buses: Vec<Bus> = Vec::new();
    let mut links = Vec::new();
    let mut ptys = Vec::new();
    for (ei, ep) in config.endpoints.iter().enumerate() {
        let bus: Bus = Arc::new(Mutex::new(
            config
                .machines
                .iter()
                .filter(|m| m.endpoint == ei)
                .map(|m| (m.unit_id, SimMachine::new(m.clone(), step_s)))
                .collect(),
        ));
        buses.push(bus.clone());
        match &ep.kind {
            EndpointKind::Tcp { host, port } | EndpointKind::RtuOverTcp { host, port } => {
                let proto = if matches!(ep.kind, EndpointKind::Tcp { .. }) {
                    ModbusProto::TcpUdp
                } else {
                    ModbusProto::Rtu
                };
                let listener = TcpListener::bind((bind_host.unwrap_or(host), *port))?;
                listener.set_nonblocking(true)?;
                addresses.insert(ep.name.clone(), listener.local_addr()?);
                let stop = stop.clone();
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("sim {}", ep.name))
                        .spawn(move || {
                            let mut conns = Vec::new();
                            while !stop.load(Ordering::Relaxed) {
                                match listener.accept() {
                                    Ok((s, _)) => {
                                        let _ = s.set_nonblocking(false);
                                        let (bus, stop) = (bus.clone(), stop.clone());
                                        conns.push(std::thread::spawn(move || {
                                            serve_tcp_conn(s, bus, proto, stop)
                                        }));
                                    }
                                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                                }
                            }
                            for c in conns {
                                let _ = c.join();
                            }
                        })?,
                );
            }
            EndpointKind::Rtu(s) => {
                let path = Path::new(&s.path);
                let port = if path.exists() {
                    serialport::new(&s.path, s.baudrate)
                        .timeout(Duration::from_millis(200))
                        .open_native()
                        .map_err(std::io::Error::from)?
                } else {
                    // No such port: make a pty pair and put its slave end at the path, so
                    // the gateway opens it like a USB adapter.
                    let (mut master, slave) =
                        serialport::TTYPort::pair().map_err(std::io::Error::from)?;
                    let name = slave
                        .name()
                        .ok_or_else(|| std::io::Error::other("the pty has no name"))?;
                    if path.symlink_metadata().is_ok() {
                        std::fs::remove_file(path)?;
                    }
                    std::os::unix::fs::symlink(&name, path)?;
                    links.push(path.to_path_buf());
                    ptys.push(slave);
                    master
                        .set_timeout(Duration::from_millis(200))
                        .map_err(std::io::Error::from)?;
                    master
                };
                let stop = stop.clone();
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("sim {}", ep.name))
                        .spawn(move || serve_serial(port, bus, stop))?,
                );
            }
        }
    }
    // One ticker advances every simulated process.
    let all_buses = buses.clone();
    {
        let stop = stop.clone();
        let started = Instant::now();
        threads.push(
            std::thread::Builder::new()
                .name("sim ticker".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let t = started.elapsed().as_secs_f64();
                        for bus in &buses {
                            for m in lock(bus).values_mut() {
                                m.update(t);
                            }
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                })?,
        );
    }
    Ok(Simulator {
        stop,
        threads,
        addresses,
        buses: all_buses,
        links,
        _ptys: ptys,
    })
}

fn serve_serial(mut port: serialport::TTYPort, bus: Bus, stop: Arc<AtomicBool>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 256];
    while !stop.load(Ordering::Relaxed) {
        match port.read(&mut chunk) {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => continue,
            Err(_) => {
                // A silence ends any partial frame (Modbus over serial line, t3.5).
                buf.clear();
                continue;
            }
        }
        answer_frames(&mut buf, &bus, ModbusProto::Rtu, |reply| {
            let _ = port.write_all(reply);
            true
        });
    }
}
