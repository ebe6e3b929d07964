//! Property tests: the validators never panic, and what they accept is
//! normalised (accepting their own output unchanged).

use mdc_client::validate::{email_address, phone_number, push_target, SmsShape};
use proptest::prelude::*;

const VALID_E164: &[&str] = &[
    "+14155550123",
    "+447911123456",
    "+919876543210",
    "+4915123456789",
    "+61412345678",
    "+5511912345678",
];

fn is_e164(s: &str) -> bool {
    let digits = &s[1..];
    s.starts_with('+')
        && (7..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0')
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn phone_parser_never_panics_and_outputs_e164(input in "\\PC{0,40}") {
        if let Ok((e164, _)) = phone_number("to", &input) {
            prop_assert!(is_e164(&e164), "{e164}");
            prop_assert_eq!(phone_number("to", &e164).map(|(n, _)| n), Ok(e164.clone()));
        }
    }

    #[test]
    fn phone_parser_ignores_formatting(index in 0..VALID_E164.len(), seps in proptest::collection::vec(prop_oneof![Just(""), Just(" "), Just("-"), Just(".")], 15)) {
        let number = VALID_E164[index];
        let mut formatted = String::from("+");
        for (i, digit) in number[1..].chars().enumerate() {
            formatted.push(digit);
            // Nobody splits a country code; separators start after it.
            if i >= 2 {
                formatted.push_str(seps[i % seps.len()]);
            }
        }
        prop_assert_eq!(phone_number("to", &formatted).map(|(n, _)| n), Ok(number.to_owned()));
        let with_00 = format!("00{}", &formatted[1..]);
        prop_assert_eq!(phone_number("to", &with_00).map(|(n, _)| n), Ok(number.to_owned()));
    }

    #[test]
    fn email_parser_never_panics_and_is_idempotent(input in "\\PC{0,80}") {
        if let Ok(address) = email_address("to", &input) {
            prop_assert!(address.len() <= 254);
            let (local, domain) = address.rsplit_once('@').expect("has @");
            prop_assert!(local.len() <= 64);
            prop_assert!(domain.is_ascii());
            prop_assert_eq!(email_address("to", &address), Ok(address.clone()));
        }
    }

    #[test]
    fn plausible_addresses_are_accepted(local in "[a-z0-9][a-z0-9._+-]{0,30}[a-z0-9]", domain in "[a-z][a-z0-9-]{0,20}[a-z0-9]", tld in "[a-z]{2,6}") {
        prop_assume!(!local.contains(".."));
        // IDNA reserves labels with hyphens in positions 3 and 4 (`xn--`).
        prop_assume!(domain.get(2..4) != Some("--"));
        let input = format!("{local}@{domain}.{tld}");
        prop_assert_eq!(email_address("to", &input), Ok(input.clone()));
    }

    #[test]
    fn push_target_never_panics(input in "\\PC{0,100}") {
        let _ = push_target("to", &input);
    }

    #[test]
    fn gsm7_text_counts_one_septet_per_basic_character(body in "[A-Za-z0-9 .,!?@£$]{1,700}") {
        let shape = SmsShape::of(&body);
        let n = body.chars().count() as u32;
        prop_assert_eq!(shape.units, n);
        let expected = if n <= 160 { 1 } else { n.div_ceil(153) };
        prop_assert_eq!(shape.segments, expected);
    }

    #[test]
    fn segments_never_shrink_as_text_grows(body in "\\PC{1,400}", extra in "\\PC{1,50}") {
        let longer = format!("{body}{extra}");
        prop_assert!(SmsShape::of(&longer).segments >= SmsShape::of(&body).segments);
    }
}
