//! `watch MACHINE` in tmux (send-keys, capture-pane) against pymodbus: raw words and decoded
//! values on screen, a changing register marked, Ctrl-C ends it.

use crate::util::*;
use serde_json::json;
use std::process::Command;
use std::time::Duration;

fn tmux(socket: &str, args: &[&str]) -> String {
    let out = Command::new("tmux")
        .arg("-L")
        .arg(socket)
        .args(args)
        .output()
        .expect("tmux");
    text(&out.stdout)
}

#[test]
fn watch_shows_raw_and_decoded_values_in_tmux() {
    let dir = TempDir::new("watch");
    let spec = json!({"counters": {"1": [1]}, "slaves": {"1": [
        {"kind": "holding", "address": 0, "type": "int16", "value": -5},
        {"kind": "holding", "address": 1, "type": "uint16", "value": 100},
        {"kind": "holding", "address": 2, "type": "string", "length": 2, "value": "AB12"}]}});
    let peer = ModbusPeer::start(&dir, &spec, "tcp");
    let cfg = dir.write(
        "m.json",
        &json!({"machines": [{"name": "WATCH-01", "ip_address": "127.0.0.1", "port": peer.port,
            "slave_id": 1, "poll_interval_s": 0.5, "registers": [
            {"name": "temperature", "kind": "holding", "address": 0, "type": "int16", "measurement": "high_frequency_data"},
            {"name": "counter", "kind": "holding", "address": 1, "type": "uint16", "measurement": "medium_frequency_data"},
            {"name": "batch", "kind": "holding", "address": 2, "type": "string", "length": 2, "measurement": "cycle_context_data"}]}]})
        .to_string(),
    );
    let socket = format!("gw-watch-{}", std::process::id());
    let cmd = format!(
        "NO_COLOR=1 {} --config {} watch WATCH-01",
        bin().display(),
        cfg.display()
    );
    tmux(
        &socket,
        &["new-session", "-d", "-x", "120", "-y", "20", "sh"],
    );
    tmux(&socket, &["send-keys", &cmd, "Enter"]);
    let mut screen = String::new();
    let shown = wait_until(Duration::from_secs(20), || {
        screen = tmux(&socket, &["capture-pane", "-p"]);
        screen.contains("refresh 3")
    });
    tmux(&socket, &["send-keys", "C-c", ""]);
    let ended = wait_until(Duration::from_secs(10), || {
        tmux(&socket, &["capture-pane", "-p"])
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .is_some_and(|l| l.trim_end().ends_with('$') || l.trim_end().ends_with('#'))
    });
    tmux(&socket, &["kill-server"]);
    let dump = format!("{screen}\n{}", peer.proc.dump());
    assert!(shown, "{dump}");
    assert!(
        screen.contains("WATCH-01 (unit 1 on tcp://127.0.0.1:"),
        "{dump}"
    );
    let line = |name: &str| {
        screen
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("temperature").contains("fffb") && line("temperature").contains(" -5"),
        "{dump}"
    );
    assert!(
        line("batch").contains("4142 3132") && line("batch").contains("\"AB12\""),
        "{dump}"
    );
    assert!(
        line("counter").trim_end().ends_with('*'),
        "the counter changed: {dump}"
    );
    assert!(!line("temperature").trim_end().ends_with('*'), "{dump}");
    assert!(ended, "Ctrl-C ends watch\n{dump}");
}
