//! Durations in settings: `250ms`, `5s`, `1day`, or a bare number of milliseconds.
//!
//! Every duration setting is a [`Duration`] parsed by [`parse`]. The names keep their `_MS`
//! suffix (`OUTBOX_LEASE_MS` is part of the product contract), so a bare number means
//! milliseconds, as it always has; a value with a unit is read by `humantime`, which is
//! easier to get right than counting zeros (`8days` rather than `691200000`).

use std::time::Duration;

/// Parses a setting's duration: a bare number of milliseconds, or a `humantime` duration.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|err| format!("{text:?} is not a number of milliseconds: {err}"));
    }
    humantime::parse_duration(text).map_err(|err| {
        format!(
            "{text:?} is not a duration (a number of milliseconds, or e.g. 250ms, 5s, 1day): {err}"
        )
    })
}

/// Milliseconds of a duration as an `i64`, for arithmetic on database timestamps. Durations
/// too long for that (hundreds of millions of years) are clamped.
pub fn as_millis_i64(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds of a duration as the `i32`-sized value librdkafka settings take, clamped.
pub fn as_millis_u32(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_number_is_milliseconds() {
        assert_eq!(parse("250"), Ok(Duration::from_millis(250)));
        assert_eq!(parse(" 0 "), Ok(Duration::ZERO));
    }

    #[test]
    fn a_number_with_a_unit_is_read_by_humantime() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("8days"), Ok(Duration::from_secs(8 * 86_400)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1_500)));
    }

    #[test]
    fn anything_else_is_refused_with_a_reason() {
        for bad in ["", "-5", "5 parsecs", "ms", "1.5"] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains("is not"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn conversions_clamp_instead_of_wrapping() {
        assert_eq!(as_millis_u32(Duration::from_secs(u64::MAX / 2)), u32::MAX);
        assert_eq!(as_millis_i64(Duration::from_secs(u64::MAX / 2)), i64::MAX);
        assert_eq!(as_millis_u32(Duration::from_millis(10)), 10);
    }
}
