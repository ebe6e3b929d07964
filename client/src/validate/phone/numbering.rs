//! Numbers parsed and typed (mobile, fixed line, toll free…) as
//! `phonenumber` parses and types them, over its metadata, with each
//! region's patterns compiled once, for ASCII digits.
//!
//! `phonenumber` compiles its patterns on first use into one locked cache of
//! 100 expressions, shared by every region and Unicode-aware (`\d` is any
//! script's digit). Parsing and typing a number tries up to a dozen patterns
//! of its region, and for `+1` of several regions: numbers of more than a
//! few countries in turn evict each other's patterns, and every number then
//! compiles some again. For numbers of 25 countries in turn, each new,
//! `mdc-bench phones` measured 3.3 ms of CPU a number there, 1.3 µs here
//! (docs/benchmarks.md). Numbers written otherwise (letters, an extension)
//! are left to `phonenumber`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock};

use phonenumber::metadata::{Descriptor, Metadata, DATABASE};
use phonenumber::Type;
use regex::{Regex, RegexBuilder};

/// The shortest and longest national numbers `phonenumber` parses.
const NATIONAL_LENGTHS: std::ops::RangeInclusive<usize> = 2..=17;

/// A number as `phonenumber::parse` reads it.
#[derive(Debug, PartialEq)]
pub(super) struct Parsed {
    pub(super) code: u16,
    /// The national number, with any leading zeros it keeps (`06…` in
    /// Italy).
    pub(super) national: String,
}

impl Parsed {
    /// The national number without its leading zeros, which is what its
    /// type is found on.
    pub(super) fn significant(&self) -> &str {
        self.national.trim_start_matches('0')
    }
}

/// Why [`parse`] did not read a number.
#[derive(Debug)]
pub(super) enum Unread {
    /// Not `+` and ASCII digits, or refused before any pattern is tried
    /// (no known country code): `phonenumber` answers, at no great cost.
    /// Also a region whose patterns do not compile here (a test checks
    /// that every region's do).
    Elsewhere,
    /// Refused as `phonenumber` refuses it, after its region's patterns.
    Refused(phonenumber::ParseError),
}

/// `input`, `+` and ASCII digits, parsed as `phonenumber::parse(None, input)`
/// parses it, or refused as it refuses it.
pub(super) fn parse(input: &str) -> Result<Parsed, Unread> {
    let digits = input.strip_prefix('+').ok_or(Unread::Elsewhere)?;
    // More than two digits, the first (the country code's) not 0.
    if digits.len() <= *NATIONAL_LENGTHS.start()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || digits.starts_with('0')
    {
        return Err(Unread::Elsewhere);
    }
    // The country code: the first one to three digits that are one.
    let (code, mut national) = (1..=3)
        .find_map(|len| {
            let code = digits[..len].parse::<u16>().ok()?;
            DATABASE
                .region(&code)
                .map(|_| (code, Cow::Borrowed(&digits[len..])))
        })
        .ok_or(Unread::Elsewhere)?;
    match region_for(code, national.trim_start_matches('0')) {
        // phonenumber keeps the prefix on a number too short without it,
        // by the lengths of its region's general pattern; its metadata gives
        // those none (checked by a test), so the number goes without.
        Found::Region(region) => {
            national = Cow::Owned(region.without_national_prefix(&national).into_owned());
        }
        Found::Nowhere => {}
        Found::Uncompiled => return Err(Unread::Elsewhere),
    }
    if national.len() < *NATIONAL_LENGTHS.start() {
        return Err(Unread::Refused(phonenumber::ParseError::TooShortNsn));
    }
    if national.len() > *NATIONAL_LENGTHS.end() {
        return Err(Unread::Refused(phonenumber::ParseError::TooLong));
    }
    // phonenumber keeps the number below 2^56, its leading zeros apart.
    match national.trim_start_matches('0').parse::<u64>() {
        Err(malformed) => Err(Unread::Refused(malformed.into())),
        Ok(value) if value >= 1 << 56 => Err(Unread::Refused(phonenumber::ParseError::TooLong)),
        Ok(_) => Ok(Parsed {
            code,
            national: national.into_owned(),
        }),
    }
}

