use super::*;
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

// =============================================================================================
// Helpers
// =============================================================================================

fn temperature() -> Json {
    json!({
        "name": "temperature", "kind": "holding", "address": 0, "type": "int16",
        "scale": 0.1, "measurement": "high_frequency_data", "deadband": 0.2
    })
}

fn holding(name: &str, address: u16, data_type: &str, measurement: &str) -> Json {
    json!({
        "name": name, "kind": "holding", "address": address, "type": data_type,
        "measurement": measurement
    })
}

/// One Modbus TCP machine with two registers: the smallest useful configuration.
fn base() -> Json {
    json!({
        "machines": [{
            "name": "JET-01",
            "ip_address": "10.0.0.1",
            "registers": [
                temperature(),
                holding("status", 1, "uint16", "medium_frequency_data"),
            ]
        }]
    })
}

fn validate_json(j: &Json) -> Result<Config, ConfigErrors> {
    validate_raw(parse(&j.to_string())?)
}

fn valid(j: &Json) -> Config {
    match validate_json(j) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

fn errors(j: &Json) -> Vec<ConfigError> {
    match validate_json(j) {
        Ok(_) => panic!("expected errors for {j}"),
        Err(e) => e.0,
    }
}

fn paths(j: &Json) -> Vec<String> {
    errors(j).into_iter().map(|e| e.path).collect()
}

/// The errors of a text that is not even valid JSON (or does not fit the schema's types).
fn parse_errors(text: &str) -> Vec<ConfigError> {
    match parse(text) {
        Ok(_) => panic!("expected a parse error for {text}"),
        Err(e) => e.0,
    }
}

/// A unique directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "dyeing-gateway-config-test-{}-{n}-{tag}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn environment(vars: &[(&str, &str)]) -> HashMap<String, String> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load_from(config: &Path, env_file: Option<&Path>, env: &HashMap<String, String>) -> Config {
    match load(&Sources {
        config,
        env_file,
        environment: env,
    }) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

fn provenance<'a>(c: &'a Config, key: &str) -> &'a Provenance {
    c.provenance
        .iter()
        .find(|p| p.key == key)
        .unwrap_or_else(|| panic!("no provenance for {key}: {:?}", c.provenance))
}

// =============================================================================================
// A valid configuration
// =============================================================================================

#[test]
fn minimal_config_gets_the_defaults() {
    let c = valid(&base());
    assert_eq!(c.heartbeat, DEFAULT_HEARTBEAT);
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/dyeing-gateway"));
    assert!(c.tags.is_empty());
    // No InfluxDB is not an error of the file (`once` and `demo` work without one); `run`
    // refuses it with the problem `InfluxSetting::Missing` carries.
    assert_eq!(c.influx.configured().unwrap_err().path, "$.influxdb.url");
    assert!(c.provenance.is_empty());

    assert_eq!(c.endpoints.len(), 1);
    let ep = &c.endpoints[0];
    assert_eq!(ep.name, "10.0.0.1:502");
    assert_eq!(
        ep.kind,
        EndpointKind::Tcp {
            host: "10.0.0.1".into(),
            port: 502
        }
    );
    assert_eq!(ep.timeout, Duration::from_secs(1));
    assert_eq!(ep.request_pause, Duration::ZERO);
    assert!(!ep.close_after_poll);
    assert_eq!(ep.describe(), "tcp://10.0.0.1:502");

    assert_eq!(c.machines.len(), 1);
    let m = &c.machines[0];
    assert_eq!(m.name, "JET-01");
    assert_eq!(m.endpoint, 0);
    assert_eq!(m.unit_id, 1);
    assert_eq!(m.intervals, [DEFAULT_POLL; 4]);
    assert_eq!(
        m.limits,
        DeviceLimits {
            max_registers: TCP_MAX_REGISTERS,
            max_bits: SPEC_MAX_BITS,
            max_gap: 10
        }
    );
    assert!(m.triggers.is_empty() && m.finish.is_none() && m.batch_write.is_none());
    assert_eq!(
        m.registers[0],
        Register {
            name: "temperature".into(),
            kind: RegisterKind::Holding,
            address: 0,
            data_type: DataType::Int16,
            order: WordOrder::Abcd,
            scale: Some(0.1),
            offset: None,
            measurement: Measurement::HighFrequency,
            deadband: 0.2,
            read_once: false,
        }
    );
    assert_eq!(m.registers[1].data_type, DataType::UInt16);
    assert_eq!(m.registers[1].measurement, Measurement::MediumFrequency);
}

#[test]
fn the_built_in_demo_config_is_valid() {
    let raw = parse(include_str!("../demo.json")).unwrap();
    let c = validate_raw(raw).unwrap();
    // Two jet HMIs over TCP and two package machines on one RS-485 bus.
    assert_eq!(c.machines.len(), 4);
    assert_eq!(c.endpoints.len(), 3);
}

#[test]
fn every_data_type_and_order_is_accepted() {
    let mut j = base();
    j["machines"][0]["registers"] = json!([
        { "name": "a", "kind": "holding", "address": 0, "type": "int16", "order": "BADC", "measurement": "high_frequency_data" },
        { "name": "b", "kind": "input", "address": 0, "type": "uint16", "measurement": "high_frequency_data" },
        { "name": "c", "kind": "holding", "address": 1, "type": "int32", "order": "CDAB", "measurement": "high_frequency_data" },
        { "name": "d", "kind": "holding", "address": 3, "type": "uint32", "order": "DCBA", "measurement": "high_frequency_data" },
        { "name": "e", "kind": "holding", "address": 5, "type": "int64", "measurement": "high_frequency_data" },
        { "name": "f", "kind": "holding", "address": 9, "type": "uint64", "measurement": "high_frequency_data" },
        { "name": "g", "kind": "holding", "address": 13, "type": "float32", "order": "ABCD", "measurement": "high_frequency_data" },
        { "name": "h", "kind": "holding", "address": 15, "type": "float64", "measurement": "high_frequency_data" },
        { "name": "i", "kind": "holding", "address": 19, "type": "bit", "bit": 15, "measurement": "high_frequency_data" },
        { "name": "j", "kind": "holding", "address": 20, "type": "string", "length": 8, "string_order": "low_first", "measurement": "cycle_context_data" },
        { "name": "k", "kind": "coil", "address": 0, "type": "bool", "measurement": "high_frequency_data" },
        { "name": "l", "kind": "discrete_input", "address": 0, "type": "bool", "measurement": "high_frequency_data" }
    ]);
    let c = valid(&j);
    let types: Vec<(DataType, WordOrder)> = c.machines[0]
        .registers
        .iter()
        .map(|r| (r.data_type, r.order))
        .collect();
    assert_eq!(
        types,
        vec![
            (DataType::Int16, WordOrder::Badc),
            (DataType::UInt16, WordOrder::Abcd),
            (DataType::Int32, WordOrder::Cdab),
            (DataType::UInt32, WordOrder::Dcba),
            (DataType::Int64, WordOrder::Abcd),
            (DataType::UInt64, WordOrder::Abcd),
            (DataType::Float32, WordOrder::Abcd),
            (DataType::Float64, WordOrder::Abcd),
            (DataType::Bit(15), WordOrder::Abcd),
            (
                DataType::Str {
                    len: 8,
                    order: StringOrder::LowFirst
                },
                WordOrder::Abcd
            ),
            (DataType::Bool, WordOrder::Abcd),
            (DataType::Bool, WordOrder::Abcd),
        ]
    );
    let kinds: Vec<RegisterKind> = c.machines[0].registers.iter().map(|r| r.kind).collect();
    assert_eq!(kinds[1], RegisterKind::Input);
    assert_eq!(kinds[10], RegisterKind::Coil);
    assert_eq!(kinds[11], RegisterKind::DiscreteInput);
}

