use std::sync::LazyLock;

use phonenumber::metadata::DATABASE;
use phonenumber::{Mode, Type};
use quick_cache::sync::Cache;

use super::{ValidationError, Warning};

mod numbering;

/// How many valid numbers [`KNOWN`] keeps (about a hundred bytes each).
const KNOWN_NUMBERS: usize = 10_000;

/// A valid number as [`phone_number`] found it.
#[derive(Clone)]
struct Known {
    e164: String,
    fixed_line: bool,
}

/// Valid numbers by their compact international form. The answer depends on
/// the number alone, and services send to the same recipients again and
/// again (codes, alerts, receipts): a hit costs about a tenth of reading a
/// number with [`numbering`] (about 1 µs) and far less than one left to
/// `phonenumber`. Numbers seen once are evicted first (S3-FIFO); invalid
/// numbers are not kept.
static KNOWN: LazyLock<Cache<String, Known>> = LazyLock::new(|| Cache::new(KNOWN_NUMBERS));

/// Loads libphonenumber's metadata, which the first number a process
/// validates otherwise waits for (about 86 ms of CPU and 10 MB of RSS,
/// once). A blocking call, for a process that sends SMS to make at start,
/// off its request path (`mdc serve` does, while its backends open).
pub fn load_phone_metadata() {
    std::hint::black_box(&*DATABASE);
}

/// Parses a number in E.164 or international format (`+44 7700 900123`,
/// `+1 (415) 555-0123`, `0044…`) into E.164. Numbers that libphonenumber
/// calls invalid are rejected; fixed-line numbers, which usually cannot take
/// SMS, are accepted with a warning.
pub fn phone_number(
    field: &str,
    input: &str,
) -> Result<(String, Option<Warning>), ValidationError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(ValidationError::new(
            field,
            "required",
            "a phone number is required",
        ));
    }
    if trimmed.len() > 40 {
        return Err(ValidationError::new(
            field,
            "phone_format",
            "is too long to be a phone number",
        ));
    }
    // Visual separators go before parsing: the parser reads the country code
    // wrongly when a separator splits the first digits unusually (`+14155-50-123`).
    let compact: String = trimmed
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}'))
        .collect();
    let international = match compact.strip_prefix("00") {
        Some(rest) => format!("+{rest}"),
        None => compact,
    };
    if !international.starts_with('+') {
        return Err(ValidationError::new(
            field,
            "phone_country_code",
            "must be in international format with a country code, e.g. +14155550123",
        ));
    }
    let known =
        KNOWN.get_or_insert_with(international.as_str(), || look_up(field, &international))?;
    let warning = known.fixed_line.then(|| {
        Warning::new(
            field,
            "is a fixed-line number, which usually cannot receive SMS",
        )
    });
    Ok((known.e164, warning))
}

/// Parses and validates `international` (`+` and the rest of what was
/// written, separators removed).
fn look_up(field: &str, international: &str) -> Result<Known, ValidationError> {
    let reading = match read(field, international) {
        Some(reading) => reading?,
        None => read_by_phonenumber(field, international)?,
    };
    if !reading.valid {
        return Err(ValidationError::new(
            field,
            "phone_invalid",
            "is not a valid phone number for its country (wrong length or unassigned range)",
        ));
    }
    Ok(Known {
        e164: reading.e164,
        fixed_line: reading.kind == Type::FixedLine,
    })
}

/// A number read.
#[derive(Debug, PartialEq)]
struct Reading {
    e164: String,
    kind: Type,
    valid: bool,
}

/// `+` and digits, read with [`numbering`]'s patterns, or refused as
/// `phonenumber` refuses it; `None` for anything else (`phonenumber` reads
/// it).
fn read(field: &str, international: &str) -> Option<Result<Reading, ValidationError>> {
    let number = match numbering::parse(international) {
        Ok(number) => number,
        Err(numbering::Unread::Refused(e)) => return Some(Err(not_a_number(field, &e))),
        Err(numbering::Unread::Elsewhere) => return None,
    };
    let kind = numbering::number_type(number.code, number.significant())?;
    // Validity is the number's type being known, as `is_valid` has it. It
    // reads the national number with its leading zeros, where it has any.
    let valid = if number.significant().len() == number.national.len() {
        kind != Type::Unknown
    } else {
        numbering::number_type(number.code, &number.national)? != Type::Unknown
    };
    let e164 = format!("+{}{}", number.code, number.national);
    Some(Ok(Reading { e164, kind, valid }))
}