/// The type of the national number `national` under calling code `code`,
/// or `None` when a region's patterns do not compile here.
pub(super) fn number_type(code: u16, national: &str) -> Option<Type> {
    match region_for(code, national) {
        Found::Region(region) => Some(region.kind(national)),
        Found::Nowhere => Some(Type::Unknown),
        Found::Uncompiled => None,
    }
}

/// Which region a number is of.
enum Found {
    Region(&'static Region),
    Nowhere,
    /// A region's patterns did not compile.
    Uncompiled,
}

/// The region of `national` under calling code `code`, chosen as
/// `phonenumber` chooses it: the only one of its code or, for a code shared
/// by several (`+1`, `+7`, `+44`…), the first in the metadata's order that
/// claims it: by its leading digits where it has those, else by the number
/// having a type there.
fn region_for(code: u16, national: &str) -> Found {
    let Some(ids) = DATABASE.region(&code) else {
        return Found::Nowhere;
    };
    let found = |entry: &'static Entry| match entry.region() {
        Some(region) => Found::Region(region),
        None => Found::Uncompiled,
    };
    match ids.as_slice() {
        [id] if *id != NON_GEOGRAPHIC && id.parse::<phonenumber::country::Id>().is_err() => {
            Found::Nowhere
        }
        [id] => entry(code, id).map_or(Found::Nowhere, found),
        ids => {
            for entry in ids.iter().filter_map(|id| entry(code, id)) {
                // Leading digits are compiled alone: a number of the last
                // region of +1 tries most of the others' first.
                match entry.leading_digits() {
                    Leading::Pattern(leading) if leading.is_match(national) => return found(entry),
                    Leading::Pattern(_) => {}
                    Leading::Uncompiled => return Found::Uncompiled,
                    Leading::None => match entry.region() {
                        Some(region) if region.kind(national) != Type::Unknown => {
                            return Found::Region(region)
                        }
                        Some(_) => {}
                        None => return Found::Uncompiled,
                    },
                }
            }
            Found::Nowhere
        }
    }
}

/// The region id of every non-geographic code (+800, +882…).
const NON_GEOGRAPHIC: &str = "001";

/// A region's metadata, and its patterns once compiled.
struct Entry {
    meta: &'static Metadata,
    leading_digits: OnceLock<Leading>,
    /// `None` when one of its patterns does not compile.
    compiled: OnceLock<Option<Region>>,
}

/// The leading digits that claim a number for a region of a shared code.
enum Leading {
    None,
    Pattern(Regex),
    Uncompiled,
}

impl Entry {
    fn leading_digits(&self) -> &Leading {
        self.leading_digits
            .get_or_init(|| match self.meta.leading_digits() {
                None => Leading::None,
                Some(leading) => {
                    at_start(leading.as_str()).map_or(Leading::Uncompiled, Leading::Pattern)
                }
            })
    }

    fn region(&self) -> Option<&Region> {
        self.compiled
            .get_or_init(|| Region::new(self.meta))
            .as_ref()
    }
}

/// Every region by its calling code, then its id (non-geographic codes
/// share one); each region's patterns are compiled when it is first asked
/// for.
static REGIONS: LazyLock<HashMap<u16, HashMap<&'static str, Entry>>> = LazyLock::new(|| {
    (1..=999)
        .filter_map(|code| {
            let regions = DATABASE.by_code(&code)?.into_iter().map(|meta| {
                let (leading_digits, compiled) = (OnceLock::new(), OnceLock::new());
                let entry = Entry {
                    meta,
                    leading_digits,
                    compiled,
                };
                (meta.id(), entry)
            });
            Some((code, regions.collect()))
        })
        .collect()
});

fn entry(code: u16, id: &str) -> Option<&'static Entry> {
    REGIONS.get(&code)?.get(id)
}