// =============================================================================================
// Errors name their JSON path
// =============================================================================================

#[test]
fn unknown_register_type() {
    let mut j = base();
    j["machines"][0]["registers"][1]["type"] = json!("int17");
    let e = errors(&j);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, "$.machines[0].registers[1].type");
    assert!(
        e[0].message.contains("unknown type `int17`"),
        "{}",
        e[0].message
    );
}

#[test]
fn unknown_profile() {
    let mut j = base();
    j["profiles"] = json!({ "jet-hmi": { "registers": [temperature()] } });
    j["machines"][0]["profile"] = json!("jet-hml");
    let e = errors(&j);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, "$.machines[0].profile");
    // The message lists the known profiles, which makes a typo obvious.
    assert!(e[0].message.contains("jet-hml"), "{}", e[0].message);
    assert!(e[0].message.contains("known: jet-hmi"), "{}", e[0].message);
}

#[test]
fn unknown_parity() {
    let mut j = base();
    j["endpoints"] = json!([
        { "name": "bus", "transport": "rtu", "serial_port": "/dev/ttyS0", "parity": "mark" }
    ]);
    j["machines"][0]["ip_address"] = Json::Null;
    j["machines"][0]["endpoint"] = json!("bus");
    assert_eq!(paths(&j), vec!["$.endpoints[0].parity"]);
}

#[test]
fn parity_spellings() {
    for (given, parity) in [
        ("none", Parity::None),
        ("N", Parity::None),
        ("even", Parity::Even),
        ("E", Parity::Even),
        ("odd", Parity::Odd),
        ("o", Parity::Odd),
    ] {
        let mut j = base();
        j["endpoints"] = json!([
            { "name": "bus", "transport": "rtu", "serial_port": "/dev/ttyS0", "parity": given }
        ]);
        j["machines"][0]["ip_address"] = Json::Null;
        j["machines"][0]["endpoint"] = json!("bus");
        let c = valid(&j);
        let EndpointKind::Rtu(s) = &c.endpoints[0].kind else {
            panic!("not RTU");
        };
        assert_eq!(s.parity, parity, "{given}");
    }
}

#[test]
fn serial_settings_are_checked() {
    let mut j = base();
    j["endpoints"] = json!([
        { "name": "bus", "transport": "rtu", "serial_port": "/dev/ttyS0",
          "baudrate": 100, "data_bits": 9, "stop_bits": 3 },
        { "name": "bus2", "transport": "rtu" }
    ]);
    j["machines"][0]["ip_address"] = Json::Null;
    j["machines"][0]["endpoint"] = json!("bus");
    assert_eq!(
        paths(&j),
        vec![
            "$.endpoints[0].baudrate",
            "$.endpoints[0].data_bits",
            "$.endpoints[0].stop_bits",
            "$.endpoints[1].serial_port",
        ]
    );
}

#[test]
fn rtu_endpoint_defaults() {
    let mut j = base();
    j["endpoints"] = json!([{ "name": "bus", "transport": "rtu", "serial_port": "/dev/ttyS0" }]);
    j["machines"][0]["ip_address"] = Json::Null;
    j["machines"][0]["endpoint"] = json!("bus");
    let c = valid(&j);
    assert_eq!(
        c.endpoints[0].kind,
        EndpointKind::Rtu(SerialSettings {
            path: "/dev/ttyS0".into(),
            baudrate: 9600,
            parity: Parity::None,
            data_bits: 8,
            stop_bits: 1,
            rs485: None,
        })
    );
    assert_eq!(c.endpoints[0].describe(), "rtu:///dev/ttyS0@9600");
    // The spec allows 125 registers per read; only rmodbus's TCP buffer is smaller.
    assert_eq!(c.machines[0].limits.max_registers, SPEC_MAX_REGISTERS);
}

#[test]
fn duplicate_endpoint_and_slave_id() {
    // Two machines at one unit id would read (and write) the same device.
    let mut j = base();
    let mut second = j["machines"][0].clone();
    second["name"] = json!("JET-02");
    j["machines"].as_array_mut().unwrap().push(second);
    let e = errors(&j);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, "$.machines[1].slave_id");
    assert!(e[0].message.contains("JET-01"), "{}", e[0].message);

    // The same through a named endpoint, with explicit slave ids.
    let mut j = base();
    j["endpoints"] = json!([{ "name": "gw", "transport": "tcp", "ip_address": "10.0.0.9" }]);
    let mut m = j["machines"][0].clone();
    m["ip_address"] = Json::Null;
    m["endpoint"] = json!("gw");
    m["slave_id"] = json!(3);
    let mut other = m.clone();
    other["name"] = json!("JET-02");
    let mut third = m.clone();
    third["name"] = json!("JET-03");
    third["slave_id"] = json!(3);
    j["machines"] = json!([m, other, third]);
    assert_eq!(
        paths(&j),
        vec!["$.machines[1].slave_id", "$.machines[2].slave_id"]
    );
}

#[test]
fn different_slave_ids_on_one_endpoint_are_fine() {
    let mut j = base();
    let mut second = j["machines"][0].clone();
    second["name"] = json!("JET-02");
    second["slave_id"] = json!(2);
    j["machines"].as_array_mut().unwrap().push(second);
    let c = valid(&j);
    assert_eq!(c.machines[0].unit_id, 1);
    assert_eq!(c.machines[1].unit_id, 2);
}

#[test]
fn duplicate_machine_name() {
    let mut j = base();
    let mut second = j["machines"][0].clone();
    second["slave_id"] = json!(2);
    j["machines"].as_array_mut().unwrap().push(second);
    assert_eq!(paths(&j), vec!["$.machines[1].name"]);
}

#[test]
fn machine_names_that_share_a_state_file_are_refused() {
    // `JET 1` and `JET_1` both map to `JET_1.json`: one machine's half-written batch would be
    // confirmed on the other.
    let mut j = base();
    j["machines"][0]["name"] = json!("JET 1");
    j["machines"][0]["batch_write"] =
        json!({ "address": 100, "registers": 10, "handshake_address": 120 });
    let mut second = j["machines"][0].clone();
    second["name"] = json!("JET_1");
    second["slave_id"] = json!(2);
    j["machines"].as_array_mut().unwrap().push(second);
    let e = errors(&j);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, "$.machines[1].name");
    for needed in ["`JET 1`", "`JET_1`", "$.machines[0]", "batch/JET_1.json"] {
        assert!(e[0].message.contains(needed), "{needed}: {}", e[0].message);
    }

    // Finish detectors have state files too.
    j["machines"][1]["batch_write"] = Json::Null;
    j["machines"][0]["batch_write"] = Json::Null;
    for m in 0..2 {
        j["machines"][m]["finish"] = json!({ "register": "status", "finish_code": 305 });
    }
    let e = errors(&j);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].message.contains("finish/JET_1.json"),
        "{}",
        e[0].message
    );

    // Without state files, or with names that stay apart, there is nothing to share.
    j["machines"][0]["finish"] = Json::Null;
    valid(&j);
    j["machines"][0]["finish"] = json!({ "register": "status", "finish_code": 305 });
    j["machines"][0]["name"] = json!("JET-1");
    valid(&j);
}

