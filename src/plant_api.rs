//! A stand-in for the plant's batch API, for `demo` only: it prints every report it receives,
//! and after a machine reports a finished batch it offers that machine a new batch name on
//! `GET /strings` until the gateway confirms it on `POST /strings/confirm`. It speaks just
//! enough HTTP/1.1 for the gateway's client.

use crate::status::lock;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Plan {
    /// machine -> (entry id, batch name) waiting to be written.
    offered: BTreeMap<String, (u64, String)>,
    next_id: u64,
}

pub(crate) struct PlantApi {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Drop for PlantApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer(plan: &Mutex<Plan>, method: &str, path: &str, body: &str) -> (u16, String) {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    match (method, path) {
        ("POST", "/batch/finish") | ("POST", "/trigger") => {
            println!("plant API: {path} <- {body}");
            if path == "/batch/finish" {
                if let Some(m) = v.get("machine").and_then(Value::as_str) {
                    let mut p = lock(plan);
                    p.next_id += 1;
                    let id = p.next_id;
                    p.offered
                        .insert(m.to_string(), (id, format!("LOT{:05}", 100 + id)));
                }
            }
            (200, json!({"ok": true}).to_string())
        }
        ("GET", "/strings") => {
            let p = lock(plan);
            let list: Vec<Value> = p
                .offered
                .iter()
                .map(|(m, (id, name))| json!({"machine": m, "batch": name, "id": id}))
                .collect();
            (200, Value::from(list).to_string())
        }
        ("POST", "/strings/confirm") => {
            println!("plant API: {path} <- {body}");
            if let Some(m) = v.get("machine").and_then(Value::as_str) {
                lock(plan).offered.remove(m);
            }
            (200, json!({"ok": true}).to_string())
        }
        _ => (404, json!({"error": "not found"}).to_string()),
    }
}

fn serve(s: TcpStream, plan: &Mutex<Plan>) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = s;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut len = 0;
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        let (status, text) = answer(plan, &method, &path, &String::from_utf8_lossy(&body));
        write!(w, "HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}", text.len())?;
        w.flush()?;
    }
}

pub(crate) fn start() -> std::io::Result<PlantApi> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let plan = Arc::new(Mutex::new(Plan::default()));
    let st = stop.clone();
    std::thread::Builder::new()
        .name("plant-api".into())
        .spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let plan = plan.clone();
                        std::thread::spawn(move || serve(s, &plan));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })?;
    Ok(PlantApi { addr, stop })
}
