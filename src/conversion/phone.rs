//! Phone numbers to E.164 (`+5511987654321`) without a phone-metadata library.
//!
//! `phonenumber` (libphonenumber's metadata and regular expressions) cost 90 ms of CPU on the
//! first phone read, 4 MB of heap and half a megabyte of binary (docs/performance.md). What the
//! ad platforms behind RedTrack match on is E.164, and Cartpanda's buyers are overwhelmingly
//! Brazilian, so the rules here are exact for Brazil (area codes, 9-digit mobiles, 8-digit
//! landlines, trunk `0` and carrier codes, a national number whose area code is 55) and for the
//! North American plan, and for every other country check the calling code and the length of the
//! national number. A number they do not accept is returned as given, never guessed.

/// ISO 3166-1 alpha-2 → country calling code. Codes are prefix-free, so the digits after `+`
/// name one calling code at most.
#[rustfmt::skip]
const CALLING_CODES: &[(&str, &str)] = &[
    ("AD", "376"), ("AE", "971"), ("AF", "93"), ("AG", "1"), ("AI", "1"), ("AL", "355"),
    ("AM", "374"), ("AO", "244"), ("AQ", "672"), ("AR", "54"), ("AS", "1"), ("AT", "43"),
    ("AU", "61"), ("AW", "297"), ("AX", "358"), ("AZ", "994"), ("BA", "387"), ("BB", "1"),
    ("BD", "880"), ("BE", "32"), ("BF", "226"), ("BG", "359"), ("BH", "973"), ("BI", "257"),
    ("BJ", "229"), ("BL", "590"), ("BM", "1"), ("BN", "673"), ("BO", "591"), ("BQ", "599"),
    ("BR", "55"), ("BS", "1"), ("BT", "975"), ("BW", "267"), ("BY", "375"), ("BZ", "501"),
    ("CA", "1"), ("CC", "61"), ("CD", "243"), ("CF", "236"), ("CG", "242"), ("CH", "41"),
    ("CI", "225"), ("CK", "682"), ("CL", "56"), ("CM", "237"), ("CN", "86"), ("CO", "57"),
    ("CR", "506"), ("CU", "53"), ("CV", "238"), ("CW", "599"), ("CX", "61"), ("CY", "357"),
    ("CZ", "420"), ("DE", "49"), ("DJ", "253"), ("DK", "45"), ("DM", "1"), ("DO", "1"),
    ("DZ", "213"), ("EC", "593"), ("EE", "372"), ("EG", "20"), ("EH", "212"), ("ER", "291"),
    ("ES", "34"), ("ET", "251"), ("FI", "358"), ("FJ", "679"), ("FK", "500"), ("FM", "691"),
    ("FO", "298"), ("FR", "33"), ("GA", "241"), ("GB", "44"), ("GD", "1"), ("GE", "995"),
    ("GF", "594"), ("GG", "44"), ("GH", "233"), ("GI", "350"), ("GL", "299"), ("GM", "220"),
    ("GN", "224"), ("GP", "590"), ("GQ", "240"), ("GR", "30"), ("GT", "502"), ("GU", "1"),
    ("GW", "245"), ("GY", "592"), ("HK", "852"), ("HN", "504"), ("HR", "385"), ("HT", "509"),
    ("HU", "36"), ("ID", "62"), ("IE", "353"), ("IL", "972"), ("IM", "44"), ("IN", "91"),
    ("IO", "246"), ("IQ", "964"), ("IR", "98"), ("IS", "354"), ("IT", "39"), ("JE", "44"),
    ("JM", "1"), ("JO", "962"), ("JP", "81"), ("KE", "254"), ("KG", "996"), ("KH", "855"),
    ("KI", "686"), ("KM", "269"), ("KN", "1"), ("KP", "850"), ("KR", "82"), ("KW", "965"),
    ("KY", "1"), ("KZ", "7"), ("LA", "856"), ("LB", "961"), ("LC", "1"), ("LI", "423"),
    ("LK", "94"), ("LR", "231"), ("LS", "266"), ("LT", "370"), ("LU", "352"), ("LV", "371"),
    ("LY", "218"), ("MA", "212"), ("MC", "377"), ("MD", "373"), ("ME", "382"), ("MF", "590"),
    ("MG", "261"), ("MH", "692"), ("MK", "389"), ("ML", "223"), ("MM", "95"), ("MN", "976"),
    ("MO", "853"), ("MP", "1"), ("MQ", "596"), ("MR", "222"), ("MS", "1"), ("MT", "356"),
    ("MU", "230"), ("MV", "960"), ("MW", "265"), ("MX", "52"), ("MY", "60"), ("MZ", "258"),
    ("NA", "264"), ("NC", "687"), ("NE", "227"), ("NF", "672"), ("NG", "234"), ("NI", "505"),
    ("NL", "31"), ("NO", "47"), ("NP", "977"), ("NR", "674"), ("NU", "683"), ("NZ", "64"),
    ("OM", "968"), ("PA", "507"), ("PE", "51"), ("PF", "689"), ("PG", "675"), ("PH", "63"),
    ("PK", "92"), ("PL", "48"), ("PM", "508"), ("PR", "1"), ("PS", "970"), ("PT", "351"),
    ("PW", "680"), ("PY", "595"), ("QA", "974"), ("RE", "262"), ("RO", "40"), ("RS", "381"),
    ("RU", "7"), ("RW", "250"), ("SA", "966"), ("SB", "677"), ("SC", "248"), ("SD", "249"),
    ("SE", "46"), ("SG", "65"), ("SH", "290"), ("SI", "386"), ("SJ", "47"), ("SK", "421"),
    ("SL", "232"), ("SM", "378"), ("SN", "221"), ("SO", "252"), ("SR", "597"), ("SS", "211"),
    ("ST", "239"), ("SV", "503"), ("SX", "1"), ("SY", "963"), ("SZ", "268"), ("TC", "1"),
    ("TD", "235"), ("TG", "228"), ("TH", "66"), ("TJ", "992"), ("TK", "690"), ("TL", "670"),
    ("TM", "993"), ("TN", "216"), ("TO", "676"), ("TR", "90"), ("TT", "1"), ("TV", "688"),
    ("TW", "886"), ("TZ", "255"), ("UA", "380"), ("UG", "256"), ("US", "1"), ("UY", "598"),
    ("UZ", "998"), ("VA", "39"), ("VC", "1"), ("VE", "58"), ("VG", "1"), ("VI", "1"),
    ("VN", "84"), ("VU", "678"), ("WF", "681"), ("WS", "685"), ("XK", "383"), ("YE", "967"),
    ("YT", "262"), ("ZA", "27"), ("ZM", "260"), ("ZW", "263"),
];

