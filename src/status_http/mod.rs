//! The status page: a small bounded HTTP server (`server`: one reader thread and a fixed pool
//! of workers), read-only.
//! `/` is an HTML page that works without internet (inline CSS and SVG sparklines, refreshes
//! itself), `/status.json` the same data as JSON, `/metrics` Prometheus text. It listens on
//! loopback by default; on any other address the config must give a login, checked with HTTP
//! basic auth against a slow password hash, failed logins delayed (`login`).

use crate::status::{lock, Board, ReloadStatus, Snapshot, LATENCY_BUCKETS};
use crossbeam_channel::Receiver;
use sha2::{Digest, Sha256};
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub mod login;
pub(crate) mod server;
use login::{Gate, Step, Verdict};
pub use server::{Response, Server};

/// What the page shows and the login it asks for; both are swapped when the config is
/// reloaded.
#[derive(Clone, Default)]
pub(crate) struct Shared {
    pub board: Arc<Mutex<Arc<Board>>>,
    pub reload: Arc<Mutex<ReloadStatus>>,
    pub login: Arc<Mutex<Gate>>,
    /// Written only by the `update-status` thread.
    pub update: crate::update::Shared,
}

impl Shared {
    pub(crate) fn new(board: Arc<Board>) -> Shared {
        Shared {
            board: Arc::new(Mutex::new(board)),
            reload: Arc::default(),
            login: Arc::default(),
            update: Arc::default(),
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let board = lock(&self.board).clone();
        let mut s = board.snapshot();
        s.reload = lock(&self.reload).clone();
        s.update = lock(&self.update).clone();
        s
    }
}

/// The old format of a password hash, `salt$hex(sha256(salt + password))` (still accepted,
/// never made by the gateway any more; for tests of old configs).
pub fn legacy_hash(salt: &str, password: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(password.as_bytes());
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("{salt}${hex}")
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = s.trim().bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    Some(out)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text exposition format 0.0.4.
pub(crate) fn metrics(s: &Snapshot) -> String {
    let mut o = String::new();
    let family = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut o,
        "dyeing_gateway_machine_online",
        "gauge",
        "1 when the machine answered its last poll.",
    );
    for m in &s.machines {
        let _ = writeln!(
            o,
            "dyeing_gateway_machine_online{{machine=\"{}\"}} {}",
            label(&m.name),
            u8::from(m.online == Some(true))
        );
    }
    family(
        &mut o,
        "dyeing_gateway_polls_total",
        "counter",
        "Polls of a machine's register groups.",
    );
    for m in &s.machines {
        let _ = writeln!(
            o,
            "dyeing_gateway_polls_total{{machine=\"{}\"}} {}",
            label(&m.name),
            m.polls
        );
    }
    family(
        &mut o,
        "dyeing_gateway_modbus_requests_total",
        "counter",
        "Modbus requests sent.",
    );
    for m in &s.machines {
        let _ = writeln!(
            o,
            "dyeing_gateway_modbus_requests_total{{machine=\"{}\"}} {}",
            label(&m.name),
            m.requests
        );
    }
    family(
        &mut o,
        "dyeing_gateway_poll_errors_total",
        "counter",
        "Poll errors by kind (timeout, connection, exception, crc, wrong_unit, bad_frame).",
    );
    for m in &s.machines {
        for (kind, n) in &m.errors {
            let _ = writeln!(
                o,
                "dyeing_gateway_poll_errors_total{{machine=\"{}\",kind=\"{kind}\"}} {n}",
                label(&m.name)
            );
        }
    }
    family(
        &mut o,
        "dyeing_gateway_poll_duration_seconds",
        "histogram",
        "Time to poll one register group of a machine.",
    );
    for m in &s.machines {
        let name = label(&m.name);
        let mut cum = 0;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cum += m.latency_buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(o, "dyeing_gateway_poll_duration_seconds_bucket{{machine=\"{name}\",le=\"{b}\"}} {cum}");
        }
        cum += m
            .latency_buckets
            .get(LATENCY_BUCKETS.len())
            .copied()
            .unwrap_or(0);
        let _ = writeln!(
            o,
            "dyeing_gateway_poll_duration_seconds_bucket{{machine=\"{name}\",le=\"+Inf\"}} {cum}"
        );
        let _ = writeln!(
            o,
            "dyeing_gateway_poll_duration_seconds_sum{{machine=\"{name}\"}} {}",
            m.latency_sum_s
        );
        let _ = writeln!(
            o,
            "dyeing_gateway_poll_duration_seconds_count{{machine=\"{name}\"}} {cum}"
        );
    }
    let u = &s.uploader;
    for (name, kind, help, v) in [
        (
            "dyeing_gateway_points_written_total",
            "counter",
            "Points InfluxDB accepted.",
            u.points_written as f64,
        ),
        (
            "dyeing_gateway_points_rejected_total",
            "counter",
            "Points InfluxDB rejected as malformed (set aside).",
            u.rejected as f64,
        ),
        (
            "dyeing_gateway_points_dropped_total",
            "counter",
            "Points dropped because the spool was full.",
            u.dropped as f64,
        ),
        (
            "dyeing_gateway_points_buffered",
            "gauge",
            "Points waiting for InfluxDB (memory and spool).",
            u.buffered as f64,
        ),
        (
            "dyeing_gateway_points_spooled",
            "gauge",
            "Points waiting in the spool on disk.",
            u.spooled as f64,
        ),
        (
            "dyeing_gateway_influx_write_requests_total",
            "counter",
            "Write requests sent to InfluxDB.",
            u.write_requests as f64,
        ),
        (
            "dyeing_gateway_clock_synchronized",
            "gauge",
            "1 when the system clock is trusted.",
            f64::from(u8::from(u.clock_synced)),
        ),
        (
            "dyeing_gateway_points_held_unstamped",
            "gauge",
            "Points held until the clock is synchronized.",
            u.held_unstamped as f64,
        ),
        (
            "dyeing_gateway_outbox_pending",
            "gauge",
            "Finish reports and confirmations not yet delivered.",
            s.outbox.pending as f64,
        ),
        (
            "dyeing_gateway_outbox_delivered_total",
            "counter",
            "Deliveries to the plant API.",
            s.outbox.delivered as f64,
        ),
        (
            "dyeing_gateway_outbox_set_aside_total",
            "counter",
            "Deliveries the plant API refused (4xx).",
            s.outbox.set_aside as f64,
        ),
    ] {
        family(&mut o, name, kind, help);
        let _ = writeln!(o, "{name} {v}");
    }
    o
}

