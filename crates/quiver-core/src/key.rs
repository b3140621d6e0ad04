//! Entity keys: the values that identify a user, an item or a (user, item) pair.
//!
//! A key has one part per key field of its entity, in declaration order, so composite keys are
//! first-class. [`EntityKey::encode`] gives a canonical byte string used wherever a key must be one
//! opaque value: cache keys, embedded-store keys, dead-letter headers. Equal keys always encode to
//! equal bytes and different keys to different bytes.

use std::fmt;

use thiserror::Error;

use crate::value::ScalarType;

/// One part of an entity key. Keys are limited to types with exact equality, so no floats.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyPart {
    Int32(i32),
    Int64(i64),
    String(String),
    Bytes(Vec<u8>),
}

impl KeyPart {
    /// The scalar type of this part, to check it against the entity's declared key field.
    pub fn scalar_type(&self) -> ScalarType {
        match self {
            KeyPart::Int32(_) => ScalarType::Int32,
            KeyPart::Int64(_) => ScalarType::Int64,
            KeyPart::String(_) => ScalarType::String,
            KeyPart::Bytes(_) => ScalarType::Bytes,
        }
    }
}

/// The key of one entity: one part per declared key field, in declaration order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityKey(Vec<KeyPart>);

/// Bytes that are not an encoded [`EntityKey`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyDecodeError {
    #[error("entity key ends inside a part at byte {offset}")]
    Truncated { offset: usize },
    #[error("unknown entity key part tag {tag:#04x} at byte {offset}")]
    UnknownTag { tag: u8, offset: usize },
    #[error("entity key string part at byte {offset} is not UTF-8")]
    NotUtf8 { offset: usize },
    #[error("an entity key has at least one part")]
    Empty,
}

const TAG_INT32: u8 = 1;
const TAG_INT64: u8 = 2;
const TAG_STRING: u8 = 3;
const TAG_BYTES: u8 = 4;

impl EntityKey {
    /// A key from its parts, in the entity's key field order. An entity always has a key field,
    /// so `parts` must not be empty.
    pub fn new(parts: Vec<KeyPart>) -> Option<Self> {
        (!parts.is_empty()).then_some(EntityKey(parts))
    }

    pub fn parts(&self) -> &[KeyPart] {
        &self.0
    }

    /// Canonical bytes: per part a tag byte, then a big-endian integer or a u32 length and the
    /// bytes. The length prefix is what keeps ("ab", "c") and ("a", "bc") apart.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() * 9);
        for part in &self.0 {
            match part {
                KeyPart::Int32(value) => {
                    out.push(TAG_INT32);
                    out.extend_from_slice(&value.to_be_bytes());
                }
                KeyPart::Int64(value) => {
                    out.push(TAG_INT64);
                    out.extend_from_slice(&value.to_be_bytes());
                }
                KeyPart::String(value) => encode_bytes(&mut out, TAG_STRING, value.as_bytes()),
                KeyPart::Bytes(value) => encode_bytes(&mut out, TAG_BYTES, value),
            }
        }
        out
    }

    /// Reads back what [`EntityKey::encode`] wrote.
    pub fn decode(mut bytes: &[u8]) -> Result<Self, KeyDecodeError> {
        let total = bytes.len();
        let mut parts = Vec::new();
        while let Some((&tag, rest)) = bytes.split_first() {
            let offset = total - bytes.len();
            bytes = rest;
            let part = match tag {
                TAG_INT32 => KeyPart::Int32(i32::from_be_bytes(take_array(&mut bytes, offset)?)),
                TAG_INT64 => KeyPart::Int64(i64::from_be_bytes(take_array(&mut bytes, offset)?)),
                TAG_STRING => {
                    let raw = take_prefixed(&mut bytes, offset)?;
                    let text =
                        std::str::from_utf8(raw).map_err(|_| KeyDecodeError::NotUtf8 { offset })?;
                    KeyPart::String(text.to_owned())
                }
                TAG_BYTES => KeyPart::Bytes(take_prefixed(&mut bytes, offset)?.to_vec()),
                tag => return Err(KeyDecodeError::UnknownTag { tag, offset }),
            };
            parts.push(part);
        }
        EntityKey::new(parts).ok_or(KeyDecodeError::Empty)
    }
}

