//! Modbus RTU on a serial line (RS-485). The port is opened with O_NOCTTY (it never becomes a
//! controlling terminal) and reopened after an error (a USB adapter unplugged and back).
//! Timing follows Modbus over serial line v1.02, 2.5.1.1: a request starts only after 3.5
//! character times of silence since the last byte on the bus (fixed 1.75 ms above 19200 baud),
//! and stray input is discarded before each request.

use super::codec::{Framing, Request};
use super::transport::{read_rtu_adu, Transport, TransportError};
use serialport::{ClearBuffer, SerialPort, TTYPort};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SerialSettings {
    pub path: String,
    pub baudrate: u32,
    pub parity: Parity,
    pub data_bits: u8,
    pub stop_bits: u8,
    /// Kernel RS-485 mode, set with the TIOCSRS485 ioctl when present.
    pub rs485: Option<Rs485>,
}

/// Linux `struct serial_rs485` settings: RTS drives the transceiver's direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rs485 {
    pub rts_on_send: bool,
    pub rts_after_send: bool,
    pub delay_before_send_ms: u32,
    pub delay_after_send_ms: u32,
    pub rx_during_tx: bool,
}

/// Bits on the wire per character: start, data, parity, stop.
pub(crate) fn bits_per_char(s: &SerialSettings) -> u32 {
    1 + u32::from(s.data_bits) + u32::from(s.parity != Parity::None) + u32::from(s.stop_bits)
}

/// Time of one character on the wire.
pub fn char_time(s: &SerialSettings) -> Duration {
    Duration::from_secs_f64(f64::from(bits_per_char(s)) / f64::from(s.baudrate))
}

/// The inter-frame silence t3.5: 3.5 character times, or 1750 us above 19200 baud (2.5.1.1).
pub fn t35(s: &SerialSettings) -> Duration {
    if s.baudrate > 19200 {
        Duration::from_micros(1750)
    } else {
        char_time(s).mul_f64(3.5)
    }
}

/// Linux `struct serial_rs485` (include/uapi/linux/serial.h).
#[repr(C)]
struct SerialRs485 {
    flags: u32,
    delay_rts_before_send: u32,
    delay_rts_after_send: u32,
    padding: [u32; 5],
}

const SER_RS485_ENABLED: u32 = 1 << 0;
const SER_RS485_RTS_ON_SEND: u32 = 1 << 1;
const SER_RS485_RTS_AFTER_SEND: u32 = 1 << 2;
const SER_RS485_RX_DURING_TX: u32 = 1 << 4;

/// Switch the UART into kernel RS-485 mode: the driver raises RTS (the transceiver's driver
/// enable) while sending. `serialport` has no API for it, hence the ioctl.
fn set_rs485(port: &TTYPort, r: &Rs485) -> io::Result<()> {
    let mut flags = SER_RS485_ENABLED;
    if r.rts_on_send {
        flags |= SER_RS485_RTS_ON_SEND;
    }
    if r.rts_after_send {
        flags |= SER_RS485_RTS_AFTER_SEND;
    }
    if r.rx_during_tx {
        flags |= SER_RS485_RX_DURING_TX;
    }
    let conf = SerialRs485 {
        flags,
        delay_rts_before_send: r.delay_before_send_ms,
        delay_rts_after_send: r.delay_after_send_ms,
        padding: [0; 5],
    };
    // SAFETY: the fd is open for the lifetime of `port`, and `conf` is a valid
    // `struct serial_rs485` that the kernel only reads.
    let rc = unsafe { libc::ioctl(port.as_raw_fd(), libc::TIOCSRS485 as _, &conf) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(crate) struct SerialTransport {
    settings: SerialSettings,
    timeout: Duration,
    port: Option<TTYPort>,
    /// When the bus was last busy (end of our last request on the wire, or the last byte read).
    last_activity: Instant,
}

impl SerialTransport {
    pub(crate) fn new(settings: SerialSettings, timeout: Duration) -> Self {
        SerialTransport {
            settings,
            timeout,
            port: None,
            last_activity: Instant::now(),
        }
    }
}

impl Transport for SerialTransport {
    fn framing(&self) -> Framing {
        Framing::Rtu
    }

    /// A serial line has no connection to go stale: a silent unit is just silent.
    fn reconnect_after_timeouts(&self) -> Option<u32> {
        None
    }

    /// Stray input is flushed before each request.
    fn close_after_bad_reply(&self) -> bool {
        false
    }

    fn is_open(&self) -> bool {
        self.port.is_some()
    }

    fn open(&mut self) -> io::Result<()> {
        if self.port.is_some() {
            return Ok(());
        }
        let s = &self.settings;
        let port = serialport::new(&s.path, s.baudrate)
            .data_bits(match s.data_bits {
                5 => serialport::DataBits::Five,
                6 => serialport::DataBits::Six,
                7 => serialport::DataBits::Seven,
                _ => serialport::DataBits::Eight,
            })
            .parity(match s.parity {
                Parity::None => serialport::Parity::None,
                Parity::Even => serialport::Parity::Even,
                Parity::Odd => serialport::Parity::Odd,
            })
            .stop_bits(if s.stop_bits == 2 {
                serialport::StopBits::Two
            } else {
                serialport::StopBits::One
            })
            .flow_control(serialport::FlowControl::None)
            .timeout(self.timeout)
            .open_native()
            .map_err(io::Error::from)?;
        if let Some(r) = &s.rs485 {
            set_rs485(&port, r).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "{}: cannot enable kernel RS-485 mode (TIOCSRS485): {e}",
                        s.path
                    ),
                )
            })?;
        }
        self.port = Some(port);
        self.last_activity = Instant::now();
        Ok(())
    }

    fn close(&mut self) {
        self.port = None;
    }

    fn exchange(&mut self, req: &Request) -> Result<Vec<u8>, TransportError> {
        let t35 = t35(&self.settings);
        let char_time = char_time(&self.settings);
        let timeout = self.timeout;
        let Some(port) = self.port.as_mut() else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "port not open").into());
        };
        let quiet_until = self.last_activity + t35;
        let now = Instant::now();
        if quiet_until > now {
            std::thread::sleep(quiet_until - now);
        }
        let io_result = port
            .clear(ClearBuffer::Input)
            .map_err(io::Error::from)
            .and_then(|()| port.write_all(&req.adu))
            .and_then(|()| port.flush());
        if let Err(e) = io_result {
            self.port = None;
            return Err(e.into());
        }
        // write() returns once the bytes are queued; they are on the wire one char time each.
        let sent_at = Instant::now();
        let on_wire = char_time * req.adu.len() as u32;
        let deadline = sent_at + on_wire + timeout;
        let mut set = |p: &mut TTYPort, d: Duration| p.set_timeout(d).map_err(io::Error::from);
        // Between bytes of one frame: generous against USB adapters' latency timers.
        let inter_byte = (char_time * 2).max(Duration::from_millis(20));
        let result = read_rtu_adu(port, deadline, inter_byte, &mut set);
        self.last_activity = Instant::now();
        match result {
            Ok(adu) => Ok(adu),
            Err((_, TransportError::Timeout(_))) => Err(TransportError::Timeout(timeout)),
            Err((_, TransportError::Io(e))) => {
                self.port = None;
                Err(e.into())
            }
            Err((_, e)) => Err(e),
        }
    }
}
