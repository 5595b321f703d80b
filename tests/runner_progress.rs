//! Progress on long runs: on a terminal a live bar (cases done of total, verdict counts,
//! elapsed time and an estimate), when stdout is not a terminal the plain line per case.
//! The terminal is a real pseudo-terminal, made by util-linux's `script`.

use std::process::Command;

const CASES: [&str; 3] = ["sync.1", "sync.4", "timeout.1"];

fn run_args() -> Vec<String> {
    let mut args = vec!["run".to_owned(), "--seed".to_owned(), "1".to_owned()];
    for id in CASES {
        args.extend(["--filter".to_owned(), id.to_owned()]);
    }
    args
}

#[test]
fn a_terminal_gets_a_live_bar_with_counts_and_an_estimate() {
    let command = std::iter::once(env!("CARGO_BIN_EXE_qga-harness").to_owned())
        .chain(run_args())
        .map(|a| qga_harness::internals::shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("script(1) from util-linux runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    // The bar: done of total, the verdicts so far, elapsed and what is left.
    assert!(text.contains(&format!("/{}", CASES.len())), "{text}");
    assert!(text.contains("elapsed"), "{text}");
    assert!(text.contains("left"), "{text}");
    assert!(text.contains(&format!("{} PASS", CASES.len())), "{text}");
    // Redrawn in place: cursor movement, not one line per redraw.
    assert!(
        text.contains('\u{1b}'),
        "no terminal control sequences: {text}"
    );
    // Every case still gets its line above the bar.
    for id in CASES {
        assert!(text.contains(id), "{id} missing: {text}");
    }
}

#[test]
fn a_pipe_gets_the_plain_line_per_case() {
    let out = Command::new(env!("CARGO_BIN_EXE_qga-harness"))
        .args(run_args())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("qga-harness runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "control sequences on a pipe: {text}"
    );
    assert!(!text.contains("elapsed"), "a bar on a pipe: {text}");
    for id in CASES {
        assert_eq!(
            text.lines().filter(|l| l.contains(id)).count(),
            1,
            "one line for {id}: {text}"
        );
    }
}