#[test]
fn names_ending_in_a_backslash_are_refused() {
    // A trailing `\` escapes the separator after it in line protocol and breaks every point.
    let mut j = base();
    j["machines"][0]["name"] = json!("JET-01\\");
    assert_eq!(paths(&j), vec!["$.machines[0].name"]);

    let mut j = base();
    j["machines"][0]["registers"][0]["name"] = json!("temperature\\");
    assert_eq!(paths(&j), vec!["$.machines[0].registers[0].name"]);

    let mut j = base();
    j["tags"] = json!({ "site\\": "north", "hall": "B\\" });
    j["machines"][0]["tags"] = json!({ "line": "3\\" });
    let e = errors(&j);
    assert_eq!(
        e.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
        vec!["$.tags.hall", "$.tags.site\\", "$.machines[0].tags.line"],
        "{e:?}"
    );
    assert!(e[0].message.contains("backslash"), "{}", e[0].message);

    // A backslash inside a name is kept as it is.
    let mut j = base();
    j["machines"][0]["name"] = json!("JET\\01");
    valid(&j);
}

#[test]
fn unknown_fields_name_their_path() {
    // A typo such as `slave-id` is an error, not a silently ignored field.
    let e = parse_errors(
        r#"{ "machines": [ { "name": "JET-01", "ip_address": "10.0.0.1", "slave-id": 3 } ] }"#,
    );
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].path, "$.machines[0].slave-id");
    assert!(
        e[0].message.contains("unknown field `slave-id`"),
        "{}",
        e[0].message
    );
    // serde's message names the line and column too.
    assert!(e[0].message.contains("line 1 column"), "{}", e[0].message);

    let mut j = base();
    j["machines"][0]["registers"][1]["scael"] = json!(0.1);
    let e = parse_errors(&j.to_string());
    assert_eq!(e[0].path, "$.machines[0].registers[1].scael");

    let e = parse_errors(r#"{ "influxdb": { "tokn": "x" } }"#);
    assert_eq!(e[0].path, "$.influxdb.tokn");

    let e = parse_errors(r#"{ "heartbeat": 30 }"#);
    assert_eq!(e[0].path, "$.heartbeat");
}

#[test]
fn wrong_json_types_name_their_path() {
    let e = parse_errors(r#"{ "machines": [ { "name": "JET-01", "slave_id": 300 } ] }"#);
    assert_eq!(e[0].path, "$.machines[0].slave_id");
    let e = parse_errors(r#"{ "heartbeat_s": "60" }"#);
    assert_eq!(e[0].path, "$.heartbeat_s");
    let e = parse_errors(
        r#"{ "machines": [ { "name": "JET-01", "registers": [ { "name": "x" } ] } ] }"#,
    );
    assert_eq!(e[0].path, "$.machines[0].registers[0]");
    assert!(e[0].message.contains("missing field"), "{}", e[0].message);
}

#[test]
fn json_syntax_errors() {
    let e = parse_errors("not json");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].path, "$");
    assert!(e[0].message.contains("line 1 column"), "{}", e[0].message);

    let e = parse_errors("");
    assert_eq!(e[0].path, "$");

    // A trailing comma inside the first machine: the path says where.
    let e = parse_errors("{\n  \"machines\": [\n    { \"name\": \"JET-01\", }\n  ]\n}");
    assert!(e[0].path.starts_with("$.machines[0]"), "{}", e[0].path);
    assert!(e[0].message.contains("trailing comma"), "{}", e[0].message);
    assert!(e[0].message.contains("line 3"), "{}", e[0].message);

    let e = parse_errors(r#"{ "machines": [ { "name": "JET-01" }"#);
    assert_eq!(e[0].path, "$.machines");
    assert!(e[0].message.contains("EOF"), "{}", e[0].message);
}

#[test]
fn register_errors_name_the_field() {
    let cases: Vec<(Json, &str)> = vec![
        (
            json!({ "name": "x", "kind": "holding", "address": 0, "type": "int16", "measurement": "high_frequency_data", "order": "ACBD" }),
            "order",
        ),
        (
            json!({ "name": "x", "kind": "holding", "address": 0, "type": "int16", "measurement": "fast" }),
            "measurement",
        ),
        (
            json!({ "name": "x", "kind": "holdings", "address": 0, "type": "int16", "measurement": "high_frequency_data" }),
            "kind",
        ),
        (
            json!({ "name": "x", "kind": "holding", "address": 0, "type": "bit", "measurement": "high_frequency_data" }),
            "bit",
        ),
        (
            json!({ "name": "x", "kind": "holding", "address": 0, "type": "bit", "bit": 16, "measurement": "high_frequency_data" }),
            "bit",
        ),
        (
            json!({ "name": "x", "kind": "holding", "address": 0, "type": "string", "measurement": "cycle_context_data" }),
            "length",
        ),
        (
            json!({ "name": "x", "kind": "holding", "address": 0, "type": "string", "length": 0, "measurement": "cycle_context_data" }),
            "length",
        ),
        (
            json!({ "name": "x", "kind": "holding", "address": 0, "type": "string", "length": 4, "string_order": "middle", "measurement": "cycle_context_data" }),
            "string_order",
        ),
        (
            json!({ "name": "x", "kind": "holding", "address": 0, "type": "int16", "scale": 0.0, "measurement": "high_frequency_data" }),
            "scale",
        ),
        (
            json!({ "name": "x", "kind": "holding", "address": 0, "type": "int16", "deadband": -1.0, "measurement": "high_frequency_data" }),
            "deadband",
        ),
        (
            json!({ "name": "x", "kind": "holding", "address": 65535, "type": "float32", "measurement": "high_frequency_data" }),
            "address",
        ),
        (
            json!({ "name": "x", "kind": "holding", "address": 65533, "type": "float64", "measurement": "high_frequency_data" }),
            "address",
        ),
        (
            json!({ "name": "", "kind": "holding", "address": 0, "type": "int16", "measurement": "high_frequency_data" }),
            "name",
        ),
        // Coils and discrete inputs are single bits, registers are not.
        (
            json!({ "name": "x", "kind": "coil", "address": 0, "type": "int16", "measurement": "high_frequency_data" }),
            "type",
        ),
        (
            json!({ "name": "x", "kind": "holding", "address": 0, "type": "bool", "measurement": "high_frequency_data" }),
            "type",
        ),
        (
            json!({ "name": "x", "modicon_address": 50001, "type": "int16", "measurement": "high_frequency_data" }),
            "modicon_address",
        ),
    ];
    for (reg, field) in cases {
        let mut j = base();
        j["machines"][0]["registers"][1] = reg.clone();
        assert_eq!(
            paths(&j),
            vec![format!("$.machines[0].registers[1].{field}")],
            "{reg}"
        );
    }
}

#[test]
fn register_errors_at_the_register_itself() {
    // Problems that involve several fields are reported at the register.
    let cases = [
        // kind without address, and address without kind
        json!({ "name": "x", "kind": "holding", "type": "int16", "measurement": "high_frequency_data" }),
        json!({ "name": "x", "address": 0, "type": "int16", "measurement": "high_frequency_data" }),
        // both notations at once
        json!({ "name": "x", "kind": "holding", "address": 0, "modicon_address": 40001, "type": "int16", "measurement": "high_frequency_data" }),
        // scale on a string
        json!({ "name": "x", "kind": "holding", "address": 0, "type": "string", "length": 2, "scale": 2.0, "measurement": "cycle_context_data" }),
    ];
    for reg in cases {
        let mut j = base();
        j["machines"][0]["registers"][1] = reg.clone();
        assert_eq!(paths(&j), vec!["$.machines[0].registers[1]"], "{reg}");
    }
}

#[test]
fn duplicate_register_name() {
    let mut j = base();
    j["machines"][0]["registers"][1]["name"] = json!("temperature");
    assert_eq!(paths(&j), vec!["$.machines[0].registers[1].name"]);
}

#[test]
fn modicon_addresses() {
    let cases = [
        (40001, "int16", RegisterKind::Holding, 0),
        (40101, "int16", RegisterKind::Holding, 100),
        (49999, "int16", RegisterKind::Holding, 9998),
        (30001, "uint16", RegisterKind::Input, 0),
        (30010, "uint16", RegisterKind::Input, 9),
        (10001, "bool", RegisterKind::DiscreteInput, 0),
        (1, "bool", RegisterKind::Coil, 0),
        (9999, "bool", RegisterKind::Coil, 9998),
    ];
    for (modicon, data_type, kind, address) in cases {
        let mut j = base();
        j["machines"][0]["registers"][1] = json!({
            "name": "x", "modicon_address": modicon, "type": data_type,
            "measurement": "high_frequency_data"
        });
        let c = valid(&j);
        let r = &c.machines[0].registers[1];
        assert_eq!((r.kind, r.address), (kind, address), "{modicon}");
    }
    for not_modicon in [0, 10000, 20001, 40000, 50000, 400001] {
        let mut j = base();
        j["machines"][0]["registers"][1] = json!({
            "name": "x", "modicon_address": not_modicon, "type": "int16",
            "measurement": "high_frequency_data"
        });
        assert_eq!(
            paths(&j),
            vec!["$.machines[0].registers[1].modicon_address"],
            "{not_modicon}"
        );
    }
}

#[test]
fn machine_endpoint_errors() {
    let mut j = base();
    j["machines"][0]["endpoint"] = json!("gw");
    // both `endpoint` and `ip_address`
    assert_eq!(paths(&j), vec!["$.machines[0].endpoint"]);

    j["machines"][0]["ip_address"] = Json::Null;
    // an endpoint that does not exist
    let e = errors(&j);
    assert_eq!(e[0].path, "$.machines[0].endpoint");
    assert!(e[0].message.contains("unknown endpoint `gw`"));

    j["machines"][0]["endpoint"] = Json::Null;
    // neither
    assert_eq!(paths(&j), vec!["$.machines[0]"]);

    let mut j = base();
    j["machines"][0]["transport"] = json!("rtu");
    // a machine with an ip_address cannot be on a serial line
    assert_eq!(paths(&j), vec!["$.machines[0].transport"]);
}

#[test]
fn connection_fields_on_a_machine_of_a_named_endpoint_are_errors() {
    // They belong to the endpoint; accepting them on the machine would silently ignore them.
    let mut j = base();
    j["endpoints"] = json!([{ "name": "gw", "transport": "tcp", "ip_address": "10.0.0.9" }]);
    j["machines"][0]["ip_address"] = Json::Null;
    j["machines"][0]["endpoint"] = json!("gw");
    j["machines"][0]["port"] = json!(503);
    j["machines"][0]["timeout_s"] = json!(2);
    j["machines"][0]["close_after_poll"] = json!(true);
    assert_eq!(
        paths(&j),
        vec![
            "$.machines[0].port",
            "$.machines[0].timeout_s",
            "$.machines[0].close_after_poll",
        ]
    );
}

#[test]
fn an_empty_ip_address() {
    let mut j = base();
    j["machines"][0]["ip_address"] = json!("");
    assert_eq!(paths(&j), vec!["$.machines[0].ip_address"]);
}

#[test]
fn endpoint_errors() {
    let mut j = base();
    j["endpoints"] = json!([
        { "name": "a", "transport": "udp", "ip_address": "10.0.0.2" },
        { "name": "b", "transport": "tcp" },
        { "name": "c", "transport": "tcp", "ip_address": "10.0.0.3", "timeout_s": 0 },
        { "name": "d", "transport": "tcp", "ip_address": "10.0.0.4", "backoff_initial_s": 10, "backoff_max_s": 5 },
        { "name": "e", "transport": "tcp", "ip_address": "10.0.0.5" },
        { "name": "e", "transport": "tcp", "ip_address": "10.0.0.6" }
    ]);
    assert_eq!(
        paths(&j),
        vec![
            "$.endpoints[0].transport",
            "$.endpoints[1].ip_address",
            "$.endpoints[2].timeout_s",
            "$.endpoints[3].backoff_max_s",
            "$.endpoints[5].name",
        ]
    );
}

#[test]
fn rtu_slave_id_zero_is_broadcast() {
    let mut j = base();
    j["endpoints"] = json!([{ "name": "bus", "transport": "rtu", "serial_port": "/dev/ttyS0" }]);
    j["machines"][0]["ip_address"] = Json::Null;
    j["machines"][0]["endpoint"] = json!("bus");
    j["machines"][0]["slave_id"] = json!(0);
    assert_eq!(paths(&j), vec!["$.machines[0].slave_id"]);
    j["machines"][0]["slave_id"] = json!(248);
    assert_eq!(paths(&j), vec!["$.machines[0].slave_id"]);
    j["machines"][0]["slave_id"] = json!(247);
    valid(&j);

    // Over TCP unit id 0 is an ordinary address (many TCP devices ignore the unit id).
    let mut j = base();
    j["machines"][0]["slave_id"] = json!(0);
    assert_eq!(valid(&j).machines[0].unit_id, 0);
}

#[test]
fn rtu_over_tcp_slave_id_zero_is_broadcast_too() {
    // RTU over TCP puts the RTU frame unchanged on the RS-485 bus behind a serial device
    // server, so address 0 is a broadcast there as well: no device answers a read, and every
    // device on the bus would execute a batch write.
    let mut j = base();
    j["machines"][0]["transport"] = json!("rtu_over_tcp");
    j["machines"][0]["slave_id"] = json!(0);
    assert_eq!(paths(&j), vec!["$.machines[0].slave_id"]);
    j["machines"][0]["slave_id"] = json!(248);
    assert_eq!(paths(&j), vec!["$.machines[0].slave_id"]);
}

#[test]
fn read_limits_are_checked_per_transport() {
    let mut j = base();
    j["machines"][0]["max_registers_per_read"] = json!(124);
    assert_eq!(paths(&j), vec!["$.machines[0].max_registers_per_read"]);
    j["machines"][0]["max_registers_per_read"] = json!(0);
    // (Every register is then also reported as too large for one read.)
    assert_eq!(paths(&j)[0], "$.machines[0].max_registers_per_read");
    j["machines"][0]["max_registers_per_read"] = json!(123);
    valid(&j);

    j["machines"][0]["max_bits_per_read"] = json!(2001);
    assert_eq!(paths(&j), vec!["$.machines[0].max_bits_per_read"]);

    // RTU allows what the spec allows.
    let mut j = base();
    j["machines"][0]["transport"] = json!("rtu_over_tcp");
    j["machines"][0]["max_registers_per_read"] = json!(125);
    let c = valid(&j);
    assert_eq!(c.machines[0].limits.max_registers, 125);
    assert_eq!(c.endpoints[0].describe(), "rtu-over-tcp://10.0.0.1:502");
}

#[test]
fn a_register_larger_than_one_read() {
    let mut j = base();
    j["machines"][0]["max_registers_per_read"] = json!(4);
    j["machines"][0]["registers"][1] = json!({
        "name": "batch", "kind": "holding", "address": 10, "type": "string", "length": 5,
        "measurement": "cycle_context_data"
    });
    let e = errors(&j);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, "$.machines[0].registers");
    assert!(e[0].message.contains("`batch`"), "{}", e[0].message);
}

#[test]
fn trigger_errors() {
    let mut j = base();
    j["machines"][0]["registers"][1]["measurement"] = json!("maintenance_events");
    // maintenance_events registers but no trigger: they would never be written.
    assert_eq!(paths(&j), vec!["$.machines[0].maintenance"]);

    j["machines"][0]["maintenance"] = json!([
        { "register": "status", "edge": "fall" },
        { "register": "statsu", "edge": "decrease" },
        { "register": "status", "edge": "decrease" }
    ]);
    assert_eq!(
        paths(&j),
        vec![
            "$.machines[0].maintenance[0].edge",
            "$.machines[0].maintenance[1].register",
        ]
    );

    j["machines"][0]["maintenance"] = json!([
        { "register": "status", "edge": "decrease" },
        { "register": "temperature", "edge": "rise" },
        { "register": "status", "edge": "change" }
    ]);
    let c = valid(&j);
    assert_eq!(
        c.machines[0].triggers,
        vec![
            Trigger {
                register: 1,
                edge: Edge::Decrease
            },
            Trigger {
                register: 0,
                edge: Edge::Rise
            },
            Trigger {
                register: 1,
                edge: Edge::Change
            },
        ]
    );
}

#[test]
fn a_string_cannot_be_a_trigger() {
    let mut j = base();
    j["machines"][0]["registers"][1] = json!({
        "name": "batch", "kind": "holding", "address": 10, "type": "string", "length": 5,
        "measurement": "cycle_context_data"
    });
    j["machines"][0]["maintenance"] = json!([{ "register": "batch", "edge": "change" }]);
    assert_eq!(paths(&j), vec!["$.machines[0].maintenance[0].register"]);
}

#[test]
fn finish_and_batch_write() {
    let mut j = base();
    j["machines"][0]["finish"] = json!({ "register": "status", "finish_code": 305 });
    j["machines"][0]["batch_write"] =
        json!({ "address": 100, "registers": 10, "handshake_address": 120 });
    let c = valid(&j);
    let m = &c.machines[0];
    assert_eq!(
        m.finish,
        Some(Finish {
            register: 1,
            finish_code: 305,
            batch_register: None,
            idle_codes: vec![0],
            running_codes: None,
        })
    );
    assert_eq!(
        m.batch_write,
        Some(BatchWrite {
            address: 100,
            registers: 10,
            string_order: StringOrder::HighFirst,
            handshake_address: 120,
            enabled: true,
            handshake_fc16: false,
            overwrite_unconsumed: false,
            charset: None,
            identity: None,
        })
    );

    j["machines"][0]["finish"] =
        json!({ "register": "sttus", "finish_code": 305, "batch_register": "batch" });
    j["machines"][0]["batch_write"] =
        json!({ "address": 100, "registers": 10, "handshake_address": 105 });
    assert_eq!(
        paths(&j),
        vec![
            "$.machines[0].finish.register",
            "$.machines[0].finish.batch_register",
            "$.machines[0].batch_write.handshake_address",
        ]
    );
    j["machines"][0]["finish"] = Json::Null;
    j["machines"][0]["batch_write"] =
        json!({ "address": 65530, "registers": 10, "handshake_address": 1 });
    assert_eq!(paths(&j), vec!["$.machines[0].batch_write.address"]);
    j["machines"][0]["finish"] = Json::Null;
    j["machines"][0]["batch_write"] =
        json!({ "address": 100, "registers": 124, "handshake_address": 1, "string_order": "x" });
    assert_eq!(
        paths(&j),
        vec![
            "$.machines[0].batch_write.registers",
            "$.machines[0].batch_write.string_order",
        ]
    );
}

#[test]
fn top_level_errors() {
    let mut j = base();
    j["heartbeat_s"] = json!(-1);
    j["tags"] = json!({ "machine": "x", "site": "" });
    j["api"] = json!({ "batch_url": "ftp://x", "timeout_s": 0 });
    assert_eq!(
        paths(&j),
        vec![
            "$.heartbeat_s",
            "$.tags.machine",
            "$.tags.site",
            "$.api.batch_url",
            "$.api.timeout_s",
        ]
    );
    assert_eq!(paths(&json!({})), vec!["$.machines"]);
}

#[test]
fn machine_errors_name_the_machine() {
    let mut j = base();
    j["machines"][0]["name"] = json!("");
    j["machines"][0]["poll_interval_s"] = json!(0);
    j["machines"][0]["intervals_s"] = json!({ "fast_data": 1 });
    j["machines"][0]["tags"] = json!({ "machine": "other" });
    assert_eq!(
        paths(&j),
        vec![
            "$.machines[0].name",
            "$.machines[0].poll_interval_s",
            "$.machines[0].intervals_s.fast_data",
            "$.machines[0].tags.machine",
        ]
    );
    let mut j = base();
    j["machines"][0]["registers"] = json!([]);
    assert_eq!(paths(&j), vec!["$.machines[0].registers"]);
}

#[test]
fn all_errors_are_collected() {
    // One run of `check` lists every problem, not only the first.
    let mut j = base();
    j["heartbeat_s"] = json!(0);
    j["endpoints"] = json!([
        { "name": "bus", "transport": "rtu", "serial_port": "/dev/ttyS0", "parity": "mark" }
    ]);
    j["machines"][0]["registers"][1]["type"] = json!("int17");
    let mut bad_order = holding("level", 5, "float32", "medium_frequency_data");
    bad_order["order"] = json!("XYZW");
    j["machines"][0]["registers"]
        .as_array_mut()
        .unwrap()
        .push(bad_order);
    let mut second = base()["machines"][0].clone();
    second["name"] = json!("JET-02");
    second["profile"] = json!("nope");
    let mut third = base()["machines"][0].clone();
    third["name"] = json!("JET-03");
    third["ip_address"] = Json::Null;
    third["endpoint"] = json!("bus");
    third["slave_id"] = json!(0);
    j["machines"] = json!([j["machines"][0].clone(), second, third]);
    let e = errors(&j);
    let got: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        got,
        vec![
            "$.heartbeat_s",
            "$.endpoints[0].parity",
            "$.machines[0].registers[1].type",
            "$.machines[0].registers[2].order",
            "$.machines[1].profile",
            "$.machines[2].slave_id",
        ]
    );
    // Display puts one problem on each line, path first.
    let text = ConfigErrors(e).to_string();
    assert_eq!(text.lines().count(), 6);
    assert!(text.starts_with("$.heartbeat_s: must be a positive number of seconds"));
}

