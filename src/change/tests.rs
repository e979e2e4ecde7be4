use super::*;
use crate::config::{DataType, DeviceLimits, Register, RegisterKind, WordOrder};

// Register indices of the test machine.
const TEMPERATURE: usize = 0; // high_frequency_data, deadband 0.5
const SPEED: usize = 1; // high_frequency_data, no deadband
const LEVEL: usize = 2; // medium_frequency_data
const DOOR_OPEN: usize = 3; // medium_frequency_data, trigger on rise
const BATCH: usize = 4; // cycle_context_data
const RESET_COUNTER: usize = 5; // maintenance_events, trigger on decrease
const OPERATING_HOURS: usize = 6; // maintenance_events

const HEARTBEAT: Duration = Duration::from_secs(60);
const ALL: [Measurement; 4] = Measurement::ALL;

const HF: &str = "high_frequency_data,line=A,machine=JET-01,site=dyehouse";
const MF: &str = "medium_frequency_data,line=A,machine=JET-01,site=dyehouse";
const CC: &str = "cycle_context_data,line=A,machine=JET-01,site=dyehouse";
const MAINT: &str = "maintenance_events,line=A,machine=JET-01,site=dyehouse";

fn register(name: &str, address: u16, measurement: Measurement, deadband: f64) -> Register {
    Register {
        name: name.into(),
        kind: RegisterKind::Holding,
        address,
        data_type: DataType::UInt16,
        order: WordOrder::Abcd,
        scale: None,
        offset: None,
        measurement,
        deadband,
        read_once: false,
    }
}

fn machine() -> Machine {
    Machine {
        name: "JET-01".into(),
        endpoint: 0,
        unit_id: 1,
        registers: vec![
            register("temperature", 0, Measurement::HighFrequency, 0.5),
            register("speed", 1, Measurement::HighFrequency, 0.0),
            register("level", 2, Measurement::MediumFrequency, 0.0),
            register("door_open", 3, Measurement::MediumFrequency, 0.0),
            register("batch", 4, Measurement::CycleContext, 0.0),
            register("reset_counter", 5, Measurement::Maintenance, 0.0),
            register("operating_hours", 6, Measurement::Maintenance, 0.0),
        ],
        intervals: [crate::config::DEFAULT_POLL; 4],
        limits: DeviceLimits {
            max_registers: 123,
            max_bits: 2000,
            max_gap: 10,
        },
        tags: vec![("line".into(), "A".into())],
        triggers: vec![
            Trigger {
                register: RESET_COUNTER,
                edge: Edge::Decrease,
            },
            Trigger {
                register: DOOR_OPEN,
                edge: Edge::Rise,
            },
        ],
        finish: None,
        batch_write: None,
    }
}

/// The global tags; the machine's own `line` tag must win over the global one.
fn global_tags() -> Vec<(String, String)> {
    vec![
        ("site".into(), "dyehouse".into()),
        ("line".into(), "global".into()),
    ]
}

fn detector() -> Detector {
    Detector::new(&machine(), &global_tags(), HEARTBEAT)
}

/// The values of the first poll.
fn first_values(d: &mut Detector) {
    d.update(TEMPERATURE, Some(Value::Float(80.0)));
    d.update(SPEED, Some(Value::Int(120)));
    d.update(LEVEL, Some(Value::Float(1.5)));
    d.update(DOOR_OPEN, Some(Value::Bool(false)));
    d.update(BATCH, Some(Value::Str("B-1".into())));
    d.update(RESET_COUNTER, Some(Value::Int(10)));
    d.update(OPERATING_HOURS, Some(Value::Int(500)));
}

fn emit(d: &mut Detector, measurements: &[Measurement], now: Instant, ts: i64) -> Vec<String> {
    let mut out = Vec::new();
    d.emit(measurements, now, ts, &mut out);
    out
}

