//! Where the test servers are; set by scripts/test-services (via scripts/test).

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests with ./scripts/test, which starts the test servers"
        )
    })
}

/// Static credentials for the AWS test server live in the variables the
/// adapters' config names; scripts/test-services exports them.
pub fn aws_credentials() {
    env("MDC_TEST_AWS_KEY");
    env("MDC_TEST_AWS_SECRET");
}

/// The AWS settings of the adapters under test: the moto server, static
/// test credentials.
pub fn aws() -> mdc_providers::aws::AwsConfig {
    aws_credentials();
    mdc_providers::aws::AwsConfig {
        region: "us-east-1".into(),
        endpoint_url: Some(env("MDC_TEST_MOTO_URL")),
        access_key_id_env: Some("MDC_TEST_AWS_KEY".into()),
        secret_access_key_env: Some("MDC_TEST_AWS_SECRET".into()),
        timeout: std::time::Duration::from_secs(10),
        after_ambiguous: None,
        events_topic_arns: Vec::new(),
    }
}
