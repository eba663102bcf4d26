//! Duration strings: `"100ms"`, `"5s"`, `"30m"`, `"1h30m"`, `"1h 30m"`, `"2 days"`.
//!
//! The grammar is `humantime`'s, a maintained parser that services already use for their
//! configuration: numbers with units (`ms`, `s`/`sec`, `m`/`min`, `h`/`hours`, `d`/`days`,
//! `w`/`weeks`, ...), optionally separated by spaces. The macros add two rules of their own: a
//! duration is a whole number of milliseconds (the engine's resolution), and months and years
//! are refused (their length varies, and `"1M"` reads too much like `"1m"`). The macros turn it
//! into a number of milliseconds at compile time, so a typo is a compile error on the string.

use humantime::DurationError;

/// Units whose length varies, which `humantime` approximates.
const CALENDAR_UNITS: &[&str] = &["M", "month", "months", "y", "yr", "yrs", "year", "years"];

/// Milliseconds in `text`, or why it is not a duration.
pub(crate) fn parse(text: &str) -> Result<u64, String> {
    if let Some(unit) = text
        .split(|c: char| !c.is_alphabetic())
        .find(|word| CALENDAR_UNITS.contains(word))
    {
        return Err(format!(
            "`{unit}` (months or years) varies in length; use days or weeks, e.g. \"30d\""
        ));
    }
    let duration = humantime::parse_duration(text).map_err(|e| explain(text, &e))?;
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return Err("durations are whole milliseconds; this one is finer".into());
    }
    u64::try_from(duration.as_millis()).map_err(|_| "the duration is too long".into())
}

/// `humantime`'s error in the words of the other attribute errors.
fn explain(text: &str, error: &DurationError) -> String {
    let rest = |at: usize| text.get(at..).unwrap_or_default();
    match error {
        DurationError::Empty => "the duration is empty".into(),
        DurationError::NumberOverflow => "the duration is too long".into(),
        DurationError::InvalidCharacter(at) => {
            format!("unexpected `{}`", rest(*at).chars().next().unwrap_or(' '))
        }
        DurationError::NumberExpected(at) => format!("expected a number at `{}`", rest(*at)),
        DurationError::UnknownUnit { unit, value, .. } if unit.is_empty() => {
            format!("`{value}` has no unit")
        }
        DurationError::UnknownUnit { unit, .. } => format!("unknown unit `{unit}`"),
    }
}

/// How to write a duration, appended to every error.
pub(crate) const FORMAT_HINT: &str =
    "write numbers with units (ms, s, m, h, d or w), e.g. \"500ms\", \"30s\", \"1h 30m\"";

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn single_units() {
        assert_eq!(parse("100ms"), Ok(100));
        assert_eq!(parse("5s"), Ok(5_000));
        assert_eq!(parse("30m"), Ok(1_800_000));
        assert_eq!(parse("2h"), Ok(7_200_000));
        assert_eq!(parse("2d"), Ok(172_800_000));
        assert_eq!(parse("1w"), Ok(604_800_000));
        assert_eq!(parse("0s"), Ok(0));
    }

    #[test]
    fn compound_durations_add_up() {
        assert_eq!(parse("1h30m"), Ok(5_400_000));
        assert_eq!(parse("1h 30m"), Ok(5_400_000));
        assert_eq!(parse("1d2h3m4s5ms"), Ok(93_784_005));
        assert_eq!(parse("1m500ms"), Ok(60_500));
    }

    #[test]
    fn words_and_fractions_read_as_written() {
        assert_eq!(parse("30 minutes"), Ok(1_800_000));
        assert_eq!(parse("2 days"), Ok(172_800_000));
        assert_eq!(parse("1.5s"), Ok(1_500));
    }

    #[test]
    fn units_must_be_known() {
        assert_eq!(parse("5x"), Err("unknown unit `x`".into()));
        assert_eq!(parse("30 minuets"), Err("unknown unit `minuets`".into()));
        assert_eq!(parse("5S"), Err("unknown unit `S`".into()));
        assert_eq!(parse("5"), Err("`5` has no unit".into()));
    }

    #[test]
    fn numbers_must_come_first() {
        assert_eq!(parse(""), Err("the duration is empty".into()));
        assert!(parse("s").unwrap_err().starts_with("expected a number"));
        assert_eq!(parse("-5s"), Err("expected a number at `-5s`".into()));
        assert_eq!(parse("5s!"), Err("unexpected `!`".into()));
    }

    #[test]
    fn months_years_and_sub_millisecond_durations_are_refused() {
        assert!(parse("1M").unwrap_err().contains("varies in length"));
        assert!(parse("2 years").unwrap_err().contains("varies in length"));
        assert!(parse("1ms 500us")
            .unwrap_err()
            .contains("whole milliseconds"));
        assert_eq!(parse("2000us"), Ok(2));
    }

    #[test]
    fn overflow_is_an_error() {
        assert_eq!(
            parse("99999999999999999999s"),
            Err("the duration is too long".into())
        );
    }
}
