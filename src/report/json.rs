//! The JSON report: the typed [`Report`](super::Report) of a run, as JSON.

use serde_json::Value;

use super::model::Report;
use super::RunInfo;
use crate::runner::CaseResult;

/// The whole run as JSON.
pub fn json_report(results: &[CaseResult], info: &RunInfo) -> Value {
    serde_json::to_value(Report::from_results(results, info)).unwrap_or(Value::Null)
}
