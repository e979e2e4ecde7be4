//! Secrets and TLS: tokens and passwords never reach the logs at any level, HTTPS verifies
//! certificates (a plant CA is trusted only when configured).

use crate::util::*;
use dyeing_gateway::app::trusted_roots;
use dyeing_gateway::config;
use dyeing_gateway::uploader::sink::{InfluxSink, Outcome, Sink};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const TOKEN: &str = "tok3n-Sh0uld-N3ver-Be-Logged";
const PASSWORD: &str = "pa55w0rd-N3ver-Logged";

#[test]
fn secrets_never_appear_in_logs_even_at_trace_level() {
    let fake = FakeInflux2::start(|_, n| {
        if n % 3 == 1 {
            (
                401,
                vec![],
                json!({"code": "unauthorized", "message": "unauthorized access"}).to_string(),
            )
        } else {
            (204, vec![], String::new())
        }
    });
    let dir = TempDir::new("secrets");
    let port = free_ports(1)[0];
    for influx in [
        json!({"url": fake.url(), "org": "o", "bucket": "b", "flush_interval_s": 0.2}),
        json!({"url": fake.url(), "api": "v1", "database": "d", "username": "gw", "password": PASSWORD, "flush_interval_s": 0.2}),
    ] {
        let cfg = json!({"state_dir": dir.path(), "influxdb": influx,
            "machines": [{"name": "M", "ip_address": "127.0.0.1", "port": port, "poll_interval_s": 0.2,
              "registers": [{"name": "sequence", "kind": "holding", "address": 0, "type": "uint32", "measurement": "high_frequency_data"}]}]});
        let path = dir.write("m.json", &cfg.to_string());
        let c = path.to_str().unwrap_or_default().to_string();
        let _sim = Proc::spawn(
            "sim",
            Command::new(bin()).args(["--config", &c, "simulate"]),
            dir.path(),
        );
        assert!(wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }));
        let mut gw = Proc::spawn(
            "gateway",
            Command::new(bin())
                .args(["--config", &c, "run"])
                .env("RUST_LOG", "trace")
                .env("INFLUX_TOKEN", TOKEN),
            dir.path(),
        );
        std::thread::sleep(Duration::from_secs(3));
        gw.terminate(Duration::from_secs(10));
        let check = gateway(
            &["--config", &c, "check"],
            &[("INFLUX_TOKEN", TOKEN), ("RUST_LOG", "trace")],
        );
        let all = format!(
            "{}{}{}",
            gw.output(),
            text(&check.stdout),
            text(&check.stderr)
        );
        assert!(
            all.lines().count() > 20,
            "trace logging produced too little:\n{all}"
        );
        for secret in [TOKEN, PASSWORD, "Z3c6cGE1NXcwcmQtTjN2ZXItTG9nZ2Vk"] {
            assert!(!all.contains(secret), "a secret leaked:\n{all}");
        }
    }
    // The fake did receive the credentials: they go on the wire, only there.
    let reqs = fake.requests();
    assert!(reqs.iter().any(|r| r
        .headers
        .contains(&("authorization".into(), format!("Token {TOKEN}")))));
    assert!(reqs.iter().any(|r| r
        .headers
        .iter()
        .any(|(k, v)| k == "authorization" && v.starts_with("Basic "))));
}

/// A CA and a server certificate for 127.0.0.1, made with openssl.
fn certificates(dir: &TempDir) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let d = dir.path();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            text(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Plant Test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (d.join("ca.pem"), d.join("server.pem"), d.join("server.key"))
}

#[test]
fn https_verifies_the_server_and_trusts_a_configured_plant_ca() {
    let dir = TempDir::new("tls");
    let (ca, cert, key) = certificates(&dir);
    let port = free_ports(1)[0];
    let server = Proc::spawn(
        "https",
        Command::new(python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/https_sink.py"))
            .args(["--port", &port.to_string()])
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key),
        dir.path(),
    );
    assert!(
        wait_until(Duration::from_secs(10), || server
            .output()
            .contains("ready")),
        "{}",
        server.dump()
    );
    let cfg = |ca_file: Option<&Path>| {
        let mut j = json!({"influxdb": {"url": format!("https://127.0.0.1:{port}"), "org": "o", "bucket": "b", "token": "t"},
            "machines": [{"name": "M", "ip_address": "127.0.0.1", "registers": [{"name": "a", "kind": "holding", "address": 0, "type": "uint16", "measurement": "medium_frequency_data"}]}]});
        if let Some(f) = ca_file {
            j["tls"] = json!({"ca_file": f});
        }
        config::validate_raw(config::parse(&j.to_string()).expect("parse")).expect("valid")
    };
    // Without the plant CA the self-signed chain is refused: no data is sent, it will retry.
    let c = cfg(None);
    let roots = trusted_roots(&c).expect("no CA file");
    let mut sink = InfluxSink::new(c.influx.configured().expect("influx"), roots.as_deref());
    let o = sink.write("m v=1i 1");
    assert!(
        matches!(&o, Outcome::Retry { reason, .. } if reason.to_lowercase().contains("certificate") || reason.to_lowercase().contains("issuer")),
        "{o:?}"
    );
    // With it, the write goes through.
    let c = cfg(Some(&ca));
    let roots = trusted_roots(&c).expect("the plant CA");
    let mut sink = InfluxSink::new(c.influx.configured().expect("influx"), roots.as_deref());
    assert_eq!(
        sink.write("m v=1i 1"),
        Outcome::Accepted,
        "{}",
        server.dump()
    );
    assert!(server.output().contains("POST /api/v2/write"));
    // A CA file that is not PEM, or not there, is a configuration error at its JSON path when
    // `check` or `run` starts (validation only checks the name; the file is read at start-up).
    let bad = dir.write("bad.pem", "not a certificate");
    for (file, says) in [
        (bad.clone(), "holds no PEM certificate"),
        (dir.path().join("absent.pem"), "cannot read"),
    ] {
        let j = json!({"influxdb": {"url": "http://127.0.0.1:9", "org": "o", "bucket": "b"}, "tls": {"ca_file": file}, "state_dir": dir.path().join("state"),
            "machines": [{"name": "M", "ip_address": "h", "registers": [{"name": "a", "kind": "holding", "address": 0, "type": "uint16", "measurement": "medium_frequency_data"}]}]});
        let c = config::validate_raw(config::parse(&j.to_string()).expect("parse")).expect("valid");
        let e = trusted_roots(&c).expect_err("unreadable CA");
        assert_eq!(e.path, "$.tls.ca_file");
        let file = dir.write("tls.json", &j.to_string());
        for command in [&["check"][..], &["run", "--duration", "0"]] {
            let args = [
                &["--config", file.to_str().unwrap_or_default()][..],
                command,
            ]
            .concat();
            let out = gateway(&args, &[]);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command:?}: {err}");
            assert!(
                err.contains("$.tls.ca_file") && err.contains(says),
                "{command:?}: {err}"
            );
        }
    }
}
