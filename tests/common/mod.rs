//! What the test files share: one copy each of the environment knobs, the seeded generator,
//! the object-store backends, the model oracle and the small store fixture. Each test file is
//! its own crate and declares `mod common;`.

#![allow(
    clippy::disallowed_methods,
    reason = "tests read the wall clock for seeds, unique names and commit times"
)]
#![allow(
    dead_code,
    reason = "each test crate uses a different part of the common module"
)]

pub mod backends;
pub mod env;
pub mod fixture;
pub mod follow;
pub mod hooked;
pub mod model;
pub mod rng;