// =============================================================================================
// Profiles, endpoints, tags
// =============================================================================================

#[test]
fn profile_registers_are_merged_with_the_machine_registers() {
    let mut j = base();
    j["profiles"] = json!({
        "jet-hmi": {
            "poll_interval_s": 2,
            "max_gap": 3,
            "registers": [
                temperature(),
                holding("status", 1, "uint16", "medium_frequency_data"),
                holding("shift", 2, "uint16", "cycle_context_data"),
            ]
        }
    });
    j["machines"][0]["profile"] = json!("jet-hmi");
    // This machine has `status` elsewhere (same name replaces) and one register of its own.
    j["machines"][0]["registers"] = json!([
        holding("status", 50, "int32", "medium_frequency_data"),
        holding("door", 60, "uint16", "high_frequency_data"),
    ]);
    let c = valid(&j);
    let m = &c.machines[0];
    let regs: Vec<(&str, u16, DataType)> = m
        .registers
        .iter()
        .map(|r| (r.name.as_str(), r.address, r.data_type))
        .collect();
    assert_eq!(
        regs,
        vec![
            ("temperature", 0, DataType::Int16),
            ("status", 50, DataType::Int32),
            ("shift", 2, DataType::UInt16),
            ("door", 60, DataType::UInt16),
        ]
    );
    assert_eq!(m.intervals, [Duration::from_secs(2); 4]);
    assert_eq!(m.limits.max_gap, 3);
}