fn not_a_number(field: &str, e: &phonenumber::ParseError) -> ValidationError {
    ValidationError::new(
        field,
        "phone_format",
        format!("is not a phone number ({e})"),
    )
}

/// `international` read by `phonenumber` alone: numbers written with
/// letters or an extension, and those refused before any pattern.
fn read_by_phonenumber(field: &str, international: &str) -> Result<Reading, ValidationError> {
    let number = phonenumber::parse(None, international).map_err(|e| not_a_number(field, &e))?;
    let kind = number.number_type(&DATABASE);
    let valid = if number.national().zeros() == 0 {
        kind != Type::Unknown
    } else {
        number.is_valid()
    };
    let e164 = number.format().mode(Mode::E164).to_string();
    Ok(Reading { e164, kind, valid })
}

#[cfg(test)]
mod tests {
    use super::phone_number;

    /// One valid mobile number per country, in the formats people write.
    const VALID: &[(&str, &str, &str)] = &[
        ("US", "+1 (415) 555-0123", "+14155550123"),
        ("CA", "+1 604 555 0123", "+16045550123"),
        ("GB", "+44 7911 123456", "+447911123456"),
        ("IN", "+91 98765 43210", "+919876543210"),
        ("DE", "+49 1512 3456789", "+4915123456789"),
        ("FR", "+33 6 12 34 56 78", "+33612345678"),
        ("ES", "+34 612 34 56 78", "+34612345678"),
        ("IT", "+39 312 345 6789", "+393123456789"),
        ("NL", "+31 6 12345678", "+31612345678"),
        ("BR", "+55 11 91234-5678", "+5511912345678"),
        ("MX", "+52 55 1234 5678", "+525512345678"),
        ("AU", "+61 412 345 678", "+61412345678"),
        ("JP", "+81 90-1234-5678", "+819012345678"),
        ("CN", "+86 131 2345 6789", "+8613123456789"),
        ("SG", "+65 8123 4567", "+6581234567"),
        ("AE", "+971 50 123 4567", "+971501234567"),
        ("ZA", "+27 71 123 4567", "+27711234567"),
        ("NG", "+234 802 123 4567", "+2348021234567"),
        ("KE", "+254 712 345678", "+254712345678"),
        ("SE", "+46 70 123 45 67", "+46701234567"),
        ("PL", "+48 512 345 678", "+48512345678"),
        ("ID", "+62 812 3456 7890", "+6281234567890"),
        ("PH", "+63 917 123 4567", "+639171234567"),
        ("NZ", "+64 21 123 4567", "+64211234567"),
        ("IE", "0035 3851234567", "+353851234567"),
    ];

    #[test]
    fn normalises_numbers_of_many_countries_to_e164() {
        for (country, input, e164) in VALID {
            match phone_number("to", input) {
                Ok((got, warning)) => {
                    assert_eq!(&got, e164, "{country}: {input}");
                    assert!(
                        warning.is_none(),
                        "{country}: unexpected warning {warning:?}"
                    );
                }
                Err(e) => panic!("{country}: {input} rejected: {e}"),
            }
        }
    }

    #[test]
    fn rejects_invalid_numbers_naming_the_rule() {
        let cases = [
            ("", "required"),
            ("4155550123", "phone_country_code"),
            ("+1 415 555", "phone_invalid"),
            ("+44 1234", "phone_invalid"),
            ("+999 123456789", "phone_format"),
            ("+91 98765 432101", "phone_invalid"),
            ("call me maybe", "phone_country_code"),
            (
                "+1 415 555 0123 4567 8901 2345 6789 0123 4567",
                "phone_format",
            ),
        ];
        for (input, rule) in cases {
            let err = phone_number("to", input).expect_err(input);
            assert_eq!(err.rule, rule, "{input}: {err}");
            assert_eq!(err.field, "to");
        }
    }

    #[test]
    fn fixed_line_numbers_are_accepted_with_a_warning() {
        let (e164, warning) = phone_number("to", "+44 20 7946 0018").expect("valid London number");
        assert_eq!(e164, "+442079460018");
        let warning = warning.expect("fixed line warning");
        assert!(warning.message.contains("fixed-line"));
    }

