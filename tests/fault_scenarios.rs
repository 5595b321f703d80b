//! Every scenario file in `scenarios/` loads into a mock, which starts and accepts a
//! connection.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use qga_harness::scenario::{Scenario, Transport};
use qga_harness::MockAgent;

fn scenario_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read scenarios/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            scenario_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json")
            && !path
                .components()
                .any(|c| c.as_os_str() == "baselines" || c.as_os_str() == "profiles")
        {
            out.push(path);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn every_scenario_starts_a_mock_that_accepts_a_connection() {
    let mut files = Vec::new();
    scenario_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios"),
        &mut files,
    );
    files.sort();
    assert!(files.len() >= 36, "{} scenario files", files.len());
    for file in &files {
        let scenario = Scenario::load(file).unwrap_or_else(|e| panic!("{e}"));
        let base = file.parent().expect("a directory");
        let dir = tempfile::tempdir().expect("temp dir");
        let mock = MockAgent::builder()
            .scenario_agent(&scenario.agent, base)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .transcript(dir.path().join("transcript.jsonl"))
            .start_in(dir.path())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if scenario.agent.transport == Transport::UnixListen && !scenario.agent.state.started {
            // qemu-ga's own socket does not exist before the agent runs.
            mock.life().start().await.expect("start");
        }
        let client = Client::connect(mock.socket_path()).await;
        mock.life()
            .wait_channel(|s| s.accepted >= 1)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        drop(client);
        mock.shutdown()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}
