//! The SMS recipients the benchmark writes to: valid mobile numbers of the
//! US and, with `--countries`, of up to 24 other countries in turn; never a
//! simulator's magic recipient.

/// The exchanges (+1 415 NXX) recipients are spread over: 200 to 999
/// but 555, whose 01xx lines are the simulators' magic recipients
/// (`mdc_simulators::Magic`).
const EXCHANGES: u64 = 799;

/// How many distinct numbers [`sms_recipient`] makes.
pub(crate) const MAX_RECIPIENTS: u64 = EXCHANGES * 10_000;

/// Mobile number prefixes of other countries, written to in turn after the
/// US with `--countries`; each takes six more digits.
const ABROAD: [&str; 24] = [
    "+447400", "+4915123", "+919876", "+33612", "+34612", "+393123", "+31612", "+5511912",
    "+525512", "+61412", "+819012", "+8613123", "+6581", "+971501", "+27711", "+2348021",
    "+254712", "+46701", "+48512", "+6281234", "+639171", "+64211", "+353851", "+16042",
];

/// The most countries `--countries` spreads SMS recipients over.
pub(crate) const MAX_COUNTRIES: u64 = ABROAD.len() as u64 + 1;

/// Distinct numbers each country of [`ABROAD`] has.
pub(crate) const ABROAD_RECIPIENTS: u64 = 1_000_000;

/// The `n`th SMS recipient of a run writing to `countries` countries:
/// countries in turn, the US first, each country's numbers in turn.
pub(crate) fn sms_recipient(n: u64, countries: u64) -> String {
    let (country, line) = (n % countries, n / countries);
    match country.checked_sub(1) {
        None => us_recipient(line),
        Some(abroad) => format!("{}{:06}", ABROAD[abroad as usize], line % ABROAD_RECIPIENTS),
    }
}

/// The `n`th of [`MAX_RECIPIENTS`] valid San Francisco numbers
/// (+1 415 NXX XXXX; every exchange in turn).
fn us_recipient(n: u64) -> String {
    let n = n % MAX_RECIPIENTS;
    let exchange = 200 + n % EXCHANGES;
    let exchange = if exchange >= 555 {
        exchange + 1
    } else {
        exchange
    };
    format!("+1415{exchange}{:04}", n / EXCHANGES)
}

/// The most distinct numbers [`sms_recipient`] makes over `countries`.
pub(crate) fn most_recipients(countries: u64) -> u64 {
    if countries == 1 {
        MAX_RECIPIENTS
    } else {
        countries * ABROAD_RECIPIENTS
    }
}

#[cfg(test)]
mod tests {
    use mdc_core::Channel;
    use mdc_simulators::Magic;

    use super::{
        most_recipients, sms_recipient, us_recipient, ABROAD_RECIPIENTS, EXCHANGES, MAX_COUNTRIES,
        MAX_RECIPIENTS,
    };

    /// Every number the benchmark sends to is valid, none is a magic
    /// recipient (every exchange comes up within the first 799, each line
    /// every 799), and they are all different.
    #[test]
    fn sms_recipients_are_valid_ordinary_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        let lines = [0, 181, 185, 189, 190, 191, 192, 1_000, 9_999];
        for n in lines
            .iter()
            .flat_map(|line| (0..EXCHANGES).map(move |e| line * EXCHANGES + e))
        {
            let to = us_recipient(n);
            assert_eq!(Magic::of(Channel::Sms, &to), Magic::Deliver, "{to}");
            assert!(seen.insert(to.clone()), "{to} twice");
            if n < EXCHANGES {
                let (e164, _) = mdc_client::validate::phone_number("to", &to)
                    .unwrap_or_else(|e| panic!("{to}: {e}"));
                assert_eq!(e164, to);
            }
        }
        assert_eq!(us_recipient(MAX_RECIPIENTS - 1), "+14159999999");
        assert_eq!(us_recipient(MAX_RECIPIENTS), us_recipient(0));
        assert_eq!(sms_recipient(7, 1), us_recipient(7));
    }

    /// With `--countries`, the countries come in turn, each with its own
    /// numbers: valid mobile numbers, none a magic recipient, all different
    /// (the first, second, a thousandth and last of each country checked).
    #[test]
    fn sms_recipients_abroad_are_valid_mobiles_and_distinct() {
        let countries = MAX_COUNTRIES;
        let mut seen = std::collections::HashSet::new();
        for line in [0, 1, 1_000, ABROAD_RECIPIENTS - 1] {
            for country in 0..countries {
                let to = sms_recipient(line * countries + country, countries);
                assert_eq!(Magic::of(Channel::Sms, &to), Magic::Deliver, "{to}");
                assert!(seen.insert(to.clone()), "{to} twice");
                let (e164, warning) = mdc_client::validate::phone_number("to", &to)
                    .unwrap_or_else(|e| panic!("{to}: {e}"));
                assert_eq!(e164, to);
                assert!(warning.is_none(), "{to}: {warning:?}");
            }
        }
        assert_eq!(seen.len() as u64, 4 * countries);
    }

    #[test]
    fn the_most_recipients_are_those_of_the_us_alone_or_a_million_a_country() {
        assert_eq!(most_recipients(1), MAX_RECIPIENTS);
        assert_eq!(most_recipients(25), 25 * ABROAD_RECIPIENTS);
    }
}
