//! Errors of building and configuring adapters. Send errors are
//! [`mdc_core::ports::ProviderError`]; each adapter documents its mapping in
//! docs/providers.md.

/// A message the adapter cannot turn into a vendor request.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the vendor request: {0}")]
pub struct BuildError(pub String);

/// A provider's configuration is unusable; names the key.
#[derive(Debug, thiserror::Error)]
#[error("providers.{provider}.{key}: {message}")]
pub struct ConfigError {
    pub provider: String,
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(provider: &str, key: &str, message: impl Into<String>) -> Self {
        Self {
            provider: provider.to_owned(),
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

impl From<BuildError> for mdc_core::ports::ProviderError {
    fn from(e: BuildError) -> Self {
        mdc_core::ports::ProviderError::Permanent {
            code: "BUILD".into(),
            message: e.to_string(),
        }
    }
}
