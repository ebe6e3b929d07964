//! Where the test servers are; set by scripts/test-services (via scripts/test).

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests with ./scripts/test, which starts the test servers"
        )
    })
}
