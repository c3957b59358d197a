//! Shop time zones, for Cartpanda's naive times (`2022-07-16 01:18:23`, no offset) and the order
//! list's `created_at_min/max` filters. A small table of the zones of Cartpanda's markets (Brazil
//! first, then Portugal and Europe, the Americas, Angola and Mozambique), each with the rule it
//! follows today, written like a POSIX `TZ` string: a standard offset and, where the zone keeps
//! summer time, the rule of its start and end (`Mm.w.d/time`). No zone database ships with the
//! Lambda (docs/performance.md says why): a zone outside the table is unknown, and whoever reads a
//! time in it treats it as such (reconciliation widens its windows by [`MAX_OFFSET_S`]).
//!
//! Only today's rules: a time before a zone last changed its rules (Brazil dropped summer time in
//! 2019, Mexico in 2022, Paraguay in 2024) reads up to an hour off. Reconciliation lists recent
//! windows, and the "older than the ledger's memory" rule counts days, so neither notices.

use time::{Date, Month};

/// The largest distance of any zone from UTC (UTC+14, Kiribati), in seconds: how far a window is
/// widened on each side while its shop's zone is unknown.
pub const MAX_OFFSET_S: i64 = 14 * 3600;

/// A day of a year on which summer time starts or ends: the `week`-th (5 = last) `weekday` of
/// `month`, at `at_s` seconds after midnight of the local time in force before the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Change {
    month: u8,
    week: u8,
    /// 0 = Sunday … 6 = Saturday.
    weekday: u8,
    at_s: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Summer {
    /// Added to the standard offset while summer time is on.
    save_s: i32,
    start: Change,
    end: Change,
}

/// A zone of the table.
#[derive(Debug, PartialEq, Eq)]
pub struct Zone {
    pub name: &'static str,
    /// Standard offset east of UTC, in seconds.
    std_s: i32,
    summer: Option<Summer>,
}

const fn at(month: u8, week: u8, weekday: u8, hour: i32) -> Change {
    Change {
        month,
        week,
        weekday,
        at_s: hour * 3600,
    }
}

const H: i32 = 3600;
/// The European Union's rule: last Sunday of March to last Sunday of October, 01:00 UTC.
const fn eu(std_s: i32) -> Option<Summer> {
    let hour = 1 + std_s / H;
    Some(Summer {
        save_s: H,
        start: at(3, 5, 0, hour),
        end: at(10, 5, 0, hour + 1),
    })
}
/// The United States' and Canada's rule: second Sunday of March to first Sunday of November, 02:00.
const US: Option<Summer> = Some(Summer {
    save_s: H,
    start: at(3, 2, 0, 2),
    end: at(11, 1, 0, 2),
});
/// Chile's rule: first Saturday of September 24:00 to first Saturday of April 24:00.
const CHILE: Option<Summer> = Some(Summer {
    save_s: H,
    start: at(9, 1, 6, 24),
    end: at(4, 1, 6, 24),
});

const fn zone(name: &'static str, std_h: i32, summer: Option<Summer>) -> Zone {
    Zone {
        name,
        std_s: std_h * H,
        summer,
    }
}

/// The table (names as the IANA database spells them), Brazil first.
static ZONES: &[Zone] = &[
    zone("America/Sao_Paulo", -3, None),
    zone("America/Bahia", -3, None),
    zone("America/Fortaleza", -3, None),
    zone("America/Recife", -3, None),
    zone("America/Belem", -3, None),
    zone("America/Maceio", -3, None),
    zone("America/Araguaina", -3, None),
    zone("America/Santarem", -3, None),
    zone("America/Manaus", -4, None),
    zone("America/Cuiaba", -4, None),
    zone("America/Campo_Grande", -4, None),
    zone("America/Porto_Velho", -4, None),
    zone("America/Boa_Vista", -4, None),
    zone("America/Rio_Branco", -5, None),
    zone("America/Eirunepe", -5, None),
    zone("America/Noronha", -2, None),
    zone("UTC", 0, None),
    zone("Europe/Lisbon", 0, eu(0)),
    zone("Atlantic/Madeira", 0, eu(0)),
    zone("Atlantic/Azores", -1, eu(-H)),
    zone("Europe/London", 0, eu(0)),
    zone("Europe/Dublin", 0, eu(0)),
    zone("Europe/Madrid", 1, eu(H)),
    zone("Europe/Paris", 1, eu(H)),
    zone("Europe/Berlin", 1, eu(H)),
    zone("Europe/Rome", 1, eu(H)),
    zone("Europe/Amsterdam", 1, eu(H)),
    zone("Europe/Brussels", 1, eu(H)),
    zone("Europe/Zurich", 1, eu(H)),
    zone("Europe/Vienna", 1, eu(H)),
    zone("Europe/Warsaw", 1, eu(H)),
    zone("Europe/Athens", 2, eu(2 * H)),
    zone("Europe/Bucharest", 2, eu(2 * H)),
    zone("America/New_York", -5, US),
    zone("America/Toronto", -5, US),
    zone("America/Chicago", -6, US),
    zone("America/Denver", -7, US),
    zone("America/Phoenix", -7, None),
    zone("America/Los_Angeles", -8, US),
    zone("America/Mexico_City", -6, None),
    zone("America/Bogota", -5, None),
    zone("America/Lima", -5, None),
    zone("America/Guayaquil", -5, None),
    zone("America/Panama", -5, None),
    zone("America/Caracas", -4, None),
    zone("America/La_Paz", -4, None),
    zone("America/Santo_Domingo", -4, None),
    zone("America/Puerto_Rico", -4, None),
    zone("America/Santiago", -4, CHILE),
    zone("America/Argentina/Buenos_Aires", -3, None),
    zone("America/Montevideo", -3, None),
    zone("America/Asuncion", -3, None),
    zone("America/Costa_Rica", -6, None),
    zone("America/Guatemala", -6, None),
    zone("Africa/Luanda", 1, None),
    zone("Africa/Maputo", 2, None),
];

