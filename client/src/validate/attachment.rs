use base64::Engine;
use mdc_core::message::Attachment;

use super::ValidationError;

const MAX_ATTACHMENTS: usize = 20;
const MAX_FILENAME: usize = 255;

/// Checks email attachments: named, typed, valid base64, within the size limit.
pub fn attachments(
    input: &[Attachment],
    max_total_bytes: usize,
) -> Result<Vec<Attachment>, ValidationError> {
    if input.len() > MAX_ATTACHMENTS {
        return Err(ValidationError::new(
            "attachments",
            "attachments_count",
            format!("at most {MAX_ATTACHMENTS} attachments"),
        ));
    }
    let mut total = 0;
    for (i, attachment) in input.iter().enumerate() {
        let field = |name: &str| format!("attachments[{i}].{name}");
        let name = &attachment.filename;
        if name.trim().is_empty()
            || name.len() > MAX_FILENAME
            || name.contains(['/', '\\', '\r', '\n', '\0'])
        {
            return Err(ValidationError::new(
                &field("filename"),
                "attachment_filename",
                format!("must be 1-{MAX_FILENAME} bytes without path separators or line breaks"),
            ));
        }
        let kind = &attachment.content_type;
        let valid_type = kind.split_once('/').is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty() && kind.chars().all(|c| c.is_ascii_graphic())
        });
        if !valid_type {
            return Err(ValidationError::new(
                &field("content_type"),
                "attachment_content_type",
                "must be a MIME type such as application/pdf",
            ));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(attachment.content_base64.as_bytes())
            .map_err(|e| {
                ValidationError::new(
                    &field("content_base64"),
                    "attachment_base64",
                    format!("is not valid base64 ({e})"),
                )
            })?;
        total += decoded.len();
    }
    if total > max_total_bytes {
        return Err(ValidationError::new(
            "attachments",
            "attachments_size",
            format!("attachments come to {total} bytes; the limit is {max_total_bytes}"),
        ));
    }
    Ok(input.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, kind: &str, content: &str) -> Attachment {
        Attachment {
            filename: name.into(),
            content_type: kind.into(),
            content_base64: content.into(),
        }
    }

    #[test]
    fn accepts_valid_attachments_and_names_the_bad_field() {
        assert!(attachments(&[file("a.txt", "text/plain", "aGVsbG8=")], 100).is_ok());
        let err = attachments(
            &[
                file("a.txt", "text/plain", "aGVsbG8="),
                file("b.pdf", "pdf", "aGk="),
            ],
            100,
        )
        .expect_err("bad type");
        assert_eq!(
            (err.field.as_str(), &*err.rule),
            ("attachments[1].content_type", "attachment_content_type")
        );
        let err = attachments(&[file("../a", "text/plain", "aGk=")], 100).expect_err("path");
        assert_eq!(err.rule, "attachment_filename");
        let err = attachments(&[file("a", "text/plain", "not base64!")], 100).expect_err("base64");
        assert_eq!(err.field, "attachments[0].content_base64");
        let err = attachments(&[file("a", "text/plain", "aGVsbG8=")], 3).expect_err("size");
        assert_eq!(err.rule, "attachments_size");
    }
}
