//! The protobuf codec of `quiver.v1`: prost's, except that a message that cannot be decoded is
//! INVALID_ARGUMENT, the caller's mistake, rather than the INTERNAL that tonic's codec gives.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// Encodes `T` and decodes `U` with prost; used by the generated server and client stubs.
#[derive(Debug)]
pub struct QuiverCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for QuiverCodec<T, U> {
    fn default() -> Self {
        QuiverCodec(PhantomData)
    }
}

impl<T, U> Codec for QuiverCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = QuiverDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        QuiverDecoder(PhantomData)
    }
}

/// Decodes `U`; a malformed message (bad wire format, a string that is not UTF-8) is
/// INVALID_ARGUMENT naming the message type and what prost found wrong.
#[derive(Debug)]
pub struct QuiverDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for QuiverDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|error| {
            Status::invalid_argument(format!(
                "the message is not a valid {}: {error}",
                std::any::type_name::<U>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("message")
            ))
        })
    }
}