#[test]
fn machine_settings_override_the_profile() {
    let mut j = base();
    j["profiles"] = json!({
        "jet-hmi": {
            "poll_interval_s": 2,
            "intervals_s": { "high_frequency_data": 1, "cycle_context_data": 30 },
            "max_registers_per_read": 50,
            "tags": { "model": "jet", "line": "A" },
            "registers": [temperature()]
        }
    });
    j["machines"][0]["profile"] = json!("jet-hmi");
    j["machines"][0]["registers"] = Json::Null;
    j["machines"][0]["intervals_s"] = json!({ "high_frequency_data": 0.5 });
    j["machines"][0]["max_registers_per_read"] = json!(20);
    j["machines"][0]["tags"] = json!({ "line": "B" });
    let c = valid(&j);
    let m = &c.machines[0];
    assert_eq!(m.registers.len(), 1);
    assert_eq!(
        m.intervals,
        [
            Duration::from_millis(500),
            Duration::from_secs(2),
            Duration::from_secs(30),
            Duration::from_secs(2),
        ]
    );
    assert_eq!(m.limits.max_registers, 20);
    assert_eq!(
        m.tags,
        vec![
            ("model".to_string(), "jet".to_string()),
            ("line".to_string(), "B".to_string()),
        ]
    );
}

