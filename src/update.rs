//! What the status page says about A/B updates: the booted root slot, the other slot's state
//! and the version in each, read from RAUC (`rauc status --detailed --output-format=json`).
//!
//! Words, as RAUC uses them: a *slot* is one root filesystem partition (`rootfs.0`, `rootfs.1`),
//! its *bootname* (`A`, `B`) is what the boot script calls it; *boot status* `good` means the
//! bootloader will still try it (`bad`: its boot tries are used up, or it was marked bad); the
//! *primary* slot is the one the bootloader tries first. A slot's *version* is the version of
//! the bundle last installed into it (none for a slot written when the card was flashed).
//!
//! The `update-status` thread runs the command at start and every few minutes and keeps the
//! last answer in a `Shared` cell that the page only reads, so a slow or hanging D-Bus never
//! holds up a page. Without RAUC (a development machine, a .deb install) the thread ends at
//! its first try and the page shows just the gateway's version.

use crate::clock::unix_ms;
use crate::status::{lock, SlotStatus, UpdateStatus};
use crossbeam_channel::{select, Receiver};
use serde_json::Value;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How often RAUC is asked again: the slots change only by an install (then a reboot) or a
/// mark-good, so a few minutes is plenty.
pub(crate) const REFRESH: Duration = Duration::from_secs(180);

/// How long `rauc status` may take before it is killed and the next turn tries again (well
/// under the unit's `TimeoutStopSec=`, since shutdown joins the thread).
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// How soon a failed try is repeated: at boot RAUC's D-Bus service may still be starting, and
/// the page should not say "did not answer" for a whole `REFRESH`.
pub(crate) const RETRY: Duration = Duration::from_secs(15);

/// The slot name and object of one element of RAUC's `slots` array (`{"rootfs.0": {...}}`).
fn slot_entry(v: &Value) -> Option<(&String, &Value)> {
    v.as_object()?.iter().next()
}

fn string(v: &Value, path: &[&str]) -> Option<String> {
    let mut v = v;
    for p in path {
        v = v.get(p)?;
    }
    v.as_str().map(str::to_string)
}

/// Read `rauc status --detailed --output-format=json` (RAUC 1.8; older and newer versions
/// write the same fields). Unknown fields are ignored, missing optional ones are `None`.
pub(crate) fn parse(json: &str) -> Result<UpdateStatus, String> {
    let v: Value =
        serde_json::from_str(json).map_err(|e| format!("rauc status is not JSON: {e}"))?;
    let slots_json = v
        .get("slots")
        .and_then(Value::as_array)
        .ok_or("rauc status has no slot list")?;
    let booted_bootname = string(&v, &["booted"]);
    let mut slots = Vec::new();
    let mut booted = None;
    for (name, s) in slots_json.iter().filter_map(slot_entry) {
        if string(s, &["class"]).as_deref() != Some("rootfs") {
            continue;
        }
        let slot = SlotStatus {
            name: name.clone(),
            bootname: string(s, &["bootname"]),
            state: string(s, &["state"]).unwrap_or_default(),
            boot_status: string(s, &["boot_status"]),
            version: string(s, &["slot_status", "bundle", "version"]),
            installed: string(s, &["slot_status", "installed", "timestamp"]),
        };
        if slot.state == "booted"
            || (booted.is_none() && booted_bootname.is_some() && slot.bootname == booted_bootname)
        {
            booted = Some(slot.name.clone());
        }
        slots.push(slot);
    }
    let mut status = UpdateStatus {
        booted,
        primary: string(&v, &["boot_primary"]),
        slots,
        ..UpdateStatus::default()
    };
    status.rolled_back = match (status.booted_slot(), status.other_slot()) {
        (Some(b), Some(o)) => {
            o.boot_status.as_deref() == Some("bad")
                && o.installed.is_some()
                // ISO 8601 times of one clock compare as strings; a slot flashed with the card
                // has none and is older than any install.
                && o.installed > b.installed
        }
        _ => false,
    };
    Ok(status)
}

/// Why asking RAUC failed.
#[derive(Debug)]
pub(crate) enum AskError {
    /// No `rauc` here: nothing to show, and no reason to ask again.
    Absent,
    Failed(String),
}

