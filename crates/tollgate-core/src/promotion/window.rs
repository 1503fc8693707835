//! Change windows and freezes: when a promotion may move.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};

use crate::format::{Freeze, Window};

/// The freeze in force at `now` (freeze dates are whole UTC days, inclusive).
pub fn active_freeze(freezes: &[Freeze], now: DateTime<Utc>) -> Option<&Freeze> {
    let today: NaiveDate = now.date_naive();
    freezes.iter().find(|f| f.from <= today && today <= f.to)
}

/// Whether `now` falls inside the window (its days, between start and end,
/// in the window's own time zone).
pub fn in_window(w: &Window, now: DateTime<Utc>) -> bool {
    let local = now.with_timezone(&w.tz);
    w.days.contains(&local.weekday()) && local.time() >= w.start && local.time() < w.end
}

/// The next instant at or after `now` when the window opens (now, if open).
/// `None` only for a window that never opens, which parsing prevents.
pub fn next_opening(w: &Window, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if in_window(w, now) {
        return Some(now);
    }
    let local_today = now.with_timezone(&w.tz).date_naive();
    for day in 0..8 {
        let date = local_today + Duration::days(day);
        if !w.days.contains(&date.weekday()) {
            continue;
        }
        // A start time skipped by a DST jump resolves to the next valid instant.
        let start =
            w.tz.from_local_datetime(&date.and_time(w.start))
                .earliest()
                .or_else(|| {
                    w.tz.from_local_datetime(&(date.and_time(w.start) + Duration::hours(1)))
                        .earliest()
                })?;
        let start = start.with_timezone(&Utc);
        if start >= now {
            return Some(start);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveTime, Weekday};

    fn business() -> Window {
        Window {
            days: vec![Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu],
            start: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(16, 0, 0).unwrap(),
            tz: chrono_tz::Europe::Berlin,
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn window_is_judged_in_its_own_time_zone() {
        let w = business();
        // Monday 2026-11-23 08:30 UTC is 09:30 in Berlin (CET, UTC+1).
        assert!(in_window(&w, utc("2026-11-23T08:30:00Z")));
        assert!(!in_window(&w, utc("2026-11-23T07:59:00Z")));
        assert!(
            !in_window(&w, utc("2026-11-23T15:00:00Z")),
            "16:00 Berlin is the end, exclusive"
        );
        assert!(!in_window(&w, utc("2026-11-27T10:00:00Z")), "Friday");
    }

    #[test]
    fn next_opening_skips_closed_days() {
        let w = business();
        assert_eq!(
            next_opening(&w, utc("2026-11-26T16:00:00Z")),
            Some(utc("2026-11-30T08:00:00Z"))
        );
        assert_eq!(
            next_opening(&w, utc("2026-11-23T08:30:00Z")),
            Some(utc("2026-11-23T08:30:00Z"))
        );
        // Summer time: 09:00 Berlin is 07:00 UTC.
        assert_eq!(
            next_opening(&w, utc("2026-06-01T05:00:00Z")),
            Some(utc("2026-06-01T07:00:00Z"))
        );
    }

    #[test]
    fn freezes_cover_whole_days() {
        let f = vec![Freeze {
            from: NaiveDate::from_ymd_opt(2026, 12, 20).unwrap(),
            to: NaiveDate::from_ymd_opt(2027, 1, 4).unwrap(),
            reason: "year end".into(),
        }];
        assert!(active_freeze(&f, utc("2026-12-20T00:00:00Z")).is_some());
        assert!(active_freeze(&f, utc("2027-01-04T23:59:59Z")).is_some());
        assert!(active_freeze(&f, utc("2027-01-05T00:00:00Z")).is_none());
    }
}
