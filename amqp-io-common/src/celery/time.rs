//! ISO 8601 times as celery writes and reads them (`datetime.isoformat()`
//! and `datetime.fromisoformat()`): the `eta` and `expires` headers and a
//! result's `date_done`. Written here rather than taken from a date crate:
//! these two functions are all the task protocol needs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECONDS_PER_DAY: i64 = 86_400;

/// Days since 1970-01-01 of a proleptic Gregorian date (the civil-days
/// algorithm counts 400-year eras from 0000-03-01).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day counted from 1970-01-01: (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are in range by construction (1..=12, 1..=31).
    let month = u32::try_from(month).unwrap_or(1);
    let day = u32::try_from(day).unwrap_or(1);
    (year, month, day)
}

/// Seconds and microseconds since the epoch, negative before it.
fn unix_micros(time: SystemTime) -> i128 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_micros()).unwrap_or(i128::MAX),
        Err(before) => -i128::try_from(before.duration().as_micros()).unwrap_or(i128::MAX),
    }
}

/// `time` in UTC as Python's `datetime.isoformat()` writes an aware UTC
/// datetime: `2026-12-04T01:13:59.419891+00:00`, the microseconds left
/// out when they are zero.
#[must_use]
pub fn isoformat(time: SystemTime) -> String {
    let micros = unix_micros(time);
    let seconds = i64::try_from(micros.div_euclid(1_000_000)).unwrap_or(i64::MAX);
    let micro = micros.rem_euclid(1_000_000);
    let (year, month, day) = civil_from_days(seconds.div_euclid(SECONDS_PER_DAY));
    let of_day = seconds.rem_euclid(SECONDS_PER_DAY);
    let (hour, minute, second) = (of_day / 3600, of_day % 3600 / 60, of_day % 60);
    let fraction = if micro == 0 {
        String::new()
    } else {
        format!(".{micro:06}")
    };
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{fraction}+00:00")
}

/// A fixed-width decimal field.
fn number(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The offset from UTC of `+HH:MM`, `-HHMM`, `+HH:MM:SS` or `Z`, in
/// seconds.
fn offset(text: &str) -> Option<i64> {
    if text == "Z" || text == "z" {
        return Some(0);
    }
    let (sign, rest) = match text.split_at_checked(1)? {
        ("+", rest) => (1, rest),
        ("-", rest) => (-1, rest),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|&c| c != ':').collect();
    let (hours, rest) = digits.split_at_checked(2)?;
    let (minutes, seconds) = rest.split_at_checked(2)?;
    // Python allows seconds (and fractions of them) in an offset; the
    // fraction is dropped here.
    let seconds = seconds.split('.').next().unwrap_or_default();
    let seconds = if seconds.is_empty() {
        0
    } else {
        number(seconds)?
    };
    let total = number(hours)? * 3600 + number(minutes)? * 60 + seconds;
    (total < SECONDS_PER_DAY).then_some(sign * total)
}

/// Parses what Python's `datetime.fromisoformat()` reads from celery's
/// headers: `YYYY-MM-DD[T| ]HH:MM[:SS[.ffffff]]` and an optional offset
/// (`Z`, `+HH:MM`, ...). A time without an offset is taken as UTC, celery's
/// default timezone. `None` for anything else.
#[must_use]
pub fn parse_isoformat(text: &str) -> Option<SystemTime> {
    let date = text.get(..10)?;
    let separator = text.get(10..11)?;
    if separator != "T" && separator != " " {
        return None;
    }
    let rest = text.get(11..)?;
    let year = number(date.get(0..4)?)?;
    let month = u32::try_from(number(date.get(5..7)?)?).ok()?;
    let day = u32::try_from(number(date.get(8..10)?)?).ok()?;
    if date.get(4..5)? != "-" || date.get(7..8)? != "-" {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=days_in_month(year, month)).contains(&day) {
        return None;
    }
    // The clock time runs to the offset, if there is one.
    let zone_at = rest.find(['+', '-', 'Z', 'z']).unwrap_or(rest.len());
    let (clock, zone) = rest.split_at(zone_at);
    let zone = if zone.is_empty() { 0 } else { offset(zone)? };
    let (clock, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut parts = clock.split(':');
    let hour = number(parts.next()?)?;
    let minute = number(parts.next()?)?;
    let second = parts.next().map_or(Some(0), number)?;
    if parts.next().is_some() || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    if !fraction.bytes().all(|byte| byte.is_ascii_digit())
        || (clock.len() < 8 && !fraction.is_empty())
    {
        return None;
    }
    let micros: String = fraction.chars().chain("000000".chars()).take(6).collect();
    let micros = u64::try_from(number(&micros)?).ok()?;
    let seconds =
        days_from_civil(year, month, day) * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second
            - zone;
    let since = Duration::from_micros(micros);
    if seconds >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(seconds.unsigned_abs()) + since)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(seconds.unsigned_abs()))?
            .checked_add(since)
    }
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64, micros: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_micros(micros)
    }

    #[test]
    fn times_are_written_as_python_isoformat_writes_them() {
        // Python: datetime.fromtimestamp(1796346839.419891, timezone.utc).isoformat()
        assert_eq!(
            isoformat(at(1_796_346_839, 419_891)),
            "2026-12-04T01:13:59.419891+00:00"
        );
        assert_eq!(isoformat(at(0, 0)), "1970-01-01T00:00:00+00:00");
        assert_eq!(
            isoformat(at(951_782_400, 1)),
            "2000-02-29T00:00:00.000001+00:00"
        );
        assert_eq!(isoformat(at(4_102_444_799, 0)), "2099-12-31T23:59:59+00:00");
    }

    #[test]
    fn times_are_read_as_python_fromisoformat_reads_them() {
        let cases = [
            (
                "2026-12-04T01:13:59.419891+00:00",
                at(1_796_346_839, 419_891),
            ),
            (
                "2026-12-04T02:13:59.419891+01:00",
                at(1_796_346_839, 419_891),
            ),
            ("2026-12-04T01:13:59Z", at(1_796_346_839, 0)),
            ("2026-12-04 01:13:59.5", at(1_796_346_839, 500_000)),
            ("2026-12-04T01:13", at(1_796_346_780, 0)),
            ("2026-12-03T20:13:59-05:00", at(1_796_346_839, 0)),
            (
                "1969-12-31T23:59:59+00:00",
                UNIX_EPOCH - Duration::from_secs(1),
            ),
        ];
        for (text, time) in cases {
            assert_eq!(parse_isoformat(text), Some(time), "{text}");
        }
        for bad in [
            "",
            "tomorrow",
            "2026-13-01T00:00:00",
            "2026-02-30T00:00:00",
            "2026-12-04T25:00:00",
            "2026-12-04T01:13:59+0",
            "2026-12-04X01:13:59",
            "2026-12-04T01:13:59.x",
            "２０２６-12-04T01:13:59",
        ] {
            assert_eq!(parse_isoformat(bad), None, "{bad:?}");
        }
        let now = at(1_796_346_839, 419_891);
        assert_eq!(parse_isoformat(&isoformat(now)), Some(now));
    }
}