/// One region's patterns, in the order `phonenumber` tries them.
struct Region {
    general: Pattern,
    national_prefix: Option<&'static str>,
    /// The national prefix (and carrier code) as a pattern, and what
    /// replaces it where the metadata says.
    prefix_for_parsing: Option<Regex>,
    prefix_transform: Option<&'static str>,
    /// Premium rate, toll free, shared cost, VoIP, personal, pager, UAN
    /// and voicemail: the first that matches is the type.
    special: Vec<(Type, Pattern)>,
    fixed_line: Option<Pattern>,
    mobile: Option<Pattern>,
    /// The region's fixed-line and mobile numbers cannot be told apart
    /// (the same pattern, as in the US).
    fixed_line_is_mobile: bool,
}

impl Region {
    fn new(meta: &'static Metadata) -> Option<Region> {
        let d = meta.descriptors();
        let special = [
            (Type::PremiumRate, d.premium_rate()),
            (Type::TollFree, d.toll_free()),
            (Type::SharedCost, d.shared_cost()),
            (Type::Voip, d.voip()),
            (Type::PersonalNumber, d.personal_number()),
            (Type::Pager, d.pager()),
            (Type::Uan, d.uan()),
            (Type::Voicemail, d.voicemail()),
        ]
        .into_iter()
        .filter_map(|(kind, desc)| desc.map(|desc| Some((kind, Pattern::new(desc)?))))
        .collect::<Option<Vec<_>>>()?;
        let optional = |desc: Option<&'static Descriptor>| match desc {
            Some(desc) => Pattern::new(desc).map(Some),
            None => Some(None),
        };
        let source = |desc: Option<&'static Descriptor>| desc.map(|d| d.national_number().as_str());
        let compiled = |pattern: Option<&'static str>| match pattern {
            Some(pattern) => at_start(pattern).map(Some),
            None => Some(None),
        };
        Some(Region {
            general: Pattern::new(d.general())?,
            national_prefix: meta.national_prefix(),
            prefix_for_parsing: compiled(meta.national_prefix_for_parsing().map(|r| r.as_str()))?,
            prefix_transform: meta.national_prefix_transform_rule(),
            special,
            fixed_line: optional(d.fixed_line())?,
            mobile: optional(d.mobile())?,
            fixed_line_is_mobile: source(d.fixed_line()) == source(d.mobile()),
        })
    }

    /// `national` without the national prefix written before it, as
    /// `phonenumber` strips it: by the region's pattern for it (its
    /// replacement where the metadata has one, kept only if the number
    /// stays valid-looking) or, without a pattern, the prefix itself; then
    /// the prefix itself once more if the number still begins with it.
    fn without_national_prefix<'a>(&self, national: &'a str) -> Cow<'a, str> {
        let stripped = match &self.prefix_for_parsing {
            None => match self.national_prefix {
                Some(prefix) if national.starts_with(prefix) => {
                    Cow::Borrowed(&national[prefix.len()..])
                }
                _ => Cow::Borrowed(national),
            },
            Some(parsing) => match parsing.captures(national) {
                None => Cow::Borrowed(national),
                Some(found) => {
                    let last = found.get(found.len() - 1);
                    match (self.prefix_transform, last) {
                        (Some(rule), Some(_)) => {
                            let transformed = parsing.replace(national, rule);
                            if self.general.matches(national) && !self.general.matches(&transformed)
                            {
                                Cow::Borrowed(national)
                            } else {
                                Cow::Owned(transformed.into_owned())
                            }
                        }
                        _ => {
                            let end = found.get(0).map_or(0, |whole| whole.end());
                            Cow::Borrowed(&national[end..])
                        }
                    }
                }
            },
        };
        match self.national_prefix {
            Some(prefix) if stripped.starts_with(prefix) => {
                Cow::Owned(stripped[prefix.len()..].to_owned())
            }
            _ => stripped,
        }
    }

    fn kind(&self, national: &str) -> Type {
        if !self.general.matches(national) {
            return Type::Unknown;
        }
        if let Some((kind, _)) = self.special.iter().find(|(_, p)| p.matches(national)) {
            return *kind;
        }
        let mobile = self.mobile.as_ref().is_some_and(|p| p.matches(national));
        if self
            .fixed_line
            .as_ref()
            .is_some_and(|p| p.matches(national))
        {
            if self.fixed_line_is_mobile || mobile {
                Type::FixedLineOrMobile
            } else {
                Type::FixedLine
            }
        } else if mobile {
            Type::Mobile
        } else {
            Type::Unknown
        }
    }
}

