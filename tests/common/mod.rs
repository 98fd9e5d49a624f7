//! Shared helpers for integration tests. `netns`: the two-namespace veth test bed.
#![allow(dead_code)]

pub mod netns;
pub mod python;
