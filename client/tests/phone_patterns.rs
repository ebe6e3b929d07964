//! Validating numbers of every region leaves `phonenumber`'s cache of
//! compiled patterns empty. A program of its own: that cache is one per
//! process, and other tests (numbers written with letters) fill it.
//!
//! The cache holds 100 patterns for every region together; numbers of more
//! than a few countries in turn evicted each other's patterns there, and
//! each new number compiled some again (about 4 ms of a server's CPU a
//! message for recipients in 25 countries, docs/benchmarks.md).

use mdc_client::validate::phone_number;
use phonenumber::metadata::DATABASE;

#[test]
fn numbers_of_every_region_compile_none_of_phonenumbers_patterns() {
    let mut valid = 0;
    for code in 1..=999 {
        for meta in DATABASE.by_code(&code).unwrap_or_default() {
            let d = meta.descriptors();
            let examples = [Some(d.general()), d.fixed_line(), d.mobile(), d.toll_free()]
                .into_iter()
                .flatten()
                .filter_map(|desc| desc.example());
            for example in examples {
                // As people write them, separators and all.
                let written = format!("+{code} {example}");
                valid += usize::from(phone_number("to", &written).is_ok());
            }
        }
    }
    assert!(valid > 500, "{valid} valid");
    let cache = DATABASE.cache();
    let cache = cache.lock().expect("phonenumber's cache");
    assert_eq!(cache.len(), 0, "patterns compiled in phonenumber's cache");
}