/// A detector that has written the first poll at `t0`.
fn after_first_poll(t0: Instant) -> Detector {
    let mut d = detector();
    first_values(&mut d);
    assert_eq!(emit(&mut d, &ALL, t0, 0).len(), 3);
    d
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ---------------------------------------------------------------------------------------------
// First poll, heartbeat
// ---------------------------------------------------------------------------------------------

#[test]
fn first_poll_writes_every_measurement() {
    let mut d = detector();
    first_values(&mut d);
    let lines = emit(&mut d, &ALL, Instant::now(), 1000);
    // maintenance_events is not among them: it is written only when a trigger fires.
    assert_eq!(
        lines,
        vec![
            format!("{HF} temperature=80,speed=120i 1000"),
            format!("{MF} level=1.5,door_open=false 1000"),
            format!("{CC} batch=\"B-1\" 1000"),
        ]
    );
}

#[test]
fn tags_are_sorted_and_the_machine_tag_wins() {
    // `machine` sits between the other tags in key order; the machine's `line=A` replaces the
    // global `line=global`.
    let mut d = detector();
    d.update(TEMPERATURE, Some(Value::Float(80.0)));
    let lines = emit(&mut d, &[Measurement::HighFrequency], Instant::now(), 7);
    assert_eq!(
        lines,
        vec!["high_frequency_data,line=A,machine=JET-01,site=dyehouse temperature=80 7"]
    );

    let mut m = machine();
    m.tags = vec![("area".into(), "dye".into())];
    let global = vec![("zone".into(), "2".into()), ("site".into(), "x".into())];
    let mut d = Detector::new(&m, &global, HEARTBEAT);
    d.update(TEMPERATURE, Some(Value::Float(80.0)));
    let lines = emit(&mut d, &[Measurement::HighFrequency], Instant::now(), 7);
    assert_eq!(
        lines,
        vec!["high_frequency_data,area=dye,machine=JET-01,site=x,zone=2 temperature=80 7"]
    );
}

#[test]
fn unchanged_values_write_nothing_until_the_heartbeat() {
    let t0 = Instant::now();
    let mut d = after_first_poll(t0);
    for s in [1, 5, 30, 59] {
        first_values(&mut d);
        assert_eq!(
            emit(&mut d, &ALL, t0 + secs(s), 0),
            Vec::<String>::new(),
            "{s} s"
        );
    }
    first_values(&mut d);
    assert!(emit(&mut d, &ALL, t0 + secs(60) - Duration::from_millis(1), 0).is_empty());

    // At exactly one heartbeat every measurement is written again, with all its fields.
    first_values(&mut d);
    assert_eq!(
        emit(&mut d, &ALL, t0 + secs(60), 60_000),
        vec![
            format!("{HF} temperature=80,speed=120i 60000"),
            format!("{MF} level=1.5,door_open=false 60000"),
            format!("{CC} batch=\"B-1\" 60000"),
        ]
    );

    // The heartbeat restarts from that write.
    first_values(&mut d);
    assert!(emit(&mut d, &ALL, t0 + secs(61), 0).is_empty());
    assert!(emit(&mut d, &ALL, t0 + secs(119), 0).is_empty());
    assert_eq!(emit(&mut d, &ALL, t0 + secs(120), 0).len(), 3);
}

#[test]
fn heartbeat_is_counted_per_measurement() {
    let t0 = Instant::now();
    let mut d = after_first_poll(t0);
    // A change at 30 s writes high_frequency_data, which restarts only its own heartbeat.
    d.update(SPEED, Some(Value::Int(121)));
    assert_eq!(
        emit(&mut d, &ALL, t0 + secs(30), 30),
        vec![format!("{HF} temperature=80,speed=121i 30")]
    );
    let lines = emit(&mut d, &ALL, t0 + secs(60), 60);
    assert_eq!(
        lines,
        vec![
            format!("{MF} level=1.5,door_open=false 60"),
            format!("{CC} batch=\"B-1\" 60"),
        ]
    );
    assert_eq!(
        emit(&mut d, &ALL, t0 + secs(90), 90),
        vec![format!("{HF} temperature=80,speed=121i 90")]
    );
}

// ---------------------------------------------------------------------------------------------
// Changes and deadbands
// ---------------------------------------------------------------------------------------------

#[test]
fn change_beyond_the_deadband_writes_the_measurement() {
    let t0 = Instant::now();
    let mut d = after_first_poll(t0);
    d.update(TEMPERATURE, Some(Value::Float(80.6)));
    // Only the measurement that changed is written, with all of its fields.
    assert_eq!(
        emit(&mut d, &ALL, t0 + secs(1), 1),
        vec![format!("{HF} temperature=80.6,speed=120i 1")]
    );
    // Downwards counts as well.
    d.update(TEMPERATURE, Some(Value::Float(80.0)));
    assert_eq!(emit(&mut d, &ALL, t0 + secs(2), 2).len(), 1);
}

#[test]
fn change_within_the_deadband_is_not_written() {
    let t0 = Instant::now();
    let mut d = after_first_poll(t0);
    d.update(TEMPERATURE, Some(Value::Float(80.4)));
    assert!(emit(&mut d, &ALL, t0 + secs(1), 1).is_empty());
    d.update(TEMPERATURE, Some(Value::Float(79.6)));
    assert!(emit(&mut d, &ALL, t0 + secs(2), 2).is_empty());
    // A change of exactly the deadband is not beyond it.
    d.update(TEMPERATURE, Some(Value::Float(80.5)));
    assert!(emit(&mut d, &ALL, t0 + secs(3), 3).is_empty());
}

#[test]
fn drift_is_written_once_it_exceeds_the_deadband() {
    // Each step is 0.3 (within the 0.5 deadband), but the value is compared with the last
    // *written* one (80.0), not the last read one, so the second step is written.
    let t0 = Instant::now();
    let mut d = after_first_poll(t0);
    d.update(TEMPERATURE, Some(Value::Float(80.3)));
    assert!(emit(&mut d, &ALL, t0 + secs(1), 1).is_empty());
    d.update(TEMPERATURE, Some(Value::Float(80.6)));
    assert_eq!(
        emit(&mut d, &ALL, t0 + secs(2), 2),
        vec![format!("{HF} temperature=80.6,speed=120i 2")]
    );
    // Now 80.6 is the reference: 80.9 is within the deadband of it.
    d.update(TEMPERATURE, Some(Value::Float(80.9)));
    assert!(emit(&mut d, &ALL, t0 + secs(3), 3).is_empty());
    d.update(TEMPERATURE, Some(Value::Float(81.2)));
    assert_eq!(emit(&mut d, &ALL, t0 + secs(4), 4).len(), 1);
}

#[test]
fn without_a_deadband_any_change_is_written() {
    let t0 = Instant::now();
    let mut d = after_first_poll(t0);
    d.update(SPEED, Some(Value::Int(121)));
    assert_eq!(
        emit(&mut d, &ALL, t0 + secs(1), 1),
        vec![format!("{HF} temperature=80,speed=121i 1")]
    );
    d.update(BATCH, Some(Value::Str("B-2".into())));
    assert_eq!(
        emit(&mut d, &ALL, t0 + secs(2), 2),
        vec![format!("{CC} batch=\"B-2\" 2")]
    );
}

#[test]
fn only_the_polled_measurements_are_emitted() {
    // Measurements are polled at their own intervals; a change in one that was not polled
    // this time waits for its own emit.
    let t0 = Instant::now();
    let mut d = after_first_poll(t0);
    d.update(TEMPERATURE, Some(Value::Float(90.0)));
    d.update(LEVEL, Some(Value::Float(2.5)));
    assert_eq!(
        emit(&mut d, &[Measurement::HighFrequency], t0 + secs(1), 1),
        vec![format!("{HF} temperature=90,speed=120i 1")]
    );
    assert_eq!(
        emit(&mut d, &[Measurement::MediumFrequency], t0 + secs(2), 2),
        vec![format!("{MF} level=2.5,door_open=false 2")]
    );
    assert!(emit(&mut d, &ALL, t0 + secs(3), 3).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Failed reads
// ---------------------------------------------------------------------------------------------

#[test]
fn a_failed_read_is_left_out_of_the_line() {
    let t0 = Instant::now();
    let mut d = after_first_poll(t0);
    d.update(SPEED, None);
    d.update(TEMPERATURE, Some(Value::Float(81.0)));
    assert_eq!(
        emit(&mut d, &ALL, t0 + secs(1), 1),
        vec![format!("{HF} temperature=81 1")]
    );
    assert_eq!(d.latest(SPEED), None);
    assert_eq!(d.latest(TEMPERATURE), Some(&Value::Float(81.0)));
}

#[test]
fn a_failed_read_is_not_a_change() {
    let t0 = Instant::now();
    let mut d = after_first_poll(t0);
    d.update(SPEED, None);
    assert!(emit(&mut d, &ALL, t0 + secs(1), 1).is_empty());
    // The heartbeat still writes the registers that were read.
    assert_eq!(
        emit(&mut d, &[Measurement::HighFrequency], t0 + secs(60), 60),
        vec![format!("{HF} temperature=80 60")]
    );
}

#[test]
fn a_recovered_read_compares_with_the_last_written_value() {
    let t0 = Instant::now();
    let mut d = after_first_poll(t0);
    d.update(SPEED, None);
    d.update(TEMPERATURE, Some(Value::Float(81.0)));
    assert_eq!(emit(&mut d, &ALL, t0 + secs(1), 1).len(), 1);
    // speed comes back with the value written before the failure: not a change.
    d.update(SPEED, Some(Value::Int(120)));
    assert!(emit(&mut d, &ALL, t0 + secs(2), 2).is_empty());
    d.update(SPEED, None);
    assert!(emit(&mut d, &ALL, t0 + secs(3), 3).is_empty());
    // ... and with another value: a change.
    d.update(SPEED, Some(Value::Int(125)));
    assert_eq!(
        emit(&mut d, &ALL, t0 + secs(4), 4),
        vec![format!("{HF} temperature=81,speed=125i 4")]
    );
}

#[test]
fn a_register_that_failed_on_the_first_poll_is_written_when_it_is_read() {
    let t0 = Instant::now();
    let mut d = detector();
    first_values(&mut d);
    d.update(SPEED, None);
    assert_eq!(
        emit(&mut d, &[Measurement::HighFrequency], t0, 0),
        vec![format!("{HF} temperature=80 0")]
    );
    // Its first value is new information, so it is written without waiting for a heartbeat.
    d.update(SPEED, Some(Value::Int(120)));
    assert_eq!(
        emit(&mut d, &[Measurement::HighFrequency], t0 + secs(1), 1),
        vec![format!("{HF} temperature=80,speed=120i 1")]
    );
}

#[test]
fn a_measurement_with_no_value_writes_nothing_until_it_has_one() {
    let t0 = Instant::now();
    let mut d = detector();
    d.update(TEMPERATURE, None);
    d.update(SPEED, None);
    assert!(emit(&mut d, &[Measurement::HighFrequency], t0, 0).is_empty());
    d.update(TEMPERATURE, Some(Value::Float(80.0)));
    assert_eq!(
        emit(&mut d, &[Measurement::HighFrequency], t0 + secs(1), 1),
        vec![format!("{HF} temperature=80 1")]
    );
}

// ---------------------------------------------------------------------------------------------
// maintenance_events
// ---------------------------------------------------------------------------------------------

#[test]
fn a_counter_decrease_writes_a_maintenance_event() {
    let t0 = Instant::now();
    let mut d = after_first_poll(t0);
    // Counting up is not an event, and maintenance_events has no change detection of its own.
    for (s, n) in [(1, 11), (2, 12)] {
        d.update(RESET_COUNTER, Some(Value::Int(n)));
        assert!(emit(&mut d, &ALL, t0 + secs(s), s as i64).is_empty());
    }
    // The reset: the event carries the new value, the one before it, and the other
    // maintenance_events registers.
    d.update(RESET_COUNTER, Some(Value::Int(3)));
    assert_eq!(
        emit(&mut d, &ALL, t0 + secs(3), 3),
        vec![format!(
            "{MAINT} reset_counter=3i,reset_counter_previous=12i,operating_hours=500i 3"
        )]
    );
    // The event is written once.
    d.update(RESET_COUNTER, Some(Value::Int(3)));
    assert!(emit(&mut d, &ALL, t0 + secs(4), 4).is_empty());
}

#[test]
fn maintenance_events_are_never_a_heartbeat() {
    let t0 = Instant::now();
    let mut d = after_first_poll(t0);
    for h in 1..=3 {
        first_values(&mut d);
        let lines = emit(&mut d, &ALL, t0 + secs(3600 * h), 0);
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| !l.starts_with("maintenance_events")));
    }
    // Asking for maintenance_events alone writes nothing either.
    assert!(emit(&mut d, &[Measurement::Maintenance], t0 + secs(99_999), 0).is_empty());
}

#[test]
fn the_first_value_never_fires_a_trigger() {
    // There is no previous value to compare with: a gateway restart is not a counter reset.
    let mut d = detector();
    d.update(RESET_COUNTER, Some(Value::Int(0)));
    d.update(DOOR_OPEN, Some(Value::Bool(true)));
    let lines = emit(&mut d, &ALL, Instant::now(), 0);
    assert!(lines.iter().all(|l| !l.starts_with("maintenance_events")));
}

#[test]
fn a_rising_bit_writes_a_maintenance_event() {
    let t0 = Instant::now();
    let mut d = after_first_poll(t0);
    d.update(DOOR_OPEN, Some(Value::Bool(true)));
    // door_open is in medium_frequency_data, so its change writes that too; the event line
    // starts with the trigger register even though it is not a maintenance_events register.
    assert_eq!(
        emit(&mut d, &ALL, t0 + secs(1), 1),
        vec![
            format!("{MF} level=1.5,door_open=true 1"),
            format!(
                "{MAINT} door_open=true,door_open_previous=false,reset_counter=10i,operating_hours=500i 1"
            ),
        ]
    );
    // Staying high is not a rise; falling is a change for medium_frequency_data only.
    d.update(DOOR_OPEN, Some(Value::Bool(true)));
    assert!(emit(&mut d, &ALL, t0 + secs(2), 2).is_empty());
    d.update(DOOR_OPEN, Some(Value::Bool(false)));
    assert_eq!(
        emit(&mut d, &ALL, t0 + secs(3), 3),
        vec![format!("{MF} level=1.5,door_open=false 3")]
    );
    // Rising again is another event.
    d.update(DOOR_OPEN, Some(Value::Bool(true)));
    let lines = emit(&mut d, &ALL, t0 + secs(4), 4);
    assert_eq!(lines.len(), 2);
    assert!(lines[1].starts_with(&format!("{MAINT} door_open=true,door_open_previous=false")));
}

#[test]
fn a_failed_read_does_not_reset_the_trigger() {
    // 12, (read failed), 3: still a decrease from 12.
    let t0 = Instant::now();
    let mut d = after_first_poll(t0);
    d.update(RESET_COUNTER, Some(Value::Int(12)));
    d.update(RESET_COUNTER, None);
    assert!(emit(&mut d, &ALL, t0 + secs(1), 1).is_empty());
    d.update(RESET_COUNTER, Some(Value::Int(3)));
    assert_eq!(
        emit(&mut d, &ALL, t0 + secs(2), 2),
        vec![format!(
            "{MAINT} reset_counter=3i,reset_counter_previous=12i,operating_hours=500i 2"
        )]
    );
}

#[test]
fn a_failed_maintenance_register_is_left_out_of_the_event() {
    let t0 = Instant::now();
    let mut d = after_first_poll(t0);
    d.update(OPERATING_HOURS, None);
    d.update(RESET_COUNTER, Some(Value::Int(0)));
    assert_eq!(
        emit(&mut d, &ALL, t0 + secs(1), 1),
        vec![format!(
            "{MAINT} reset_counter=0i,reset_counter_previous=10i 1"
        )]
    );
}

#[test]
fn two_triggers_firing_together_write_two_events() {
    let t0 = Instant::now();
    let mut d = after_first_poll(t0);
    d.update(RESET_COUNTER, Some(Value::Int(1)));
    d.update(DOOR_OPEN, Some(Value::Bool(true)));
    let events: Vec<String> = emit(&mut d, &ALL, t0 + secs(1), 1)
        .into_iter()
        .filter(|l| l.starts_with("maintenance_events"))
        .collect();
    assert_eq!(
        events,
        vec![
            format!("{MAINT} reset_counter=1i,reset_counter_previous=10i,operating_hours=500i 1"),
            format!(
                "{MAINT} door_open=true,door_open_previous=false,reset_counter=1i,operating_hours=500i 1"
            ),
        ]
    );
}

#[test]
fn a_change_trigger_fires_on_any_change() {
    let mut m = machine();
    m.triggers = vec![Trigger {
        register: LEVEL,
        edge: Edge::Change,
    }];
    let t0 = Instant::now();
    let mut d = Detector::new(&m, &global_tags(), HEARTBEAT);
    first_values(&mut d);
    assert_eq!(emit(&mut d, &ALL, t0, 0).len(), 3);
    d.update(LEVEL, Some(Value::Float(1.5)));
    assert!(emit(&mut d, &ALL, t0 + secs(1), 1).is_empty());
    d.update(LEVEL, Some(Value::Float(1.25)));
    let lines = emit(&mut d, &ALL, t0 + secs(2), 2);
    assert_eq!(
        lines.last().unwrap(),
        &format!("{MAINT} level=1.25,level_previous=1.5,reset_counter=10i,operating_hours=500i 2")
    );
}

#[test]
fn rise_and_decrease_edges() {
    let f = |edge, prev: Value, now: Value| fires(edge, &prev, &now);
    assert!(f(Edge::Decrease, Value::Int(12), Value::Int(3)));
    assert!(!f(Edge::Decrease, Value::Int(3), Value::Int(12)));
    assert!(!f(Edge::Decrease, Value::Int(3), Value::Int(3)));
    assert!(f(Edge::Decrease, Value::Float(1.5), Value::Float(1.25)));
    assert!(f(Edge::Rise, Value::Bool(false), Value::Bool(true)));
    assert!(f(Edge::Rise, Value::Int(0), Value::Int(5)));
    assert!(!f(Edge::Rise, Value::Int(2), Value::Int(5)));
    assert!(!f(Edge::Rise, Value::Bool(true), Value::Bool(false)));
    assert!(f(Edge::Change, Value::Int(1), Value::Int(2)));
    assert!(!f(Edge::Change, Value::Int(2), Value::Int(2)));
}

// ---------------------------------------------------------------------------------------------
// snapshot
// ---------------------------------------------------------------------------------------------

#[test]
fn snapshot_writes_all_measurements() {
    let mut d = detector();
    first_values(&mut d);
    let mut out = Vec::new();
    d.snapshot(42, &mut out);
    // Unlike `emit`, the snapshot includes maintenance_events: `once` shows everything read.
    assert_eq!(
        out,
        vec![
            format!("{HF} temperature=80,speed=120i 42"),
            format!("{MF} level=1.5,door_open=false 42"),
            format!("{CC} batch=\"B-1\" 42"),
            format!("{MAINT} reset_counter=10i,operating_hours=500i 42"),
        ]
    );
}

#[test]
fn snapshot_ignores_change_detection() {
    let t0 = Instant::now();
    let mut d = after_first_poll(t0);
    // Nothing changed, but a snapshot still has every line, and taking one does not stop the
    // next real change from being written.
    let mut out = Vec::new();
    d.snapshot(1, &mut out);
    assert_eq!(out.len(), 4);
    d.update(SPEED, Some(Value::Int(121)));
    assert_eq!(emit(&mut d, &ALL, t0 + secs(1), 1).len(), 1);
}

#[test]
fn snapshot_leaves_out_failed_reads_and_empty_measurements() {
    let mut d = detector();
    d.update(TEMPERATURE, Some(Value::Float(80.0)));
    d.update(SPEED, None);
    let mut out = Vec::new();
    d.snapshot(5, &mut out);
    assert_eq!(out, vec![format!("{HF} temperature=80 5")]);
}
