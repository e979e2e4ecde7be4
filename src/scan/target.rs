//! Scan targets: `tcp://HOST[:PORT]`, `rtu-over-tcp://HOST:PORT` and
//! `rtu:///dev/ttyUSB0?baud=9600&parity=E&data=8&stop=1` (`baud=auto` tries the common rates
//! and parities).

use crate::config::{Parity, SerialSettings};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Target {
    Tcp {
        host: String,
        port: u16,
    },
    RtuOverTcp {
        host: String,
        port: u16,
    },
    /// `auto`: the settings to try, in order (one entry when the baud rate is given).
    Rtu {
        candidates: Vec<SerialSettings>,
    },
}

/// Rates tried by `baud=auto`, most common first.
pub(crate) const AUTO_BAUDS: [u32; 6] = [9600, 19200, 38400, 115200, 57600, 4800];

impl Target {
    pub(crate) fn is_serial(&self) -> bool {
        matches!(self, Target::Rtu { .. })
    }
}

fn host_port(rest: &str, default: Option<u16>) -> Result<(String, u16), String> {
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("bad port `{p}` in the target"))?,
        ),
        None => (
            rest,
            default.ok_or("the target needs a port (HOST:PORT)".to_string())?,
        ),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("the target has no host".into());
    }
    Ok((host.to_string(), port))
}

fn parity(text: &str) -> Result<Parity, String> {
    match text {
        "N" | "n" | "none" => Ok(Parity::None),
        "E" | "e" | "even" => Ok(Parity::Even),
        "O" | "o" | "odd" => Ok(Parity::Odd),
        other => Err(format!("bad parity `{other}` (expected N, E or O)")),
    }
}

pub(crate) fn parse(text: &str) -> Result<Target, String> {
    if let Some(rest) = text.strip_prefix("tcp://") {
        let (host, port) = host_port(rest, Some(502))?;
        return Ok(Target::Tcp { host, port });
    }
    if let Some(rest) = text.strip_prefix("rtu-over-tcp://") {
        let (host, port) = host_port(rest, None)?;
        return Ok(Target::RtuOverTcp { host, port });
    }
    let Some(rest) = text.strip_prefix("rtu://") else {
        return Err(format!(
            "unknown target `{text}` (expected tcp://HOST[:PORT], rtu-over-tcp://HOST:PORT or rtu:///dev/PATH?baud=N)"
        ));
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !path.starts_with('/') {
        return Err("an rtu target names a device path: rtu:///dev/ttyUSB0?baud=9600".into());
    }
    let mut baud: Option<u32> = Some(9600);
    let mut parities: Option<Vec<Parity>> = None;
    let (mut data_bits, mut stop_bits) = (8u8, 1u8);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or(format!("bad parameter `{pair}` (expected KEY=VALUE)"))?;
        match k {
            "baud" | "baudrate" if v == "auto" => baud = None,
            "baud" | "baudrate" => {
                baud = Some(v.parse().map_err(|_| format!("bad baud rate `{v}`"))?)
            }
            "parity" => parities = Some(vec![parity(v)?]),
            "data" | "data_bits" => {
                data_bits = match v {
                    "7" => 7,
                    "8" => 8,
                    _ => return Err(format!("bad data bits `{v}` (7 or 8)")),
                }
            }
            "stop" | "stop_bits" => {
                stop_bits = match v {
                    "1" => 1,
                    "2" => 2,
                    _ => return Err(format!("bad stop bits `{v}` (1 or 2)")),
                }
            }
            other => {
                return Err(format!(
                    "unknown parameter `{other}` (baud, parity, data, stop)"
                ))
            }
        }
    }
    let bauds: Vec<u32> = baud.map(|b| vec![b]).unwrap_or(AUTO_BAUDS.to_vec());
    // Auto without a parity: even first (the Modbus default, serial line v1.02 2.5.1), then none.
    let parities = parities.unwrap_or(if baud.is_some() {
        vec![Parity::None]
    } else {
        vec![Parity::Even, Parity::None, Parity::Odd]
    });
    let mut candidates = Vec::new();
    for &b in &bauds {
        for p in &parities {
            candidates.push(SerialSettings {
                path: path.to_string(),
                baudrate: b,
                parity: p.clone(),
                data_bits,
                stop_bits,
                rs485: None,
            });
        }
    }
    Ok(Target::Rtu { candidates })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            parse("tcp://10.0.0.5"),
            Ok(Target::Tcp {
                host: "10.0.0.5".into(),
                port: 502
            })
        );
        assert_eq!(
            parse("rtu-over-tcp://gw:4001"),
            Ok(Target::RtuOverTcp {
                host: "gw".into(),
                port: 4001
            })
        );
        assert!(parse("rtu-over-tcp://gw").is_err());
        let Ok(Target::Rtu { candidates }) = parse("rtu:///dev/ttyUSB0?baud=19200&parity=E&stop=2")
        else {
            panic!("rtu")
        };
        assert_eq!(candidates.len(), 1);
        assert_eq!(candidates[0].baudrate, 19200);
        assert_eq!(candidates[0].parity, Parity::Even);
        assert_eq!(candidates[0].stop_bits, 2);
        let Ok(Target::Rtu { candidates }) = parse("rtu:///dev/ttyUSB0?baud=auto") else {
            panic!("auto")
        };
        assert_eq!(candidates.len(), AUTO_BAUDS.len() * 3);
        assert!(parse("rtu:///dev/ttyUSB0?speed=9600").is_err());
        assert!(parse("udp://x").is_err());
    }
}
