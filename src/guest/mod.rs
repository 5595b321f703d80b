//! The simulated guest behind the commands, described by a profile. Never touches the host.
