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
