//! amora's domain model: value types, definitions and their validation.
//!
//! Architecture invariant: this crate does no I/O. Everything here takes values and
//! returns values, so it cannot fail for reasons outside its arguments.

pub mod calendar;
pub mod dag;
pub mod defs;
pub mod diagnostics;
pub mod duration;
pub mod hash;
pub mod ident;
pub mod validate;
pub mod value_type;

pub use defs::*;
pub use diagnostics::{Diagnostic, Diagnostics};
pub use duration::parse_duration;
pub use value_type::{Scalar, ValueType};
