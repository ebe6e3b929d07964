//! Masking of recipients for logs: support can tell numbers apart, logs never
//! hold a whole phone number or address.

/// `+14155550123` → `+1415*****23`; `alice@example.com` → `a****@example.com`;
/// anything else keeps its first and last two characters.
pub fn recipient(value: &str) -> String {
    if let Some((local, domain)) = value.split_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}****@{domain}");
    }
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= 6 {
        return "*".repeat(chars.len());
    }
    let keep_front = if value.starts_with('+') { 5 } else { 2 };
    let front: String = chars[..keep_front.min(chars.len() - 2)].iter().collect();
    let back: String = chars[chars.len() - 2..].iter().collect();
    format!(
        "{front}{}{back}",
        "*".repeat(chars.len() - front.chars().count() - 2)
    )
}

#[cfg(test)]
mod tests {
    use super::recipient;

    #[test]
    fn masks_phone_email_and_tokens() {
        assert_eq!(recipient("+14155550123"), "+1415*****23");
        assert_eq!(recipient("alice@example.com"), "a****@example.com");
        assert_eq!(recipient("abcdefghij"), "ab******ij");
        assert_eq!(recipient("abc"), "***");
    }
}
