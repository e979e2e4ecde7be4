//! Capped exponential backoff with jitter, for reconnecting to devices and retrying servers.
//! Each delay is drawn uniformly from [d/2, d] where d doubles from `initial` up to `max`, so
//! gateways restarted together do not retry in lockstep. A server's `Retry-After` can only
//! lengthen a wait (`retry_wait`): `Retry-After: 0` or a date in the past does not turn the
//! backoff off.

use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    pub failures: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            current: initial,
            failures: 0,
        }
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        self.failures += 1;
        let half = d / 2;
        half + Duration::from_secs_f64(half.as_secs_f64() * fastrand::f64())
    }

    pub(crate) fn reset(&mut self) {
        self.current = self.initial;
        self.failures = 0;
    }
}

/// The shortest wait before retrying a server, whatever it asks for.
pub(crate) const RETRY_FLOOR: Duration = Duration::from_secs(1);

/// The wait before retrying a server whose answer asked for `after` (`Retry-After`): the
/// longer of that and the next backoff delay, and at least `RETRY_FLOOR`.
pub(crate) fn retry_wait(after: Option<Duration>, backoff: &mut Backoff) -> Duration {
    backoff
        .next_delay()
        .max(after.unwrap_or(Duration::ZERO))
        .max(RETRY_FLOOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let caps = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0];
        for cap in caps {
            let d = b.next_delay().as_secs_f64();
            assert!(
                d >= cap / 2.0 && d <= cap,
                "{d} not in [{}, {cap}]",
                cap / 2.0
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn a_server_can_lengthen_a_retry_wait_but_never_shorten_it() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        assert_eq!(retry_wait(Some(Duration::ZERO), &mut b), RETRY_FLOOR);
        let d = retry_wait(Some(Duration::ZERO), &mut b);
        assert!(
            d >= Duration::from_secs(1) && d <= Duration::from_secs(2),
            "{d:?}"
        );
        let d = retry_wait(None, &mut b);
        assert!(
            d >= Duration::from_secs(2) && d <= Duration::from_secs(4),
            "{d:?}"
        );
        assert_eq!(
            retry_wait(Some(Duration::from_secs(120)), &mut b),
            Duration::from_secs(120)
        );
    }
}
