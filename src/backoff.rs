//! Capped exponential backoff with jitter, for reconnecting to devices and retrying servers.
//! Each delay is drawn uniformly from [d/2, d] where d doubles from `initial` up to `max`, so
//! gateways restarted together do not retry in lockstep.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    pub failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            current: initial,
            failures: 0,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        self.failures += 1;
        let half = d / 2;
        half + Duration::from_secs_f64(half.as_secs_f64() * fastrand::f64())
    }

    pub fn reset(&mut self) {
        self.current = self.initial;
        self.failures = 0;
    }
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
}
