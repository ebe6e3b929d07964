//! `phones`: validating SMS recipients in this process, MDC's validator
//! (`mdc_client::validate::phone_number`) against `phonenumber` alone
//! (parse, type, E.164), each number new to both.

use std::time::Instant;

use anyhow::bail;

use crate::recipients::{most_recipients, sms_recipient, MAX_COUNTRIES};
use crate::sample;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Numbers MDC's validator reads, each new.
    #[arg(long, default_value_t = 100_000)]
    numbers: u64,
    /// Numbers `phonenumber` alone reads (slow with many countries: its
    /// patterns are compiled again and again).
    #[arg(long, default_value_t = 5_000)]
    phonenumber_numbers: u64,
    /// Countries the numbers are spread over, in turn, as for `ingest`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=MAX_COUNTRIES))]
    countries: u64,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let most = most_recipients(args.countries);
    if args.numbers.max(args.phonenumber_numbers) > most {
        bail!(
            "--numbers {} and --phonenumber-numbers {} over --countries {}: \
             at most {most} distinct numbers",
            args.numbers,
            args.phonenumber_numbers,
            args.countries
        );
    }
    let started = Instant::now();
    mdc_client::validate::load_phone_metadata();
    println!(
        "metadata loaded in     {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    println!("countries              {}", args.countries);
    let valid = measure("MDC's validator", args.numbers, |n| {
        let to = sms_recipient(n, args.countries);
        mdc_client::validate::phone_number("to", &to).is_ok()
    });
    if valid != args.numbers {
        bail!(
            "{valid} of {} numbers valid to MDC's validator",
            args.numbers
        );
    }
    let theirs = measure("phonenumber alone", args.phonenumber_numbers, |n| {
        let to = sms_recipient(n, args.countries);
        phonenumber::parse(None, &to).is_ok_and(|number| {
            let _e164 = number.format().mode(phonenumber::Mode::E164).to_string();
            number.number_type(&phonenumber::metadata::DATABASE) != phonenumber::Type::Unknown
        })
    });
    // The same numbers, valid to both.
    if theirs != args.phonenumber_numbers {
        bail!(
            "{theirs} of {} numbers valid to phonenumber",
            args.phonenumber_numbers
        );
    }
    Ok(())
}

/// Runs `valid` on numbers 0 to `count`; prints the time and CPU per number
/// and how much the process grew. How many were valid.
fn measure(label: &str, count: u64, valid: impl Fn(u64) -> bool) -> u64 {
    let pid = std::process::id();
    let (rss, cpu, started) = (
        sample::rss(pid),
        sample::cpu_seconds("self"),
        Instant::now(),
    );
    let valid = (0..count).filter(|&n| valid(n)).count() as u64;
    let per_number = |seconds: f64| seconds * 1e6 / count.max(1) as f64;
    println!("{label}:");
    println!("  numbers              {count} ({valid} valid)");
    println!(
        "  per number           {:.1} µs ({:.1} µs of CPU)",
        per_number(started.elapsed().as_secs_f64()),
        per_number(sample::cpu_seconds("self") - cpu)
    );
    println!(
        "  process grew by      {:.1} MB",
        sample::rss(pid).saturating_sub(rss) as f64 / 1e6
    );
    valid
}
