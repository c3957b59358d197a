//! Cartpanda timestamps (`"2022-07-16 01:18:23"` without offset, or ISO 8601 with `Z` or an
//! offset) read into Unix seconds, and written back in the forms the S2S macros use. An offset is
//! always honoured; a naive time is read in the zone the caller knows for it ([`read_in`]: the
//! shop's, see [`crate::inbound::zone`]), else as UTC ([`parse_unix`]). The calendar (which days
//! exist, Unix seconds to a date and back) is the `time` crate's; this module only reads the fixed
//! layout of the text.

use crate::inbound::zone::Zone;
use time::{Date, Month, OffsetDateTime, Time};

/// A timestamp as written: its fields (read as if UTC, in seconds), and its offset east of UTC
/// when it carries one (`Z` is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub fields_s: i64,
    pub offset_s: Option<i64>,
}

impl Stamp {
    /// The instant: its own offset, else `zone`'s local time, else UTC.
    pub fn instant(self, zone: Option<&Zone>) -> i64 {
        match (self.offset_s, zone) {
            (Some(offset), _) => self.fields_s - offset,
            (None, Some(zone)) => zone.instant(self.fields_s),
            (None, None) => self.fields_s,
        }
    }
}

/// Reads a timestamp; `None` when it is not one of the known shapes or names a day that does not
/// exist (31 February). A naive time reads as UTC.
pub fn parse_unix(text: &str) -> Option<i64> {
    read_in(text, None)
}

/// Reads a timestamp, a naive one in `zone`'s local time (UTC without one).
pub fn read_in(text: &str, zone: Option<&Zone>) -> Option<i64> {
    let unix = parse_stamp(text)?.instant(zone);
    // Only instants the formatters below can write back.
    OffsetDateTime::from_unix_timestamp(unix).ok()?;
    Some(unix)
}

/// Reads a timestamp's fields and offset.
pub fn parse_stamp(text: &str) -> Option<Stamp> {
    let t = text.trim();
    let b = t.as_bytes();
    if b.len() < 19 || !matches!(b[10], b' ' | b'T') {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<i64> {
        let s = t.get(from..from + len)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let month = Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date =
        Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?).ok()?;
    // A leap second (`:60`) reads as the next minute's first second, as before.
    let time = Time::from_hms(u8::try_from(hour).ok()?, u8::try_from(minute).ok()?, 0).ok()?;
    if second > 60 {
        return None;
    }
    let fields_s = date.with_time(time).assume_utc().unix_timestamp() + second;
    Some(Stamp {
        fields_s,
        offset_s: offset_of(&t[19..])?,
    })
}

/// The offset after the seconds (and an optional fraction): `None` inside for none, `Some(0)` for
/// `Z`; the outer `None` when it is not an offset.
fn offset_of(rest: &str) -> Option<Option<i64>> {
    let mut rest = rest;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[digits..];
    }
    match rest {
        "" => Some(None),
        "Z" | "z" => Some(Some(0)),
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hm = rest[1..].replace(':', "");
            if hm.len() != 4 || !hm.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let h: i64 = hm[..2].parse().ok()?;
            let m: i64 = hm[2..].parse().ok()?;
            Some(Some(sign * (h * 3600 + m * 60)))
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS` in UTC; empty for an instant outside years -9999 to 9999.
pub fn format_utc(unix: i64) -> String {
    written(unix, ' ', "")
}

/// ISO 8601 in UTC with an explicit offset: `YYYY-MM-DDTHH:MM:SS+00:00`; empty for an instant
/// outside years -9999 to 9999.
pub fn format_full(unix: i64) -> String {
    written(unix, 'T', "+00:00")
}

fn written(unix: i64, separator: char, offset: &str) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp(unix) else {
        return String::new();
    };
    let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
    let (h, mi, s) = (t.hour(), t.minute(), t.second());
    format!("{y:04}-{mo:02}-{d:02}{separator}{h:02}:{mi:02}:{s:02}{offset}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_shapes_seen() {
        assert_eq!(parse_unix("2022-07-16 01:18:23"), Some(1_657_934_303));
        assert_eq!(parse_unix("2022-07-16T01:18:23Z"), Some(1_657_934_303));
        assert_eq!(
            parse_unix("2022-07-16T01:18:23.123456Z"),
            Some(1_657_934_303)
        );
        assert_eq!(parse_unix("2022-07-15T22:18:23-03:00"), Some(1_657_934_303));
        assert_eq!(parse_unix("2022-07-16T04:18:23+0300"), Some(1_657_934_303));
        assert_eq!(parse_unix("1970-01-01 00:00:00"), Some(0));
        for bad in [
            "",
            "yesterday",
            "2022-13-01 00:00:00",
            "2022-07-16",
            "2022-07-16 01:18:23 junk",
        ] {
            assert_eq!(parse_unix(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_day_that_does_not_exist_is_no_date() {
        for impossible in [
            "2023-02-31 10:00:00",
            "2023-02-29T10:00:00Z",
            "2024-04-31 00:00:00",
            "2024-02-30T00:00:00.000000Z",
            "2022-07-00 01:18:23",
        ] {
            assert_eq!(parse_unix(impossible), None, "{impossible}");
        }
        assert_eq!(parse_unix("2024-02-29 00:00:00"), Some(1_709_164_800));
        assert_eq!(
            parse_unix("2022-07-16T01:18:23.000000Z"),
            Some(1_657_934_303)
        );
        // A leap second reads as the next minute's first second, as it always did.
        assert_eq!(parse_unix("2016-12-31 23:59:60"), Some(1_483_228_800));
    }

    #[test]
    fn naive_times_read_in_the_zone_given_and_offsets_always_win() {
        let sp = Zone::find("America/Sao_Paulo");
        assert_eq!(
            read_in("2026-09-16 10:20:00", sp),
            parse_unix("2026-09-16 13:20:00")
        );
        assert_eq!(
            read_in("2026-09-16T10:20:00-03:00", sp),
            parse_unix("2026-09-16 13:20:00")
        );
        assert_eq!(
            read_in("2026-09-16T10:20:00.000000Z", sp),
            parse_unix("2026-09-16 10:20:00")
        );
        assert_eq!(
            read_in("2026-09-16 10:20:00", None),
            parse_unix("2026-09-16 10:20:00")
        );
        assert_eq!(parse_stamp("2026-09-16 10:20:00").unwrap().offset_s, None);
        assert_eq!(
            parse_stamp("2026-09-16T10:20:00Z").unwrap().offset_s,
            Some(0)
        );
        assert_eq!(
            parse_stamp("2026-09-16T10:20:00-0300").unwrap().offset_s,
            Some(-10_800)
        );
    }

    #[test]
    fn writes_back_what_it_read() {
        let t = parse_unix("2024-02-29 23:59:59").unwrap();
        assert_eq!(format_utc(t), "2024-02-29 23:59:59");
        assert_eq!(format_full(t), "2024-02-29T23:59:59+00:00");
    }

    proptest::proptest! {
        #[test]
        fn round_trips(t in 0i64..4_102_444_800) {
            proptest::prop_assert_eq!(parse_unix(&format_utc(t)), Some(t));
            proptest::prop_assert_eq!(parse_unix(&format_full(t)), Some(t));
        }
    }
}
