//! The reference host client.
