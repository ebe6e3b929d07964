//! Serde helpers for human-readable durations in config (`"10m"`, `"250ms"`)
//! inside collections, which `humantime-serde` does not cover.

/// `["1s", "5s", "30s"]`
pub mod list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(list: &[Duration], serializer: S) -> Result<S::Ok, S::Error> {
        let texts: Vec<String> = list
            .iter()
            .map(|d| humantime::format_duration(*d).to_string())
            .collect();
        texts.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Duration>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|text| humantime::parse_duration(text).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// `{ otp = "10m", marketing = "3d" }`
pub mod map {
    use std::collections::HashMap;
    use std::hash::Hash;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize + Eq + Hash, S: Serializer>(
        map: &HashMap<K, Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let texts: HashMap<&K, String> = map
            .iter()
            .map(|(k, v)| (k, humantime::format_duration(*v).to_string()))
            .collect();
        texts.serialize(serializer)
    }

    pub fn deserialize<'de, K: Deserialize<'de> + Eq + Hash, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<HashMap<K, Duration>, D::Error> {
        HashMap::<K, String>::deserialize(deserializer)?
            .into_iter()
            .map(|(k, v)| {
                humantime::parse_duration(&v)
                    .map(|d| (k, d))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}