/// Other names of zones of the table.
const ALIASES: &[(&str, &str)] = &[
    ("Brazil/East", "America/Sao_Paulo"),
    ("Brazil/West", "America/Manaus"),
    ("America/Buenos_Aires", "America/Argentina/Buenos_Aires"),
    ("Etc/UTC", "UTC"),
    ("Etc/GMT", "UTC"),
    ("GMT", "UTC"),
    ("Z", "UTC"),
    ("Portugal", "Europe/Lisbon"),
];

impl Zone {
    /// UTC.
    pub fn utc() -> &'static Zone {
        Zone::find("UTC").unwrap_or(&ZONES[0])
    }

    /// The zone a text names: an IANA name of the table or one of its aliases, case aside, also
    /// inside a label such as `(GMT-03:00) America/Sao_Paulo`. `None` for any other text.
    pub fn find(text: &str) -> Option<&'static Zone> {
        let named = |name: &str| {
            let name = ALIASES
                .iter()
                .find(|(alias, _)| alias.eq_ignore_ascii_case(name))
                .map_or(name, |(_, real)| *real);
            ZONES.iter().find(|z| z.name.eq_ignore_ascii_case(name))
        };
        let text = text.trim();
        named(text).or_else(|| {
            text.split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | ','))
                .filter(|word| word.contains('/'))
                .find_map(named)
        })
    }

    /// The offset east of UTC at the instant `utc_s`, in seconds.
    pub fn offset_at(&self, utc_s: i64) -> i32 {
        let Some(summer) = self.summer else {
            return self.std_s;
        };
        let std = i64::from(self.std_s);
        let Ok(local) = time::OffsetDateTime::from_unix_timestamp(utc_s + std) else {
            return self.std_s;
        };
        let year = local.year();
        let (Some(start), Some(end)) = (
            change_s(summer.start, year).map(|l| l - std),
            change_s(summer.end, year).map(|l| l - std - i64::from(summer.save_s)),
        ) else {
            return self.std_s;
        };
        let on = if start < end {
            (start..end).contains(&utc_s)
        } else {
            utc_s >= start || utc_s < end
        };
        if on {
            self.std_s + summer.save_s
        } else {
            self.std_s
        }
    }

    /// The instant of a local wall time (`local_s`: its fields read as if UTC). A time summer
    /// time skips reads with the standard offset; one it repeats, as its earlier instant.
    pub fn instant(&self, local_s: i64) -> i64 {
        let std = i64::from(self.std_s);
        let save = self.summer.map_or(0, |s| i64::from(s.save_s));
        [local_s - std - save, local_s - std]
            .into_iter()
            .find(|&u| u + i64::from(self.offset_at(u)) == local_s)
            .unwrap_or(local_s - std)
    }

    /// `YYYY-MM-DD HH:MM:SS` in this zone's local time.
    pub fn format(&self, utc_s: i64) -> String {
        crate::inbound::datetime::format_utc(utc_s + i64::from(self.offset_at(utc_s)))
    }
}

