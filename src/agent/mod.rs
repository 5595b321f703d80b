//! The agent's logic: dispatch with QEMU's checks in QEMU's order and exact texts, id echo,
//! no-reply commands, block and allow lists, the frozen-state allowlist, `guest-info`.
