//! Times written to JSON as chrono writes them (RFC 3339, as many fraction
//! digits as needed, `Z`), made in one string instead of chrono's default,
//! which hands the JSON writer one piece at a time to be checked for
//! escapes. Every message writes several times for each of its changes.
//! Reading is chrono's own.

use serde::Serializer;

use crate::Timestamp;

fn text(at: &Timestamp) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// For `#[serde(serialize_with = "crate::rfc3339::serialize")]`.
pub fn serialize<S: Serializer>(at: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&text(at))
}

/// For an optional time: `None` is written as `null`, as chrono's is.
pub fn serialize_option<S: Serializer>(
    at: &Option<Timestamp>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serializer.serialize_some(&text(at)),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde::Serialize;

    use crate::Timestamp;

    #[derive(Serialize)]
    struct Chrono {
        at: Timestamp,
        maybe: Option<Timestamp>,
    }

    #[derive(Serialize)]
    struct Ours {
        #[serde(serialize_with = "super::serialize")]
        at: Timestamp,
        #[serde(serialize_with = "super::serialize_option")]
        maybe: Option<Timestamp>,
    }

    /// The text is chrono's, whatever the fraction of a second, and times
    /// read back are the same.
    #[test]
    fn times_are_written_as_chrono_writes_them() {
        let second = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        let times = [
            second,
            second + chrono::Duration::milliseconds(7),
            second + chrono::Duration::microseconds(123_450),
            second + chrono::Duration::nanoseconds(1),
            Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            crate::now(),
        ];
        for at in times {
            for maybe in [None, Some(at)] {
                let chrono = serde_json::to_string(&Chrono { at, maybe }).expect("json");
                let ours = serde_json::to_string(&Ours { at, maybe }).expect("json");
                assert_eq!(ours, chrono);
                let back: serde_json::Value = serde_json::from_str(&ours).expect("json");
                let read: Timestamp = serde_json::from_value(back["at"].clone()).expect("a time");
                assert_eq!(read, at);
            }
        }
    }
}
