//! Record values into Avro values of one reader schema: bare datums, datums in the Confluent
//! framing whose writer schema is found by id, and datums decoded already in another writer's
//! schema, all resolved by the Avro rules when the writer's schema is not the reader's.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use thiserror::Error;

use crate::wire;

/// The most bytes of a string or bytes field, and the most items of an array or map block, a
/// record may claim. Avro reserves room for a block's items before reading them, so without a
/// bound a five-byte record claiming 500 million items made the decoder ask for 28 GB and abort
/// the process (`tests/hostile_input.rs`); with it, such a record is undecodable. It also
/// bounds the blocks of Avro container files, which writers keep well below it (64 KiB by
/// default in Java, 16 KB in Rust and Python).
pub const MAX_DECODED_LEN: usize = 8 << 20;

/// Bounds every Avro decode of this process by [`MAX_DECODED_LEN`]. Only the first bound set
/// in a process holds, so this is called before anything is decoded: by [`Decoder::new`], by
/// the file reader, and at the start of the binary.
pub fn limit_decoded_lengths() {
    apache_avro::util::max_allocation_bytes(MAX_DECODED_LEN);
}

/// Why a record value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("{0}")]
    Undecodable(String),
    #[error("schema id {0} is neither configured nor in the schema registry")]
    UnknownSchemaId(u32),
}

/// Decodes record values into Avro values of one reader schema.
#[derive(Debug)]
pub struct Decoder {
    reader: Schema,
    /// Per writer schema id, whether that schema is the reader schema, found once per id:
    /// resolution costs about 3x a plain decode (benches/avro_decode.rs), and comparing schemas
    /// per record would cost more than the decode.
    same_as_reader: Mutex<HashMap<u32, bool>>,
}

impl Decoder {
    pub fn new(reader: Schema) -> Self {
        limit_decoded_lengths();
        Decoder {
            reader,
            same_as_reader: Mutex::new(HashMap::new()),
        }
    }

    /// The schema records are decoded into.
    pub fn reader(&self) -> &Schema {
        &self.reader
    }

    /// A bare datum written with the reader schema itself.
    pub fn decode_bare(&self, payload: &[u8]) -> Result<Avro, DecodeError> {
        apache_avro::from_avro_datum(&self.reader, &mut &*payload, None).map_err(not_a_datum)
    }

    /// A datum in the Confluent framing, whose writer schema `writer_of` finds by its id.
    pub fn decode_framed(
        &self,
        payload: &[u8],
        writer_of: impl FnOnce(u32) -> Option<Arc<Schema>>,
    ) -> Result<Avro, DecodeError> {
        let framed =
            wire::decode(payload).map_err(|error| DecodeError::Undecodable(error.to_string()))?;
        let id = framed.schema_id;
        let writer = writer_of(id).ok_or(DecodeError::UnknownSchemaId(id))?;
        let same = *self
            .same_as_reader
            .lock()
            .expect("not poisoned")
            .entry(id)
            .or_insert_with(|| *writer == self.reader);
        apache_avro::from_avro_datum(
            &writer,
            &mut &*framed.datum,
            (!same).then_some(&self.reader),
        )
        .map_err(not_a_datum)
    }

    /// A datum decoded already with `writer`, as the reader schema sees it: itself when the two
    /// are the same schema.
    pub fn resolve<'d>(
        &self,
        writer: &Schema,
        datum: &'d Avro,
    ) -> Result<Cow<'d, Avro>, DecodeError> {
        if *writer == self.reader {
            return Ok(Cow::Borrowed(datum));
        }
        datum
            .clone()
            .resolve(&self.reader)
            .map(Cow::Owned)
            .map_err(|error| {
                DecodeError::Undecodable(format!("does not resolve to the view's schema: {error}"))
            })
    }
}

fn not_a_datum(error: apache_avro::Error) -> DecodeError {
    DecodeError::Undecodable(format!("not an Avro datum of the expected schema: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"E","fields":[{"name":"a","type":"long"}]}"#;
    const V2: &str = r#"{"type":"record","name":"E","fields":[{"name":"a","type":"long"},
        {"name":"b","type":"string","default":"x"}]}"#;

    fn schema(avsc: &str) -> Schema {
        Schema::parse_str(avsc).unwrap()
    }

    fn record(a: i64) -> Avro {
        Avro::Record(vec![("a".into(), Avro::Long(a))])
    }

    fn framed(id: u32, writer: &Schema, datum: Avro) -> Vec<u8> {
        wire::encode(id, &apache_avro::to_avro_datum(writer, datum).unwrap())
    }

    #[test]
    fn a_bare_datum_is_read_with_the_reader_schema() {
        let decoder = Decoder::new(schema(V1));
        let bytes = apache_avro::to_avro_datum(&schema(V1), record(7)).unwrap();
        assert_eq!(decoder.decode_bare(&bytes), Ok(record(7)));
        let error = decoder.decode_bare(&[]).unwrap_err();
        assert!(matches!(error, DecodeError::Undecodable(_)), "{error}");
    }

    #[test]
    fn a_framed_datum_of_an_older_writer_is_resolved_to_the_reader() {
        let decoder = Decoder::new(schema(V2));
        let writer = Arc::new(schema(V1));
        let bytes = framed(3, &writer, record(7));
        let decoded = decoder
            .decode_framed(&bytes, |id| (id == 3).then(|| writer.clone()))
            .unwrap();
        assert_eq!(
            decoded,
            Avro::Record(vec![
                ("a".into(), Avro::Long(7)),
                ("b".into(), Avro::String("x".into())),
            ])
        );
        assert_eq!(
            decoder.decode_framed(&bytes, |_| None),
            Err(DecodeError::UnknownSchemaId(3))
        );
        let error = decoder.decode_framed(&[1, 2], |_| None).unwrap_err();
        assert!(matches!(error, DecodeError::Undecodable(_)), "{error}");
    }

    #[test]
    fn a_decoded_datum_is_borrowed_when_its_writer_is_the_reader() {
        let decoder = Decoder::new(schema(V1));
        let datum = record(1);
        assert!(matches!(
            decoder.resolve(&schema(V1), &datum),
            Ok(Cow::Borrowed(_))
        ));
        let evolved = Decoder::new(schema(V2));
        let resolved = evolved.resolve(&schema(V1), &datum).unwrap();
        assert!(matches!(resolved, Cow::Owned(Avro::Record(ref fields)) if fields.len() == 2));
        let unrelated = Decoder::new(schema(r#"{"type":"string"}"#));
        let error = unrelated.resolve(&schema(V1), &datum).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("does not resolve to the view's schema"),
            "{error}"
        );
    }
}
