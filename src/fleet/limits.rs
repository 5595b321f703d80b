//! The open-file limit a fleet needs: one listening socket per agent, one connection per
//! client talking to it, and a few more.

/// The outcome of raising the soft RLIMIT_NOFILE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFileLimit {
    /// The soft limit now in force.
    pub soft: u64,
    /// The hard limit (the most an unprivileged process may raise its soft limit to).
    pub hard: u64,
}

/// Raises the soft open-file limit to the hard one (where the kernel lets this process),
/// then checks that `needed` descriptors fit; the error says what to do when they do not.
pub fn raise_open_file_limit(needed: u64) -> Result<OpenFileLimit, String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!(
            "cannot read the open-file limit: {}",
            std::io::Error::last_os_error()
        ));
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own. Raising the soft limit up to the hard
        // one is allowed to any process; failure leaves the old limit, checked below.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    let (soft, hard) = (limit.rlim_cur, limit.rlim_max);
    if soft < needed {
        return Err(format!(
            "{needed} open files are needed (one socket per agent, one per client connection, \
             and some to spare) but this process may open only {soft} (hard limit {hard}). \
             Raise the hard limit: as root, `ulimit -Hn {needed}` in the shell that starts it, \
             `LimitNOFILE={needed}` in its systemd unit, `--ulimit nofile={needed}:{needed}` \
             for docker, or a `nofile` line in /etc/security/limits.conf; or run fewer agents."
        ));
    }
    Ok(OpenFileLimit { soft, hard })
}
