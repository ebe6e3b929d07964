//! How the store writes messages, and trail events with a vendor payload
//! or an error (the others: `event_codec`): JSON compressed with zstd and
//! a dictionary built into the binary. A record is a few hundred
//! bytes of JSON whose keys, statuses and components repeat from message
//! to message; compressed alone it barely shrinks, with a dictionary of
//! those repeats it takes a fifth to a third of the space.
//!
//! The first byte says how a value is written: `{` is plain JSON (how
//! every value was written before, still read), [`ZSTD_V1`] a whole zstd
//! frame made with dictionary v1 (written before, still read),
//! [`ZSTD_V1_SHORT`] the same frame without its magic number and
//! dictionary id, 8 bytes that say nothing the tag does not (what is
//! written now). A dictionary, once values are written with it, never
//! changes: a better one is added as the next version and the old one kept
//! for reading.

use std::cell::RefCell;
use std::sync::LazyLock;

use serde::de::DeserializeOwned;
use serde::Serialize;
use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

use crate::db::DbError;

/// Tag of a value compressed with dictionary v1, a whole frame.
const ZSTD_V1: u8 = 1;
/// Tag of a value compressed with dictionary v1, its frame without the
/// magic number ([`MAGIC`]) and dictionary id.
const ZSTD_V1_SHORT: u8 = 2;
/// How every zstd frame begins.
const MAGIC: [u8; 4] = 0xFD2F_B528_u32.to_le_bytes();
/// Tag of a plain JSON value (its opening brace).
const JSON: u8 = b'{';

/// Dictionary v1, trained on generated records and events of every
/// channel and vendor (`write_dictionary` in the tests below made it).
static DICTIONARY_V1: &[u8] = include_bytes!("dictionary-v1.zstd");

/// zstd's level: with a dictionary and values this small, higher levels
/// gain a few bytes for much more time.
const LEVEL: i32 = 1;

/// The largest value a frame may claim to hold; a corrupt header cannot
/// make a read allocate more.
const MAX_DECODED: u64 = 256 * 1024 * 1024;

static ENCODER_V1: LazyLock<EncoderDictionary<'static>> =
    LazyLock::new(|| EncoderDictionary::copy(DICTIONARY_V1, LEVEL));
static DECODER_V1: LazyLock<DecoderDictionary<'static>> =
    LazyLock::new(|| DecoderDictionary::copy(DICTIONARY_V1));

thread_local! {
    // Contexts are reused: creating one costs more than compressing a record.
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

fn io_error(what: &str, e: std::io::Error) -> DbError {
    DbError::Storage(format!("{what}: {e}"))
}

/// The stored form of `value`.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, DbError> {
    compress(&serde_json::to_vec(value)?)
}

/// The stored form of a value whose JSON is `json`.
pub(crate) fn compress(json: &[u8]) -> Result<Vec<u8>, DbError> {
    COMPRESSOR.with_borrow_mut(|slot| {
        let compressor = match slot {
            Some(c) => c,
            None => {
                let mut compressor = Compressor::with_prepared_dictionary(&ENCODER_V1)
                    .map_err(|e| io_error("cannot start compressing", e))?;
                compressor
                    .set_parameter(zstd::zstd_safe::CParameter::DictIdFlag(false))
                    .map_err(|e| io_error("cannot start compressing", e))?;
                slot.insert(compressor)
            }
        };
        // The frame goes after one byte kept for the tag; then its magic
        // number is cut off and the tag takes the place of its last byte.
        let mut out = vec![0; 4 + zstd::zstd_safe::compress_bound(json.len())];
        let written = compressor
            .compress_to_buffer(json, &mut out[1..])
            .map_err(|e| io_error("cannot compress a record", e))?;
        if out[1..5] != MAGIC {
            return Err(DbError::Storage(
                "compressed frame has no magic number".into(),
            ));
        }
        out.drain(..4);
        out[0] = ZSTD_V1_SHORT;
        out.truncate(1 + written - 4);
        Ok(out)
    })
}

/// A value as [`encode`] wrote it, or as plain JSON.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DbError> {
    match bytes.first() {
        Some(&JSON) => Ok(serde_json::from_slice(bytes)?),
        Some(&ZSTD_V1) => {
            let json = decompress(&bytes[1..])?;
            Ok(serde_json::from_slice(&json)?)
        }
        Some(&ZSTD_V1_SHORT) => {
            let mut frame = Vec::with_capacity(bytes.len() + 3);
            frame.extend_from_slice(&MAGIC);
            frame.extend_from_slice(&bytes[1..]);
            let json = decompress(&frame)?;
            Ok(serde_json::from_slice(&json)?)
        }
        Some(tag) => Err(DbError::Storage(format!(
            "stored value has an unknown encoding (first byte {tag:#04x})"
        ))),
        None => Err(DbError::Storage("stored value is empty".into())),
    }
}