/// The local wall time (as if UTC, in seconds) of a change in `year`.
fn change_s(change: Change, year: i32) -> Option<i64> {
    let month = Month::try_from(change.month).ok()?;
    let first = Date::from_calendar_date(year, month, 1).ok()?;
    let first_wd = i64::from(first.weekday().number_days_from_sunday());
    let wanted = i64::from(change.weekday);
    let mut day = 1 + (wanted - first_wd).rem_euclid(7) + 7 * (i64::from(change.week) - 1);
    let days = i64::from(time::util::days_in_month(month, year));
    while day > days {
        day -= 7;
    }
    let midnight = first.midnight().assume_utc().unix_timestamp();
    Some(midnight + (day - 1) * 86_400 + i64::from(change.at_s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbound::datetime::parse_unix;

    fn utc(text: &str) -> i64 {
        parse_unix(text).unwrap()
    }

    #[test]
    fn zones_are_found_by_name_alias_or_label() {
        assert_eq!(
            Zone::find("America/Sao_Paulo").unwrap().name,
            "America/Sao_Paulo"
        );
        assert_eq!(
            Zone::find(" america/sao_paulo ").unwrap().name,
            "America/Sao_Paulo"
        );
        assert_eq!(Zone::find("Brazil/East").unwrap().name, "America/Sao_Paulo");
        assert_eq!(
            Zone::find("(GMT-03:00) America/Sao_Paulo").unwrap().name,
            "America/Sao_Paulo"
        );
        assert_eq!(Zone::find("Etc/UTC").unwrap().name, "UTC");
        for unknown in ["", "Brasilia", "Asia/Kathmandu", "-03:00", "GMT-3"] {
            assert!(Zone::find(unknown).is_none(), "{unknown}");
        }
    }

    #[test]
    fn offsets_follow_todays_rules() {
        let sp = Zone::find("America/Sao_Paulo").unwrap();
        assert_eq!(sp.offset_at(utc("2026-01-15 12:00:00")), -3 * H);
        assert_eq!(sp.offset_at(utc("2026-07-15 12:00:00")), -3 * H);
        let lisbon = Zone::find("Europe/Lisbon").unwrap();
        // 2026: summer time from 29 March 01:00 UTC to 25 October 01:00 UTC.
        assert_eq!(lisbon.offset_at(utc("2026-03-29 00:59:59")), 0);
        assert_eq!(lisbon.offset_at(utc("2026-03-29 01:00:00")), H);
        assert_eq!(lisbon.offset_at(utc("2026-10-25 00:59:59")), H);
        assert_eq!(lisbon.offset_at(utc("2026-10-25 01:00:00")), 0);
        let madrid = Zone::find("Europe/Madrid").unwrap();
        assert_eq!(madrid.offset_at(utc("2026-03-29 01:00:00")), 2 * H);
        assert_eq!(madrid.offset_at(utc("2026-03-29 00:59:59")), H);
        let ny = Zone::find("America/New_York").unwrap();
        // 2026: 8 March 07:00 UTC to 1 November 06:00 UTC.
        assert_eq!(ny.offset_at(utc("2026-03-08 06:59:59")), -5 * H);
        assert_eq!(ny.offset_at(utc("2026-03-08 07:00:00")), -4 * H);
        assert_eq!(ny.offset_at(utc("2026-11-01 05:59:59")), -4 * H);
        assert_eq!(ny.offset_at(utc("2026-11-01 06:00:00")), -5 * H);
        let santiago = Zone::find("America/Santiago").unwrap();
        // Southern summer: 2026-04-05 03:00 UTC ends it, 2026-09-06 04:00 UTC starts it.
        assert_eq!(santiago.offset_at(utc("2026-01-15 12:00:00")), -3 * H);
        assert_eq!(santiago.offset_at(utc("2026-04-05 02:59:59")), -3 * H);
        assert_eq!(santiago.offset_at(utc("2026-04-05 03:00:00")), -4 * H);
        assert_eq!(santiago.offset_at(utc("2026-09-06 03:59:59")), -4 * H);
        assert_eq!(santiago.offset_at(utc("2026-09-06 04:00:00")), -3 * H);
    }

    #[test]
    fn local_times_read_back_and_gaps_and_repeats_have_one_reading() {
        let sp = Zone::find("America/Sao_Paulo").unwrap();
        let t = utc("2026-09-16 13:20:00");
        assert_eq!(sp.format(t), "2026-09-16 10:20:00");
        assert_eq!(sp.instant(utc("2026-09-16 10:20:00")), t);
        let ny = Zone::find("America/New_York").unwrap();
        // 02:30 on 8 March 2026 does not exist: read with the standard offset.
        assert_eq!(
            ny.instant(utc("2026-03-08 02:30:00")),
            utc("2026-03-08 07:30:00")
        );
        // 01:30 on 1 November 2026 happens twice: the earlier one.
        assert_eq!(
            ny.instant(utc("2026-11-01 01:30:00")),
            utc("2026-11-01 05:30:00")
        );
        for zone in ZONES {
            for t in (1_767_225_600..1_798_761_600).step_by(86_400 * 7 + 3_599) {
                let back = zone.instant(utc(&zone.format(t)));
                assert_eq!(zone.format(back), zone.format(t), "{}", zone.name);
                assert!((back - t).abs() <= 3600, "{}", zone.name);
            }
        }
    }
}
