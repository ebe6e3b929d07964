use mdc_core::message::SmsEncoding;

use super::{ValidationError, Warning};

/// Characters per segment of a single-part and a multi-part (concatenated) SMS.
pub const SMS_GSM7_SEGMENT: (u32, u32) = (160, 153);
pub const SMS_UCS2_SEGMENT: (u32, u32) = (70, 67);

/// Longest email subject: RFC 5322's line limit.
const MAX_SUBJECT: usize = 998;

/// How an SMS body goes over the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmsShape {
    pub encoding: SmsEncoding,
    /// Septets (GSM-7, escapes count twice) or UTF-16 code units (UCS-2).
    pub units: u32,
    pub segments: u32,
}

/// Septets `c` takes in GSM 03.38 (1, or 2 for the escape table), or `None`
/// when the character needs UCS-2.
fn gsm7_septets(c: char) -> Option<u32> {
    let mut writer = gsm7::Gsm7Writer::new(Vec::new());
    writer.write_char(c).ok()?;
    // One character packs into one byte (7 bits) or two (escape + 7 bits).
    writer.into_writer().ok().map(|bytes| bytes.len() as u32)
}

impl SmsShape {
    pub fn of(body: &str) -> Self {
        let septets: Option<u32> = body.chars().map(gsm7_septets).sum();
        let (encoding, units, (single, multi)) = match septets {
            Some(n) => (SmsEncoding::Gsm7, n, SMS_GSM7_SEGMENT),
            None => (
                SmsEncoding::Ucs2,
                body.encode_utf16().count() as u32,
                SMS_UCS2_SEGMENT,
            ),
        };
        let segments = if units <= single {
            1
        } else {
            units.div_ceil(multi)
        };
        Self {
            encoding,
            units,
            segments,
        }
    }
}

/// Checks an SMS body: not empty, at most `max_segments` segments; a warning
/// when it needs more than one.
pub fn sms_body(
    body: &str,
    max_segments: u32,
) -> Result<(SmsShape, Option<Warning>), ValidationError> {
    if body.trim().is_empty() {
        return Err(ValidationError::new(
            "body",
            "required",
            "an SMS needs a body",
        ));
    }
    let shape = SmsShape::of(body);
    if shape.segments > max_segments {
        return Err(ValidationError::new(
            "body",
            "sms_segments",
            format!(
                "needs {} segments ({:?}, {} characters); the limit is {max_segments}",
                shape.segments, shape.encoding, shape.units
            ),
        ));
    }
    let warning = (shape.segments > 1).then(|| {
        let encoding = match shape.encoding {
            SmsEncoding::Gsm7 => "GSM-7",
            SmsEncoding::Ucs2 => "UCS-2 (a character outside GSM-7 was used)",
        };
        Warning::new(
            "body",
            format!(
                "will be sent as {} segments in {encoding}, each billed",
                shape.segments
            ),
        )
    });
    Ok((shape, warning))
}

pub fn email_subject(subject: &str) -> Result<(), ValidationError> {
    if subject.trim().is_empty() {
        return Err(ValidationError::new(
            "subject",
            "required",
            "an email needs a subject",
        ));
    }
    if subject.contains(['\r', '\n']) {
        return Err(ValidationError::new(
            "subject",
            "email_subject_line",
            "must be a single line",
        ));
    }
    if subject.len() > MAX_SUBJECT {
        return Err(ValidationError::new(
            "subject",
            "email_subject_length",
            format!("must be at most {MAX_SUBJECT} bytes (RFC 5322 line limit)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_gsm7_septets_and_segments() {
        let shape = SmsShape::of("Hello");
        assert_eq!(
            (shape.encoding, shape.units, shape.segments),
            (SmsEncoding::Gsm7, 5, 1)
        );
        // The euro sign and braces come from the escape table: two septets each.
        assert_eq!(SmsShape::of("€{}").units, 6);
        assert_eq!(SmsShape::of(&"a".repeat(160)).segments, 1);
        assert_eq!(SmsShape::of(&"a".repeat(161)).segments, 2);
        assert_eq!(SmsShape::of(&"a".repeat(306)).segments, 2);
        assert_eq!(SmsShape::of(&"a".repeat(307)).segments, 3);
    }

    #[test]
    fn one_character_outside_gsm7_switches_to_ucs2() {
        let shape = SmsShape::of("Your code is 1234 ✓");
        assert_eq!(shape.encoding, SmsEncoding::Ucs2);
        assert_eq!(SmsShape::of(&"é".repeat(70)).encoding, SmsEncoding::Gsm7);
        assert_eq!(SmsShape::of(&"ж".repeat(70)).segments, 1);
        assert_eq!(SmsShape::of(&"ж".repeat(71)).segments, 2);
        // An emoji is two UTF-16 code units.
        assert_eq!(SmsShape::of("😀").units, 2);
    }

    #[test]
    fn enforces_the_segment_limit_and_warns_past_one() {
        let (_, warning) = sms_body("short", 3).expect("ok");
        assert!(warning.is_none());
        let (shape, warning) = sms_body(&"a".repeat(200), 3).expect("ok");
        assert_eq!(shape.segments, 2);
        assert!(warning.expect("warning").message.contains("2 segments"));
        let err = sms_body(&"a".repeat(500), 3).expect_err("too long");
        assert_eq!((err.field.as_str(), &*err.rule), ("body", "sms_segments"));
        assert_eq!(sms_body("  ", 3).expect_err("empty").rule, "required");
    }

    #[test]
    fn subjects_are_single_short_lines() {
        assert!(email_subject("Your receipt").is_ok());
        assert_eq!(
            email_subject("a\r\nBcc: x@y.z").map_err(|e| e.rule),
            Err("email_subject_line".into())
        );
        assert_eq!(
            email_subject(&"s".repeat(999)).map_err(|e| e.rule),
            Err("email_subject_length".into())
        );
    }
}
