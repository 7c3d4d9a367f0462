//! The push servers Herald is compared with, started as real processes on loopback so that
//! the bench can drive them through their [`adapter`](super::adapter)s.
//!
//! - [`legacy`]: the Django Channels + channels_redis + daphne service Herald replaces.

pub mod legacy;
