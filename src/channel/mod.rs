//! Transports and their semantics (virtio-serial, unix-listen) and the agent's life.
