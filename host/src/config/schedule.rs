//! When a pipeline runs under `synchost run`.

use std::str::FromStr;
use std::time::Duration;

/// A pipeline's schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Only when asked (`synchost sync`).
    Manual,
    /// Again this long after the previous run ended ("every 30s").
    Every(Duration),
    /// At the times a cron expression names, in UTC ("*/5 * * * *").
    Cron(Box<croner::Cron>),
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        if text == "manual" {
            return Ok(Schedule::Manual);
        }
        if let Some(interval) = text.strip_prefix("every ") {
            let interval = super::duration::parse_duration(interval, Duration::from_millis(100))
                .map_err(|e| format!("`{text}`: the interval {e}"))?;
            return Ok(Schedule::Every(interval));
        }
        croner::Cron::from_str(text)
            .map(|c| Schedule::Cron(Box::new(c)))
            .map_err(|e| format!("`{text}` is neither \"manual\", \"every <duration>\" nor a cron expression ({e})"))
    }
}

impl std::fmt::Display for Schedule {
    /// As written in a tenant file.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Manual => f.write_str("manual"),
            Schedule::Every(interval) => write!(f, "every {}", humantime::format_duration(*interval)),
            Schedule::Cron(cron) => write!(f, "{}", cron.pattern),
        }
    }
}

impl Schedule {
    /// How long to wait, from `now`, for the next run; `None` when manual.
    pub fn wait_from(&self, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
        match self {
            Schedule::Manual => None,
            Schedule::Every(interval) => Some(*interval),
            Schedule::Cron(cron) => {
                let next = cron.find_next_occurrence(&now, false).ok()?;
                Some((next - now).to_std().unwrap_or_default())
            }
        }
    }

    /// When a run is next due, for a schedule kept by when it last ran
    /// (`last`, `None` if never; then the schedule counts from `since`): an
    /// interval after the last run (at once if there was none), or the
    /// first cron time after it. `None` when manual.
    pub fn due_after(
        &self,
        last: Option<chrono::DateTime<chrono::Utc>>,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        match self {
            Schedule::Manual => None,
            Schedule::Every(interval) => Some(match last {
                Some(last) => last + chrono::TimeDelta::from_std(*interval).unwrap_or(chrono::TimeDelta::MAX),
                None => since,
            }),
            Schedule::Cron(cron) => cron.find_next_occurrence(&last.unwrap_or(since), false).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_form() {
        assert!(matches!("manual".parse(), Ok(Schedule::Manual)));
        assert!(matches!("every 30s".parse(), Ok(Schedule::Every(d)) if d == Duration::from_secs(30)));
        assert!(matches!("*/5 * * * *".parse(), Ok(Schedule::Cron(_))));
    }

    #[test]
    fn rejects_nonsense_with_the_text() {
        let err = "every 5 parsecs".parse::<Schedule>().unwrap_err();
        assert!(err.contains("every 5 parsecs"), "{err}");
        assert!("sometimes".parse::<Schedule>().is_err());
        assert!("every 1ms".parse::<Schedule>().is_err());
    }

    #[test]
    fn cron_waits_until_the_next_match() {
        let schedule: Schedule = "0 * * * *".parse().unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T10:59:00Z").unwrap().to_utc();
        assert_eq!(schedule.wait_from(now), Some(Duration::from_secs(60)));
    }

    #[test]
    fn a_schedule_kept_by_its_last_run_is_due_after_it() {
        let at = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc();
        let since = at("2026-01-01T10:00:00Z");
        let every: Schedule = "every 1h".parse().unwrap();
        assert_eq!(every.due_after(None, since), Some(since), "never run: due at once");
        assert_eq!(every.due_after(Some(at("2026-01-01T09:30:00Z")), since), Some(at("2026-01-01T10:30:00Z")));
        let nightly: Schedule = "0 3 * * *".parse().unwrap();
        assert_eq!(nightly.due_after(None, since), Some(at("2026-01-02T03:00:00Z")));
        assert_eq!(nightly.due_after(Some(at("2026-01-01T02:59:00Z")), since), Some(at("2026-01-01T03:00:00Z")));
        assert_eq!(Schedule::Manual.due_after(None, since), None);
    }
}