#[test]
fn profile_errors_are_reported_once_at_the_profile() {
    // Two machines use a profile with a bad register: one error, at the profile's path.
    let mut j = base();
    j["profiles"] = json!({
        "jet-hmi": {
            "registers": [
                temperature(),
                holding("status", 1, "uint17", "medium_frequency_data"),
            ]
        }
    });
    let m = json!({ "name": "JET-01", "ip_address": "10.0.0.1", "profile": "jet-hmi" });
    let mut m2 = m.clone();
    m2["name"] = json!("JET-02");
    m2["slave_id"] = json!(2);
    j["machines"] = json!([m, m2]);
    assert_eq!(paths(&j), vec!["$.profiles.jet-hmi.registers[1].type"]);
}

#[test]
fn errors_in_profile_settings_are_reported_once_at_the_profile() {
    // Like a profile's registers, its other settings are written once under `profiles` and
    // should be reported there, once, however many machines use the profile: a path such as
    // `$.machines[1].maintenance[0].edge` names a key that does not exist in the file.
    let mut j = base();
    j["profiles"] = json!({
        "jet-hmi": {
            "registers": [temperature(), holding("status", 1, "uint16", "medium_frequency_data")],
            "intervals_s": { "fast_data": 1 },
            "maintenance": [{ "register": "status", "edge": "fall" }],
            "finish": { "register": "state", "finish_code": 305 },
            "batch_write": { "address": 100, "registers": 10, "handshake_address": 101 }
        }
    });
    let m = json!({ "name": "JET-01", "ip_address": "10.0.0.1", "profile": "jet-hmi" });
    let mut m2 = m.clone();
    m2["name"] = json!("JET-02");
    m2["slave_id"] = json!(2);
    j["machines"] = json!([m, m2]);
    let mut got = paths(&j);
    got.sort();
    assert_eq!(
        got,
        vec![
            "$.profiles.jet-hmi.batch_write.handshake_address",
            "$.profiles.jet-hmi.finish.register",
            "$.profiles.jet-hmi.intervals_s.fast_data",
            "$.profiles.jet-hmi.maintenance[0].edge",
        ]
    );
}

#[test]
fn machines_sharing_an_address_share_one_endpoint() {
    let mut j = base();
    let m = j["machines"][0].clone();
    let mut same = m.clone();
    same["name"] = json!("JET-02");
    same["slave_id"] = json!(2);
    same["port"] = json!(502);
    let mut other_port = m.clone();
    other_port["name"] = json!("JET-03");
    other_port["port"] = json!(5020);
    let mut other_host = m.clone();
    other_host["name"] = json!("JET-04");
    other_host["ip_address"] = json!("10.0.0.2");
    j["machines"] = json!([m, same, other_port, other_host]);
    let c = valid(&j);
    let names: Vec<&str> = c.endpoints.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, vec!["10.0.0.1:502", "10.0.0.1:5020", "10.0.0.2:502"]);
    let endpoints: Vec<usize> = c.machines.iter().map(|m| m.endpoint).collect();
    assert_eq!(endpoints, vec![0, 0, 1, 2]);
}

#[test]
fn machines_sharing_an_address_need_the_same_settings() {
    // One connection cannot have two timeouts.
    let mut j = base();
    let m = j["machines"][0].clone();
    let mut same = m.clone();
    same["name"] = json!("JET-02");
    same["slave_id"] = json!(2);
    same["timeout_s"] = json!(3);
    j["machines"] = json!([m, same]);
    assert_eq!(paths(&j), vec!["$.machines[1]"]);
}

#[test]
fn defaults_apply_to_every_endpoint() {
    let mut j = base();
    j["defaults"] = json!({ "timeout_s": 2.5, "request_pause_s": 0, "backoff_max_s": 30 });
    j["endpoints"] = json!([
        { "name": "gw", "transport": "tcp", "ip_address": "10.0.0.9", "timeout_s": 4 }
    ]);
    let mut named = j["machines"][0].clone();
    named["name"] = json!("JET-02");
    named["ip_address"] = Json::Null;
    named["endpoint"] = json!("gw");
    j["machines"].as_array_mut().unwrap().push(named);
    let c = valid(&j);
    let by_name = |name: &str| c.endpoints.iter().find(|e| e.name == name).unwrap();
    let implicit = by_name("10.0.0.1:502");
    assert_eq!(implicit.timeout, Duration::from_secs_f64(2.5));
    assert_eq!(implicit.backoff_max, Duration::from_secs(30));
    let named = by_name("gw");
    assert_eq!(named.timeout, Duration::from_secs(4));
    assert_eq!(named.backoff_max, Duration::from_secs(30));
    assert_eq!(named.request_pause, Duration::ZERO);
}

#[test]
fn unused_endpoints_are_dropped_and_indices_follow() {
    let mut j = base();
    j["endpoints"] = json!([
        { "name": "spare", "transport": "tcp", "ip_address": "10.0.0.8" },
        { "name": "gw", "transport": "tcp", "ip_address": "10.0.0.9" }
    ]);
    j["machines"][0]["ip_address"] = Json::Null;
    j["machines"][0]["endpoint"] = json!("gw");
    let c = valid(&j);
    assert_eq!(c.endpoints.len(), 1);
    assert_eq!(c.endpoints[0].name, "gw");
    assert_eq!(c.machines[0].endpoint, 0);
}

#[test]
fn a_ca_file_is_only_named_by_validation() {
    // The file is read where the HTTP clients are built (`cli::trusted_roots`), so one that is
    // not there yet still validates; an empty name counts as not set.
    let mut j = base();
    j["tls"] = json!({"ca_file": "/nonexistent/plant-ca.pem"});
    assert_eq!(
        valid(&j).tls_ca_file,
        Some(PathBuf::from("/nonexistent/plant-ca.pem"))
    );
    j["tls"] = json!({"ca_file": ""});
    assert_eq!(valid(&j).tls_ca_file, None);
}

