//! A number's type (mobile, fixed line, toll free…) from libphonenumber's
//! metadata, as `phonenumber`'s `number_type` finds it, with each region's
//! patterns compiled once, for ASCII digits.
//!
//! `phonenumber` compiles its patterns on first use into one locked cache of
//! 100 expressions, shared by every region and Unicode-aware (`\d` is any
//! script's digit). Finding a type tries up to ten patterns of the number's
//! region, and for `+1` of several regions: numbers of more than a few
//! countries in turn evict each other's patterns, and every number then
//! compiles some again: 0.5–3.6 ms of CPU a number, against about 5 µs,
//! parsing included, with the patterns here. Compiled for ASCII digits,
//! which is all a parsed national number holds, every region's patterns
//! together take about 16 MB instead of 120 and match about seven times
//! faster (docs/benchmarks.md).

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock};

use phonenumber::metadata::{Descriptor, Metadata, DATABASE};
use phonenumber::Type;
use regex::{Regex, RegexBuilder};

/// The type of the national number `national` (digits, leading zeros
/// included where the number has them) under country calling code `code`,
/// or `None` when a region's patterns do not compile here (then
/// `phonenumber` is asked instead).
///
/// The region is chosen as `phonenumber` chooses it: the only one of its
/// code, or, for a code shared by several (`+1`, `+7`, `+44`…), the first
/// whose leading digits match, or without those the first where the
/// number has a type.
pub(super) fn number_type(code: u16, national: &str) -> Option<Type> {
    let Some(ids) = DATABASE.region(&code) else {
        return Some(Type::Unknown);
    };
    let region = match ids.as_slice() {
        // Non-geographic codes (+800, +882…) have one entry, under the code.
        ["001"] => match DATABASE.by_code(&code).and_then(|m| m.into_iter().next()) {
            Some(meta) => region(meta.id())?,
            None => return Some(Type::Unknown),
        },
        [id] if id.parse::<phonenumber::country::Id>().is_err() => return Some(Type::Unknown),
        [id] => region(id)?,
        ids => {
            let mut chosen = None;
            for id in ids {
                let candidate = region(id)?;
                let here = match &candidate.leading_digits {
                    Some(leading) => leading.is_match(national),
                    None => candidate.kind(national) != Type::Unknown,
                };
                if here {
                    chosen = Some(candidate);
                    break;
                }
            }
            match chosen {
                Some(region) => region,
                None => return Some(Type::Unknown),
            }
        }
    };
    Some(region.kind(national))
}

/// A region's metadata, and its patterns once compiled (`None` when one
/// does not compile).
struct Entry {
    meta: &'static Metadata,
    compiled: OnceLock<Option<Region>>,
}

/// Every region by its id; each region's patterns are compiled when it is
/// first asked for.
static REGIONS: LazyLock<HashMap<&'static str, Entry>> = LazyLock::new(|| {
    DATABASE
        .iter()
        .map(|meta| {
            let compiled = OnceLock::new();
            (meta.id(), Entry { meta, compiled })
        })
        .collect()
});

fn region(id: &str) -> Option<&'static Region> {
    let entry = REGIONS.get(id)?;
    entry
        .compiled
        .get_or_init(|| Region::new(entry.meta))
        .as_ref()
}

/// One region's patterns, in the order `phonenumber` tries them.
struct Region {
    leading_digits: Option<Regex>,
    general: Pattern,
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
        Some(Region {
            leading_digits: match meta.leading_digits() {
                Some(leading) => Some(at_start(leading.as_str())?),
                None => None,
            },
            general: Pattern::new(d.general())?,
            special,
            fixed_line: optional(d.fixed_line())?,
            mobile: optional(d.mobile())?,
            fixed_line_is_mobile: source(d.fixed_line()) == source(d.mobile()),
        })
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
mod tests {
    use phonenumber::metadata::DATABASE;
    use phonenumber::Type;

    use super::{number_type, REGIONS};

    /// Every region's patterns compile here.
    #[test]
    fn every_regions_patterns_compile() {
        for id in REGIONS.keys() {
            assert!(super::region(id).is_some(), "{id}");
        }
        assert!(REGIONS.len() > 240, "{}", REGIONS.len());
    }

    /// Every region's example numbers (national, with the region's calling
    /// code).
    fn examples() -> Vec<(u16, String)> {
        let mut all = Vec::new();
        for meta in DATABASE.iter() {
            let d = meta.descriptors();
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
            for example in descriptors
                .into_iter()
                .flatten()
                .filter_map(|d| d.example())
            {
                all.push((meta.country_code(), example.to_owned()));
            }
        }
        all
    }

    /// The type found here is the one `phonenumber` finds, for every
    /// region's example numbers and for numbers near them (a digit
    /// changed, one more, one fewer, all nines), valid or not.
    #[test]
    fn the_type_is_phonenumbers() {
        // `phonenumber`'s own cache, large enough for every pattern: this
        // compares answers, and thrashing would take minutes.
        DATABASE
            .cache()
            .lock()
            .expect("cache")
            .set_capacity(100_000);
        let (mut compared, mut known) = (0, 0);
        for (code, example) in examples() {
            let mut near = vec![
                example.clone(),
                format!("{example}0"),
                "9".repeat(example.len()),
            ];
            if example.len() > 1 {
                let (most, last) = example.split_at(example.len() - 1);
                near.push(most.to_owned());
                let changed = (last.parse::<u8>().expect("a digit") + 3) % 10;
                near.push(format!("{most}{changed}"));
            }
            for national in near {
                let input = format!("+{code}{national}");
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
        }
        // Both answers occur, many times.
        assert!(compared > 4_000, "{compared}");
        assert!(
            known > 1_000 && compared - known > 1_000,
            "{known} of {compared}"
        );
    }

    /// Numbers of every region, each new, leave `phonenumber`'s cache of
    /// compiled patterns short of full: parsing them evicted nothing, so no
    /// number compiled a pattern twice. (Its default, 100 patterns, held
    /// those of a few countries: numbers of more in turn compiled patterns
    /// again, 0.5–3.6 ms of CPU each.)
    #[test]
    fn numbers_of_every_region_compile_no_pattern_twice() {
        let mut valid = 0;
        for (code, example) in examples() {
            valid +=
                usize::from(super::super::phone_number("to", &format!("+{code}{example}")).is_ok());
        }
        assert!(valid > 1_000, "{valid}");
        let cache = DATABASE.cache();
        let cache = cache.lock().expect("cache");
        assert!(
            cache.len() < cache.capacity(),
            "{} patterns kept, at most {}",
            cache.len(),
            cache.capacity()
        );
    }

    #[test]
    fn an_unknown_code_has_no_type() {
        assert_eq!(number_type(999, "123456789"), Some(Type::Unknown));
    }
}