/// How the national (significant) number of one calling code is checked.
struct Plan {
    /// Digits of the national number.
    len: (usize, usize),
    /// The prefix dialled before a national number inside the country (`0` in Brazil and most
    /// of the world, `1` in North America, `8` in Russia), stripped when present.
    trunk: Option<&'static str>,
    /// Whether a national number may start with `0` (Italian landlines do).
    leading_zero: bool,
}

const fn plan(min: usize, max: usize, trunk: Option<&'static str>) -> Plan {
    Plan {
        len: (min, max),
        trunk,
        leading_zero: false,
    }
}

/// Per-code rules where the generic ones (6–13 digits, trunk `0`) would accept a wrong number
/// for a country Cartpanda shops commonly sell to.
fn plan_for(code: &str) -> Plan {
    match code {
        "1" => plan(10, 10, Some("1")),
        "7" => plan(10, 10, Some("8")),
        "55" => plan(10, 11, Some("0")),
        "39" | "378" => Plan {
            leading_zero: true,
            ..plan(6, 11, None)
        },
        "351" | "34" | "56" | "48" => plan(9, 9, None),
        "52" | "57" | "30" => plan(10, 10, None),
        "45" | "47" => plan(8, 8, None),
        "33" | "31" | "41" | "61" | "27" | "595" => plan(9, 9, Some("0")),
        "44" => plan(9, 10, Some("0")),
        "54" => plan(10, 11, Some("0")),
        "51" | "593" | "32" => plan(8, 9, Some("0")),
        "598" | "591" => plan(8, 8, Some("0")),
        "58" | "91" => plan(10, 10, Some("0")),
        "81" => plan(9, 10, Some("0")),
        "86" => plan(10, 11, Some("0")),
        "64" => plan(8, 10, Some("0")),
        "353" => plan(7, 9, Some("0")),
        _ => plan(6, 13, Some("0")),
    }
}

/// Brazilian area codes (DDD) in service.
#[rustfmt::skip]
const BRAZIL_AREA_CODES: &[&str] = &[
    "11", "12", "13", "14", "15", "16", "17", "18", "19", "21", "22", "24", "27", "28", "31",
    "32", "33", "34", "35", "37", "38", "41", "42", "43", "44", "45", "46", "47", "48", "49",
    "51", "53", "54", "55", "61", "62", "63", "64", "65", "66", "67", "68", "69", "71", "73",
    "74", "75", "77", "79", "81", "82", "83", "84", "85", "86", "87", "88", "89", "91", "92",
    "93", "94", "95", "96", "97", "98", "99",
];

/// Whether `national` is a number of calling code `code`.
fn valid(code: &str, national: &str) -> bool {
    let plan = plan_for(code);
    let n = national.as_bytes();
    let e164_len = code.len() + n.len();
    if n.len() < plan.len.0 || n.len() > plan.len.1 || !(8..=15).contains(&e164_len) {
        return false;
    }
    if n[0] == b'0' && !plan.leading_zero {
        return false;
    }
    match code {
        // DDD, then a 9-digit mobile (9…) or an 8-digit landline (2–5…).
        "55" => {
            BRAZIL_AREA_CODES.contains(&&national[..2])
                && match n.len() {
                    11 => n[2] == b'9',
                    _ => (b'2'..=b'5').contains(&n[2]),
                }
        }
        // NXX-NXX-XXXX.
        "1" => n[0] >= b'2' && n[3] >= b'2',
        _ => true,
    }
}

