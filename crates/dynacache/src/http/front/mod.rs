//! Front-ends: the ways requests reach the [engine](super::engine).

pub(crate) mod reqwest;
pub(crate) mod tower;