#[test]
fn influx_settings() {
    let mut j = base();
    j["influxdb"] = json!({
        "url": "http://influx:8086/", "org": "plant", "bucket": "dyeing", "token": "t0ken"
    });
    let c = valid(&j);
    let influx = c.influx.configured().unwrap();
    assert_eq!(influx.url, "http://influx:8086");
    assert_eq!(
        influx.api,
        InfluxApi::V2 {
            org: "plant".into(),
            bucket: "dyeing".into(),
            token: crate::secret::Secret::new("t0ken"),
        }
    );

    // A database and no bucket means the 1.x API.
    j["influxdb"] = json!({ "url": "http://influx:8086", "database": "dyeing" });
    let c = valid(&j);
    let influx = c.influx.configured().unwrap();
    assert!(matches!(influx.api, InfluxApi::V1 { ref database, .. } if database == "dyeing"));

    j["influxdb"] = json!({ "url": "influx:8086", "api": "v3", "buffer_max_points": 10 });
    assert_eq!(
        paths(&j),
        vec![
            "$.influxdb.url",
            "$.influxdb.api",
            "$.influxdb.org",
            "$.influxdb.bucket",
            "$.influxdb.buffer_max_points",
        ]
    );
}

// =============================================================================================
// load(): the file, `.env` and the environment
// =============================================================================================

fn file_config() -> Json {
    let mut j = base();
    j["influxdb"] = json!({
        "url": "http://file:8086", "org": "file-org", "bucket": "file-bucket",
        "token": "file-token"
    });
    j
}

#[test]
fn load_reads_the_file() {
    let dir = TempDir::new("file");
    let path = dir.write("machines.json", &file_config().to_string());
    let c = load_from(&path, None, &HashMap::new());
    assert_eq!(c.influx.configured().unwrap().url, "http://file:8086");
    let file = path.display().to_string();
    let p = provenance(&c, "influxdb.url");
    assert_eq!(p.shown, "http://file:8086");
    assert_eq!(p.source, Source::File(file.clone()));
    let p = provenance(&c, "api.batch_url");
    assert_eq!(p.shown, "-");
    assert_eq!(p.source, Source::Unset);
    // No RTU endpoint: the serial settings are not listed at all.
    assert!(c.provenance.iter().all(|p| !p.key.starts_with("endpoints")));
}

#[test]
fn environment_beats_dotenv_beats_the_file() {
    let dir = TempDir::new("precedence");
    let path = dir.write("machines.json", &file_config().to_string());
    let dotenv = dir.write(
        ".env",
        "INFLUX_URL=http://dotenv:8086\nINFLUX_ORG=dotenv-org\nAPI_URL_BATCH=http://api/batch\n",
    );
    let env = environment(&[("INFLUX_URL", "http://env:8086")]);
    // `.env` beside the config file is found without being named.
    let c = load_from(&path, None, &env);
    let influx = c.influx.configured().unwrap();
    assert_eq!(influx.url, "http://env:8086");
    let InfluxApi::V2 { org, bucket, .. } = &influx.api else {
        panic!("v2 expected");
    };
    assert_eq!(org, "dotenv-org");
    assert_eq!(bucket, "file-bucket");
    assert_eq!(c.api.batch_url.as_deref(), Some("http://api/batch"));

    assert_eq!(
        provenance(&c, "influxdb.url").source,
        Source::Environment("INFLUX_URL".into())
    );
    assert_eq!(provenance(&c, "influxdb.url").shown, "http://env:8086");
    assert_eq!(
        provenance(&c, "influxdb.org").source,
        Source::DotEnv(dotenv.clone(), "INFLUX_ORG".into())
    );
    assert_eq!(
        provenance(&c, "influxdb.bucket").source,
        Source::File(path.display().to_string())
    );
    assert_eq!(
        provenance(&c, "api.batch_url").source,
        Source::DotEnv(dotenv, "API_URL_BATCH".into())
    );
    assert_eq!(
        provenance(&c, "influxdb.url").source.to_string(),
        "environment variable INFLUX_URL"
    );
}

#[test]
fn an_explicit_env_file_replaces_the_one_beside_the_config() {
    let dir = TempDir::new("explicit-env");
    let path = dir.write("machines.json", &file_config().to_string());
    dir.write(".env", "INFLUX_URL=http://beside:8086\n");
    let other = dir.write("production.env", "INFLUX_URL=http://named:8086\n");
    let c = load_from(&path, Some(&other), &HashMap::new());
    assert_eq!(c.influx.configured().unwrap().url, "http://named:8086");
    assert_eq!(
        provenance(&c, "influxdb.url").source,
        Source::DotEnv(other, "INFLUX_URL".into())
    );
}

#[test]
fn the_environment_can_supply_what_the_file_lacks() {
    // An existing deployment keeps its InfluxDB settings in `.env` only.
    let dir = TempDir::new("env-only");
    let path = dir.write("machines.json", &base().to_string());
    let env = environment(&[
        ("INFLUX_URL", "http://env:8086"),
        ("INFLUX_ORG", "org"),
        ("INFLUX_BUCKET", "bucket"),
        ("INFLUX_TOKEN", "tok"),
    ]);
    let c = load_from(&path, None, &env);
    assert!(c.influx.configured().is_ok());
}

#[test]
fn an_empty_environment_variable_does_not_override() {
    // `INFLUX_TOKEN=` in a service unit must not blank the token of the file; an empty
    // variable counts as unset, so the next source in line (`.env`, then the file) applies.
    let dir = TempDir::new("empty-env");
    let path = dir.write("machines.json", &file_config().to_string());
    dir.write(".env", "INFLUX_ORG=dotenv-org\n");
    let env = environment(&[("INFLUX_TOKEN", ""), ("INFLUX_ORG", "")]);
    let c = load_from(&path, None, &env);
    let InfluxApi::V2 { token, org, .. } = &c.influx.configured().unwrap().api else {
        panic!("v2 expected");
    };
    assert_eq!(token.expose(), "file-token");
    assert_eq!(org, "dotenv-org");
    assert_eq!(
        provenance(&c, "influxdb.token").source,
        Source::File(path.display().to_string())
    );
}

#[test]
fn an_empty_dotenv_entry_does_not_override() {
    // The same rule for `.env`: a template line such as `INFLUX_TOKEN=` must not blank the
    // file's token (nor make `BAUDRATE=` an invalid number).
    let dir = TempDir::new("empty-dotenv");
    let path = dir.write("machines.json", &file_config().to_string());
    dir.write(".env", "INFLUX_TOKEN=\nINFLUX_ORG=\n");
    let c = load_from(&path, None, &HashMap::new());
    let InfluxApi::V2 { token, org, .. } = &c.influx.configured().unwrap().api else {
        panic!("v2 expected");
    };
    assert_eq!(token.expose(), "file-token");
    assert_eq!(org, "file-org");
    assert_eq!(
        provenance(&c, "influxdb.token").source,
        Source::File(path.display().to_string())
    );
}

