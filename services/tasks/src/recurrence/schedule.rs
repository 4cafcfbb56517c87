//! Cron schedules of recurrence rules (Rule 18), pure: five fields (minute hour day-of-month
//! month day-of-week) with ranges, lists, steps and names, evaluated in an IANA time zone. A local
//! time skipped by a DST change moves to the next valid minute; a repeated one fires once.

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;
use trellis_kit::error::Violations;

/// Longest cron expression, in characters.
pub const EXPRESSION_MAX: usize = 100;
/// Closest two runs may be.
pub const MIN_GAP: TimeDelta = TimeDelta::minutes(60);
/// How many upcoming runs the frequency check inspects.
const GAP_SAMPLE: usize = 1_000;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    tz: Tz,
}

/// Why an expression or zone was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleError {
    /// Not a five-field expression this service understands (field `cron_expression`).
    Expression(String),
    /// Not an IANA zone (field `time_zone`).
    TimeZone,
    /// Two runs less than [`MIN_GAP`] apart.
    TooFrequent,
}

impl CronSchedule {
    /// Parses `expression` in `time_zone` (empty = UTC).
    pub fn parse(expression: &str, time_zone: &str) -> Result<CronSchedule, ScheduleError> {
        let expression = expression.trim();
        let tz: Tz = if time_zone.trim().is_empty() {
            Tz::UTC
        } else {
            time_zone.trim().parse().map_err(|_| ScheduleError::TimeZone)?
        };
        if expression.chars().count() > EXPRESSION_MAX {
            return Err(ScheduleError::Expression(format!("at most {EXPRESSION_MAX} characters")));
        }
        let fields = expression.split_whitespace().count();
        if fields != 5 {
            return Err(ScheduleError::Expression(format!(
                "needs five fields (minute hour day-of-month month day-of-week), got {fields}"
            )));
        }
        // Only the standard syntax: no nicknames, seconds or the L/W/# extensions.
        if let Some(c) = expression.chars().find(|c| !(c.is_ascii_alphanumeric() || " ,-*/".contains(*c))) {
            return Err(ScheduleError::Expression(format!("unexpected character {c:?}")));
        }
        // Letters only as three-letter month and weekday names (JAN, MON): no L, W or nicknames.
        let odd_token = expression.split([' ', ',', '-', '/']).any(|token| {
            let letters = token.chars().filter(char::is_ascii_alphabetic).count();
            letters > 0 && (letters != 3 || letters != token.len())
        });
        if odd_token {
            return Err(ScheduleError::Expression("letters are allowed only in month and weekday names".into()));
        }
        let cron = Cron::new(expression).parse().map_err(|e| ScheduleError::Expression(e.to_string()))?;
        let schedule = CronSchedule { cron, tz };
        if schedule.next_after(Utc::now()).is_none() {
            return Err(ScheduleError::Expression("never fires".into()));
        }
        Ok(schedule)
    }

    /// Parses and checks the frequency, adding violations to `v`.
    pub fn validate(v: &mut Violations, expression: &str, time_zone: &str, from: DateTime<Utc>) -> Option<Self> {
        match Self::parse(expression, time_zone).and_then(|s| s.check_frequency(from).map(|()| s)) {
            Ok(s) => Some(s),
            Err(ScheduleError::Expression(why)) => {
                v.add("cron_expression", format!("is not a valid cron expression: {why}"));
                None
            }
            Err(ScheduleError::TimeZone) => {
                v.add("time_zone", "is not an IANA time zone");
                None
            }
            Err(ScheduleError::TooFrequent) => None,
        }
    }

    /// [`ScheduleError::TooFrequent`] when two of the upcoming runs are less than an hour apart.
    pub fn check_frequency(&self, from: DateTime<Utc>) -> Result<(), ScheduleError> {
        let runs = self.upcoming(from, GAP_SAMPLE);
        if runs.windows(2).any(|w| w[1] - w[0] < MIN_GAP) { Err(ScheduleError::TooFrequent) } else { Ok(()) }
    }

    /// The first run strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron.find_next_occurrence(&local, false).ok().map(|d| d.with_timezone(&Utc))
    }

    /// The next `n` runs strictly after `t`.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = t;
        while out.len() < n {
            match self.next_after(at) {
                Some(next) if next > at => {
                    out.push(next);
                    at = next;
                }
                _ => break,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn monday_nine_in_berlin_is_eight_utc_in_winter() {
        let s = CronSchedule::parse("0 9 * * 1", "Europe/Berlin").unwrap_or_else(|e| panic!("{e:?}"));
        // Sunday 2026-11-22 → Monday 2026-11-23 09:00 CET = 08:00 UTC.
        assert_eq!(s.next_after(t("2026-11-22T06:00:00Z")), Some(t("2026-11-23T08:00:00Z")));
        assert_eq!(
            s.upcoming(t("2026-11-22T06:00:00Z"), 2),
            vec![t("2026-11-23T08:00:00Z"), t("2026-11-30T08:00:00Z")]
        );
        assert!(s.check_frequency(t("2026-11-22T06:00:00Z")).is_ok());
    }

    #[test]
    fn names_ranges_lists_and_steps_parse() {
        for e in ["0 9 * JAN MON", "0 9-17/4 1,15 * *", "30 8 * * MON-FRI", "0 0 1 */3 *"] {
            assert!(CronSchedule::parse(e, "UTC").is_ok(), "{e}");
        }
    }

    #[test]
    fn bad_expressions_and_zones_are_refused() {
        for e in ["61 * * * *", "* * * *", "0 0 * * * *", "@daily", "0 9 L * *", "0 9 * * 1#2", "x y z a b"] {
            assert!(matches!(CronSchedule::parse(e, "UTC"), Err(ScheduleError::Expression(_))), "{e}");
        }
        assert_eq!(CronSchedule::parse("0 9 * * 1", "Mars/Olympus").err(), Some(ScheduleError::TimeZone));
    }

    #[test]
    fn runs_less_than_an_hour_apart_are_too_frequent() {
        let now = t("2026-11-22T06:00:00Z");
        for e in ["* * * * *", "*/30 * * * *", "0,59 9 * * 1", "0 9 * * *"] {
            let s = CronSchedule::parse(e, "UTC").unwrap_or_else(|err| panic!("{e}: {err:?}"));
            let expected = e != "0 9 * * *";
            assert_eq!(s.check_frequency(now).is_err(), expected, "{e}");
        }
        let hourly = CronSchedule::parse("0 * * * *", "Europe/Berlin").unwrap_or_else(|e| panic!("{e:?}"));
        assert!(hourly.check_frequency(now).is_ok());
    }

    #[test]
    fn a_time_skipped_by_dst_moves_to_the_next_valid_minute_and_a_repeated_one_fires_once() {
        let s = CronSchedule::parse("30 2 * * *", "Europe/Berlin").unwrap_or_else(|e| panic!("{e:?}"));
        // 2027-03-28: clocks jump from 02:00 to 03:00 CEST (01:00 UTC).
        assert_eq!(s.next_after(t("2027-03-27T12:00:00Z")), Some(t("2027-03-28T01:00:00Z")));
        // 2026-10-25: 02:30 happens twice (00:30 and 01:30 UTC); it fires once.
        let runs = s.upcoming(t("2026-10-24T12:00:00Z"), 2);
        assert_eq!(runs, vec![t("2026-10-25T00:30:00Z"), t("2026-10-26T01:30:00Z")]);
    }
}
