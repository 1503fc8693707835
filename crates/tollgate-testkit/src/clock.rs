//! A clock that moves only when the test says so.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use tollgate_core::ports::Clock;

/// A [`Clock`] shared between a test and the code under test; clones see
/// the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn at(now: DateTime<Utc>) -> ManualClock {
        ManualClock(Arc::new(Mutex::new(now)))
    }

    /// Moves the time forward (or back, for a negative `by`).
    pub fn advance(&self, by: Duration) -> DateTime<Utc> {
        let mut now = self.0.lock().expect("the clock's lock is never poisoned");
        *now += by;
        *now
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.0.lock().expect("the clock's lock is never poisoned") = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("the clock's lock is never poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_time_and_only_advance_when_told() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-05T09:00:00Z").unwrap().to_utc();
        let clock = ManualClock::at(t0);
        let seen_by_code = clock.clone();
        assert_eq!(seen_by_code.now(), t0);
        clock.advance(Duration::minutes(5));
        assert_eq!(seen_by_code.now(), t0 + Duration::minutes(5));
        clock.set(t0);
        assert_eq!(seen_by_code.now(), t0);
    }
}
