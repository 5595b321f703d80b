//! qemu-ga's command table: every command of the Linux agent with its argument schema (QEMU
//! qga/qapi-schema.json), its success-response flag and the version it appeared in.
//!
//! The table is in registration order, which is schema order: `qemu-ga -b help` prints it
//! and `guest-info` lists it reversed.

use super::AgentVersion;

/// The JSON type class an alternate branches on (QEMU's `QType` of the input value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QType {
    Number,
    String,
    Bool,
}

/// A QAPI type as the input visitor checks it.
#[derive(Debug)]
pub(crate) enum ArgType {
    /// `int`: an int64.
    Int,
    /// `uint64`: any integer that fits uint64 or int64 (negative values are accepted).
    Uint64,
    Str,
    Bool,
    Enum(&'static EnumType),
    Alternate(&'static AlternateType),
    List(&'static ArgType),
    Struct(&'static StructType),
}

#[derive(Debug)]
pub(crate) struct EnumType {
    pub values: &'static [&'static str],
}

#[derive(Debug)]
pub(crate) struct AlternateType {
    /// The QAPI type name, which the type error quotes.
    pub name: &'static str,
    pub branches: &'static [(QType, ArgType)],
}

#[derive(Debug)]
pub(crate) struct StructType {
    pub members: &'static [Member],
}

/// One member of an argument struct, in schema order.
#[derive(Debug)]
pub(crate) struct Member {
    pub name: &'static str,
    pub optional: bool,
    pub ty: ArgType,
}

const fn required(name: &'static str, ty: ArgType) -> Member {
    Member {
        name,
        optional: false,
        ty,
    }
}

const fn optional(name: &'static str, ty: ArgType) -> Member {
    Member {
        name,
        optional: true,
        ty,
    }
}

/// Where a command is compiled in, as far as a Linux agent is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Platform {
    /// Built and enabled on Linux.
    Linux,
    /// Windows-only: before 9.1 a Linux agent registers it and disables it itself; from
    /// 9.1 it is not compiled in at all.
    WindowsOnly,
}

/// One command of the table.
#[derive(Debug)]
pub(crate) struct CommandSpec {
    pub name: &'static str,
    /// The QEMU version (major, minor) that added the command.
    pub since: (u32, u32),
    /// False for the commands that write nothing when they succeed.
    pub success_response: bool,
    /// It changes the machine the agent runs on (the guest's power, files, time, users,
    /// processes, filesystems...): never run on a host's real agent.
    pub changes_machine: bool,
    /// Running it twice is not running it once: it changes the machine, or it consumes
    /// state (a process's exit status, a file's position): a client must not resend it
    /// after a timeout.
    pub not_repeatable: bool,
    pub platform: Platform,
    members: &'static [Member],
    /// Before this version the command took these members instead.
    older: Option<((u32, u32), &'static [Member])>,
}

impl CommandSpec {
    /// The argument members this version of the agent checks.
    pub(crate) fn members(&self, version: AgentVersion) -> &'static [Member] {
        match self.older {
            Some(((major, minor), older)) if !version.at_least(major, minor) => older,
            _ => self.members,
        }
    }

    /// Whether an agent of `version` built for Linux registers the command at all.
    pub(crate) fn registered_in(&self, version: AgentVersion) -> bool {
        version.at_least(self.since.0, self.since.1)
            && !(self.platform == Platform::WindowsOnly && version.at_least(9, 1))
    }
}

const fn command(name: &'static str, since: (u32, u32), members: &'static [Member]) -> CommandSpec {
    CommandSpec {
        name,
        since,
        success_response: true,
        changes_machine: false,
        not_repeatable: false,
        platform: Platform::Linux,
        members,
        older: None,
    }
}

/// A command that changes the machine (and so is never to be repeated either).
const fn changes(spec: CommandSpec) -> CommandSpec {
    CommandSpec {
        changes_machine: true,
        not_repeatable: true,
        ..spec
    }
}

/// A command that changes nothing but consumes state: not to be repeated.
const fn consumes(spec: CommandSpec) -> CommandSpec {
    CommandSpec {
        not_repeatable: true,
        ..spec
    }
}

const fn no_reply(
    name: &'static str,
    since: (u32, u32),
    members: &'static [Member],
) -> CommandSpec {
    CommandSpec {
        success_response: false,
        ..command(name, since, members)
    }
}

const fn changed(spec: CommandSpec, before: (u32, u32), older: &'static [Member]) -> CommandSpec {
    CommandSpec {
        older: Some((before, older)),
        ..spec
    }
}

static QGA_SEEK: EnumType = EnumType {
    values: &["set", "cur", "end"],
};

static GUEST_FILE_WHENCE: AlternateType = AlternateType {
    name: "GuestFileWhence",
    branches: &[
        (QType::Number, ArgType::Int),
        (QType::String, ArgType::Enum(&QGA_SEEK)),
    ],
};

static GUEST_EXEC_CAPTURE_OUTPUT_MODE: EnumType = EnumType {
    values: &["none", "stdout", "stderr", "separated", "merged"],
};

static GUEST_EXEC_CAPTURE_OUTPUT: AlternateType = AlternateType {
    name: "GuestExecCaptureOutput",
    branches: &[
        (QType::Bool, ArgType::Bool),
        (
            QType::String,
            ArgType::Enum(&GUEST_EXEC_CAPTURE_OUTPUT_MODE),
        ),
    ],
};

static GUEST_LOGICAL_PROCESSOR: StructType = StructType {
    members: &[
        required("logical-id", ArgType::Int),
        required("online", ArgType::Bool),
        optional("can-offline", ArgType::Bool),
    ],
};

static GUEST_MEMORY_BLOCK: StructType = StructType {
    members: &[
        required("phys-index", ArgType::Uint64),
        required("online", ArgType::Bool),
        optional("can-offline", ArgType::Bool),
    ],
};

static STR_LIST: ArgType = ArgType::Str;
static VCPU_LIST: ArgType = ArgType::Struct(&GUEST_LOGICAL_PROCESSOR);
static MEMORY_BLOCK_LIST: ArgType = ArgType::Struct(&GUEST_MEMORY_BLOCK);

const HANDLE_ONLY: &[Member] = &[required("handle", ArgType::Int)];

/// The Linux agent's commands in registration order, plus the two added after 7.2.
pub(crate) static COMMANDS: &[CommandSpec] = &[
    command(
        "guest-sync-delimited",
        (1, 1),
        &[required("id", ArgType::Int)],
    ),
    command("guest-sync", (0, 15), &[required("id", ArgType::Int)]),
    command("guest-ping", (0, 15), &[]),
    command("guest-get-time", (1, 5), &[]),
    changes(changed(
        command("guest-set-time", (1, 5), &[optional("time", ArgType::Int)]),
        (2, 0),
        &[required("time", ArgType::Int)],
    )),
    command("guest-info", (0, 15), &[]),
    changes(no_reply(
        "guest-shutdown",
        (0, 15),
        &[optional("mode", ArgType::Str)],
    )),
    changes(command(
        "guest-file-open",
        (0, 15),
        &[
            required("path", ArgType::Str),
            optional("mode", ArgType::Str),
        ],
    )),
    consumes(command("guest-file-close", (0, 15), HANDLE_ONLY)),
    consumes(command(
        "guest-file-read",
        (0, 15),
        &[
            required("handle", ArgType::Int),
            optional("count", ArgType::Int),
        ],
    )),
    changes(command(
        "guest-file-write",
        (0, 15),
        &[
            required("handle", ArgType::Int),
            required("buf-b64", ArgType::Str),
            optional("count", ArgType::Int),
        ],
    )),
    consumes(changed(
        command(
            "guest-file-seek",
            (0, 15),
            &[
                required("handle", ArgType::Int),
                required("offset", ArgType::Int),
                required("whence", ArgType::Alternate(&GUEST_FILE_WHENCE)),
            ],
        ),
        (2, 6),
        &[
            required("handle", ArgType::Int),
            required("offset", ArgType::Int),
            required("whence", ArgType::Int),
        ],
    )),
    consumes(command("guest-file-flush", (0, 15), HANDLE_ONLY)),
    command("guest-fsfreeze-status", (0, 15), &[]),
    changes(command("guest-fsfreeze-freeze", (0, 15), &[])),
    changes(command(
        "guest-fsfreeze-freeze-list",
        (2, 2),
        &[optional("mountpoints", ArgType::List(&STR_LIST))],
    )),
    changes(command("guest-fsfreeze-thaw", (0, 15), &[])),
    changes(command(
        "guest-fstrim",
        (1, 2),
        &[optional("minimum", ArgType::Int)],
    )),
    changes(no_reply("guest-suspend-disk", (1, 1), &[])),
    changes(no_reply("guest-suspend-ram", (1, 1), &[])),
    changes(no_reply("guest-suspend-hybrid", (1, 1), &[])),
    command("guest-network-get-interfaces", (1, 1), &[]),
    command("guest-get-vcpus", (1, 5), &[]),
    changes(command(
        "guest-set-vcpus",
        (1, 5),
        &[required("vcpus", ArgType::List(&VCPU_LIST))],
    )),
    command("guest-get-disks", (5, 2), &[]),
    command("guest-get-fsinfo", (2, 2), &[]),
    changes(command(
        "guest-set-user-password",
        (2, 3),
        &[
            required("username", ArgType::Str),
            required("password", ArgType::Str),
            required("crypted", ArgType::Bool),
        ],
    )),
    command("guest-get-memory-blocks", (2, 3), &[]),
    changes(command(
        "guest-set-memory-blocks",
        (2, 3),
        &[required("mem-blks", ArgType::List(&MEMORY_BLOCK_LIST))],
    )),
    command("guest-get-memory-block-info", (2, 3), &[]),
    consumes(command(
        "guest-exec-status",
        (2, 5),
        &[required("pid", ArgType::Int)],
    )),
    changes(changed(
        command(
            "guest-exec",
            (2, 5),
            &[
                required("path", ArgType::Str),
                optional("arg", ArgType::List(&STR_LIST)),
                optional("env", ArgType::List(&STR_LIST)),
                optional("input-data", ArgType::Str),
                optional(
                    "capture-output",
                    ArgType::Alternate(&GUEST_EXEC_CAPTURE_OUTPUT),
                ),
            ],
        ),
        (8, 1),
        &[
            required("path", ArgType::Str),
            optional("arg", ArgType::List(&STR_LIST)),
            optional("env", ArgType::List(&STR_LIST)),
            optional("input-data", ArgType::Str),
            optional("capture-output", ArgType::Bool),
        ],
    )),
    command("guest-get-host-name", (2, 10), &[]),
    command("guest-get-users", (2, 10), &[]),
    command("guest-get-timezone", (2, 10), &[]),
    command("guest-get-osinfo", (2, 10), &[]),
    CommandSpec {
        platform: Platform::WindowsOnly,
        ..command("guest-get-devices", (5, 2), &[])
    },
    command(
        "guest-ssh-get-authorized-keys",
        (5, 2),
        &[required("username", ArgType::Str)],
    ),
    changes(command(
        "guest-ssh-add-authorized-keys",
        (5, 2),
        &[
            required("username", ArgType::Str),
            required("keys", ArgType::List(&STR_LIST)),
            optional("reset", ArgType::Bool),
        ],
    )),
    changes(command(
        "guest-ssh-remove-authorized-keys",
        (5, 2),
        &[
            required("username", ArgType::Str),
            required("keys", ArgType::List(&STR_LIST)),
        ],
    )),
    command("guest-get-diskstats", (7, 1), &[]),
    command("guest-get-cpustats", (7, 1), &[]),
    command("guest-get-load", (10, 0), &[]),
    command("guest-network-get-route", (9, 1), &[]),
];

/// The commands an agent of `version` registers, in registration order.
pub(crate) fn registered(version: AgentVersion) -> impl Iterator<Item = &'static CommandSpec> {
    COMMANDS.iter().filter(move |c| c.registered_in(version))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `qemu-ga -b help` of the measured 7.2 agent (qga-wire.md §1).
    const MEASURED_7_2: &str = "guest-sync-delimited guest-sync guest-ping guest-get-time \
        guest-set-time guest-info guest-shutdown guest-file-open guest-file-close \
        guest-file-read guest-file-write guest-file-seek guest-file-flush guest-fsfreeze-status \
        guest-fsfreeze-freeze guest-fsfreeze-freeze-list guest-fsfreeze-thaw guest-fstrim \
        guest-suspend-disk guest-suspend-ram guest-suspend-hybrid guest-network-get-interfaces \
        guest-get-vcpus guest-set-vcpus guest-get-disks guest-get-fsinfo guest-set-user-password \
        guest-get-memory-blocks guest-set-memory-blocks guest-get-memory-block-info \
        guest-exec-status guest-exec guest-get-host-name guest-get-users guest-get-timezone \
        guest-get-osinfo guest-get-devices guest-ssh-get-authorized-keys \
        guest-ssh-add-authorized-keys guest-ssh-remove-authorized-keys guest-get-diskstats \
        guest-get-cpustats";

    fn names(version: AgentVersion) -> Vec<&'static str> {
        registered(version).map(|c| c.name).collect()
    }