/// Run `program args…`, killing it after `timeout`; its standard output on success.
fn run_with_timeout(program: &str, args: &[&str], timeout: Duration) -> Result<String, AskError> {
    // A path that is not there is absent. Checked before spawning: under some emulators an
    // exec that fails in the child is not reported as NotFound by `spawn`.
    if program.contains('/') && !std::path::Path::new(program).exists() {
        return Err(AskError::Absent);
    }
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => AskError::Absent,
            _ => AskError::Failed(format!("cannot run {program}: {e}")),
        })?;
    // The output is small (a few kB); read it on helper threads so a full pipe never blocks
    // the child while this thread keeps the time.
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = stdout.as_mut() {
            let _ = o.take(1 << 20).read_to_string(&mut s);
        }
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.take(1 << 16).read_to_string(&mut s);
        }
        s
    });
    let start = Instant::now();
    let exit = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(AskError::Failed(format!(
                    "{program} did not answer within {} s",
                    timeout.as_secs()
                )));
            }
            Err(e) => return Err(AskError::Failed(format!("waiting for {program}: {e}"))),
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if exit.success() {
        Ok(out)
    } else {
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        Err(AskError::Failed(format!(
            "{program} status: {exit}: {last}"
        )))
    }
}

/// Ask RAUC once.
pub(crate) fn ask(program: &str) -> Result<UpdateStatus, AskError> {
    let out = run_with_timeout(
        program,
        &["status", "--detailed", "--output-format=json"],
        COMMAND_TIMEOUT,
    )?;
    let mut status = parse(&out).map_err(AskError::Failed)?;
    status.checked_ms = unix_ms(SystemTime::now());
    Ok(status)
}

/// Which program to ask: `DYEING_GATEWAY_RAUC` when set (tests; empty: none), else `rauc`
/// where RAUC is configured on this system (`/etc/rauc/system.conf`), else none.
pub(crate) fn program() -> Option<String> {
    match std::env::var("DYEING_GATEWAY_RAUC") {
        Ok(p) if p.is_empty() => None,
        Ok(p) => Some(p),
        Err(_) => std::path::Path::new("/etc/rauc/system.conf")
            .exists()
            .then(|| "rauc".to_string()),
    }
}

/// The page's view of the slots: `None` until RAUC first answers, and for good without RAUC.
pub(crate) type Shared = Arc<Mutex<Option<UpdateStatus>>>;

/// The `update-status` loop (run by `app` when `program` finds a RAUC): ask `program` now and every `every` until `shutdown` closes.
/// A failed try keeps the last answer and records the error beside it.
pub(crate) fn run(program: &str, shared: Shared, every: Duration, shutdown: Receiver<()>) {
    let mut logged_error = false;
    loop {
        let mut wait = every;
        match ask(program) {
            Ok(status) => {
                if lock(&shared).as_ref().map(|s| (&s.booted, &s.slots))
                    != Some((&status.booted, &status.slots))
                {
                    log::info!("{}", summary(&status));
                }
                *lock(&shared) = Some(status);
                logged_error = false;
            }
            Err(AskError::Absent) => {
                log::debug!("no {program} here: the status page shows no update slots");
                return;
            }
            Err(AskError::Failed(e)) => {
                if !logged_error {
                    log::warn!("update slots: {e}");
                    logged_error = true;
                }
                let mut cell = lock(&shared);
                let s = cell.get_or_insert_with(UpdateStatus::default);
                s.error = Some(e);
                wait = every.min(RETRY);
            }
        }
        select! {
            recv(shutdown) -> _ => return,
            default(wait) => {}
        }
    }
}

fn describe(s: &SlotStatus) -> String {
    format!(
        "{}{}{}{}",
        s.name,
        s.bootname
            .as_ref()
            .map(|b| format!(" ({b})"))
            .unwrap_or_default(),
        s.version
            .as_ref()
            .map(|v| format!(" version {v}"))
            .unwrap_or_default(),
        s.boot_status
            .as_ref()
            .map(|b| format!(", {b}"))
            .unwrap_or_default(),
    )
}

