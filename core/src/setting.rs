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

/// Checks that a duration from config lies in `[min, max]`: one typed as
/// `"30d"` instead of `"30s"` fails at start-up, not in production.
pub fn duration_within(
    key: &str,
    value: std::time::Duration,
    min: std::time::Duration,
    max: std::time::Duration,
) -> Result<(), InvalidSetting> {
    if value < min || value > max {
        return Err(InvalidSetting::new(
            key,
            format!(
                "must be between {} and {}, not {}",
                humantime::format_duration(min),
                humantime::format_duration(max),
                humantime::format_duration(value)
            ),
        ));
    }
    Ok(())
}

impl InvalidSetting {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}