    #[test]
    fn seven_two_registers_the_measured_list_in_order() {
        let expected: Vec<&str> = MEASURED_7_2.split_whitespace().collect();
        assert_eq!(expected.len(), 42);
        assert_eq!(names(AgentVersion::V7_2_22), expected);
    }

    #[test]
    fn later_versions_add_route_and_load_and_drop_devices() {
        let v9_1 = names(AgentVersion::new(9, 1, 0));
        assert!(v9_1.contains(&"guest-network-get-route"));
        assert!(!v9_1.contains(&"guest-get-devices"));
        assert!(!v9_1.contains(&"guest-get-load"));
        let v10 = names(AgentVersion::new(10, 0, 0));
        assert_eq!(
            &v10[v10.len() - 3..],
            &[
                "guest-get-cpustats",
                "guest-get-load",
                "guest-network-get-route"
            ]
        );
    }

    #[test]
    fn older_versions_lack_newer_commands() {
        let v4 = names(AgentVersion::new(4, 0, 0));
        assert!(!v4.contains(&"guest-get-devices"));
        assert!(!v4.contains(&"guest-get-diskstats"));
        assert!(v4.contains(&"guest-get-osinfo"));
        let v2_4 = names(AgentVersion::new(2, 4, 0));
        assert!(!v2_4.contains(&"guest-exec"));
        assert!(v2_4.contains(&"guest-get-memory-blocks"));
    }

