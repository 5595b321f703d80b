//! Progress on long runs: when stdout is not a terminal, the plain line per case and no
//! live bar.

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
