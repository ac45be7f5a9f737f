//! Durations as config files write them ("500ms", "30s", "2m"): one parser, so
//! every key reads them alike and refuses them with the same words.

use std::time::Duration;

/// Parses `text` as a duration of at least `shortest` (which is above zero:
/// no key takes a zero duration). The error says what was wrong, without the
/// key, which the caller's location names.
pub(crate) fn parse_duration(text: &str, shortest: Duration) -> Result<Duration, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d >= shortest && !d.is_zero() => Ok(d),
        Ok(_) if shortest <= Duration::from_nanos(1) => Err("must be longer than zero".into()),
        Ok(_) => Err(format!("must be at least {}", humantime::format_duration(shortest))),
        Err(e) => Err(format!("`{text}` is not a duration such as \"500ms\", \"30s\" or \"2m\" ({e})")),
    }
}

/// Any duration above zero.
pub(crate) const ABOVE_ZERO: Duration = Duration::from_nanos(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_alike_and_are_refused_with_a_reason() {
        assert_eq!(parse_duration("500ms", ABOVE_ZERO), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration(" 2m ", ABOVE_ZERO), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0s", ABOVE_ZERO), Err("must be longer than zero".into()));
        assert_eq!(parse_duration("10ms", Duration::from_secs(1)), Err("must be at least 1s".into()));
        let soon = parse_duration("soon", ABOVE_ZERO).unwrap_err();
        assert!(soon.starts_with("`soon` is not a duration such as"), "{soon}");
    }
}