fn encode_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    let length = u32::try_from(bytes.len()).expect("an entity key part is shorter than 4 GiB");
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn take_array<const N: usize>(bytes: &mut &[u8], offset: usize) -> Result<[u8; N], KeyDecodeError> {
    let (head, rest) = bytes
        .split_first_chunk::<N>()
        .ok_or(KeyDecodeError::Truncated { offset })?;
    *bytes = rest;
    Ok(*head)
}

fn take_prefixed<'a>(bytes: &mut &'a [u8], offset: usize) -> Result<&'a [u8], KeyDecodeError> {
    let length = u32::from_be_bytes(take_array(bytes, offset)?) as usize;
    if bytes.len() < length {
        return Err(KeyDecodeError::Truncated { offset });
    }
    let (head, rest) = bytes.split_at(length);
    *bytes = rest;
    Ok(head)
}

impl fmt::Display for KeyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPart::Int32(value) => write!(f, "{value}"),
            KeyPart::Int64(value) => write!(f, "{value}"),
            KeyPart::String(value) => write!(f, "{value:?}"),
            KeyPart::Bytes(value) => {
                f.write_str("0x")?;
                value.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
            }
        }
    }
}

impl fmt::Display for EntityKey {
    /// `42` for a single key, `(42, "se")` for a composite one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [single] = self.0.as_slice() {
            return write!(f, "{single}");
        }
        f.write_str("(")?;
        for (index, part) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{part}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_part() -> impl Strategy<Value = KeyPart> {
        prop_oneof![
            any::<i32>().prop_map(KeyPart::Int32),
            any::<i64>().prop_map(KeyPart::Int64),
            ".{0,12}".prop_map(KeyPart::String),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(KeyPart::Bytes),
        ]
    }

    fn any_key() -> impl Strategy<Value = EntityKey> {
        proptest::collection::vec(any_part(), 1..4).prop_map(|parts| EntityKey::new(parts).unwrap())
    }

    proptest! {
        #[test]
        fn every_key_decodes_to_itself(key in any_key()) {
            prop_assert_eq!(EntityKey::decode(&key.encode()), Ok(key));
        }

        #[test]
        fn different_keys_never_share_bytes(left in any_key(), right in any_key()) {
            prop_assert_eq!(left == right, left.encode() == right.encode());
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = EntityKey::decode(&bytes);
        }
    }

    #[test]
    fn composite_parts_do_not_run_together() {
        let split_early = EntityKey::new(vec![
            KeyPart::String("ab".into()),
            KeyPart::String("c".into()),
        ]);
        let split_late = EntityKey::new(vec![
            KeyPart::String("a".into()),
            KeyPart::String("bc".into()),
        ]);
        assert_ne!(split_early.unwrap().encode(), split_late.unwrap().encode());
    }

    #[test]
    fn bad_bytes_say_where_they_went_wrong() {
        assert_eq!(EntityKey::decode(&[]), Err(KeyDecodeError::Empty));
        assert_eq!(
            EntityKey::decode(&[TAG_INT64, 0, 0]),
            Err(KeyDecodeError::Truncated { offset: 0 })
        );
        let mut bytes = EntityKey::new(vec![KeyPart::Int32(7)]).unwrap().encode();
        bytes.push(0x7f);
        assert_eq!(
            EntityKey::decode(&bytes),
            Err(KeyDecodeError::UnknownTag {
                tag: 0x7f,
                offset: 5
            })
        );
        assert_eq!(
            EntityKey::decode(&[TAG_STRING, 0, 0, 0, 1, 0xff]),
            Err(KeyDecodeError::NotUtf8 { offset: 0 })
        );
    }

    #[test]
    fn displays_as_an_engineer_would_write_it() {
        let single = EntityKey::new(vec![KeyPart::Int64(42)]).unwrap();
        assert_eq!(single.to_string(), "42");
        let composite =
            EntityKey::new(vec![KeyPart::Int64(42), KeyPart::String("se".into())]).unwrap();
        assert_eq!(composite.to_string(), "(42, \"se\")");
        assert_eq!(KeyPart::Bytes(vec![0xab, 0x01]).to_string(), "0xab01");
    }

    #[test]
    fn a_key_needs_a_part() {
        assert_eq!(EntityKey::new(Vec::new()), None);
    }
}
