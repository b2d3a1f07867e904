//! Feast's formats, and nothing else: the registry protobuf messages (written by
//! hand from Feast 0.67's field numbers, no `.proto` files), the registry file as
//! a sequence of raw top-level fields, and the conversion of amora definitions
//! into Feast objects.
//!
//! Architecture invariant: this is the only crate that knows Feast's field numbers
//! and class names. It does no I/O.

pub mod convert;
pub mod file;
pub mod json;
pub mod messages;
pub mod online;
pub mod serving;
pub mod value_type_names;

pub use file::{ObjectKind, RawField, RegistryFile};
pub use messages::*;

/// A registry that cannot be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("the registry is not a valid Feast registry protobuf: {0}")]
    Malformed(String),
    #[error("the registry's {kind} at byte {offset} does not decode: {source}")]
    Object { kind: &'static str, offset: usize, source: prost::DecodeError },
}
