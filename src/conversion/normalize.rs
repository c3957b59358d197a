//! PII normalised the way ad platforms' conversion APIs match it (RedTrack forwards `email`,
//! `phone`, `fname`, `lname` to them): email trimmed and lower-cased, phone in E.164 from the
//! order's country, names trimmed with inner whitespace collapsed. A value that cannot be
//! normalised is returned as given: never dropped.

use crate::conversion::phone;

/// `  Joao.Silva@Gmail.COM ` → `joao.silva@gmail.com`.
pub fn email(value: &str) -> String {
    value.trim().to_lowercase()
}

/// `  Maria   das  Dores ` → `Maria das Dores`.
pub fn name(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A phone in E.164 (`+5511987654321`), read as dialled in `country` (ISO 3166 alpha-2;
/// unknown or absent → Brazil) by the rules of [`crate::conversion::phone`]. A number those rules do not
/// accept is returned trimmed, as given.
pub fn phone(value: &str, country_code: Option<&str>) -> String {
    let trimmed = value.trim();
    if trimmed.len() > 40 {
        return trimmed.to_owned();
    }
    phone::to_e164(trimmed, country_code).unwrap_or_else(|| trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brazilian_and_international_phones_become_e164() {
        let table = [
            ("(11) 98765-4321", None, "+5511987654321"),
            ("11 98765-4321", Some("BR"), "+5511987654321"),
            ("11987654321", Some("br"), "+5511987654321"),
            ("5511987654321", Some("BR"), "+5511987654321"),
            ("+55 11 98765-4321", Some("BR"), "+5511987654321"),
            ("+55 (11) 9 8765-4321", Some("BR"), "+5511987654321"),
            ("055 11 98765 4321", Some("BR"), "+5511987654321"),
            ("(21) 99612-3048", Some("BR"), "+5521996123048"),
            ("(11) 3456-7890", Some("BR"), "+551134567890"),
            ("(55) 99612-3048", Some("BR"), "+5555996123048"),
            ("55 55 99612-3048", Some("BR"), "+5555996123048"),
            ("  (31)98844-1290 ", Some("BR"), "+5531988441290"),
            ("+1 (415) 555-2671", Some("BR"), "+14155552671"),
            ("(415) 555-2671", Some("US"), "+14155552671"),
            ("+351 912 345 678", None, "+351912345678"),
            ("912 345 678", Some("PT"), "+351912345678"),
            ("+44 7911 123456", Some("GB"), "+447911123456"),
            ("07911 123456", Some("GB"), "+447911123456"),
            ("+44 (0)7911 123456", None, "+447911123456"),
            ("0 21 11 98765-4321", Some("BR"), "+5511987654321"),
            ("015 11 98765-4321", None, "+5511987654321"),
            ("00 351 912 345 678", Some("BR"), "+351912345678"),
            ("06 1234 5678", Some("IT"), "+390612345678"),
            ("+39 06 1234 5678", None, "+390612345678"),
            ("8 (912) 345-67-89", Some("RU"), "+79123456789"),
            ("1 (415) 555-2671", Some("us"), "+14155552671"),
            ("06 12 34 56 78", Some("FR"), "+33612345678"),
            ("011 2345-6789", Some("AR"), "+541123456789"),
            ("55 1234 5678", Some("MX"), "+525512345678"),
            (" 912.345.678 ", Some(" PT "), "+351912345678"),
            ("(11)\u{a0}98765\u{2013}4321", None, "+5511987654321"),
        ];
        for (input, country, expected) in table {
            assert_eq!(phone(input, country), expected, "{input:?} in {country:?}");
        }
    }

    #[test]
    fn phones_that_cannot_be_read_are_kept_as_given() {
        for input in [
            "",
            "n/a",
            "123",
            "+00 000",
            "abc 1234 5678",
            "(11) 98765-4321 ramal 2",
            "+55 20 98765-4321",
            "+55 11 8765-4321",
            "+1 (015) 555-2671",
            "+999 1234 5678",
            "11 98765-4321 / 11 3456-7890",
            &"9".repeat(60),
        ] {
            assert_eq!(phone(input, Some("BR")), input.trim(), "{input:?}");
        }
        assert_eq!(phone(" 12345 ", Some("ZZ")), "12345");
    }

    #[test]
    fn emails_and_names() {
        assert_eq!(email("  Joao.Silva@Gmail.COM "), "joao.silva@gmail.com");
        assert_eq!(email("ÉLODIE@Example.fr"), "élodie@example.fr");
        assert_eq!(name("  Maria   das\tDores "), "Maria das Dores");
        assert_eq!(name("João"), "João");
        assert_eq!(name("   "), "");
    }

    /// Every Brazilian area code (DDD) in service.
    const BRAZILIAN_AREA_CODES: &[u32] = &[
        11, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 24, 27, 28, 31, 32, 33, 34, 35, 37, 38, 41, 42,
        43, 44, 45, 46, 47, 48, 49, 51, 53, 54, 55, 61, 62, 63, 64, 65, 66, 67, 68, 69, 71, 73, 74,
        75, 77, 79, 81, 82, 83, 84, 85, 86, 87, 88, 89, 91, 92, 93, 94, 95, 96, 97, 98, 99,
    ];

    proptest::proptest! {
        #[test]
        fn normalising_twice_changes_nothing(s in "\\PC{0,40}", c in "[A-Z]{2}") {
            let e = email(&s);
            proptest::prop_assert_eq!(email(&e), e.clone());
            let n = name(&s);
            proptest::prop_assert_eq!(name(&n), n.clone());
            let p = phone(&s, Some(&c));
            proptest::prop_assert_eq!(phone(&p, Some(&c)), p.clone());
        }

        #[test]
        fn any_brazilian_mobile_in_any_common_format_becomes_the_same_e164(
            ddd in proptest::sample::select(BRAZILIAN_AREA_CODES), rest in 60_000_000u32..=99_999_999, style in 0usize..6
        ) {
            let local = format!("9{rest:08}");
            let input = match style {
                0 => format!("({ddd}) {}-{}", &local[..5], &local[5..]),
                1 => format!("{ddd}{local}"),
                2 => format!("55{ddd}{local}"),
                3 => format!("+55 {ddd} {} {}", &local[..5], &local[5..]),
                4 => format!("0{ddd} {}-{}", &local[..5], &local[5..]),
                _ => format!("+55 ({ddd}) {} {}-{}", &local[..1], &local[1..5], &local[5..]),
            };
            proptest::prop_assert_eq!(phone(&input, Some("BR")), format!("+55{ddd}{local}"), "{}", input);
        }
    }
}
