//! The mock with `--fault` rules in a temp dir, and readers of its transcript.

use std::path::Path;
use std::time::Duration;

use qga_harness::{MockAgent, MockAgentBuilder};
use tokio::time::Instant;

/// A mock with these `--fault` specs, in a temp dir.
pub async fn mock_with(dir: &tempfile::TempDir, specs: &[&str]) -> MockAgent {
    builder_with(specs)
        .transcript(dir.path().join("transcript.jsonl"))
        .start_in(dir.path())
        .await
        .expect("start the mock")
}

pub fn builder_with(specs: &[&str]) -> MockAgentBuilder {
    specs.iter().fold(MockAgent::builder(), |b, spec| {
        b.fault(qga_harness::fault::parse_spec(spec).expect("valid spec"))
    })
}

/// The transcript's records, once the mock is shut down.
pub fn records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("read the transcript")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The bytes of one transcript record (`text` or `b64`).
pub fn record_bytes(record: &serde_json::Value) -> Vec<u8> {
    use base64::Engine as _;
    match (record.get("text"), record.get("b64")) {
        (Some(t), _) => t.as_str().expect("text").as_bytes().to_vec(),
        (_, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.as_str().expect("b64"))
            .expect("base64"),
        _ => Vec::new(),
    }
}

/// The writes the mock made to its clients, one entry per write.
pub fn writes_out(records: &[serde_json::Value]) -> Vec<Vec<u8>> {
    records
        .iter()
        .filter(|r| r.get("dir").and_then(|d| d.as_str()) == Some("out"))
        .map(record_bytes)
        .collect()
}

/// Elapsed time since `start` on the mock's clock.
pub fn since(start: Instant) -> Duration {
    start.elapsed()
}