fn decompress(frame: &[u8]) -> Result<Vec<u8>, DbError> {
    let size = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(size)) if size <= MAX_DECODED => size as usize,
        _ => {
            return Err(DbError::Storage(
                "stored value is not a complete compressed frame".into(),
            ))
        }
    };
    DECOMPRESSOR.with_borrow_mut(|slot| {
        let decompressor = match slot {
            Some(d) => d,
            None => slot.insert(
                Decompressor::with_prepared_dictionary(&DECODER_V1)
                    .map_err(|e| io_error("cannot start decompressing", e))?,
            ),
        };
        decompressor
            .decompress(frame, size)
            .map_err(|e| io_error("cannot decompress a stored value", e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdc_core::{Event, MessageRecord};

    use super::super::samples;

    #[test]
    fn records_and_events_come_back_as_written() {
        for record in samples::records(7, 200) {
            let bytes = encode(&record).expect("encodes");
            assert_eq!(bytes[0], ZSTD_V1_SHORT);
            assert_eq!(decode::<MessageRecord>(&bytes).expect("decodes"), record);
            for event in &record.events {
                assert_eq!(
                    decode::<Event>(&encode(event).expect("encodes")).expect("decodes"),
                    *event
                );
            }
        }
    }

    /// Values written before frames were shortened: tag 1 and a whole
    /// frame, dictionary id included.
    #[test]
    fn whole_frames_written_before_are_still_read() {
        let mut compressor =
            Compressor::with_prepared_dictionary(&ENCODER_V1).expect("compressor starts");
        for record in samples::records(4, 20) {
            let json = serde_json::to_vec(&record).expect("serialises");
            let mut bytes = vec![ZSTD_V1];
            bytes.extend(compressor.compress(&json).expect("compresses"));
            assert_eq!(&bytes[1..5], MAGIC);
            assert_eq!(decode::<MessageRecord>(&bytes).expect("decodes"), record);
            // The same value written now is 8 bytes shorter.
            assert_eq!(encode(&record).expect("encodes").len() + 8, bytes.len());
        }
    }

    #[test]
    fn plain_json_written_before_is_still_read() {
        let record = samples::records(3, 1).remove(0);
        let json = serde_json::to_vec(&record).expect("serialises");
        assert_eq!(decode::<MessageRecord>(&json).expect("decodes"), record);
    }

    /// Records the dictionary was not trained on (another seed) take at
    /// most a third of their JSON: the dictionary is in use and fits them.
    #[test]
    fn the_dictionary_shrinks_records_it_was_not_trained_on() {
        let (mut json, mut stored) = (0, 0);
        for record in samples::records(99, 500) {
            json += serde_json::to_vec(&record).expect("serialises").len();
            stored += encode(&record).expect("encodes").len();
            for event in &record.events {
                json += serde_json::to_vec(event).expect("serialises").len();
                stored += encode(event).expect("encodes").len();
            }
        }
        assert!(
            stored * 3 < json,
            "{stored} bytes stored for {json} bytes of JSON"
        );
    }

    #[test]
    fn damaged_values_are_errors_not_panics() {
        let record = samples::records(5, 1).remove(0);
        let bytes = encode(&record).expect("encodes");
        for broken in [
            &[][..],
            &[0xff, 1, 2][..],
            &[ZSTD_V1][..],
            &[ZSTD_V1_SHORT][..],
            &[ZSTD_V1_SHORT, 0xff, 0xff, 0xff, 0xff][..],
            &bytes[..bytes.len() / 2],
            &[ZSTD_V1, 0x28, 0xb5, 0x2f, 0xfd, 0xff, 0xff, 0xff, 0xff][..],
        ] {
            assert!(decode::<MessageRecord>(broken).is_err(), "{broken:?}");
        }
    }

    /// Version 1 is fixed: values on disk were written with it. A new
    /// dictionary is a new version (tag, file and decoder), never a new v1.
    #[test]
    fn dictionary_v1_is_unchanged() {
        assert_eq!(DICTIONARY_V1.len(), 16 * 1024);
        let digest = DICTIONARY_V1
            .iter()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
        assert_eq!(digest, DICTIONARY_V1_FNV);
    }

    const DICTIONARY_V1_FNV: u64 = 9_181_157_492_922_050_026;

    /// Writes a dictionary trained on generated samples. Run by hand
    /// (`cargo test -p mdc-embedded write_dictionary -- --ignored`) only
    /// to make the next version; v1 must stay as it is.
    #[test]
    #[ignore = "makes a new dictionary file; only for a new version"]
    fn write_dictionary() {
        let mut values = Vec::new();
        for record in samples::records(1, 4000) {
            values.push(serde_json::to_vec(&record).expect("serialises"));
            for event in &record.events {
                values.push(serde_json::to_vec(event).expect("serialises"));
            }
        }
        let dictionary = zstd::dict::from_samples(&values, 16 * 1024).expect("dictionary trains");
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/dictionary-next.zstd");
        std::fs::write(&path, dictionary).expect("dictionary written");
        println!("wrote {}", path.display());
    }
}