fn sparkline(values: &[Option<f64>], color: &str) -> String {
    let pts: Vec<(usize, f64)> = values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (i, v)))
        .collect();
    if pts.len() < 2 {
        return r#"<svg width="120" height="24"></svg>"#.to_string();
    }
    let (lo, hi) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), (_, v)| {
        (a.min(*v), b.max(*v))
    });
    let span = (hi - lo).max(1e-9);
    let n = values.len().max(2) - 1;
    let path: Vec<String> = pts
        .iter()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                120.0 * *i as f64 / n as f64,
                22.0 - 20.0 * (v - lo) / span
            )
        })
        .collect();
    format!(
        "<svg width=\"120\" height=\"24\" viewBox=\"0 0 120 24\"><polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/></svg>",
        path.join(" ")
    )
}

fn age(now_ms: i64, t: Option<i64>) -> String {
    match t {
        Some(t) => format!("{:.0} s ago", ((now_ms - t) as f64 / 1000.0).max(0.0)),
        None => "never".into(),
    }
}

pub(crate) fn html(s: &Snapshot) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>dyeing-gateway</title><style>\
         body{{font-family:sans-serif;margin:1em;color:#222}} table{{border-collapse:collapse;width:100%}}\
         th,td{{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;font-size:14px;vertical-align:top}}\
         .on{{color:#1a7f37;font-weight:bold}} .off{{color:#cf222e;font-weight:bold}} .dim{{color:#777}}\
         .box{{display:inline-block;vertical-align:top;margin:0 2em 1em 0}}</style></head><body>\
         <h1>dyeing-gateway {}</h1>",
        s.version
    );
    let u = &s.uploader;
    let _ = write!(
        o,
        "<div class=\"box\"><b>InfluxDB</b>: {}<br>last result: {}<br>last success: {}<br>waiting: {} points ({} in the spool), written {}, rejected {}, dropped {}{}</div>",
        esc(&u.sink),
        esc(&u.last_result),
        age(s.time_ms, u.last_ok_ms),
        u.buffered,
        u.spooled,
        u.points_written,
        u.rejected,
        u.dropped,
        u.spool_problem.as_ref().map(|p| format!("<br><span class=\"off\">{}</span>", esc(p))).unwrap_or_default()
    );
    let _ = write!(
        o,
        "<div class=\"box\"><b>Plant API</b>: {} reports waiting, {} delivered, {} set aside<br>last: {}</div>\
         <div class=\"box\"><b>Clock</b>: {}{}</div>",
        s.outbox.pending,
        s.outbox.delivered,
        s.outbox.set_aside,
        esc(&s.outbox.last_result),
        if u.clock_synced { "<span class=\"on\">synchronized</span>" } else { "<span class=\"off\">not synchronized: points are held</span>" },
        if u.held_unstamped > 0 { format!(" ({} held)", u.held_unstamped) } else { String::new() }
    );
    if let Some(up) = &s.update {
        o.push_str(&update_box(up));
    }
    if let Some(e) = &s.reload.last_error {
        let _ = write!(o, "<p class=\"off\">The last config reload was refused; still running on the previous one: {}</p>", esc(e));
    }
    let _ = write!(
        o,
        "<table><tr><th>machine</th><th>state</th><th>last good poll</th><th>latency</th><th>errors</th>\
         <th>process</th><th>batch</th><th>temperature</th><th>level</th><th>values</th></tr>"
    );
    for m in &s.machines {
        let state = match m.online {
            Some(true) => "<span class=\"on\">online</span>",
            Some(false) => "<span class=\"off\">offline</span>",
            None => "<span class=\"dim\">not polled yet</span>",
        };
        let errors: Vec<String> = m.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let temps: Vec<Option<f64>> = m.history.iter().map(|h| h.1).collect();
        let levels: Vec<Option<f64>> = m.history.iter().map(|h| h.2).collect();
        let values: Vec<String> = m
            .values
            .iter()
            .map(|(k, v)| format!("{}={}", esc(k), esc(&v.to_string())))
            .collect();
        let _ = write!(
            o,
            "<tr id=\"machine-{}\"><td><b>{}</b><br><span class=\"dim\">unit {} on {}</span></td><td>{state}</td><td>{}</td>\
             <td>{:.1} ms</td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"dim\">{}</td></tr>",
            esc(&m.name),
            esc(&m.name),
            m.unit_id,
            esc(&m.endpoint),
            age(s.time_ms, m.last_ok_ms),
            m.last_latency_ms,
            if errors.is_empty() { "none".to_string() } else { errors.join(", ") },
            m.last_error.as_ref().map(|e| format!("<br><span class=\"dim\">last: {}</span>", esc(e))).unwrap_or_default(),
            m.process_code.map(|c| c.to_string()).unwrap_or_default(),
            esc(m.batch.as_deref().unwrap_or("")),
            sparkline(&temps, "#cf222e"),
            sparkline(&levels, "#0969da"),
            values.join(" ")
        );
    }
    o.push_str("</table><p class=\"dim\">Also: <a href=\"/status.json\">/status.json</a>, <a href=\"/metrics\">/metrics</a>. This page refreshes every 5 s.</p></body></html>");
    o
}

/// The software box: the booted slot and the other one, a rollback in red.
fn update_box(u: &crate::status::UpdateStatus) -> String {
    let slot = |s: Option<&crate::status::SlotStatus>| match s {
        None => "<span class=\"dim\">unknown</span>".to_string(),
        Some(s) => format!(
            "{}{} &middot; {} &middot; {}",
            esc(&s.name),
            s.bootname
                .as_ref()
                .map(|b| format!(" ({})", esc(b)))
                .unwrap_or_default(),
            esc(s.version.as_deref().unwrap_or("as flashed")),
            match s.boot_status.as_deref() {
                Some("good") => "<span class=\"on\">good</span>".to_string(),
                Some(b) => format!("<span class=\"off\">{}</span>", esc(b)),
                None => "<span class=\"dim\">state unknown</span>".to_string(),
            }
        ),
    };
    let mut o = format!(
        "<div class=\"box\" id=\"update\"><b>Software</b><br>booted slot: {}<br>other slot: {}",
        slot(u.booted_slot()),
        slot(u.other_slot())
    );
    if u.rolled_back {
        o.push_str("<br><span class=\"off\">rolled back: the update in the other slot did not become healthy; the previous version runs again</span>");
    }
    if let Some(e) = &u.error {
        let _ = write!(
            o,
            "<br><span class=\"dim\">last check failed: {}</span>",
            esc(e)
        );
    }
    o.push_str("</div>");
    o
}

/// Answer one request of the page.
pub(crate) fn handle(shared: &Shared, req: &server::Request) -> Response {
    let step = lock(&shared.login).begin(req.peer, req.authorization.as_deref(), Instant::now());
    let verdict = match step {
        Step::Done(v) => v,
        // The slow hash runs without the lock.
        Step::Check(p) => {
            let ok = p.check();
            lock(&shared.login).finish(req.peer, &p, ok, Instant::now())
        }
    };
    match verdict {
        Verdict::Allowed => {}
        Verdict::Refused => {
            return Response::text(401, "login required\n")
                .header("WWW-Authenticate", "Basic realm=\"dyeing-gateway\"")
        }
        Verdict::Wait(d) => {
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            return Response::text(429, "too many failed logins: try again later\n")
                .header("Retry-After", secs.max(1).to_string());
        }
    }
    if req.method != "GET" && req.method != "HEAD" {
        return Response::text(405, "read-only\n").header("Allow", "GET, HEAD");
    }
    let snap = shared.snapshot();
    let (body, ctype, code) = match req.path.as_str() {
        "/" => (html(&snap), "text/html; charset=utf-8", 200),
        "/status.json" => (
            serde_json::to_string_pretty(&snap).unwrap_or_default(),
            "application/json",
            200,
        ),
        "/metrics" => (
            metrics(&snap),
            "text/plain; version=0.0.4; charset=utf-8",
            200,
        ),
        _ => ("not found\n".to_string(), "text/plain; charset=utf-8", 404),
    };
    Response {
        code,
        headers: vec![
            ("Content-Type", ctype.into()),
            ("Cache-Control", "no-store".into()),
        ],
        body: body.into_bytes(),
    }
}

/// Serve the page until `shutdown` is closed (on the calling thread, plus the server's
/// fixed workers).
pub(crate) fn run(server: Server, shared: Shared, shutdown: Receiver<()>) {
    let handler: server::Handler = Arc::new(move |req| handle(&shared, req));
    server.run(handler, shutdown);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_decoded() {
        assert_eq!(
            base64_decode("dGVjaDpnZWhlaW0=").as_deref(),
            Some(&b"tech:geheim"[..])
        );
        assert!(legacy_hash("s4lt", "geheim").starts_with("s4lt$"));
    }

    #[test]
    fn a_rollback_is_said_in_red_and_names_are_escaped() {
        use crate::status::{SlotStatus, UpdateStatus};
        let u = UpdateStatus {
            booted: Some("rootfs.0".into()),
            slots: vec![
                SlotStatus {
                    name: "rootfs.0".into(),
                    bootname: Some("A".into()),
                    state: "booted".into(),
                    boot_status: Some("good".into()),
                    ..SlotStatus::default()
                },
                SlotStatus {
                    name: "rootfs.1".into(),
                    bootname: Some("B".into()),
                    state: "inactive".into(),
                    boot_status: Some("bad".into()),
                    version: Some("0.3<b>".into()),
                    installed: Some("2026-12-08T09:00:00Z".into()),
                },
            ],
            rolled_back: true,
            ..UpdateStatus::default()
        };
        let html = update_box(&u);
        assert!(html.contains("booted slot: rootfs.0 (A) &middot; as flashed &middot; <span class=\"on\">good</span>"), "{html}");
        assert!(html.contains("other slot: rootfs.1 (B) &middot; 0.3&lt;b&gt; &middot; <span class=\"off\">bad</span>"), "{html}");
        assert!(html.contains("rolled back"), "{html}");
    }
}