#[test]
fn the_token_is_never_shown() {
    let dir = TempDir::new("token");
    let path = dir.write("machines.json", &file_config().to_string());

    // From the file.
    let c = load_from(&path, None, &HashMap::new());
    let p = provenance(&c, "influxdb.token");
    assert_eq!(p.shown, "[redacted]");
    assert_eq!(p.source, Source::File(path.display().to_string()));
    assert!(!format!("{:?}", c.provenance).contains("file-token"));

    // From `.env`.
    dir.write(".env", "INFLUX_TOKEN=dotenv-s3cret\n");
    let c = load_from(&path, None, &HashMap::new());
    let p = provenance(&c, "influxdb.token");
    assert_eq!(p.shown, "[redacted]");
    assert!(matches!(p.source, Source::DotEnv(_, ref v) if v == "INFLUX_TOKEN"));
    assert!(!format!("{:?}", c.provenance).contains("dotenv-s3cret"));

    // From the environment, which wins; the value is used but printed nowhere.
    let env = environment(&[("INFLUX_TOKEN", "env-s3cret")]);
    let c = load_from(&path, None, &env);
    let p = provenance(&c, "influxdb.token");
    assert_eq!(p.shown, "[redacted]");
    assert_eq!(p.source, Source::Environment("INFLUX_TOKEN".into()));
    let everything = format!("{c:?}");
    assert!(!everything.contains("env-s3cret"), "{everything}");
    let InfluxApi::V2 { token, .. } = &c.influx.configured().unwrap().api else {
        panic!("v2 expected");
    };
    assert_eq!(token.expose(), "env-s3cret");
}

fn rtu_config(ports: &[&str]) -> Json {
    let mut j = base();
    let endpoints: Vec<Json> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            json!({ "name": format!("bus{i}"), "transport": "rtu", "serial_port": p, "baudrate": 9600 })
        })
        .collect();
    let machines: Vec<Json> = (0..ports.len())
        .map(|i| {
            let mut m = base()["machines"][0].clone();
            m["name"] = json!(format!("JET-{i}"));
            m["ip_address"] = Json::Null;
            m["endpoint"] = json!(format!("bus{i}"));
            m
        })
        .collect();
    j["endpoints"] = json!(endpoints);
    j["machines"] = json!(machines);
    j
}

fn serial(c: &Config, endpoint: usize) -> &SerialSettings {
    match &c.endpoints[endpoint].kind {
        EndpointKind::Rtu(s) => s,
        other => panic!("not RTU: {other:?}"),
    }
}

#[test]
fn serial_port_and_baudrate_apply_to_the_only_rtu_endpoint() {
    let dir = TempDir::new("serial-one");
    let path = dir.write("machines.json", &rtu_config(&["/dev/ttyS0"]).to_string());
    let env = environment(&[("SERIAL_PORT", "/dev/ttyUSB0"), ("BAUDRATE", " 19200 ")]);
    let c = load_from(&path, None, &env);
    let s = serial(&c, 0);
    assert_eq!(s.path, "/dev/ttyUSB0");
    assert_eq!(s.baudrate, 19200);
    let p = provenance(&c, "endpoints[rtu].serial_port");
    assert_eq!(p.shown, "/dev/ttyUSB0");
    assert_eq!(p.source, Source::Environment("SERIAL_PORT".into()));
    assert_eq!(
        provenance(&c, "endpoints[rtu].baudrate").source,
        Source::Environment("BAUDRATE".into())
    );

    // Without the variables, the file's values and the file as their source.
    let c = load_from(&path, None, &HashMap::new());
    assert_eq!(serial(&c, 0).path, "/dev/ttyS0");
    let p = provenance(&c, "endpoints[rtu].serial_port");
    assert_eq!(p.shown, "/dev/ttyS0");
    assert_eq!(p.source, Source::File(path.display().to_string()));
}

#[test]
fn serial_port_can_complete_an_rtu_endpoint() {
    let mut j = rtu_config(&["/dev/ttyS0"]);
    j["endpoints"][0]["serial_port"] = Json::Null;
    let dir = TempDir::new("serial-missing");
    let path = dir.write("machines.json", &j.to_string());
    dir.write(".env", "SERIAL_PORT=/dev/ttyAMA0\n");
    let c = load_from(&path, None, &HashMap::new());
    assert_eq!(serial(&c, 0).path, "/dev/ttyAMA0");
}

#[test]
fn serial_port_and_baudrate_are_ignored_with_several_rtu_endpoints() {
    // Which bus would SERIAL_PORT mean? Neither is changed.
    let dir = TempDir::new("serial-two");
    let path = dir.write(
        "machines.json",
        &rtu_config(&["/dev/ttyS0", "/dev/ttyS1"]).to_string(),
    );
    let env = environment(&[("SERIAL_PORT", "/dev/ttyUSB0"), ("BAUDRATE", "19200")]);
    let c = load_from(&path, None, &env);
    assert_eq!(serial(&c, 0).path, "/dev/ttyS0");
    assert_eq!(serial(&c, 1).path, "/dev/ttyS1");
    assert_eq!(serial(&c, 0).baudrate, 9600);
    assert_eq!(serial(&c, 1).baudrate, 9600);
    assert!(c
        .provenance
        .iter()
        .all(|p| p.source != Source::Environment("SERIAL_PORT".into())));
}

#[test]
fn serial_port_is_ignored_without_an_rtu_endpoint() {
    let dir = TempDir::new("serial-none");
    let path = dir.write("machines.json", &base().to_string());
    let env = environment(&[("SERIAL_PORT", "/dev/ttyUSB0"), ("BAUDRATE", "fast")]);
    // Not even an invalid BAUDRATE matters when there is no serial line to apply it to.
    let c = load_from(&path, None, &env);
    assert!(c.provenance.iter().all(|p| !p.key.starts_with("endpoints")));
}

#[test]
fn a_bad_baudrate_names_where_it_came_from() {
    let dir = TempDir::new("baud");
    let path = dir.write("machines.json", &rtu_config(&["/dev/ttyS0"]).to_string());
    let env = environment(&[("BAUDRATE", "fast")]);
    let e = load(&Sources {
        config: &path,
        env_file: None,
        environment: &env,
    })
    .unwrap_err()
    .0;
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, "environment variable BAUDRATE");
    assert!(e[0].message.contains("fast"), "{}", e[0].message);

    let dotenv = dir.write(".env", "BAUDRATE=9600baud\n");
    let e = load(&Sources {
        config: &path,
        env_file: None,
        environment: &HashMap::new(),
    })
    .unwrap_err()
    .0;
    assert_eq!(e[0].path, format!("BAUDRATE in {}", dotenv.display()));
}

#[test]
fn load_reports_file_problems_with_the_file_name_or_json_path() {
    let dir = TempDir::new("problems");
    let missing = dir.0.join("missing.json");
    let e = load(&Sources {
        config: &missing,
        env_file: None,
        environment: &HashMap::new(),
    })
    .unwrap_err()
    .0;
    assert_eq!(e[0].path, missing.display().to_string());
    assert!(e[0].message.contains("cannot read the config file"));

    let mut j = base();
    j["machines"][0]["registers"][1]["type"] = json!("int17");
    let path = dir.write("machines.json", &j.to_string());
    let e = load(&Sources {
        config: &path,
        env_file: None,
        environment: &HashMap::new(),
    })
    .unwrap_err()
    .0;
    assert_eq!(e[0].path, "$.machines[0].registers[1].type");

    let path = dir.write("broken.json", "{ \"machines\": [ }");
    let e = load(&Sources {
        config: &path,
        env_file: None,
        environment: &HashMap::new(),
    })
    .unwrap_err()
    .0;
    assert!(e[0].path.starts_with('$'), "{}", e[0].path);

    // A named `.env` that does not exist is an error, not silently skipped.
    let good = dir.write("good.json", &base().to_string());
    let no_env = dir.0.join("nope.env");
    let e = load(&Sources {
        config: &good,
        env_file: Some(&no_env),
        environment: &HashMap::new(),
    })
    .unwrap_err()
    .0;
    assert_eq!(e[0].path, no_env.display().to_string());
}