    #[test]
    fn the_flags_separate_what_changes_the_machine_from_what_must_not_be_repeated() {
        let names = |keep: fn(&CommandSpec) -> bool| -> Vec<&str> {
            let mut v: Vec<&str> = COMMANDS
                .iter()
                .filter(|c| keep(c))
                .map(|c| c.name)
                .collect();
            v.sort_unstable();
            v
        };
        let changes = names(|c| c.changes_machine);
        assert_eq!(changes.len(), 17, "{changes:?}");
        let not_repeatable = names(|c| c.not_repeatable);
        assert_eq!(not_repeatable.len(), 22, "{not_repeatable:?}");
        // Everything that changes the machine must not be repeated; the difference is the
        // reads that consume state.
        assert!(changes.iter().all(|c| not_repeatable.contains(c)));
        let consuming: Vec<&str> = not_repeatable
            .iter()
            .filter(|c| !changes.contains(c))
            .copied()
            .collect();
        assert_eq!(
            consuming,
            [
                "guest-exec-status",
                "guest-file-close",
                "guest-file-flush",
                "guest-file-read",
                "guest-file-seek"
            ]
        );
        assert!(!COMMANDS
            .iter()
            .any(|c| c.name.starts_with("guest-get-") && c.not_repeatable));
    }

    #[test]
    fn only_shutdown_and_suspend_are_no_reply() {
        let no_reply: Vec<&str> = COMMANDS
            .iter()
            .filter(|c| !c.success_response)
            .map(|c| c.name)
            .collect();
        assert_eq!(
            no_reply,
            [
                "guest-shutdown",
                "guest-suspend-disk",
                "guest-suspend-ram",
                "guest-suspend-hybrid"
            ]
        );
    }

    #[test]
    fn capture_output_became_an_alternate_in_8_1() {
        let exec = COMMANDS.iter().find(|c| c.name == "guest-exec");
        let exec = exec.expect("guest-exec is in the table");
        let capture = |v| {
            exec.members(v)
                .iter()
                .find(|m| m.name == "capture-output")
                .map(|m| matches!(m.ty, ArgType::Alternate(_)))
        };
        assert_eq!(capture(AgentVersion::new(8, 0, 0)), Some(false));
        assert_eq!(capture(AgentVersion::new(8, 1, 0)), Some(true));
    }
}
