//! Cartpanda timestamps (`"2022-07-16 01:18:23"`, UTC without offset, or ISO 8601 with `Z` or an
//! offset) read into Unix seconds, and written back in the forms the S2S macros use.

/// Reads a timestamp; `None` when it is not one of the known shapes.
pub fn parse_unix(text: &str) -> Option<i64> {
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
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &t[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[digits..];
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
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
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC.
pub fn format_utc(unix: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

/// ISO 8601 in UTC with an explicit offset: `YYYY-MM-DDTHH:MM:SS+00:00`.
pub fn format_full(unix: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}+00:00")
}

fn civil(unix: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    (y, m, d, secs / 3600, secs % 3600 / 60, secs % 60)
}

// Howard Hinnant's algorithms for the proleptic Gregorian calendar.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
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
