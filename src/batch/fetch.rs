//! The new-batches thread: every `api.poll_interval_s` (default 10 s) it GETs
//! `API_URL_STRINGS`, parses the answer (a list of objects, a map machine -> name or machine ->
//! object, optionally wrapped in `{"data": ...}`; field names configurable), validates each
//! entry and hands it to the thread that owns the machine's endpoint as a write command. It
//! never touches a device. Bad input (malformed JSON, HTTP errors, an unknown machine, a name
//! that does not fit or has characters the HMI cannot show) is logged once per distinct
//! problem and skipped; nothing is written. A machine listed twice in one answer gets only
//! its first entry that can be written.

use super::{BatchOrder, MachineId, OwnerCommand, OwnerTx};
use crate::config::{BatchWrite, Config};
use crate::status::Beat;
use crossbeam_channel::{select, Receiver};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One entry of the API's answer, before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub machine: String,
    pub name: String,
    pub id: Option<String>,
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parse the API's answer. Errors say what is wrong with the document as a whole; entries
/// that cannot be read are reported in the second list.
pub fn parse(
    text: &str,
    f_machine: &str,
    f_batch: &str,
    f_id: &str,
) -> Result<(Vec<Entry>, Vec<String>), String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("malformed JSON: {e}"))?;
    let doc = match &doc {
        Value::Object(o)
            if o.len() == 1 && o.get("data").is_some_and(|d| d.is_array() || d.is_object()) =>
        {
            o.get("data").cloned().unwrap_or(Value::Null)
        }
        _ => doc,
    };
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    match doc {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let machine = item.get(f_machine).and_then(scalar);
                let name = item.get(f_batch).and_then(|v| v.as_str().map(String::from));
                match (machine, name) {
                    (Some(machine), Some(name)) => entries.push(Entry {
                        machine,
                        name,
                        id: item.get(f_id).and_then(scalar),
                    }),
                    _ => problems.push(format!(
                        "entry {i} has no `{f_machine}` or no string `{f_batch}`: {item}"
                    )),
                }
            }
        }
        Value::Object(map) => {
            for (machine, v) in map {
                match v {
                    Value::String(name) => entries.push(Entry {
                        machine,
                        name,
                        id: None,
                    }),
                    Value::Object(o) => match o.get(f_batch).and_then(|b| b.as_str()) {
                        Some(name) => entries.push(Entry {
                            machine,
                            name: name.to_string(),
                            id: o.get(f_id).and_then(scalar),
                        }),
                        None => {
                            problems.push(format!("entry `{machine}` has no string `{f_batch}`"))
                        }
                    },
                    Value::Null => {}
                    other => problems.push(format!(
                        "entry `{machine}` is neither a name nor an object: {other}"
                    )),
                }
            }
        }
        other => return Err(format!("expected a list or an object, got {other}")),
    }
    Ok((entries, problems))
}

/// Why `name` cannot go into this machine's batch area, if it cannot.
pub fn check_name(name: &str, bw: &BatchWrite) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("the batch name is empty".into());
    }
    if name.trim() != name {
        return Err(format!(
            "`{name}` starts or ends with a space, which the HMI area cannot keep"
        ));
    }
    let max = usize::from(bw.registers) * 2;
    if name.len() > max {
        return Err(format!(
            "`{name}` has {} characters, the HMI area holds {max}",
            name.len()
        ));
    }
    let ok = |c: char| match &bw.charset {
        Some(set) => set.contains(c),
        None => (' '..='~').contains(&c),
    };
    if let Some(bad) = name.chars().find(|c| !ok(*c)) {
        return Err(format!(
            "`{}` contains {bad:?}, which the HMI cannot show",
            name.escape_debug()
        ));
    }
    Ok(())
}

pub(crate) struct Fetcher {
    agent: ureq::Agent,
    url: String,
    interval: Duration,
    fields: (String, String, String),
    machines: Vec<(String, Option<BatchWrite>)>,
    /// Owner (endpoint) of each machine, and each endpoint's command channel.
    owner: Vec<usize>,
    commands: Vec<OwnerTx>,
    /// Problems seen in the previous answer (logged once while they persist).
    reported: HashSet<String>,
    /// Problems seen in the current answer.
    current: HashSet<String>,
    /// Machines the previous answer listed.
    listed: HashSet<usize>,
    last_problem: Option<String>,
}

