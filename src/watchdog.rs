//! systemd integration: READY=1 once the config is valid and every thread runs, STOPPING=1 on
//! SIGTERM, and WATCHDOG=1 at half the `WatchdogSec=` interval, sent only while every thread's
//! loop is turning (each checks in on its `status::Beat`). A poller backing off from a
//! switched-off machine still turns its loop and counts as alive; a thread blocked for good
//! stops the pings and systemd restarts the service. Without systemd (no `NOTIFY_SOCKET`),
//! nothing is sent.

use crate::status::Liveness;
use crossbeam_channel::{select, Receiver};
use std::sync::Arc;
use std::time::Duration;

pub(crate) fn ready(status: &str) {
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

pub(crate) fn stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// One watchdog decision: ping when no thread is older than `max_age`; otherwise name them.
pub(crate) fn check(liveness: &Liveness, max_age: Duration) -> Result<(), Vec<String>> {
    let stuck = liveness.stuck(max_age);
    if stuck.is_empty() {
        Ok(())
    } else {
        Err(stuck)
    }
}

/// Threads turn their loop at least every couple of seconds (a poller with nothing due every
/// half of this); a thread is called stuck only after this long without a turn (or half the
/// watchdog interval, if that is longer).
pub(crate) const MIN_STUCK: Duration = Duration::from_secs(5);

/// The watchdog loop: every `interval / 2`, `ping()` if no thread is older than `max_age`.
pub(crate) fn run(
    liveness: Arc<Liveness>,
    interval: Duration,
    max_age: Duration,
    shutdown: Receiver<()>,
    ping: impl Fn(),
) {
    let half = interval / 2;
    let mut reported = false;
    loop {
        // Wait first: the first ping follows READY=1, which is sent once every thread runs.
        select! {
            recv(shutdown) -> _ => return,
            default(half) => {}
        }
        match check(&liveness, max_age) {
            Ok(()) => {
                ping();
                reported = false;
            }
            Err(stuck) => {
                if !reported {
                    log::error!(
                        "thread(s) {} have not turned their loop for {max_age:?}: no watchdog ping, systemd will restart the service",
                        stuck.join(", ")
                    );
                    reported = true;
                }
            }
        }
    }
}

/// The watchdog's interval and the age after which a thread counts as stuck, when systemd asks
/// for pings (`WatchdogSec=`); `app` then runs `run` on the `watchdog` thread.
pub(crate) fn wanted() -> Option<(Duration, Duration)> {
    let interval = sd_notify::watchdog_enabled()?;
    let max_age = (interval / 2).max(MIN_STUCK);
    log::info!(
        "systemd watchdog: {interval:?}; pinging every {:?} while no thread has been stuck for {max_age:?}",
        interval / 2
    );
    Some((interval, max_age))
}

/// One WATCHDOG=1 ping.
pub(crate) fn ping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn pings_while_every_loop_turns_and_stops_when_one_is_blocked() {
        let live = Arc::new(Liveness::default());
        let turning = live.register("poller tcp://10.0.0.9:502 (backing off)");
        let blocked = live.register("uploader");
        let pings = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let (l, p) = (live.clone(), pings.clone());
        let h = std::thread::spawn(move || {
            run(
                l,
                Duration::from_millis(200),
                Duration::from_millis(100),
                stop_rx,
                || {
                    p.fetch_add(1, Ordering::Relaxed);
                },
            )
        });
        // Both check in: pings flow.
        for _ in 0..6 {
            turning.check_in();
            blocked.check_in();
            std::thread::sleep(Duration::from_millis(50));
        }
        let while_alive = pings.load(Ordering::Relaxed);
        assert!(while_alive >= 2, "{while_alive}");
        // One thread stops checking in (blocked for good): the pings stop.
        for _ in 0..10 {
            turning.check_in();
            std::thread::sleep(Duration::from_millis(50));
        }
        let before = pings.load(Ordering::Relaxed);
        for _ in 0..8 {
            turning.check_in();
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            pings.load(Ordering::Relaxed),
            before,
            "no ping while a thread is blocked"
        );
        drop(stop_tx);
        h.join().expect("join");
    }
}