/// One line for the log and the page: the booted slot, the other one, a rollback.
pub(crate) fn summary(s: &UpdateStatus) -> String {
    let booted = s
        .booted_slot()
        .map(describe)
        .unwrap_or_else(|| "unknown".into());
    let other = s
        .other_slot()
        .map(describe)
        .unwrap_or_else(|| "none".into());
    format!(
        "booted slot {booted}; other slot {other}{}",
        if s.rolled_back {
            "; the update in the other slot failed and the previous version runs again"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rauc status --detailed --output-format=json-pretty` in RAUC 1.8's layout (Debian
    /// bookworm; the top level and slot fields as that build prints them, the `slot_status`
    /// fields as its JSON writer adds them after an install) with the U-Boot backend: slot B
    /// was installed and booted, A is the flashed one. Also served by the fake `rauc` of the
    /// status page test.
    const UPDATED: &str = include_str!("../tests/peers/rauc-status-1.8.json");

    #[test]
    fn booted_and_other_slot_with_versions() {
        let s = parse(UPDATED).unwrap();
        assert_eq!(s.booted.as_deref(), Some("rootfs.1"));
        assert_eq!(s.primary.as_deref(), Some("rootfs.1"));
        let b = s.booted_slot().unwrap();
        assert_eq!(b.bootname.as_deref(), Some("B"));
        assert_eq!(b.version.as_deref(), Some("0.2.0+g1a2b3c4d"));
        assert_eq!(b.installed.as_deref(), Some("2026-12-07T03:10:11Z"));
        let o = s.other_slot().unwrap();
        assert_eq!(o.name, "rootfs.0");
        assert_eq!(o.state, "inactive");
        assert_eq!(o.boot_status.as_deref(), Some("good"));
        assert_eq!(o.version, None);
        assert!(!s.rolled_back);
        assert_eq!(
            summary(&s),
            "booted slot rootfs.1 (B) version 0.2.0+g1a2b3c4d, good; other slot rootfs.0 (A), good"
        );
    }

    #[test]
    fn a_failed_update_in_the_other_slot_is_a_rollback() {
        // The same system after a bundle into A never got healthy: its tries are used up and
        // U-Boot came back to B.
        let json = UPDATED
            .replace(
                r#""state" : "inactive",
        "parent" : null,
        "mountpoint" : null,
        "boot_status" : "good","#,
                r#""state" : "inactive",
        "parent" : null,
        "mountpoint" : null,
        "boot_status" : "bad","#,
            )
            .replace(
                r#""bundle" : {
            "compatible" : null
          }"#,
                r#""bundle" : {
            "compatible" : "dyeing-gateway-rpi-armhf",
            "version" : "0.3.0-broken"
          },
          "installed" : {
            "timestamp" : "2026-12-08T09:00:00Z",
            "count" : 2
          }"#,
            );
        let s = parse(&json).unwrap();
        let o = s.other_slot().unwrap();
        assert_eq!(o.boot_status.as_deref(), Some("bad"));
        assert_eq!(o.version.as_deref(), Some("0.3.0-broken"));
        assert!(s.rolled_back);
        assert!(summary(&s).ends_with("the previous version runs again"));
    }

    #[test]
    fn a_bad_slot_older_than_the_booted_one_is_no_rollback() {
        // The flashed slot marked bad (or never booted) is not a failed update.
        let json = UPDATED.replace(
            r#""mountpoint" : null,
        "boot_status" : "good","#,
            r#""mountpoint" : null,
        "boot_status" : "bad","#,
        );
        let s = parse(&json).unwrap();
        assert_eq!(s.other_slot().unwrap().boot_status.as_deref(), Some("bad"));
        assert!(!s.rolled_back);
    }

    #[test]
    fn the_plain_format_without_slot_status_and_other_classes() {
        // `rauc status --output-format=json` (not detailed) as RAUC 1.8 writes it, plus an
        // appfs slot that is not a root slot.
        let json = r#"{"compatible":"dyeing-gateway-rpi-armhf","variant":"","booted":"A","boot_primary":null,
          "slots":[{"rootfs.1":{"class":"rootfs","device":"/dev/mmcblk0p3","type":"raw","bootname":"B","state":"inactive","parent":null,"mountpoint":null,"boot_status":"bad"}},
                   {"appfs.0":{"class":"appfs","device":"/dev/mmcblk0p5","type":"ext4","bootname":null,"state":"active","parent":"rootfs.0","mountpoint":null}},
                   {"rootfs.0":{"class":"rootfs","device":"/dev/mmcblk0p2","type":"raw","bootname":"A","state":"booted","parent":null,"mountpoint":null,"boot_status":"good"}}]}"#;
        let s = parse(json).unwrap();
        assert_eq!(s.slots.len(), 2);
        assert_eq!(s.booted.as_deref(), Some("rootfs.0"));
        assert_eq!(s.primary, None);
        assert_eq!(s.other_slot().unwrap().name, "rootfs.1");
        assert!(!s.rolled_back);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse("").is_err());
        assert!(parse("{}").is_err());
        assert!(parse(r#"{"slots": 3}"#).is_err());
        assert_eq!(
            parse(r#"{"slots": [1, {}, {"x": 2}]}"#).unwrap().slots,
            vec![]
        );
    }

    #[test]
    fn an_absent_program_is_told_apart_from_a_failing_one() {
        assert!(matches!(ask("/nonexistent/rauc"), Err(AskError::Absent)));
        assert!(matches!(ask("false"), Err(AskError::Failed(_))));
        let slow = run_with_timeout("sleep", &["5"], Duration::from_millis(200));
        assert!(matches!(slow, Err(AskError::Failed(e)) if e.contains("did not answer")));
    }
}