    /// A number seen before is answered from memory as it was found the
    /// first time, whatever its separators, under the field of the call at
    /// hand; invalid numbers are not kept.
    #[test]
    fn a_known_number_is_answered_as_it_was_found() {
        let (e164, warning) = phone_number("to", "+44 20 7946 0019").expect("valid");
        assert_eq!(e164, "+442079460019");
        assert_eq!(warning.expect("fixed line").field, "to");
        assert!(super::KNOWN.get("+442079460019").is_some());
        let (again, warning) =
            phone_number("recipient", "0044 (20) 7946-0019").expect("known and valid");
        assert_eq!(again, e164);
        let warning = warning.expect("still a fixed line");
        assert_eq!(warning.field, "recipient");
        assert!(warning.message.contains("fixed-line"));
        let (mobile, warning) = phone_number("to", "+44 7911 123457").expect("valid");
        assert!(super::KNOWN.get("+447911123457").is_some());
        assert_eq!(
            phone_number("to", "+447911123457").expect("known"),
            (mobile, warning)
        );
        let err = phone_number("to", "+44 1235").expect_err("invalid");
        assert_eq!(err.rule, "phone_invalid");
        assert!(super::KNOWN.get("+441235").is_none());
        let err = phone_number("to", "+44 1235").expect_err("still invalid");
        assert_eq!(err.rule, "phone_invalid");
    }

    /// Every number written as `+` and digits is read with
    /// [`super::numbering`]'s patterns, not `phonenumber`'s, and read, or
    /// refused, as `phonenumber` alone reads it; only what it refuses before
    /// trying any pattern is left to it. (That `phonenumber`'s cache then
    /// stays empty is tested in a program of its own, tests/phone_patterns.rs.)
    #[test]
    fn numbers_are_read_as_phonenumber_reads_them() {
        use super::numbering::tests::{numbers, phonenumber_cache_for_every_pattern, EDGES};
        phonenumber_cache_for_every_pattern();
        let (mut read, mut valid, mut refused) = (0, 0, 0);
        for input in numbers().iter().map(String::as_str).chain(EDGES) {
            let theirs = super::read_by_phonenumber("to", input);
            let Some(ours) = super::read("to", input) else {
                // Left to phonenumber: only what it refuses before any pattern.
                assert!(theirs.is_err(), "{input}: {theirs:?}");
                continue;
            };
            match (ours, theirs) {
                (Ok(ours), Ok(theirs)) => {
                    assert_eq!(ours, theirs, "{input}");
                    read += 1;
                    valid += usize::from(theirs.valid);
                }
                (Err(ours), Err(theirs)) => {
                    assert_eq!(
                        (ours.rule, ours.message),
                        (theirs.rule, theirs.message),
                        "{input}"
                    );
                    refused += 1;
                }
                (ours, theirs) => panic!("{input}: {ours:?} against {theirs:?}"),
            }
        }
        assert!(read > 5_000 && valid > 1_000, "{valid} valid of {read}");
        assert!(refused >= 4, "{refused}");
    }

    /// Italian fixed lines keep their leading zero in the national number
    /// (`+39 06…`); validity is checked on the number written with it.
    #[test]
    fn numbers_with_a_leading_national_zero() {
        let (e164, warning) = phone_number("to", "+39 06 6988 1234").expect("valid Rome number");
        assert_eq!(e164, "+390669881234");
        assert!(warning.is_none(), "{warning:?}");
        let err = phone_number("to", "+39 06 12").expect_err("too short");
        assert_eq!(err.rule, "phone_invalid");
    }

    /// The shortcut above holds: for numbers without leading national
    /// zeros, a known type is exactly what `is_valid` answers (checked
    /// again whenever phonenumber changes).
    #[test]
    fn a_known_type_is_validity_without_leading_zeros() {
        use phonenumber::{metadata::DATABASE, Type};
        let (mut checked, mut valid) = (0, 0);
        let prefixes = [
            "+1415555", "+1200555", "+1604555", "+1876555", "+4479111", "+4420794", "+4412",
            "+9198765", "+9112345", "+4915123", "+3361234", "+5511912", "+6141234", "+8190123",
            "+8613123", "+2348021", "+3531234", "+39312", "+7912",
        ];
        for prefix in prefixes {
            for n in 0..300 {
                let Ok(number) = phonenumber::parse(None, format!("{prefix}{n:04}")) else {
                    continue;
                };
                if number.national().zeros() > 0 {
                    continue;
                }
                let known = number.number_type(&DATABASE) != Type::Unknown;
                assert_eq!(known, number.is_valid(), "{prefix}{n:04}");
                checked += 1;
                valid += usize::from(known);
            }
        }
        assert!(checked > 5000, "{checked}");
        // Both answers occur.
        assert!(
            valid > 1000 && checked - valid > 1000,
            "{valid} of {checked}"
        );
    }
}
