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

/// Free text (a vendor's error, say) with every phone number and email
/// address in it masked as [`recipient`] masks them: vendors echo the
/// recipient in their messages, and logs must not hold it.
pub fn scrub(text: &str) -> String {
    // Words and the whitespace after each.
    let mut words: Vec<(&str, &str)> = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, tail) = rest.split_at(end);
        let spaces = tail.len() - tail.trim_start().len();
        words.push((word, &tail[..spaces]));
        rest = &tail[spaces..];
    }
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < words.len() {
        // A number written in groups (`+44 20 7946 0958`): digit groups
        // joined by single spaces, 7 digits or more in all.
        let mut j = i;
        let mut digits = 0;
        while j < words.len() && is_digit_group(words[j].0) {
            digits += words[j].0.chars().filter(char::is_ascii_digit).count();
            j += 1;
            if words[j - 1].1 != " " {
                break;
            }
        }
        if j - i > 1 && digits >= 7 {
            let group: Vec<&str> = words[i..j].iter().map(|(w, _)| *w).collect();
            let joined = group.join(" ");
            out.push_str(&scrub_word(&joined.replace(' ', "")).replace(' ', ""));
            out.push_str(words[j - 1].1);
            i = j;
            continue;
        }
        out.push_str(&scrub_word(words[i].0));
        out.push_str(words[i].1);
        i += 1;
    }
    out
}

/// A word of a number written in groups: digits, maybe a leading `+` or
/// brackets, nothing else.
fn is_digit_group(word: &str) -> bool {
    let core = word.trim_end_matches([',', '.', ';', ':', ')']);
    !core.is_empty()
        && core.chars().any(|c| c.is_ascii_digit())
        && core
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '(' | ')' | '-'))
}

/// One whitespace-free word: its core (without surrounding punctuation)
/// masked when it is a number of 7 or more digits or an address.
fn scrub_word(word: &str) -> String {
    let edge = |c: char| !(c.is_alphanumeric() || c == '+' || c == '@');
    let core = word.trim_matches(edge);
    if core.is_empty() {
        return word.to_owned();
    }
    let digits = core.chars().filter(char::is_ascii_digit).count();
    let phone = digits >= 7
        && core
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '(' | ')' | '.'));
    let address = core.contains('@') && core.split('@').all(|part| !part.is_empty());
    if !(phone || address) {
        return word.to_owned();
    }
    let start = word.find(core).unwrap_or(0);
    format!(
        "{}{}{}",
        &word[..start],
        recipient(core),
        &word[start + core.len()..]
    )
}

#[cfg(test)]
mod tests {
    use super::{recipient, scrub};

    #[test]
    fn scrubs_numbers_and_addresses_out_of_free_text() {
        assert_eq!(
            scrub("Invalid number +14155550123, try again"),
            "Invalid number +1415*****23, try again"
        );
        assert_eq!(
            scrub("550 5.1.1 <alice@example.com>: mailbox unavailable"),
            "550 5.1.1 <a****@example.com>: mailbox unavailable"
        );
        assert_eq!(scrub("HTTP 503 after 2500 ms"), "HTTP 503 after 2500 ms");
        assert_eq!(scrub("code 4155550"), "code 41***50");
        assert_eq!(scrub("  spaced  out  "), "  spaced  out  ");
        assert_eq!(
            scrub("Number +44 20 7946 0958 is unreachable"),
            "Number +4420******58 is unreachable"
        );
        assert_eq!(
            scrub("retry in 30 s after 2 tries"),
            "retry in 30 s after 2 tries"
        );
    }

    #[test]
    fn masks_phone_email_and_tokens() {
        assert_eq!(recipient("+14155550123"), "+1415*****23");
        assert_eq!(recipient("alice@example.com"), "a****@example.com");
        assert_eq!(recipient("abcdefghij"), "ab******ij");
        assert_eq!(recipient("abc"), "***");
    }
}