/// A descriptor's possible lengths and national-number pattern.
struct Pattern {
    lengths: &'static [u16],
    regex: Regex,
}

impl Pattern {
    fn new(desc: &'static Descriptor) -> Option<Pattern> {
        Some(Pattern {
            lengths: desc.possible_length(),
            regex: at_start(desc.national_number().as_str())?,
        })
    }

    /// As `Descriptor::is_match`: a possible length (when any are listed),
    /// and a match of the pattern that starts at the first digit.
    fn matches(&self, national: &str) -> bool {
        let length = u16::try_from(national.len()).unwrap_or(u16::MAX);
        (self.lengths.is_empty() || self.lengths.contains(&length)) && self.regex.is_match(national)
    }
}

/// `pattern` anchored at the start (not the end: `phonenumber` takes a
/// match that starts at the first digit), with the metadata's options
/// (whitespace ignored) and for ASCII only.
fn at_start(pattern: &str) -> Option<Regex> {
    RegexBuilder::new(&format!("^(?:{pattern})"))
        .ignore_whitespace(true)
        .unicode(false)
        .build()
        .ok()
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::HashMap;

    use phonenumber::metadata::DATABASE;
    use phonenumber::Type;

    use super::{number_type, parse, Parsed, Unread, REGIONS};

    /// Every region's patterns compile here.
    #[test]
    fn every_regions_patterns_compile() {
        let mut regions = 0;
        for (code, ids) in REGIONS.iter() {
            for id in ids.keys() {
                let entry = super::entry(*code, id).expect("an entry");
                assert!(entry.region().is_some(), "+{code} {id}");
                assert!(
                    !matches!(entry.leading_digits(), super::Leading::Uncompiled),
                    "+{code} {id}"
                );
                regions += 1;
            }
        }
        // Non-geographic codes included, each apart.
        assert!(REGIONS[&882].contains_key("001") && REGIONS[&800].contains_key("001"));
        assert!(regions > 250, "{regions}");
    }

    /// No region's general pattern has possible lengths, which `parse`
    /// does not look at (`phonenumber` would keep a national prefix on a
    /// number shorter than those without it).
    #[test]
    fn general_patterns_have_no_lengths() {
        for entry in REGIONS.values().flat_map(HashMap::values) {
            let general = entry.meta.descriptors().general();
            assert!(general.possible_length().is_empty(), "{}", entry.meta.id());
            assert!(
                general.possible_local_length().is_empty(),
                "{}",
                entry.meta.id()
            );
        }
    }

    /// Every region's example numbers, with numbers near them: a digit
    /// changed, one more, one fewer, all nines, and each, and its first
    /// three digits, written after the region's national prefix and after a
    /// 0. In international format.
    pub(in crate::validate::phone) fn numbers() -> Vec<String> {
        let mut all = Vec::new();
        for entry in REGIONS.values().flat_map(HashMap::values) {
            let (meta, d) = (entry.meta, entry.meta.descriptors());
            let descriptors = [
                Some(d.general()),
                d.fixed_line(),
                d.mobile(),
                d.toll_free(),
                d.premium_rate(),
                d.shared_cost(),
                d.personal_number(),
                d.voip(),
                d.pager(),
                d.uan(),
                d.voicemail(),
            ];
            let examples = descriptors
                .into_iter()
                .flatten()
                .filter_map(|d| d.example());
            for example in examples {
                let mut near = vec![
                    example.to_owned(),
                    format!("{example}0"),
                    "9".repeat(example.len()),
                    format!("0{example}"),
                ];
                // Short numbers after a prefix: kept with it when too short
                // without.
                let start = &example[..example.len().min(3)];
                near.push(format!("0{start}"));
                if let Some(prefix) = meta.national_prefix() {
                    near.push(format!("{prefix}{example}"));
                    near.push(format!("{prefix}{start}"));
                }
                if example.len() > 1 {
                    let (most, last) = example.split_at(example.len() - 1);
                    near.push(most.to_owned());
                    let changed = (last.parse::<u8>().expect("a digit") + 3) % 10;
                    near.push(format!("{most}{changed}"));
                }
                let code = meta.country_code();
                all.extend(
                    near.into_iter()
                        .map(|national| format!("+{code}{national}")),
                );
            }
        }
        all
    }

    /// `phonenumber`'s own cache made large enough for every pattern, for
    /// tests that compare answers with it: thrashing would take minutes.
    pub(in crate::validate::phone) fn phonenumber_cache_for_every_pattern() {
        DATABASE
            .cache()
            .lock()
            .expect("cache")
            .set_capacity(100_000);
    }

    /// Numbers at the edges: a 7-digit NANP number (region by leading
    /// digits, area code added), island numbers of +44 and +378 given their
    /// area code, an Argentine number whose prefix is kept, 17 digits, 2^56
    /// and more, 18 digits (the last of them mostly zeros), one digit left
    /// after the prefix, and no numbers at all.
    pub(in crate::validate::phone) const EDGES: [&str; 16] = [
        "+17588302",
        "+44752449",
        "+378903369",
        "+5426115314081",
        "+80012345678901234567",
        "+80099999999999999999",
        "+800123456789012345678",
        "+800000000000000000001",
        "+3301",
        "+1",
        "+12",
        "+0123456",
        "+999123456",
        "+1000",
        "+39000000",
        "+80012",
    ];

    /// A number is read as `phonenumber::parse` reads it, or refused with
    /// its error, or left to it, for every number of [`numbers`] and the
    /// [`EDGES`]; left to it only where it refuses before any pattern.
    #[test]
    fn numbers_are_parsed_as_phonenumber_parses_them() {
        phonenumber_cache_for_every_pattern();
        let (mut parsed, mut refused) = (0, 0);
        for input in numbers().iter().map(String::as_str).chain(EDGES) {
            let theirs = phonenumber::parse(None, input).map(|n| Parsed {
                code: n.code().value(),
                national: n.national().to_string(),
            });
            match (parse(input), theirs) {
                (Ok(ours), Ok(theirs)) => {
                    assert_eq!(ours, theirs, "{input}");
                    parsed += 1;
                }
                (Err(Unread::Refused(ours)), Err(theirs)) => {
                    assert_eq!(ours.to_string(), theirs.to_string(), "{input}");
                    refused += 1;
                }
                (Err(Unread::Elsewhere), Err(_)) => {}
                (ours, theirs) => panic!("{input}: {ours:?} against {theirs:?}"),
            }
        }
        assert!(
            parsed > 5_000 && refused >= 4,
            "{parsed} parsed, {refused} refused"
        );
        // Written otherwise: left to phonenumber.
        for input in [
            "+1 415 555 0123",
            "+1-800-FLOWERS",
            "+44 7911 123456 ext. 12",
            "0044791112",
        ] {
            assert!(matches!(parse(input), Err(Unread::Elsewhere)), "{input}");
        }
    }

    /// The type found here is the one `phonenumber` finds, and validity is
    /// `is_valid`'s, for every number of [`numbers`] that parses.
    #[test]
    fn the_type_is_phonenumbers() {
        phonenumber_cache_for_every_pattern();
        let (mut compared, mut known) = (0, 0);
        for input in numbers() {
            let Ok(number) = phonenumber::parse(None, &input) else {
                continue;
            };
            let code = number.code().value();
            let theirs = number.number_type(&DATABASE);
            let ours = number_type(code, &number.national().value().to_string());
            assert_eq!(ours, Some(theirs), "{input}");
            let valid = number_type(code, &number.national().to_string())
                .is_some_and(|kind| kind != Type::Unknown);
            assert_eq!(valid, number.is_valid(), "{input}");
            compared += 1;
            known += usize::from(theirs != Type::Unknown);
        }
        // Both answers occur, many times.
        assert!(compared > 5_000, "{compared}");
        assert!(
            known > 1_000 && compared - known > 1_000,
            "{known} of {compared}"
        );
    }

    #[test]
    fn an_unknown_code_has_no_type() {
        assert_eq!(number_type(999, "123456789"), Some(Type::Unknown));
    }
}
