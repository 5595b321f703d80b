//! The JSON report: the run, and every case with its id, verdict (one of `PASS`,
//! `NON-STRICT`, `FAIL`, `INFO`, `UNSUPPORTED`), timings, steps, duties, findings, client
//! processes and seed.

use serde_json::{json, Value};

use super::{count, RunInfo};
use crate::runner::{CaseResult, Verdict};

/// The whole run as JSON.
pub fn json_report(results: &[CaseResult], info: &RunInfo) -> Value {
    let counts = count(results);
    let summary: serde_json::Map<String, Value> = Verdict::ALL
        .iter()
        .zip(counts)
        .map(|(v, n)| (v.as_str().to_owned(), json!(n)))
        .collect();
    json!({
        "tool": "qga-harness",
        "version": env!("CARGO_PKG_VERSION"),
        "client": info.client,
        "seed": info.seed,
        "jobs": info.jobs,
        "elapsed_ms": info.elapsed.as_secs_f64() * 1000.0,
        "summary": summary,
        "cases": results.iter().map(|r| case(r, info)).collect::<Vec<_>>(),
    })
}

fn case(result: &CaseResult, info: &RunInfo) -> Value {
    let judgement = result.judgement.as_ref();
    let steps: Vec<Value> = result
        .run
        .steps
        .iter()
        .map(|step| {
            let verdict = judgement
                .and_then(|j| j.steps.get(step.index))
                .map(|r| serde_json::to_value(r).unwrap_or(Value::Null));
            json!({
                "index": step.index,
                "execute": step.execute,
                "started_ms": step.started_us as f64 / 1000.0,
                "elapsed_ms": step.elapsed_ms(),
                "answer": step.answer,
                "result": verdict,
            })
        })
        .collect();
    let mut value = json!({
        "id": result.id,
        "title": result.title,
        "category": result.category,
        "file": result.file,
        "verdict": result.verdict.as_str(),
        "seed": info.seed,
        "agent_seed": result.seed,
        "elapsed_ms": result.elapsed_ms,
        "steps": steps,
        "duties": judgement.map_or(Value::Array(Vec::new()), |j| json!(j.duties)),
        "findings": judgement.map_or(Value::Array(Vec::new()), |j| json!(j.findings)),
        "processes": result.run.processes,
        "rerun": info.rerun(result),
    });
    if let Some(map) = value.as_object_mut() {
        if let Some(error) = &result.error {
            map.insert("error".into(), json!(error));
        }
        if let Some(why) = &result.unsupported {
            map.insert("unsupported".into(), json!(why));
        }
        if let Some(path) = &result.transcript {
            map.insert("transcript".into(), json!(path));
        }
    }
    value
}
