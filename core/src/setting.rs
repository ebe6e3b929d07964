//! The error every config check returns: which key, and what is wrong.

/// A setting that cannot be used. Displays as `key message`, e.g.
/// `dispatcher.lease must be longer than dispatcher.send_timeout`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} {message}")]
pub struct InvalidSetting {
    /// The config key at fault, dotted (`dispatcher.lease`).
    pub key: String,
    pub message: String,
}

impl InvalidSetting {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}
