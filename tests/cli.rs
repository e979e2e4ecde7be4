//! The command line: config errors name their JSON path and exit with code 2; `check` shows
//! the write map and where each value came from; the environment beats `.env` beats the file;
//! secrets never appear in the output.

use crate::util::*;
use std::process::Command;
use std::time::Duration;

fn machine_json(extra: &str) -> String {
    format!(
        r#"{{ {extra} "machines": [{{"name": "JET-01", "ip_address": "127.0.0.1", "port": 1502,
            "registers": [{{"name": "t", "kind": "holding", "address": 0, "type": "int16", "measurement": "high_frequency_data"}}]}}]}}"#
    )
}

#[test]
fn config_errors_name_the_json_path_and_exit_2() {
    let dir = TempDir::new("cfgerr");
    let cases = [
        (
            r#"{"machines": [{"name": "A", "ip_address": "h", "registers": [{"name": "t", "kind": "holding", "address": 0, "type": "flaot32", "measurement": "high_frequency_data"}]}]}"#,
            "$.machines[0].registers[0].type",
        ),
        (
            r#"{"machines": [{"name": "A", "ip_address": "h", "slave-id": 3}]}"#,
            "$.machines[0]",
        ),
        (
            r#"{"machines": [{"name": "A", "ip_address": "h", "profile": "nope"}]}"#,
            "$.machines[0].profile",
        ),
        (r#"{"machines": [ {"name": "A", "ip_address": "h" "#, "$"),
        (
            r#"{"endpoints": [{"name": "bus", "transport": "rtu", "serial_port": "/dev/x", "parity": "maybe"}], "machines": [{"name": "A", "endpoint": "bus", "registers": [{"name": "t", "kind": "holding", "address": 0, "type": "int16", "measurement": "high_frequency_data"}]}]}"#,
            "$.endpoints[0].parity",
        ),
    ];
    for (json, path) in cases {
        let cfg = dir.write("bad.json", json);
        let out = gateway(
            &["--config", cfg.to_str().unwrap_or_default(), "check"],
            &[],
        );
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{json}\n{err}");
        assert!(err.contains(path), "expected {path} in:\n{err}");
    }
    // `run` refuses a config without InfluxDB, naming the setting and the variable.
    let cfg = dir.write("noinflux.json", &machine_json(""));
    let out = gateway(
        &[
            "--config",
            cfg.to_str().unwrap_or_default(),
            "run",
            "--duration",
            "0",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("$.influxdb.url"),
        "{}",
        text(&out.stderr)
    );
    // A missing file is a configuration error too.
    let out = gateway(&["--config", "/nonexistent/machines.json", "check"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn environment_beats_dotenv_beats_file_and_check_says_so() {
    let dir = TempDir::new("prec");
    let cfg = dir.write(
        "machines.json",
        &machine_json(r#""influxdb": {"url": "http://file:8086", "org": "file-org", "bucket": "file-bucket", "token": "file-token-XYZ"},"#),
    );
    dir.write(
        ".env",
        "INFLUX_URL=http://dotenv:8086\nINFLUX_ORG=dotenv-org\nINFLUX_TOKEN=dotenv-token-ABC\n",
    );
    let out = gateway(
        &["--config", cfg.to_str().unwrap_or_default(), "check"],
        &[("INFLUX_URL", "http://env:8086")],
    );
    let o = text(&out.stdout);
    assert!(out.status.success(), "{o}{}", text(&out.stderr));
    let line = |key: &str| {
        o.lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("influxdb.url").contains("http://env:8086")
            && line("influxdb.url").contains("environment variable INFLUX_URL"),
        "{o}"
    );
    assert!(
        line("influxdb.org").contains("dotenv-org") && line("influxdb.org").contains(".env"),
        "{o}"
    );
    assert!(
        line("influxdb.bucket").contains("file-bucket")
            && line("influxdb.bucket").contains("config file"),
        "{o}"
    );
    assert!(line("influxdb.token").contains("[redacted]"), "{o}");
    assert!(
        !o.contains("dotenv-token-ABC") && !o.contains("file-token-XYZ"),
        "a token leaked:\n{o}"
    );
}

#[test]
fn check_prints_the_write_map_of_the_shipped_example() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("machines.json");
    let out = gateway(
        &["--config", example.to_str().unwrap_or_default(), "check"],
        &[],
    );
    let o = text(&out.stdout);
    assert!(out.status.success(), "{o}{}", text(&out.stderr));
    assert!(o.contains("write map"), "{o}");
    assert!(o.contains("(batch handshake, function 6)"), "{o}");
    assert!(
        o.contains("holding 100..=109 (batch name, 20 chars)"),
        "{o}"
    );
}

#[test]
fn demo_prints_write_requests_from_its_simulated_machines() {
    let out = gateway(&["demo", "--duration", "3"], &[]);
    let o = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(o.contains("--- write request 1"), "{o}");
    for m in [
        "high_frequency_data,",
        "medium_frequency_data,",
        "cycle_context_data,",
    ] {
        assert!(o.contains(m), "{m} missing:\n{o}");
    }
}

#[test]
fn seconds_options_out_of_range_are_refused_with_exit_2() {
    // `run --duration 1e300` used to start and then abort (a Duration overflow); `inf` or a
    // negative number ran forever. Each is a command-line error now, before anything starts.
    let dir = TempDir::new("seconds");
    let fake = FakeInflux2::start(|_, _| (204, vec![], String::new()));
    let cfg = dir.write(
        "m.json",
        &machine_json(&format!(
            r#""state_dir": {:?}, "status": {{"listen": ""}}, "influxdb": {{"url": "{}", "org": "o", "bucket": "b"}},"#,
            dir.path().join("state"),
            fake.url()
        )),
    );
    let cfg = cfg.to_str().unwrap_or_default();
    let cases: [&[&str]; 8] = [
        &["run", "--duration", "1e300"],
        &["run", "--duration", "inf"],
        &["run", "--duration", "NaN"],
        &["run", "--duration=-1"],
        &["run", "--duration", "ten"],
        &["demo", "--duration", "1e300"],
        &["simulate", "--duration", "1e300"],
        &["simulate", "--step", "0"],
    ];
    for args in cases {
        let mut gw = Proc::spawn(
            "gateway",
            Command::new(bin())
                .args(["--config", cfg])
                .args(args)
                .env_remove("RUST_LOG"),
            dir.path(),
        );
        let mut code = None;
        wait_until(Duration::from_secs(10), || {
            code = gw.child.try_wait().ok().flatten().map(|s| s.code());
            code.is_some()
        });
        let out = gw.output();
        assert_eq!(
            code,
            Some(Some(2)),
            "{args:?}: still running or wrong code\n{out}"
        );
        let option = args[1].split('=').next().unwrap_or_default();
        assert!(
            out.contains(option) && out.contains("seconds"),
            "{args:?}: the message names the option\n{out}"
        );
    }
    // A sensible value still works.
    let out = gateway(&["--config", cfg, "run", "--duration", "0.5"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
