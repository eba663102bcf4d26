//! Duration strings: `"100ms"`, `"5s"`, `"30m"`, `"1h30m"`, `"2d"`.
//!
//! A duration is one or more `<integer><unit>` parts, largest unit first, each unit at most
//! once, without spaces. Units: `d` (days), `h`, `m`, `s`, `ms`. The macros turn it into a number
//! of milliseconds at compile time, so a typo is a compile error on the string.

/// Milliseconds in `text`, or why it is not a duration.
pub(crate) fn parse(text: &str) -> Result<u64, String> {
    if text.is_empty() {
        return Err("the duration is empty".into());
    }
    let bytes = text.as_bytes();
    let mut total: u64 = 0;
    let mut i = 0;
    let mut last_rank = usize::MAX;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            let found = text[i..].chars().next().unwrap_or(' ');
            return Err(format!(
                "expected a number at `{}`, found `{found}`",
                &text[i..]
            ));
        }
        let number: u64 = text[start..i]
            .parse()
            .map_err(|_| format!("`{}` is too large", &text[start..i]))?;
        if bytes.get(i) == Some(&b'.') {
            return Err(format!(
                "`{}.` is not a whole number; use a smaller unit, e.g. \"1500ms\" for 1.5s",
                &text[start..i]
            ));
        }
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &text[unit_start..i];
        let Some((rank, millis)) = unit_millis(unit) else {
            return Err(if unit.is_empty() {
                format!("`{number}` has no unit")
            } else {
                format!("unknown unit `{unit}`")
            });
        };
        if rank >= last_rank {
            return Err(format!(
                "`{unit}` comes after a smaller or equal unit; write the largest unit first, each once"
            ));
        }
        last_rank = rank;
        total = number
            .checked_mul(millis)
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| "the duration is too long".to_owned())?;
    }
    Ok(total)
}

/// The rank (larger is a larger unit) and length in milliseconds of a unit.
fn unit_millis(unit: &str) -> Option<(usize, u64)> {
    Some(match unit {
        "ms" => (0, 1),
        "s" => (1, 1_000),
        "m" => (2, 60_000),
        "h" => (3, 3_600_000),
        "d" => (4, 86_400_000),
        _ => return None,
    })
}

/// How to write a duration, appended to every error.
pub(crate) const FORMAT_HINT: &str =
    "write an integer and a unit (ms, s, m, h or d), largest first, e.g. \"500ms\", \"30s\", \"1h30m\"";

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
        assert_eq!(parse("0s"), Ok(0));
    }

    #[test]
    fn compound_durations_add_up() {
        assert_eq!(parse("1h30m"), Ok(5_400_000));
        assert_eq!(parse("1d2h3m4s5ms"), Ok(93_784_005));
        assert_eq!(parse("1m500ms"), Ok(60_500));
    }

    #[test]
    fn units_must_be_known() {
        assert_eq!(parse("5x"), Err("unknown unit `x`".into()));
        assert_eq!(parse("5sec"), Err("unknown unit `sec`".into()));
        assert_eq!(parse("5S"), Err("unknown unit `S`".into()));
        assert_eq!(parse("5"), Err("`5` has no unit".into()));
    }

    #[test]
    fn numbers_must_come_first() {
        assert!(parse("").is_err());
        assert!(parse("s").unwrap_err().starts_with("expected a number"));
        assert!(parse("1.5s").unwrap_err().contains("not a whole number"));
        assert!(parse("5 s").is_err());
        assert!(parse(" 5s").is_err());
        assert!(parse("-5s").is_err());
    }

    #[test]
    fn largest_unit_first_and_once() {
        assert!(parse("30m1h").unwrap_err().contains("largest unit first"));
        assert!(parse("5m5m").unwrap_err().contains("largest unit first"));
        assert!(parse("1s1ms").is_ok());
        assert!(parse("1ms1s").is_err());
    }

    #[test]
    fn overflow_is_an_error() {
        assert_eq!(
            parse("99999999999999999999s"),
            Err("`99999999999999999999` is too large".into())
        );
        assert_eq!(
            parse("18446744073709551615d"),
            Err("the duration is too long".into())
        );
    }
}
