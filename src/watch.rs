//! `watch MACHINE`: a live view of one configured machine in a plain terminal (SSH, tmux): every
//! register raw (hex words or bit) and decoded, values that changed since the last refresh
//! highlighted (reverse video), refreshed at the machine's shortest poll interval. Reads only,
//! through the same transport, planner and decoder as the poller.

use crate::config::{Config, Register};
use crate::modbus::codec::{exception, Reply};
use crate::modbus::transport_for;
use crate::modbus::{Client, ModbusError};
use crate::registers::{self, plan, Value};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// What one refresh shows for a register.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Read { raw: String, value: String },
    Failed(String),
}

fn show(v: &Value) -> String {
    match v {
        Value::Float(f) => format!("{f}"),
        Value::Int(i) => format!("{i}"),
        Value::Bool(b) => format!("{b}"),
        Value::Str(s) => format!("{s:?}"),
    }
}

fn cells(
    regs: &[Register],
    blocks: &[plan::ReadBlock],
    replies: &[Result<Reply, String>],
) -> Vec<Cell> {
    let mut out = vec![Cell::Failed("not read".into()); regs.len()];
    for (b, r) in blocks.iter().zip(replies) {
        for &i in &b.members {
            let reg = &regs[i];
            let off = usize::from(reg.address - b.address);
            out[i] = match r {
                Err(e) => Cell::Failed(e.clone()),
                Ok(Reply::Words(w)) => {
                    let end = (off + usize::from(reg.quantity())).min(w.len());
                    let words = &w[off.min(end)..end];
                    Cell::Read {
                        raw: words
                            .iter()
                            .map(|w| format!("{w:04x}"))
                            .collect::<Vec<_>>()
                            .join(" "),
                        value: registers::decode_words(reg, words)
                            .map(|v| show(&v))
                            .unwrap_or_else(|e| e.to_string()),
                    }
                }
                Ok(Reply::Bits(bits)) => match bits.get(off) {
                    Some(&bit) => Cell::Read {
                        raw: u8::from(bit).to_string(),
                        value: show(&registers::decode_bit(bit)),
                    },
                    None => Cell::Failed("short reply".into()),
                },
                Ok(_) => Cell::Failed("unexpected reply".into()),
            };
        }
    }
    out
}

/// The screen for one refresh (`color`: ANSI reverse video on changed values).
fn render(
    title: &str,
    regs: &[Register],
    now: &[Cell],
    before: Option<&[Cell]>,
    color: bool,
) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{title}");
    let _ = writeln!(
        o,
        "{:<20} {:<15} {:>6}  {:<24} value",
        "register", "kind", "addr", "raw"
    );
    for (i, (reg, c)) in regs.iter().zip(now).enumerate() {
        let changed = before.is_some_and(|b| b.get(i) != Some(c));
        let (raw, value) = match c {
            Cell::Read { raw, value } => (raw.clone(), value.clone()),
            Cell::Failed(e) => ("-".to_string(), format!("({e})")),
        };
        let (on, off, mark) = match (changed, color) {
            (true, true) => ("\x1b[7m", "\x1b[0m", ' '),
            (true, false) => ("", "", '*'),
            _ => ("", "", ' '),
        };
        let _ = writeln!(
            o,
            "{:<20} {:<15} {:>6}  {:<24} {on}{value}{off}{mark}",
            reg.name,
            reg.kind.as_str(),
            reg.address,
            raw
        );
    }
    o
}

/// Run the view until `stop` says so (Ctrl-C) or `rounds` refreshes (tests).
pub(crate) fn run(
    config: &Config,
    name: &str,
    rounds: Option<u64>,
    stop: &dyn Fn() -> bool,
) -> Result<(), String> {
    let m = config
        .machines
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| format!("no machine `{name}` in the config"))?;
    let ep = &config.endpoints[m.endpoint];
    let interval = m
        .intervals
        .iter()
        .copied()
        .min()
        .unwrap_or(Duration::from_secs(5));
    let all: Vec<usize> = (0..m.registers.len()).collect();
    let mut blocks = plan::plan(&m.registers, &all, &m.limits);
    let mut client = Client::new(transport_for(&ep.kind, ep.timeout));
    let mut before: Option<Vec<Cell>> = None;
    let color = std::env::var_os("NO_COLOR").is_none();
    let mut n = 0u64;
    let t0 = Instant::now();
    loop {
        let started = Instant::now();
        if !client.is_open() {
            if let Err(e) = client.transport().open() {
                println!("\x1b[2J\x1b[Hcannot connect to {}: {e}", ep.describe());
            }
        }
        let mut replies = Vec::new();
        let mut i = 0;
        while client.is_open() && i < blocks.len() {
            let b = &blocks[i];
            match client.read(m.unit_id, b.kind, b.address, b.quantity) {
                Err(ModbusError::Exception(e)) if e.code == exception::ILLEGAL_DATA_ADDRESS => {
                    if let Some(pieces) = plan::split(&m.registers, b, &m.limits) {
                        blocks.splice(i..=i, pieces);
                        continue;
                    }
                    replies.push(Err(e.to_string()));
                }
                r => replies.push(r.map_err(|e| e.to_string())),
            }
            i += 1;
        }
        let now = cells(&m.registers, &blocks, &replies);
        let title = format!(
            "{} (unit {} on {}), every {:?}; refresh {} at {:.1} s (Ctrl-C ends)",
            m.name,
            m.unit_id,
            ep.describe(),
            interval,
            n + 1,
            t0.elapsed().as_secs_f64()
        );
        // Home and clear, then the screen: plain ANSI, works over SSH and in tmux.
        print!(
            "\x1b[H\x1b[2J{}",
            render(&title, &m.registers, &now, before.as_deref(), color)
        );
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        before = Some(now);
        n += 1;
        if rounds.is_some_and(|r| n >= r) {
            return Ok(());
        }
        while started.elapsed() < interval {
            if stop() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50).min(interval));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_values_are_marked() {
        let cfg = crate::config::validate_raw(
            crate::config::parse(r#"{"machines": [{"name": "A", "ip_address": "h", "slave_id": 1, "registers": [
                {"name": "t", "kind": "holding", "address": 0, "type": "int16", "measurement": "high_frequency_data"},
                {"name": "s", "kind": "holding", "address": 1, "type": "uint16", "measurement": "high_frequency_data"}]}]}"#)
            .expect("parse"),
        )
        .expect("valid");
        let regs = &cfg.machines[0].registers;
        let blocks = plan::plan(regs, &[0, 1], &cfg.machines[0].limits);
        let a = cells(regs, &blocks, &[Ok(Reply::Words(vec![0xFFFF, 7]))]);
        let b = cells(regs, &blocks, &[Ok(Reply::Words(vec![0xFFFF, 8]))]);
        let screen = render("x", regs, &b, Some(&a), false);
        assert!(screen.contains("ffff"), "{screen}");
        assert!(
            screen
                .lines()
                .any(|l| l.starts_with("t ") && l.ends_with("-1 ")),
            "{screen}"
        );
        assert!(
            screen
                .lines()
                .any(|l| l.starts_with("s ") && l.ends_with("8*")),
            "{screen}"
        );
    }
}
