use email_address::{EmailAddress, Options};

use super::ValidationError;

/// RFC 5321: a local part of at most 64 octets, a domain of at most 255, and a
/// forward path of at most 256 including the angle brackets.
const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 255;
const MAX_ADDRESS: usize = 254;

/// Parses a bare address (`alice@example.com`, `δοκιμή@παράδειγμα.δοκιμή`).
/// Internationalised domains are converted to their ASCII (punycode) form and
/// lower-cased; the local part is kept as written.
pub fn email_address(field: &str, input: &str) -> Result<String, ValidationError> {
    let input = input.trim();
    if input.is_empty() {
        return Err(ValidationError::new(
            field,
            "required",
            "an email address is required",
        ));
    }
    let Some((local, domain)) = input.rsplit_once('@') else {
        return Err(ValidationError::new(
            field,
            "email_format",
            "is not an email address (no @)",
        ));
    };
    if local.is_empty() || local.len() > MAX_LOCAL {
        return Err(ValidationError::new(
            field,
            "email_local_length",
            format!("the part before @ must be 1-{MAX_LOCAL} bytes (RFC 5321)"),
        ));
    }
    let ascii_domain = idna::domain_to_ascii_strict(domain)
        .map_err(|_| ValidationError::new(field, "email_domain", "has an invalid domain"))?;
    if ascii_domain.is_empty() || ascii_domain.len() > MAX_DOMAIN {
        return Err(ValidationError::new(
            field,
            "email_domain",
            format!("the domain must be 1-{MAX_DOMAIN} bytes (RFC 5321)"),
        ));
    }
    if !ascii_domain.contains('.') {
        return Err(ValidationError::new(
            field,
            "email_domain",
            "the domain must have a dot (e.g. example.com)",
        ));
    }
    let address = format!("{local}@{ascii_domain}");
    if address.len() > MAX_ADDRESS {
        return Err(ValidationError::new(
            field,
            "email_length",
            format!("must be at most {MAX_ADDRESS} bytes (RFC 5321)"),
        ));
    }
    let options = Options::default()
        .with_required_tld()
        .without_display_text()
        .without_domain_literal();
    EmailAddress::parse_with_options(&address, options).map_err(|e| {
        ValidationError::new(
            field,
            "email_format",
            format!("is not a valid address ({e})"),
        )
    })?;
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::email_address;

    #[test]
    fn accepts_and_normalises_addresses() {
        let cases = [
            ("alice@example.com", "alice@example.com"),
            ("  Bob.Smith+tag@Example.COM ", "Bob.Smith+tag@example.com"),
            ("user@münchen.de", "user@xn--mnchen-3ya.de"),
            ("o'brien@sub.example.co.uk", "o'brien@sub.example.co.uk"),
            (
                "\"quoted local\"@example.org",
                "\"quoted local\"@example.org",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                email_address("to", input).as_deref(),
                Ok(expected),
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_bad_addresses_naming_the_rule() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_address = format!(
            "{}@{}.com",
            "a".repeat(64),
            "b".repeat(63).repeat(3).chars().collect::<String>()
        );
        let cases = [
            ("", "required"),
            ("no-at-sign", "email_format"),
            ("@example.com", "email_local_length"),
            (long_local.as_str(), "email_local_length"),
            ("a@localhost", "email_domain"),
            ("a@exa mple.com", "email_domain"),
            ("a b@example.com", "email_format"),
            ("Alice <alice@example.com>", "email_domain"),
            ("a@[127.0.0.1]", "email_domain"),
            (long_address.as_str(), "email_domain"),
        ];
        for (input, rule) in cases {
            let err = email_address("to", input).expect_err(input);
            assert_eq!(err.rule, rule, "{input}: {err}");
        }
    }
}