impl Fetcher {
    /// `ca`: the trusted CAs for https:// (`None`: Mozilla's roots).
    pub(crate) fn new(
        config: &Config,
        ca: Option<&[ureq::tls::Certificate<'static>]>,
        url: String,
        commands: Vec<OwnerTx>,
    ) -> Fetcher {
        Fetcher {
            agent: crate::http::agent(config.api.timeout, ca),
            url,
            interval: config.api.poll_interval,
            fields: (
                config.api.field_machine.clone(),
                config.api.field_batch.clone(),
                config.api.field_id.clone(),
            ),
            machines: config
                .machines
                .iter()
                .map(|m| (m.name.clone(), m.batch_write.clone()))
                .collect(),
            owner: config.machines.iter().map(|m| m.endpoint).collect(),
            commands,
            reported: HashSet::new(),
            current: HashSet::new(),
            listed: HashSet::new(),
            last_problem: None,
        }
    }

    /// Log a problem once (until it goes away and comes back).
    fn problem_once(&mut self, text: String) {
        let new = !self.reported.contains(&text);
        self.current.insert(text.clone());
        if new {
            log::warn!(
                "new batches from {}: {text}; skipped, nothing written",
                crate::http::redact_url(&self.url)
            );
        }
    }

    /// One GET and hand-over. Returns the orders sent (for tests).
    pub(crate) fn fetch_once(&mut self) -> Vec<BatchOrder> {
        let result = self
            .agent
            .get(&self.url)
            .header("Accept", "application/json")
            .call();
        let text = match result {
            Ok(mut r) if r.status().is_success() => r
                .body_mut()
                .with_config()
                .limit(1 << 20)
                .read_to_string()
                .map_err(|e| e.to_string()),
            Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
            Err(e) => Err(e.to_string()),
        };
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                let p = format!("GET failed: {e}");
                if self.last_problem.as_deref() != Some(p.as_str()) {
                    log::warn!(
                        "new batches from {}: {p}; nothing written, retrying",
                        crate::http::redact_url(&self.url)
                    );
                    self.last_problem = Some(p);
                }
                return Vec::new();
            }
        };
        if self.last_problem.take().is_some() {
            log::info!(
                "new batches from {}: reachable again",
                crate::http::redact_url(&self.url)
            );
        }
        let (f_m, f_b, f_i) = self.fields.clone();
        let (entries, problems) = match parse(&text, &f_m, &f_b, &f_i) {
            Ok(x) => x,
            Err(e) => {
                self.problem_once(e);
                self.reported = std::mem::take(&mut self.current);
                return Vec::new();
            }
        };
        for p in problems {
            self.problem_once(p);
        }
        let mut sent = Vec::new();
        let mut listed = HashSet::new();
        // Per machine: the first entry that can be written, and the later ones skipped. A
        // machine listed twice gets the same entry on every fetch, never one and then the other.
        let mut chosen: Vec<(usize, String, Vec<String>)> = Vec::new();
        for e in entries {
            let Some(index) = self.machines.iter().position(|(n, _)| *n == e.machine) else {
                self.problem_once(format!("unknown machine `{}`", e.machine));
                continue;
            };
            listed.insert(index);
            let Some(bw) = self.machines[index].1.clone() else {
                self.problem_once(format!(
                    "machine `{}` has no batch_write area configured",
                    e.machine
                ));
                continue;
            };
            if let Err(p) = check_name(&e.name, &bw) {
                self.problem_once(format!("machine `{}`: {p}", e.machine));
                continue;
            }
            if let Some((_, _, later)) = chosen.iter_mut().find(|(i, _, _)| *i == index) {
                later.push(e.name);
                continue;
            }
            chosen.push((index, e.name.clone(), Vec::new()));
            let order = BatchOrder {
                machine: MachineId(index),
                name: e.name,
                entry_id: e.id,
            };
            if let Some(tx) = self.commands.get(self.owner[index]) {
                if tx
                    .send_timeout(OwnerCommand::Write(order.clone()), Duration::from_secs(1))
                    .is_err()
                {
                    log::warn!(
                        "machine {}: its endpoint thread is busy; the batch will be offered again",
                        e.machine
                    );
                    continue;
                }
            }
            sent.push(order);
        }
        for (index, first, later) in chosen {
            if !later.is_empty() {
                self.problem_once(format!(
                    "machine `{}` is listed more than once; the first entry (`{first}`) is used, the others (`{}`) are",
                    self.machines[index].0,
                    later.join("`, `")
                ));
            }
        }
        // Machines no longer listed: their writer learns that the API has taken its last
        // confirmation (a later listing of the same name is then a new batch: a re-dye).
        for &m in self.listed.difference(&listed) {
            if let Some(tx) = self.commands.get(self.owner[m]) {
                let _ = tx.send_timeout(
                    OwnerCommand::NotListed {
                        machine: MachineId(m),
                    },
                    Duration::from_secs(1),
                );
            }
        }
        self.listed = listed;
        self.reported = std::mem::take(&mut self.current);
        sent
    }

    pub(crate) fn run(mut self, shutdown: Receiver<()>, beat: Arc<Beat>) {
        let mut next = Instant::now();
        loop {
            beat.check_in();
            let wait = next
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1));
            select! {
                recv(shutdown) -> _ => break,
                default(wait) => {}
            }
            if Instant::now() >= next {
                self.fetch_once();
                next += self.interval;
                if next < Instant::now() {
                    next = Instant::now() + self.interval;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(registers: u16) -> BatchWrite {
        BatchWrite::area(100, registers, 120)
    }

    #[test]
    fn lists_maps_and_wrapped_answers_parse() {
        let list = r#"[{"machine": "JET-01", "batch": "B1", "id": 17}, {"machine": "JET-02", "batch": "B2"}]"#;
        let (e, p) = parse(list, "machine", "batch", "id").expect("list");
        assert!(p.is_empty());
        assert_eq!(
            e[0],
            Entry {
                machine: "JET-01".into(),
                name: "B1".into(),
                id: Some("17".into())
            }
        );
        assert_eq!(e[1].id, None);
        let map = r#"{"JET-01": "B1", "JET-02": {"batch": "B2", "id": "x9"}, "JET-03": null}"#;
        let (e, _) = parse(map, "machine", "batch", "id").expect("map");
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].id.as_deref(), Some("x9"));
        let wrapped = r#"{"data": [{"mesin": "JET-01", "lot": "B1"}]}"#;
        let (e, _) = parse(wrapped, "mesin", "lot", "id").expect("wrapped");
        assert_eq!(e[0].name, "B1");
    }

    #[test]
    fn bad_documents_and_entries_are_reported() {
        assert!(parse("{not json", "machine", "batch", "id")
            .unwrap_err()
            .contains("malformed JSON"));
        assert!(parse("42", "machine", "batch", "id").is_err());
        let (e, p) = parse(
            r#"[{"machine": "A"}, {"machine": "B", "batch": 5}]"#,
            "machine",
            "batch",
            "id",
        )
        .expect("doc");
        assert!(e.is_empty());
        assert_eq!(p.len(), 2);
    }

    /// A strings API on loopback that gives `answer` to every GET.
    fn serve(answer: &'static str) -> String {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/strings", server.server_addr());
        std::thread::spawn(move || {
            for req in server.incoming_requests() {
                let _ = req.respond(tiny_http::Response::from_string(answer));
            }
        });
        url
    }

    #[test]
    fn two_entries_for_one_machine_hand_over_the_first_writable_one_every_time() {
        let config = crate::config::validate_raw(
            crate::config::parse(
                r#"{"machines": [{"name": "JET-01", "ip_address": "10.0.0.1",
                    "registers": [{"name": "t", "kind": "holding", "address": 0, "type": "int16", "measurement": "high_frequency_data"}],
                    "batch_write": {"address": 100, "registers": 10, "handshake_address": 120}}]}"#,
            )
            .expect("parse"),
        )
        .expect("valid");
        let url = serve(
            r#"[{"machine": "JET-01", "batch": "A-NAME-TOO-LONG-FOR-TEN-REGISTERS"},
                {"machine": "JET-01", "batch": "LOT-A", "id": 1}, {"machine": "JET-01", "batch": "LOT-B", "id": 2}]"#,
        );
        let (tx, rx) = crossbeam_channel::bounded(16);
        let mut f = Fetcher::new(
            &config,
            None,
            url,
            vec![super::super::OwnerTx::new(tx, None)],
        );
        for _ in 0..3 {
            let sent = f.fetch_once();
            let names: Vec<&str> = sent.iter().map(|o| o.name.as_str()).collect();
            assert_eq!(names, ["LOT-A"]);
        }
        let handed: Vec<String> = rx
            .try_iter()
            .filter_map(|c| match c {
                OwnerCommand::Write(o) => Some(o.name),
                _ => None,
            })
            .collect();
        assert_eq!(handed, ["LOT-A", "LOT-A", "LOT-A"]);
    }

    #[test]
    fn names_must_fit_and_be_printable() {
        let a = area(4);
        assert!(check_name("BATCH123", &a).is_ok());
        assert!(check_name("BATCH1234", &a).unwrap_err().contains("holds 8"));
        assert!(check_name("BATCH\u{7}", &a).is_err());
        assert!(check_name("BÄTCH", &a).is_err());
        assert!(check_name("  ", &a).is_err());
        let mut digits = area(4);
        digits.charset = Some("0123456789".into());
        assert!(check_name("1234", &digits).is_ok());
        assert!(check_name("12A4", &digits).is_err());
    }
}
