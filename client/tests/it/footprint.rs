//! Linking the client for http alone pulls in none of MDC's heavy parts.

use std::process::Command;

/// The crate names in `cargo tree` for the client with these features.
fn tree(features: &[&str]) -> Vec<String> {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    // The crate's directory as cargo gives it when the test runs: the one
    // baked in at build time names wherever the binary was built, which a
    // shared target directory may reuse from another checkout.
    let dir =
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    command
        .current_dir(dir)
        .args(["tree", "-p", "mdc-client", "--prefix", "none", "--locked"]);
    if !features.is_empty() {
        command.args(["--no-default-features", "--features", &features.join(",")]);
    }
    let output = command.output().expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn heavy(crates: &[String]) -> Vec<&String> {
    crates
        .iter()
        .filter(|name| {
            [
                "rdkafka",
                "redb",
                "aws-sdk-",
                "aws-config",
                "aws-smithy",
                "actix",
                "mdc-embedded",
                "mdc-providers",
                "mdc-mongodb",
                "mongodb",
                "lettre",
            ]
            .iter()
            .any(|heavy| name.starts_with(heavy))
        })
        .collect()
}

#[test]
fn the_http_transport_needs_no_librdkafka_database_aws_sdk_or_actix() {
    let http = tree(&["http"]);
    assert!(http.iter().any(|c| c == "reqwest"), "{http:?}");
    assert_eq!(heavy(&http), Vec::<&String>::new());
    // The check can fail: the direct transport does link librdkafka.
    let direct = tree(&["direct"]);
    assert!(
        heavy(&direct).iter().any(|c| c.starts_with("rdkafka")),
        "{direct:?}"
    );
    assert!(!direct.iter().any(|c| c == "reqwest"), "{direct:?}");
}