/// The first of `candidates` that is a national number of `code`, in E.164.
fn first_valid<'a>(code: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates
        .into_iter()
        .find(|n| valid(code, n))
        .map(|n| format!("+{code}{n}"))
}

/// The calling code `digits` start with, and the rest.
fn split_code(digits: &str) -> Option<(&'static str, &str)> {
    (1..=3).filter(|&n| n <= digits.len()).find_map(|n| {
        CALLING_CODES
            .iter()
            .find(|(_, code)| *code == &digits[..n])
            .map(|(_, code)| (*code, &digits[n..]))
    })
}

fn strip_trunk<'a>(code: &str, digits: &'a str) -> &'a str {
    match plan_for(code).trunk {
        Some(trunk) => digits.strip_prefix(trunk).unwrap_or(digits),
        None => digits,
    }
}

/// Digits written after `+` (or an international `00`): a calling code, then the national number,
/// possibly with its trunk prefix (`+44 (0)7911 123456`).
fn international(digits: &str) -> Option<String> {
    let (code, rest) = split_code(digits)?;
    first_valid(code, [rest, strip_trunk(code, rest)])
}

/// Digits written as dialled inside `code`'s country: bare, with the trunk prefix, with the
/// calling code but no `+` (`5511987654321`), or, in Brazil, with trunk and carrier code
/// (`0 21 11 98765-4321`).
fn national(code: &str, digits: &str) -> Option<String> {
    // `00` is the international prefix wherever Cartpanda sells; no national number (nor a
    // Brazilian carrier code) starts with it.
    if let Some(e164) = digits.strip_prefix("00").and_then(international) {
        return Some(e164);
    }
    let trunked = strip_trunk(code, digits);
    let mut candidates = vec![digits, trunked];
    for d in [digits, trunked] {
        if let Some(rest) = d.strip_prefix(code) {
            candidates.extend([rest, strip_trunk(code, rest)]);
        }
    }
    if code == "55" && digits.starts_with('0') && digits.len() > 3 {
        candidates.push(&digits[3..]);
    }
    first_valid(code, candidates)
}

/// What may stand between the digits: spaces (any, the no-break space included), ASCII
/// punctuation, and the Unicode hyphens and dashes that word processors substitute for `-`.
const SEPARATORS: &str = "-.()/\u{2010}\u{2011}\u{2012}\u{2013}\u{2014}";

/// A phone in E.164, read as dialled in `country` (ISO 3166 alpha-2; unknown or absent: Brazil).
/// `None` when it is not a number these rules accept (letters, an extension, too few digits, an
/// unknown calling code, a wrong length).
pub fn to_e164(value: &str, country: Option<&str>) -> Option<String> {
    let value = value.trim();
    let (plus, body) = match value.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    if !body
        .chars()
        .all(|c| c.is_ascii_digit() || c.is_whitespace() || SEPARATORS.contains(c))
    {
        return None;
    }
    let digits: String = body.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() || digits.len() > 17 {
        return None;
    }
    if plus {
        return international(&digits);
    }
    let code = country
        .map(str::trim)
        .and_then(|c| {
            CALLING_CODES
                .iter()
                .find(|(iso, _)| iso.eq_ignore_ascii_case(c))
        })
        .map_or("55", |(_, code)| *code);
    national(code, &digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calling_codes_are_prefix_free_and_countries_unique() {
        for (iso, code) in CALLING_CODES {
            for (other_iso, other) in CALLING_CODES {
                if other != code {
                    assert!(
                        !other.starts_with(code),
                        "{iso} {code} / {other_iso} {other}"
                    );
                }
                if other_iso == iso {
                    assert_eq!(other, code, "{iso} listed twice");
                }
            }
        }
        assert!(CALLING_CODES.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
    }

    proptest::proptest! {
        /// Whatever is accepted comes out as E.164 that reads back as itself from any country.
        #[test]
        fn accepted_numbers_are_e164_and_read_back_unchanged(
            s in "\\+?[0-9 ()./-]{0,24}",
            country in proptest::sample::select(&["BR", "US", "GB", "IT", "PT", "RU", "AR", "ZZ"][..]),
            again in proptest::sample::select(&["BR", "US", "FR"][..]),
        ) {
            if let Some(e164) = to_e164(&s, Some(country)) {
                let digits = &e164[1..];
                proptest::prop_assert!(e164.starts_with('+') && !digits.starts_with('0'), "{}", e164);
                proptest::prop_assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{}", e164);
                proptest::prop_assert!((8..=15).contains(&digits.len()), "{}", e164);
                proptest::prop_assert_eq!(to_e164(&e164, Some(again)), Some(e164.clone()));
            }
        }
    }

    #[test]
    fn brazilian_numbers_follow_the_numbering_plan() {
        assert!(valid("55", "11987654321"));
        assert!(valid("55", "1134567890"));
        // No area code 20, a mobile without its leading 9, a landline starting with 9.
        for wrong in ["20987654321", "11887654321", "1194567890", "119876543"] {
            assert!(!valid("55", wrong), "{wrong}");
        }
    }
}
